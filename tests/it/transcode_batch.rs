//! Many files in one command: a directory (mirrored, hostile names, a
//! damaged file, things that are no video), existing outputs skipped,
//! a batch killed midway and resumed file by file, a node lost midway,
//! and `--watch` taking a file only once it is completely copied.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::lab::{HostOpts, Lab};
use crate::common::media::*;
use crate::common::run::*;

const ARGS: &[&str] = &["-c:v", "mpeg4", "-q:v", "5", "-c:a", "aac"];

fn batch(dir: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = dffmpeg();
    c.args(["transcode", "--json", "--settle", "0", "-O"]).arg(out).args(extra).arg(dir).args(ARGS);
    c
}

/// Files of a season: two in the top folder, one in a subfolder with a
/// hostile name; a damaged video, a text file, an audio file, a hidden
/// file. Returns the videos (relative paths) in walk order.
fn season(d: &Path) -> (PathBuf, Vec<&'static str>) {
    let s = d.join("season 1");
    std::fs::create_dir_all(s.join("extras $(touch pwned)")).unwrap();
    for (name, secs) in [("e01.mp4", 4), ("e02.mkv", 3), ("extras $(touch pwned)/it's ü.mp4", 2)] {
        clip(
            &s.join(name),
            secs,
            true,
            &["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac"],
        );
    }
    std::fs::write(s.join("broken.mp4"), b"not a video at all").unwrap();
    std::fs::write(s.join("notes.txt"), b"hello").unwrap();
    ffmpeg(&["-f", "lavfi", "-i", "sine=duration=1", s.join("theme.m4a").to_str().unwrap()]);
    std::fs::copy(s.join("e01.mp4"), s.join(".e01.partial.mp4")).unwrap();
    (s, vec!["e01.mp4", "e02.mkv", "extras $(touch pwned)/it's ü.mp4"])
}

fn file_events<'a>(ev: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    ev.iter().filter(|e| e["event"] == kind).collect()
}

fn batch_done(ev: &[serde_json::Value]) -> &serde_json::Value {
    ev.iter().find(|e| e["event"] == "batch_done").expect("a batch_done event")
}

#[test]
fn a_folder_is_transcoded_mirrored_and_a_damaged_file_is_named() {
    let d = workdir("bt-folder");
    let (s, videos) = season(&d);
    let out = d.join("out");
    let res = run(&mut batch(&s, &out, &[]));
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "the damaged file fails the batch: {err}");
    assert!(err.contains("1 of 4 files failed"), "{err}");
    let ev = events(&res);
    // Every event carries its time.
    assert!(ev.iter().all(|e| e["t"].as_f64().is_some()), "{ev:?}");
    let done = batch_done(&ev);
    let status = |name: &str| {
        done["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["input"].as_str().unwrap().ends_with(name))
            .map(|f| f["status"].clone())
    };
    for v in &videos {
        assert_eq!(status(v), Some("done".into()), "{v}: {done}");
        let (src, dst) = (s.join(v), out.join(v));
        assert_eq!(frame_count(&dst), frame_count(&src), "{v}");
        assert_eq!(summary(&dst).streams, summary(&src).streams, "{v}");
    }
    assert_eq!(status("broken.mp4"), Some("failed".into()), "{done}");
    assert!(done["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["reason"].as_str().is_some_and(|r| r.contains("broken.mp4"))));
    // No video, hidden: not inputs at all.
    for other in ["notes.txt", "theme.m4a", ".e01.partial.mp4"] {
        assert_eq!(status(other), None, "{other}");
    }
    assert!(!d.join("pwned").exists() && !s.join("pwned").exists());
    // The job names its file; one batch, one connection: one batch_start.
    assert_eq!(file_events(&ev, "batch_start").len(), 1);
    let starts: Vec<&str> =
        file_events(&ev, "job_start").iter().map(|e| e["input"].as_str().unwrap()).collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    // No job directory is left behind.
    let left: Vec<_> = walk_names(&out).into_iter().filter(|n| n.contains("dffmpeg")).collect();
    assert!(left.is_empty(), "{left:?}");

    // Again: every output exists, so every file is skipped (the damaged
    // one fails again); with -y they are done again.
    let res = run(&mut batch(&s, &out, &[]));
    let ev = events(&res);
    assert_eq!(file_events(&ev, "job_skipped").len(), 3, "{ev:?}");
    assert_eq!(file_events(&ev, "chunk_start").len(), 0);
    let (path, log) = logged_ffprobe(&d);
    let res = run(batch(&s, &out, &["-y"]).env("PATH", path));
    assert_eq!(file_events(&events(&res), "job_done").len(), 3);
    // Alike videos are preflighted once per output format (the two .mp4
    // outputs share one): the plain run's frame is probed twice, not 3 times.
    let plain_probes = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("packet=pts") && l.contains("/proc/"))
        .count();
    assert_eq!(plain_probes, 2, "{}", std::fs::read_to_string(&log).unwrap());
    // Each found file's streams are read once: the walk's answer serves
    // the job's probe (3 videos, the text, the audio; the damaged file,
    // unreadable, is tried again by its job, which then fails).
    let stream_probes =
        std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains("-show_chapters")).count();
    assert_eq!(stream_probes, 7, "{}", std::fs::read_to_string(&log).unwrap());
    let _ = std::fs::remove_dir_all(&d);
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        names.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().unwrap().is_dir() {
            names.extend(walk_names(&e.path()));
        }
    }
    names
}

#[test]
fn a_batch_killed_midway_resumes_file_by_file() {
    let d = workdir("bt-resume");
    let s = d.join("in");
    std::fs::create_dir_all(&s).unwrap();
    for name in ["a.mp4", "b.mp4", "c.mp4", "d.mp4"] {
        sample(&s, name, 6);
    }
    let out = d.join("out");
    let cmd = |extra: &[&str]| batch(&s, &out, &[&["--chunk", "1"], extra].concat());
    // Killed (SIGKILL: nothing cleans up) once the first file is done and
    // a chunk of the second is verified.
    let (mut first_done, mut second_chunks, mut killed) = (false, 0, false);
    let (res, ev) = streaming(&mut cmd(&[]), |e, pid| {
        first_done |= e["event"] == "job_done" && e["job"] == 0;
        second_chunks += usize::from(e["event"] == "chunk_done" && e["job"] == 1);
        if first_done && second_chunks > 0 && !killed {
            killed = true;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    assert_eq!(res.status.code(), None, "killed");
    let done_before = file_events(&ev, "chunk_done").iter().filter(|e| e["job"] == 1).count();
    assert!(out.join("a.mp4").exists());
    assert!(!out.join("d.mp4").exists(), "the batch was not over");
    // Nothing of dffmpeg's is left running after a SIGKILL of dffmpeg.
    std::thread::sleep(Duration::from_millis(300));
    let left = Command::new("pgrep").args(["-f", &format!("{}", out.display())]).output().unwrap();
    assert!(left.stdout.is_empty(), "left running: {}", String::from_utf8_lossy(&left.stdout));

    let res = run(&mut cmd(&[]));
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let ev = events(&res);
    assert_eq!(file_events(&ev, "job_skipped").len(), 1, "a.mp4 is done");
    let b = file_events(&ev, "job_start")
        .into_iter()
        .find(|e| e["input"].as_str().unwrap().ends_with("b.mp4"))
        .unwrap()
        .clone();
    assert!(b["resumed_chunks"].as_u64().unwrap() as usize >= done_before.min(1), "{b}");
    for name in ["a.mp4", "b.mp4", "c.mp4", "d.mp4"] {
        assert_eq!(frame_count(&out.join(name)), frame_count(&s.join(name)), "{name}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_node_lost_midway_leaves_the_batch_to_the_others() {
    let d = workdir("bt-node");
    let mut lab = Lab::new("btnode", 87);
    let a = lab.add_host("a", HostOpts { cpus: Some(1.0), ..Default::default() });
    let b = lab.add_host("b", HostOpts { cpus: Some(1.0), ..Default::default() });
    let s = d.join("in");
    std::fs::create_dir_all(&s).unwrap();
    for name in ["a.mp4", "b.mp4", "c.mp4", "d.mp4"] {
        sample(&s, name, 4);
    }
    let inv = d.join("inventory.yaml");
    std::fs::write(
        &inv,
        format!(
            "cluster: {{ storage: ssh }}\ndefaults: {{ user: root, identity_file: \"{}\" }}\nnodes:\n  ctl: {{ host: local, roles: [controller] }}\n  a: {{ host: {}, roles: [compute] }}\n  b: {{ host: {}, roles: [compute] }}\n",
            lab.client_key().display(),
            a.ip,
            b.ip
        ),
    )
    .unwrap();
    let out = d.join("out");
    let mut killed = false;
    let mut c = batch(&s, &out, &["--chunk", "1", "-I", inv.to_str().unwrap()]);
    c.env("DFFMPEG_KNOWN_HOSTS", d.join("known_hosts"));
    let (res, ev) = streaming(&mut c, |e, _| {
        if !killed && e["event"] == "chunk_start" && e["node"] == "b" && e["job"] == 1 {
            b.kill();
            killed = true;
        }
    });
    assert!(killed, "b never took a chunk of the second file");
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert!(ev.iter().any(|e| e["event"] == "node_dropped" && e["node"] == "b"), "{ev:?}");
    assert_eq!(file_events(&ev, "job_done").len(), 4);
    for name in ["a.mp4", "b.mp4", "c.mp4", "d.mp4"] {
        assert_eq!(frame_count(&out.join(name)), frame_count(&s.join(name)), "{name}");
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn watch_takes_a_file_only_once_it_is_completely_copied() {
    let d = workdir("bt-watch");
    let up = d.join("upload");
    let out = d.join("output");
    std::fs::create_dir_all(&up).unwrap();
    let src = sample(&d, "src.mp4", 4);
    let mut child = dffmpeg()
        .args(["transcode", "--json", "--settle", "1.5", "--watch", "-O"])
        .arg(&out)
        .arg(&up)
        .args(ARGS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Copy it slowly: a slice every 0.4 s (the whole copy takes over 2 s).
    let bytes = std::fs::read(&src).unwrap();
    let dest = up.join("clip.mp4");
    let mut f = std::fs::File::create(&dest).unwrap();
    let copied_at = {
        for part in bytes.chunks(bytes.len() / 6 + 1) {
            f.write_all(part).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(400));
        }
        drop(f);
        Instant::now()
    };
    let stdout = child.stdout.take().unwrap();
    let mut ev = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        let e: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        ev.push(e.clone());
        if e["event"] == "job_done" {
            break;
        }
        assert!(e["event"] != "job_failed", "{e}");
    }
    // Taken whole: exactly the source's frames, and only after the copy.
    assert_eq!(frame_count(&out.join("clip.mp4")), frame_count(&src));
    let start = ev.iter().find(|e| e["event"] == "job_start").unwrap();
    assert!(copied_at.elapsed() < Duration::from_secs(60));
    assert_eq!(start["frames"].as_u64(), Some(frame_count(&src)), "{start}");
    // SIGTERM: a clean stop, exit 0.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn watch_finds_a_new_folder_and_files_moved_in() {
    let d = workdir("bt-watch-new");
    let (up, out, staging) = (d.join("upload"), d.join("output"), d.join("staging"));
    std::fs::create_dir_all(&up).unwrap();
    std::fs::create_dir_all(staging.join("box")).unwrap();
    sample(&up, "first.mp4", 2);
    // Made beforehand, outside the watched tree (same file system).
    let src = sample(&staging, "src.mp4", 2);
    sample(&staging, "moved.mp4", 2);
    sample(&staging.join("box"), "inner.mp4", 2);
    let mut c = dffmpeg();
    c.args(["transcode", "--json", "--settle", "1", "--watch", "-O"]).arg(&out).arg(&up).args(ARGS);
    let (mut done, mut arrived) = (0, Instant::now());
    let (res, ev) = streaming(&mut c, |e, pid| {
        if e["event"] != "job_done" {
            assert!(e["event"] != "job_failed", "{e}");
            return;
        }
        done += 1;
        if done == 1 {
            // The watch runs (it took the file it found at the start): a
            // folder made now, a file copied into it, a file and a folder
            // renamed into the tree. Only the kernel's notification can
            // tell of them (the next full walk is minutes away).
            let season = up.join("season 2");
            std::fs::create_dir(&season).unwrap();
            std::fs::copy(&src, season.join("e01.mp4")).unwrap();
            std::fs::rename(staging.join("moved.mp4"), up.join("moved.mp4")).unwrap();
            std::fs::rename(staging.join("box"), up.join("box")).unwrap();
            arrived = Instant::now();
        }
        if done == 4 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    });
    assert_eq!(res.status.code(), Some(0), "{}", String::from_utf8_lossy(&res.stderr));
    assert_eq!(done, 4, "{ev:?}");
    // Not a timing test: only a bound far above the work (three 2 s clips)
    // and below the safety net's full walk (5 minutes), which would find
    // them too.
    assert!(arrived.elapsed() < Duration::from_secs(240), "found by the periodic walk, not notified");
    let walked: Vec<_> =
        file_events(&ev, "warning").into_iter().filter(|w| w.to_string().contains("walked every")).collect();
    assert!(walked.is_empty(), "the watch fell back to walking: {walked:?}");
    for (input, output) in [
        (src, "season 2/e01.mp4"),
        (up.join("moved.mp4"), "moved.mp4"),
        (up.join("box/inner.mp4"), "box/inner.mp4"),
    ] {
        assert_eq!(frame_count(&out.join(output)), frame_count(&input), "{output}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn watch_without_enough_inotify_watches_walks_the_tree_and_says_so() {
    let d = workdir("bt-watch-limit");
    let (up, out) = (d.join("upload"), d.join("output"));
    std::fs::create_dir_all(up.join("old")).unwrap();
    sample(&up, "first.mp4", 2);
    let src = sample(&d, "src.mp4", 2);
    // A user namespace of its own whose limit is one watch: the second
    // folder of the tree finds the kernel's limit reached.
    let mut c = Command::new("unshare");
    c.args(["-U", "-r", "sh", "-c", "echo 1 >/proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\""])
        .arg(dffmpeg().get_program())
        .args(["transcode", "--json", "--settle", "1", "--watch", "-O"])
        .arg(&out)
        .arg(&up)
        .args(ARGS);
    let mut done = 0;
    let (res, ev) = streaming(&mut c, |e, pid| {
        assert!(e["event"] != "job_failed", "{e}");
        if e["event"] == "job_done" {
            done += 1;
            if done == 1 {
                let new = up.join("new");
                std::fs::create_dir(&new).unwrap();
                std::fs::copy(&src, new.join("late.mp4")).unwrap();
            } else {
                // SAFETY: signalling our own child (sh and unshare exec'd it).
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
    });
    assert_eq!(res.status.code(), Some(0), "{}", String::from_utf8_lossy(&res.stderr));
    let warned = file_events(&ev, "warning");
    assert!(warned.iter().any(|w| w["message"].as_str().unwrap().contains("max_user_watches")), "{warned:?}");
    assert_eq!(frame_count(&out.join("new/late.mp4")), frame_count(&src));
    let _ = std::fs::remove_dir_all(&d);
}
