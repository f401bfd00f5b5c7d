//! Nothing lost, nothing trusted that a node could have written: a resumed
//! job re-encodes damaged chunks and is only reported done when its output
//! holds every frame; the record a resume runs is the controller's own; a
//! chunk swapped after its verification never reaches the output; a
//! SIGKILLed dffmpeg leaves no encoder running; a folder still being
//! copied is waited for; names reach the terminal without escapes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::media::*;
use crate::common::run::*;

/// dffmpeg with its state (speeds, private job files) under `d/state`.
fn dff(d: &Path) -> Command {
    let mut c = dffmpeg();
    c.env("XDG_STATE_HOME", d.join("state"));
    c
}

/// Start `cmd` (a `--json` transcode) and stop reading once `stop` says so
/// of an event; the child (still running) and the events seen.
fn until(
    cmd: &mut Command,
    mut stop: impl FnMut(&serde_json::Value) -> bool,
) -> (std::process::Child, Vec<serde_json::Value>) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut ev = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(e) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let done = stop(&e);
        ev.push(e);
        if done {
            break;
        }
    }
    (child, ev)
}

fn chunk_file(job: &Path, index: u64) -> PathBuf {
    job.join(format!("chunk_{index:05}.nut"))
}

#[test]
fn a_damaged_resume_is_encoded_again_and_nothing_outlives_a_sigkill() {
    let d = workdir("trust-resume");
    let input = sample(&d, "in.mp4", 12);
    let out = d.join("out.mkv");
    let marker = format!("{}", 800_000 + std::process::id() % 90_000);
    let args = |c: &mut Command| {
        c.args(["transcode", "--json", "--chunk", "1", "-o"])
            .arg(&out)
            .arg(&input)
            .args(["-c:v", "libx264", "-preset", "slow", "-b:v", &marker, "-c:a", "aac"]);
    };
    let mut cmd = dff(&d);
    args(&mut cmd);
    let mut done = Vec::new();
    let (mut child, _) = until(&mut cmd, |e| {
        if e["event"] == "chunk_done" {
            done.push(e["chunk"].as_u64().unwrap());
        }
        done.len() == 3
    });
    // The encoders are stopped first: a stopped process still dies of
    // SIGKILL, but writes nothing, so it cannot die of a closed pipe
    // instead — only the death signal tied to its shell ends it.
    let encoders = ffmpeg_running(&marker);
    assert!(!encoders.is_empty());
    let pids: Vec<i32> = encoders.iter().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
    for &p in &pids {
        // SAFETY: signalling the test's own encoders.
        unsafe { libc::kill(p, libc::SIGSTOP) };
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // SIGKILL: every encoder it started goes with it.
    let t0 = std::time::Instant::now();
    while !ffmpeg_running(&marker).is_empty() && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let left = ffmpeg_running(&marker);
    for &p in &pids {
        // SAFETY: cleaning up after a failure of the test's own encoders.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "left running after SIGKILL: {left:?}");
    // One finished chunk cut short, one emptied.
    let job = d.join(".out.mkv.dffmpeg-job");
    let f = std::fs::OpenOptions::new().write(true).open(chunk_file(&job, done[0])).unwrap();
    f.set_len(f.metadata().unwrap().len() / 3).unwrap();
    std::fs::write(chunk_file(&job, done[1]), b"").unwrap();
    let mut cmd = dff(&d);
    args(&mut cmd);
    let ev = ok_events(run(&mut cmd));
    let start = ev.iter().find(|e| e["event"] == "job_start").unwrap();
    let chunks = start["chunks"].as_u64().unwrap() as usize;
    assert_eq!(start["resumed_chunks"].as_u64(), Some(1), "{start}");
    assert_eq!(count_events(&ev, "chunk_done"), chunks - 1);
    assert_eq!(frame_count(&out), frame_count(&input));
    assert!(!job.exists());
    let _ = std::fs::remove_dir_all(&d);
}

fn nfs_inventory(d: &Path) -> (PathBuf, PathBuf) {
    let shared = d.join("shared");
    std::fs::create_dir_all(shared.join("work")).unwrap();
    let inv = write(
        d,
        "inventory.yaml",
        &format!(
            "cluster: {{ storage: nfs, shared_dir: \"{}\" }}\nnodes:\n  here: {{ host: local, slots: 2, roles: [controller, compute, storage] }}\n",
            shared.display()
        ),
    );
    (inv, shared)
}

/// `transcode --json --chunk 1 [EXTRA] -I INV -o OUT INPUT` with libx264
/// slow (long enough to act between chunks).
fn nfs_job(d: &Path, inv: &Path, out: &Path, input: &Path, extra: &[&str]) -> Command {
    let mut c = dff(d);
    c.arg("transcode")
        .args(extra)
        .args(["--json", "--chunk", "1", "-I"])
        .arg(inv)
        .arg("-o")
        .arg(out)
        .arg(input)
        .args(["-c:v", "libx264", "-preset", "slow", "-c:a", "aac"]);
    c
}

/// With `storage: nfs` the job directory is the nodes' to write: the
/// record, the reference and the concat list are not in it, and a record
/// whose encoder options differ from the command line's never runs.
#[test]
fn a_resume_runs_the_command_lines_options_only() {
    let d = workdir("trust-record");
    let input = sample(&d, "in.mp4", 8);
    let (inv, shared) = nfs_inventory(&d);
    let out = d.join("out.mp4");
    let mut cmd = nfs_job(&d, &inv, &out, &input, &[]);
    let (mut child, _) = until(&mut cmd, |e| e["event"] == "chunk_done");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let job = shared.join("work").join(dffmpeg::transcode::job::job_name(&out));
    let names: Vec<String> =
        std::fs::read_dir(&job).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    for private in ["job.json", "reference.json", "concat.txt", "chunks.json"] {
        assert!(!names.iter().any(|n| n == private), "{private} in the nodes' job directory: {names:?}");
    }
    let record = d.join("state/dffmpeg/jobs").join(dffmpeg::transcode::job::job_name(&out)).join("job.json");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let pwned = d.join("PWNED");
    let codec = r["encode"]["codec_args"].as_array_mut().unwrap();
    codec.push("-vstats_file".into());
    codec.push(pwned.to_str().unwrap().into());
    std::fs::write(&record, r.to_string()).unwrap();
    let mut cmd = nfs_job(&d, &inv, &out, &input, &[]);
    let res = run(&mut cmd);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("differ") && err.contains("--fresh"), "{err}");
    assert!(!pwned.exists() && !out.exists());
    let mut cmd = nfs_job(&d, &inv, &out, &input, &["--fresh"]);
    let ev = ok_events(run(&mut cmd));
    assert_eq!(frame_count(&out), frame_count(&input));
    // Process starts are counted: each attempt's two on its node, and the
    // controller's own.
    let done = ev.iter().find(|e| e["event"] == "batch_done").unwrap();
    let chunks = count_events(&ev, "chunk_done") as u64;
    assert!(done["nodes"][0]["processes"].as_u64().unwrap() >= 2 * chunks, "{done}");
    assert!(done["controller_processes"].as_u64().unwrap() > 2 * chunks, "{done}");
    assert!(!pwned.exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// A node swaps a verified chunk for a link to a private clip: the merge
/// refuses it (the output never holds that clip), and the next run encodes
/// that chunk again.
#[test]
fn a_chunk_swapped_after_verification_never_reaches_the_output() {
    let d = workdir("trust-swap");
    let input = sample(&d, "in.mp4", 10);
    let secret_dir = d.join("private");
    std::fs::create_dir(&secret_dir).unwrap();
    let secret = secret_dir.join("secret.nut");
    clip(&secret, 2, false, &["-c:v", "libx264", "-preset", "slow", "-g", "25"]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (inv, shared) = nfs_inventory(&d);
    let out = d.join("out.mp4");
    let job = shared.join("work").join(dffmpeg::transcode::job::job_name(&out));
    let mut cmd = nfs_job(&d, &inv, &out, &input, &[]);
    let mut swapped = None;
    let (res, _) = streaming(&mut cmd, |e, _| {
        if swapped.is_none() && e["event"] == "chunk_done" {
            let c = chunk_file(&job, e["chunk"].as_u64().unwrap());
            std::fs::remove_file(&c).unwrap();
            std::os::unix::fs::symlink(&secret, &c).unwrap();
            swapped = Some(c);
        }
    });
    assert!(swapped.is_some());
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(err.contains("changed after it was verified"), "{err}");
    assert!(!out.exists());
    let mut cmd = nfs_job(&d, &inv, &out, &input, &[]);
    let ev = ok_events(run(&mut cmd));
    assert_eq!(count_events(&ev, "chunk_done"), 1, "only the swapped chunk is encoded again");
    assert_eq!(frame_count(&out), frame_count(&input));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_folder_being_copied_is_waited_for_and_an_empty_one_is_an_error() {
    let d = workdir("trust-settle");
    let src = sample(&d, "src.mp4", 2);
    let up = d.join("upload");
    std::fs::create_dir(&up).unwrap();
    for name in ["a.mp4", "b.mp4"] {
        std::fs::copy(&src, up.join(name)).unwrap();
    }
    let out = d.join("out");
    let res =
        run(dff(&d).args(["transcode", "--settle", "2", "-O"]).arg(&out).arg(&up).args(["-c:v", "mpeg4"]));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    assert!(err.contains("waiting for 2 file(s) still being written"), "{err}");
    for name in ["a.mp4", "b.mp4"] {
        assert_eq!(frame_count(&out.join(name)), frame_count(&src), "{name}");
    }
    // Nothing to do is never a silent success.
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::os::unix::fs::symlink(&src, empty.join("link.mp4")).unwrap();
    let res = run(dff(&d).args(["transcode", "-O"]).arg(&out).arg(&empty).args(["-c:v", "mpeg4"]));
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("nothing to transcode") && err.contains("outside its folder"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn file_names_reach_the_terminal_without_escapes() {
    let d = workdir("trust-names");
    let src = sample(&d, "src.mp4", 2);
    let evil = d.join("a\x1b]0;pwned\x07\x1b[31mred.mp4");
    std::fs::rename(&src, &evil).unwrap();
    let res =
        run(dff(&d).args(["transcode", "-o"]).arg(d.join("out.mp4")).arg(&evil).args(["-c:v", "mpeg4"]));
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    for (what, text) in [("stdout", &res.stdout), ("stderr", &res.stderr)] {
        assert!(!text.contains(&0x1b) && !text.contains(&0x07), "{what}: {}", String::from_utf8_lossy(text));
    }
    // A bad name in an error message too.
    let res = run(dff(&d).args(["transcode"]).arg(d.join("gone\x1b[2J.mp4")));
    assert_eq!(res.status.code(), Some(2));
    assert!(!res.stderr.contains(&0x1b), "{}", String::from_utf8_lossy(&res.stderr));
    let _ = std::fs::remove_dir_all(&d);
}
