//! What a job leaves to look at: the job directory `--keep` keeps, the log
//! of a failed attempt, `--log-file` and `-v`, and the lines of `--watch`
//! (a service's journal).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::media::*;
use crate::common::run::*;

const ARGS: [&str; 4] = ["-c:v", "mpeg4", "-c:a", "aac"];

/// `--keep` keeps exactly what its help says.
#[test]
fn keep_keeps_what_its_help_says() {
    let d = workdir("keep");
    let input = sample(&d, "in.mp4", 3);
    let out = d.join("out.mp4");
    let mut cmd = dffmpeg();
    cmd.env("XDG_STATE_HOME", d.join("state"));
    let r = run(cmd.args(["transcode", "--keep", "--chunk", "1", "-o"]).arg(&out).arg(&input).args(ARGS));
    success(r, "transcode --keep");
    let chunks = ["chunk_00000.nut", "chunk_00001.nut", "chunk_00002.nut"];
    assert_eq!(names(&d.join(".out.mp4.dffmpeg-job")), [&chunks[..], &["lock"]].concat());
    let private = d.join("state/dffmpeg/jobs").join(dffmpeg::transcode::job::job_name(&out));
    assert_eq!(names(&private), ["chunks.json", "concat.txt", "job.json", "reference.json", "side.mp4"]);
    let help = ok(run(dffmpeg().args(["transcode", "--help"])), "--help");
    for name in
        ["chunk_NNNNN.nut", "concat.txt", "job.json", "chunks.json", "reference.json", "side.EXT", "logs/"]
    {
        assert!(help.contains(name), "{name} in {help}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    n.sort();
    n
}

/// A directory with an `ffmpeg` that fails the first chunk encode it is
/// given (not the controller's own runs, not the preflight), saying so on
/// stderr, then is the real one.
fn failing_once(d: &Path) -> PathBuf {
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mark = d.join("failed-once");
    let script = format!(
        "#!/bin/sh\ncase \" $* \" in\n  *\" -frames:v 1 \"*) ;;\n  *\" -progress pipe:2 \"*)\n    \
         if mkdir '{}' 2>/dev/null; then echo '[mpeg4 @ 0xdead] simulated failure' >&2; exit 1; fi;;\nesac\n\
         exec /usr/bin/ffmpeg \"$@\"\n",
        mark.display()
    );
    let ffmpeg = bin.join("ffmpeg");
    std::fs::write(&ffmpeg, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ffmpeg, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn path_with(bin: &Path) -> String {
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// A failed attempt's encoder stderr is kept in the job directory, named
/// by its `chunk_failed` event and by the job's final error; the job
/// resumes past it.
#[test]
fn a_failed_attempt_keeps_its_log_and_the_errors_name_it() {
    let d = workdir("attemptlog");
    let input = sample(&d, "in.mp4", 3);
    let out = d.join("out.mp4");
    let bin = failing_once(&d);
    let cmd = || {
        let mut c = dffmpeg();
        c.env("PATH", path_with(&bin))
            .args(["transcode", "--json", "--chunk", "1", "-o"])
            .arg(&out)
            .arg(&input);
        c.args(ARGS);
        c
    };
    let r = run(&mut cmd());
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    let ev = events(&r);
    let failed = ev.iter().find(|e| e["event"] == "chunk_failed").unwrap_or_else(|| panic!("{ev:?}"));
    let log = PathBuf::from(failed["log"].as_str().unwrap());
    let chunk = failed["chunk"].as_u64().unwrap();
    let job = d.join(".out.mp4.dffmpeg-job");
    assert_eq!(log, job.join("logs").join(format!("chunk_{chunk:05}.local.attempt-1.log")));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("chunk {chunk} (")) && text.contains("node local"), "{text}");
    assert!(text.ends_with("[mpeg4 @ 0xdead] simulated failure\n"), "{text}");
    assert!(err.contains(&format!("(log: {})", log.display())), "{err}");
    assert_eq!(err.matches("simulated failure").count(), 1, "{err}");

    // The same command resumes: the log stays until the output is written.
    let ev = ok_events(run(&mut cmd()));
    assert_eq!(count_events(&ev, "chunk_failed"), 0);
    assert_eq!(frame_count(&out), frame_count(&input));
    assert!(!job.exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// `2026-12-07T22:47:01.250+01:00 text`
fn stamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 30
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && (b[23] == b'+' || b[23] == b'-')
        && b[29] == b' '
}

/// `--log-file` gets every line with a time stamp (the detail `-v` shows
/// too), the final error and the exit status; `-v` shows the detail.
#[test]
fn the_log_file_gets_every_line_and_v_shows_more() {
    let d = workdir("logfile");
    let input = sample(&d, "in.mp4", 2);
    let log = d.join("dffmpeg.log");
    let detail = "the nodes read the input in place";
    let transcode = |extra: &[&str], out: &str| {
        let r = run(dffmpeg()
            .args(["transcode", "--log-file"])
            .arg(&log)
            .args(extra)
            .arg("-o")
            .arg(d.join(out))
            .arg(&input)
            .args(ARGS));
        ok(r, "transcode")
    };
    let quiet = transcode(&[], "a.mp4");
    assert!(quiet.contains("chunk 0 done on local") && !quiet.contains(detail), "{quiet}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().all(stamped), "{text}");
    for line in [
        "dffmpeg 0.1.0 (pid ",
        "cluster: embedded local cluster",
        detail,
        "chunk 0 done on local",
        "done: ",
        "exit status 0",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    let verbose = transcode(&["-v"], "b.mp4");
    assert!(verbose.contains(detail), "{verbose}");

    let r = run(dffmpeg().args(["transcode", "--log-file"]).arg(&log).arg(d.join("missing.mp4")).args(ARGS));
    assert_eq!(r.status.code(), Some(2));
    let text = std::fs::read_to_string(&log).unwrap();
    let last: Vec<&str> = text.lines().rev().take(2).collect();
    assert!(
        last[0].ends_with(" exit status 2")
            && last[1].contains("dffmpeg: ")
            && last[1].contains("missing.mp4"),
        "{text}"
    );

    // A link in the log file's place is refused, not written through.
    let victim = d.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, d.join("link.log")).unwrap();
    let r = run(dffmpeg().args(["transcode", "--log-file"]).arg(d.join("link.log")).arg(&input).args(ARGS));
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let _ = std::fs::remove_dir_all(&d);
}

/// `--watch` without a terminal (a service: its output is the journal)
/// prints one line per file event: no chunk lines, no progress lines.
#[test]
fn watch_prints_one_line_per_file_event() {
    let d = workdir("watchlines");
    let (up, out) = (d.join("up"), d.join("out"));
    std::fs::create_dir_all(&up).unwrap();
    sample(&up, "a.mp4", 3);
    let mut child = dffmpeg()
        .args(["transcode", "--watch", "--settle", "0", "--chunk", "1", "-O"])
        .arg(&out)
        .arg(&up)
        .args(ARGS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("done: ");
        seen.push(line);
        if done {
            break;
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    seen.extend(lines.map(|l| l.unwrap()));
    assert!(child.wait().unwrap().success());
    let all = seen.join("\n");
    assert_eq!(seen.iter().filter(|l| l.starts_with("[1] ") && l.contains(" -> ")).count(), 1, "{all}");
    assert_eq!(seen.iter().filter(|l| l.starts_with("done: ")).count(), 1, "{all}");
    assert!(
        !seen.iter().any(|l| l.starts_with("progress:") || l.contains("chunk ") || l.contains("merging")),
        "{all}"
    );
    assert_eq!(frame_count(&out.join("a.mp4")), 75);
    let _ = std::fs::remove_dir_all(&d);
}
