//! Bad input gets one clear message and exit 2, never a panic, and leaves
//! nothing half-written; an interrupted job stops every ffmpeg and resumes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::media::*;
use crate::common::run::*;

/// Run dffmpeg; expect exit 2 and `needle` in its one-line error; the
/// directory afterwards holds exactly `files`.
fn expect_usage_error(cmd: &mut Command, needle: &str, dir: &Path, files: &[&str]) {
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want: Vec<String> = files.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(left, want, "files left behind");
}

#[test]
fn bad_inputs() {
    let d = workdir("badin");
    expect_usage_error(dffmpeg().args(["transcode"]).arg(d.join("missing.mp4")), "No such file", &d, &[]);
    std::fs::create_dir(d.join("dir.mp4")).unwrap();
    expect_usage_error(
        dffmpeg().args(["transcode"]).arg(d.join("dir.mp4")),
        "is a directory",
        &d,
        &["dir.mp4"],
    );
    std::fs::write(d.join("text.mp4"), "just some text\n").unwrap();
    expect_usage_error(
        dffmpeg().args(["transcode"]).arg(d.join("text.mp4")),
        "not a media file",
        &d,
        &["dir.mp4", "text.mp4"],
    );
    // The input is named once, not again by ffprobe's own line.
    let out = run(dffmpeg().args(["transcode"]).arg(d.join("text.mp4")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("text.mp4").count(), 1, "{err}");
    ffmpeg(&["-f", "lavfi", "-i", "sine=duration=2", d.join("audio.m4a").to_str().unwrap()]);
    expect_usage_error(
        dffmpeg().args(["transcode"]).arg(d.join("audio.m4a")),
        "no video stream",
        &d,
        &["dir.mp4", "text.mp4", "audio.m4a"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// The first mistake most users make gets one line naming the cause once,
/// not `cause: cause`.
#[test]
fn a_missing_file_is_named_once() {
    let d = workdir("missing");
    let input = sample(&d, "in.mp4", 1);
    let cause = "No such file or directory";
    let missing = d.join("missing.mp4");
    let inventory = d.join("missing.yaml");
    for (cmd, names) in [
        (dffmpeg().args(["transcode"]).arg(&missing).args(["-c:v", "mpeg4"]), &missing),
        (dffmpeg().args(["transcode", "-I"]).arg(&inventory).arg(&input).args(["-c:v", "mpeg4"]), &inventory),
        (dffmpeg().env("DFFMPEG_INVENTORY", &inventory).args(["transcode"]).arg(&input), &inventory),
        (dffmpeg().args(["setup"]).arg(&inventory), &inventory),
    ] {
        let out = run(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(err.matches(cause).count(), 1, "{err}");
        assert!(err.contains(&names.display().to_string()), "{err}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_outputs() {
    let d = workdir("badout");
    let input = sample(&d, "in.mp4", 2);
    expect_usage_error(
        dffmpeg().args(["transcode", "-o"]).arg(&input).arg(&input),
        "is the input",
        &d,
        &["in.mp4"],
    );
    std::fs::write(d.join("exists.mp4"), "keep me").unwrap();
    expect_usage_error(
        dffmpeg().args(["transcode", "-o"]).arg(d.join("exists.mp4")).arg(&input),
        "use -y",
        &d,
        &["in.mp4", "exists.mp4"],
    );
    assert_eq!(std::fs::read_to_string(d.join("exists.mp4")).unwrap(), "keep me");
    expect_usage_error(
        dffmpeg().args(["transcode", "-o", "/proc/dffmpeg-out.mp4"]).arg(&input),
        "not writable",
        &d,
        &["in.mp4", "exists.mp4"],
    );
    expect_usage_error(
        dffmpeg().args(["transcode", "-o"]).arg(d.join("out.xyz")).arg(&input),
        "output format",
        &d,
        &["in.mp4", "exists.mp4"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_ffmpeg_options_fail_fast_with_ffmpegs_own_error() {
    let d = workdir("badopt");
    let input = sample(&d, "in.mp4", 6);
    for (args, needle) in [
        (&["-c:v", "nope"][..], "nope"),
        (&["-c:v", "mpeg4", "-nonsense", "1"][..], "nonsense"),
        (&["-c:a", "nope"][..], "nope"),
    ] {
        let out = run(dffmpeg().args(["transcode", "--json", "--chunk", "1"]).arg(&input).args(args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        // Not retried chunk after chunk: at most one attempt per slot.
        let ev = events(&out);
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        assert!(count_events(&ev, "chunk_start") <= cores, "{args:?}: {ev:?}");
        assert_eq!(count_events(&ev, "chunk_done"), 0, "{args:?}");
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("in.mp4")], "{args:?}: nothing half-written");
    }
    for (args, needle) in
        [(&["-r", "30"][..], "-r is not supported"), (&["-vf", "fps=10"][..], "changes the number")]
    {
        expect_usage_error(dffmpeg().args(["transcode"]).arg(&input).args(args), needle, &d, &["in.mp4"]);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn missing_ffmpeg_is_named() {
    let d = workdir("noffmpeg");
    let input = sample(&d, "in.mp4", 1);
    let empty = d.join("bin");
    std::fs::create_dir(&empty).unwrap();
    expect_usage_error(
        dffmpeg().env("PATH", &empty).args(["transcode"]).arg(&input),
        "not installed",
        &d,
        &["in.mp4", "bin"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn interrupt_stops_every_ffmpeg_and_the_rerun_resumes() {
    let d = workdir("resume");
    let input = sample(&d, "in.mp4", 12);
    let out = d.join("out.mkv");
    // A bitrate no other test uses marks this job's ffmpeg processes.
    let marker = format!("{}", 900_000 + std::process::id() % 90_000);
    let args = |c: &mut Command| {
        c.args(["transcode", "--json", "--chunk", "1", "-o"])
            .arg(&out)
            .arg(&input)
            .args(["-c:v", "libx264", "-preset", "slow", "-b:v", &marker]);
    };
    let mut cmd = dffmpeg();
    args(&mut cmd);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut done_before = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains("\"chunk_done\"") {
            done_before += 1;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            break;
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("resume"), "{err}");
    assert!(ffmpeg_running(&marker).is_empty(), "ffmpeg left running: {:?}", ffmpeg_running(&marker));
    assert!(!out.exists(), "no output after an interrupt");

    let mut cmd = dffmpeg();
    args(&mut cmd);
    let res = run(&mut cmd);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let ev = events(&res);
    let start = ev.iter().find(|e| e["event"] == "job_start").unwrap();
    let chunks = start["chunks"].as_u64().unwrap() as usize;
    let resumed = start["resumed_chunks"].as_u64().unwrap() as usize;
    assert!(resumed >= done_before, "resumed {resumed} of {chunks}");
    assert_eq!(count_events(&ev, "chunk_done"), chunks - resumed, "only missing chunks are encoded");
    assert_eq!(frame_count(&out), frame_count(&input));
    // The job directory is gone after success.
    let left: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    let _ = std::fs::remove_dir_all(&d);
}

/// A directory and a file nobody but their owner should ever see changed.
struct Victim {
    dir: std::path::PathBuf,
}

impl Victim {
    fn new(d: &Path) -> Victim {
        let dir = d.join("victim");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("authorized_keys"), "precious\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Victim { dir }
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.join("authorized_keys")
    }

    /// Nothing was created, removed, changed or chmodded in it.
    fn assert_untouched(&self) {
        use std::os::unix::fs::PermissionsExt;
        let names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert_eq!(names, ["authorized_keys"], "something was written into the link's target");
        assert_eq!(std::fs::read_to_string(self.file()).unwrap(), "precious\n");
        assert_eq!(std::fs::metadata(&self.dir).unwrap().permissions().mode() & 0o7777, 0o700);
    }
}

/// A compute node's user can write in the shared `work/` (and `output/`)
/// and plant a symlink where the controller is about to create its job
/// directory or files: dffmpeg refuses clearly and never writes through it.
#[test]
fn planted_symlinks_are_never_followed() {
    let d = workdir("planted");
    let victim = Victim::new(&d);
    let input = sample(&d, "in.mp4", 3);
    let shared = d.join("shared");
    std::fs::create_dir_all(shared.join("work")).unwrap();
    let inv = d.join("inventory.yaml");
    std::fs::write(
        &inv,
        format!(
            "cluster: {{ storage: nfs, shared_dir: \"{}\" }}\nnodes:\n  here: {{ host: local, roles: [controller, compute, storage] }}\n",
            shared.display()
        ),
    )
    .unwrap();
    let args = ["-c:v", "mpeg4", "-c:a", "aac"];

    // 1. The shared job directory's name, planted as a link.
    let out = d.join("out.mp4");
    let job = shared.join("work").join(dffmpeg::transcode::job::job_name(&out));
    std::os::unix::fs::symlink(&victim.dir, &job).unwrap();
    let r = run(dffmpeg().args(["transcode", "-I"]).arg(&inv).arg("-o").arg(&out).arg(&input).args(args));
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("symbolic link") && err.contains(&job.display().to_string()), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    victim.assert_untouched();
    assert!(!out.exists());
    std::fs::remove_file(&job).unwrap();

    // 2. `work` itself replaced by a link.
    std::fs::rename(shared.join("work"), shared.join("work.real")).unwrap();
    std::os::unix::fs::symlink(&victim.dir, shared.join("work")).unwrap();
    let r = run(dffmpeg().args(["transcode", "-I"]).arg(&inv).arg("-o").arg(&out).arg(&input).args(args));
    assert_eq!(r.status.code(), Some(2), "{}", String::from_utf8_lossy(&r.stderr));
    victim.assert_untouched();
    std::fs::remove_file(shared.join("work")).unwrap();
    std::fs::rename(shared.join("work.real"), shared.join("work")).unwrap();

    // 3. The output folder (local storage): the job directory's name as a
    // link is refused; the output's own name as a link is replaced by the
    // result, not written through.
    let out = d.join("out2.mp4");
    let job = d.join(".out2.mp4.dffmpeg-job");
    std::os::unix::fs::symlink(&victim.dir, &job).unwrap();
    let r = run(dffmpeg().args(["transcode", "-o"]).arg(&out).arg(&input).args(args));
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    victim.assert_untouched();
    std::fs::remove_file(&job).unwrap();
    std::os::unix::fs::symlink(victim.file(), &out).unwrap();
    let r = run(dffmpeg().args(["transcode", "-y", "-o"]).arg(&out).arg(&input).args(args));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    victim.assert_untouched();
    assert!(std::fs::symlink_metadata(&out).unwrap().file_type().is_file());
    assert_eq!(frame_count(&out), frame_count(&input));
    let _ = std::fs::remove_dir_all(&d);
}
