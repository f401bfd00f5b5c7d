//! `engine: slurm` on a real Slurm cluster (Debian's slurmctld, slurmd and
//! munge; harness in `common/slurm.rs`): a frame-exact transcode over two
//! nodes, Ctrl-C cancelling only dffmpeg's jobs, a node dying mid-job, and
//! the controller killed and resumed while its steps still run.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::media::*;
use crate::common::run::*;
use crate::common::slurm::SlurmLab;

/// `engine: slurm` on the lab's partition, `shared` as the shared dir.
fn write_inventory(dir: &Path, shared: &Path) -> PathBuf {
    let y = format!(
        "cluster:\n  engine: slurm\n  partition: {}\n  shared_dir: \"{}\"\nnodes:\n  here: {{ host: local, roles: [controller] }}\n",
        crate::common::slurm::PARTITION,
        shared.display()
    );
    write(dir, "inventory.yaml", &y)
}

/// `dffmpeg transcode -I INVENTORY --json -o OUT INPUT ARGS` against the lab.
fn transcode(s: &SlurmLab, inv: &Path, out: &Path, input: &Path, extra: &[&str], args: &[&str]) -> Command {
    let mut c = dffmpeg();
    s.env(&mut c).args(["transcode", "-I"]).arg(inv).arg("--json").args(extra).arg("-o").arg(out);
    c.arg(input).args(args);
    c
}

/// dffmpeg's jobs Slurm still knows.
fn dffmpeg_jobs(s: &SlurmLab) -> Vec<(u32, String, String)> {
    s.squeue().into_iter().filter(|j| j.1.starts_with("dffmpeg-")).collect()
}

const ARGS: &[&str] = &["-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-c:a", "aac"];

#[test]
fn two_slurm_nodes_transcode_frame_exact() {
    let d = workdir("sl-two");
    let s = SlurmLab::new("slx", 121, &[("a", 1), ("b", 1)]);
    // A space and a quote in the shared directory's name: every path goes
    // to srun as one word.
    let shared = d.join("share dir 'x'");
    s.share(&shared);
    let inv = write_inventory(&d, &shared);
    // A job of someone else's, held in the queue: dffmpeg leaves it alone.
    let held = s.client("sbatch").args(["--hold", "--job-name=other", "--wrap=true"]).output().unwrap();
    assert!(held.status.success(), "{}", String::from_utf8_lossy(&held.stderr));
    // The source outside the shared directory: split into it.
    let input = sample(&d, "in $(touch pwned) ü.mp4", 12);
    let out = d.join("out.mkv");
    // A dry run asks Slurm and submits nothing.
    let before = s.finished_jobs().len();
    let dry = ok(run(&mut transcode(&s, &inv, &out, &input, &["--dry-run"], ARGS)), "dry run");
    let plan: serde_json::Value = serde_json::from_str(&dry).unwrap();
    let names: Vec<&str> =
        plan["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"], "{plan}");
    assert_eq!(s.finished_jobs().len(), before);
    assert!(s.squeue().iter().all(|j| j.1 == "other"), "{:?}", s.squeue());
    let ev = ok_events(run(&mut transcode(&s, &inv, &out, &input, &["--chunk", "1"], ARGS)));
    let cluster = ev[0]["cluster"].as_str().unwrap();
    assert!(cluster.contains("Slurm partition video: a (1 slot), b (1 slot)"), "{cluster}");
    assert_eq!(nodes_with_chunks(&ev), ["a", "b"]);
    assert_same_video(&out, &input);
    // The source inside it: read in place by the nodes.
    let inside = shared.join("media $x; 'ü'.mp4");
    std::fs::copy(&input, &inside).unwrap();
    let out2 = shared.join("out 2.mp4");
    let ev = ok_events(run(&mut transcode(&s, &inv, &out2, &inside, &["--chunk", "1"], ARGS)));
    assert_eq!(ev.iter().find(|e| e["event"] == "job_start").unwrap()["read_in_place"], true);
    assert_same_video(&out2, &input);
    // Every attempt was a Slurm job named after its job, chunk and attempt;
    // each chunk of both runs has a completed one (a losing duplicate at
    // the end is cancelled).
    let jobs = s.finished_jobs();
    let ours: Vec<_> = jobs.iter().filter(|j| j["Name"].starts_with("dffmpeg-out")).collect();
    // The in-place run's audio was a Slurm job too.
    let (sides, ours): (Vec<_>, Vec<_>) = ours.into_iter().partition(|j| j["Name"].ends_with("-side"));
    assert!(sides.len() == 1 && sides[0]["JobState"] == "COMPLETED", "{sides:?}");
    let mut chunks = BTreeSet::new();
    for j in &ours {
        let (chunk, attempt) = j["Name"].rsplit_once("-a").unwrap();
        let (_, index) = chunk.rsplit_once("-c").unwrap();
        assert!(index.parse::<u32>().is_ok() && attempt.parse::<u32>().is_ok(), "{j:?}");
        assert!(["COMPLETED", "CANCELLED"].contains(&j["JobState"].as_str()), "{j:?}");
        if j["JobState"] == "COMPLETED" {
            chunks.insert(chunk.to_string());
        }
    }
    assert_eq!(chunks.len(), 24, "{ours:?}");
    let on: BTreeSet<&str> = ours.iter().map(|j| j["NodeList"].as_str()).collect();
    assert_eq!(on, BTreeSet::from(["a", "b"]));
    assert!(dffmpeg_jobs(&s).is_empty());
    assert!(!shared.join("pwned").exists() && !d.join("pwned").exists(), "nothing executed");

    // Ctrl-C: dffmpeg cancels its own jobs, and only those.
    let out3 = d.join("out3.mp4");
    let slow = ["-c:v", "libx264", "-preset", "slow", "-c:a", "aac"];
    let mut stopped = false;
    let (res, _) = streaming(&mut transcode(&s, &inv, &out3, &input, &["--chunk", "2"], &slow), |e, pid| {
        if e["event"] == "chunk_done" && !stopped {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            stopped = true;
        }
    });
    assert_eq!(res.status.code(), Some(1), "{}", String::from_utf8_lossy(&res.stderr));
    assert!(dffmpeg_jobs(&s).is_empty(), "{:?}", s.squeue());
    assert!(s.squeue().iter().any(|j| j.1 == "other"), "the held job is still there");
    for h in s.lab().hosts() {
        assert!(h.pids_matching("ffmpeg").is_empty(), "ffmpeg left on {}", h.name);
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_slurm_node_dying_loses_its_chunk_to_the_other() {
    let d = workdir("sl-kill");
    let s = SlurmLab::new("slkil", 122, &[("a", 1), ("b", 1)]);
    let shared = d.join("shared");
    s.share(&shared);
    let inv = write_inventory(&d, &shared);
    // Chunks of seconds of work each, so that the node dies mid-encode;
    // enough of them that the other node is still busy when dffmpeg gives
    // up on the dead one (its watchdog: 15 s at least), else the chunk
    // would just be duplicated at the end.
    let input = sample(&shared, "in.mp4", 40);
    let out = shared.join("out.mp4");
    let a = s.lab().host("a").clone();
    let mut killed: Option<u64> = None;
    let mut some_done = false;
    let args = ["-c:v", "libx264", "-preset", "veryslow", "-c:a", "aac"];
    let (res, ev) = streaming(&mut transcode(&s, &inv, &out, &input, &["--chunk", "2"], &args), |e, _| {
        match e["event"].as_str() {
            Some("chunk_done") => some_done = true,
            // The node dies (slurmd, its step and the encoder) once its
            // encoder runs, after some chunk is in.
            Some("chunk_start") if e["node"] == "a" && some_done && killed.is_none() => {
                let t0 = std::time::Instant::now();
                while a.pids_matching("ffmpeg").is_empty() {
                    assert!(t0.elapsed().as_secs() < 30, "a's encoder never started");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                a.kill();
                killed = e["chunk"].as_u64();
            }
            _ => {}
        }
    });
    let chunk = killed.expect("a never took a second chunk");
    assert!(res.status.success(), "{}\n{}", String::from_utf8_lossy(&res.stderr), s.log());
    // The chunk a held was finished by b: taken from a when the watchdog
    // gave up on it (a is named for it), or — when b ran out of other
    // chunks first — duplicated at the end of the queue, b's copy winning.
    let done = ev.iter().find(|e| e["event"] == "chunk_done" && e["chunk"] == chunk).unwrap();
    assert_eq!(done["node"], "b", "{ev:?}");
    let failed = ev.iter().any(|e| e["event"] == "chunk_failed" && e["node"] == "a" && e["chunk"] == chunk);
    let duplicated = ev.iter().any(|e| {
        e["event"] == "chunk_start" && e["node"] == "b" && e["chunk"] == chunk && e["duplicate"] == true
    });
    assert!(failed || duplicated, "a's chunk was not taken over: {ev:?}");
    assert_same_video(&out, &input);
    assert!(s.lab().host("b").pids_matching("ffmpeg").is_empty());
    // Slurm has marked a down by now (or will soon): the next run leaves
    // it out from the start.
    let t0 = std::time::Instant::now();
    while !s.node_state("a").contains('*') && !s.node_state("a").starts_with("down") {
        assert!(t0.elapsed().as_secs() < 60, "Slurm never marked a down");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let out2 = shared.join("out2.mp4");
    let short = sample(&shared, "short.mp4", 2);
    let ev = ok_events(run(&mut transcode(&s, &inv, &out2, &short, &[], ARGS)));
    let left_out = ev
        .iter()
        .any(|e| e["event"] == "warning" && e["message"].as_str().unwrap().contains("Slurm node a is "));
    assert!(left_out, "{ev:?}");
    assert_eq!(nodes_with_chunks(&ev), ["b"]);
    assert_same_video(&out2, &short);
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

/// A `--json` dffmpeg whose stderr lines go to `on_stderr` as they come
/// (on another thread) and whose events go to `on_event`.
fn streaming_both(
    cmd: &mut Command,
    on_stderr: impl FnMut(&str) + Send + 'static,
    mut on_event: impl FnMut(&serde_json::Value),
) -> (std::process::ExitStatus, Vec<serde_json::Value>, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().unwrap();
    let mut on_stderr = on_stderr;
    let errors = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            on_stderr(&line);
            all += &line;
            all.push('\n');
        }
        all
    });
    let mut ev = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        if let Ok(e) = serde_json::from_str::<serde_json::Value>(&line) {
            on_event(&e);
            ev.push(e);
        }
    }
    let status = child.wait().expect("wait");
    (status, ev, errors.join().unwrap())
}

fn set_links(s: &SlurmLab, up: bool) {
    for h in s.lab().hosts() {
        let state = if up { "up" } else { "down" };
        let st = Command::new("ip").args(["-n", h.netns(), "link", "set", "eth0", state]).status().unwrap();
        assert!(st.success());
    }
}

/// dffmpeg is SIGKILLed while the nodes cannot be told (their links are
/// down), so its steps go on running. The next dffmpeg cancels them and
/// waits for them to end before it submits anything: no chunk runs twice;
/// the output is exact.
#[test]
fn a_killed_controller_resumes_without_running_a_chunk_twice() {
    let d = workdir("sl-res");
    let s = SlurmLab::new("slres", 123, &[("a", 1), ("b", 1)]);
    let shared = d.join("shared");
    s.share(&shared);
    let inv = write_inventory(&d, &shared);
    let input = sample(&shared, "in.mp4", 12);
    let out = shared.join("out.mp4");
    // Long chunks: each node's step runs for seconds.
    let args = ["-c:v", "libx264", "-preset", "slower", "-c:a", "aac"];
    let mut first = transcode(&s, &inv, &out, &input, &["--chunk", "6"], &args);
    let mut child = first.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut busy = BTreeSet::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        let e: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if e["event"] == "chunk_start" {
            busy.insert(e["node"].as_str().unwrap_or_default().to_string());
        }
        if busy.len() == 2 {
            break;
        }
    }
    // Both nodes' steps run their encoders.
    let t0 = std::time::Instant::now();
    while s.lab().hosts().iter().any(|h| h.pids_matching("ffmpeg").is_empty()) {
        assert!(t0.elapsed().as_secs() < 30, "the steps never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    set_links(&s, false);
    // SAFETY: killing our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let left = dffmpeg_jobs(&s);
    let steps: Vec<(crate::common::lab::Host, u32)> = s
        .lab()
        .hosts()
        .iter()
        .flat_map(|h| h.pids_matching("ffmpeg").into_iter().map(move |p| (h.clone(), p)))
        .collect();
    set_links(&s, true);
    assert!(!left.is_empty(), "Slurm lost the killed dffmpeg's jobs at once");
    assert!(!steps.is_empty(), "no step of the killed dffmpeg runs any more");
    let left_ids: BTreeSet<u32> = left.iter().map(|j| j.0).collect();

    let mut waited = false;
    let mut checked = false;
    let (status, ev, stderr) = streaming_both(
        &mut transcode(&s, &inv, &out, &input, &["--chunk", "6"], &args),
        |line| {
            if line.contains("left by an earlier dffmpeg that is gone") {
                println!("dffmpeg: {line}");
            }
        },
        |e| {
            if e["event"] == "warning"
                && e["message"].as_str().unwrap_or("").contains("earlier dffmpeg that is gone")
            {
                waited = true;
            }
            // The first frame of the new run: nothing of the old is left.
            if e["event"] == "progress" && !checked {
                checked = true;
                let still: Vec<_> =
                    dffmpeg_jobs(&s).into_iter().filter(|j| left_ids.contains(&j.0)).collect();
                assert!(still.is_empty(), "old jobs still known to Slurm: {still:?}");
                for (h, pid) in &steps {
                    let alive = h.pids_matching("ffmpeg").contains(pid);
                    assert!(!alive, "the old step's ffmpeg {pid} still runs on {}", h.name);
                }
            }
        },
    );
    assert!(status.success(), "{stderr}\n{}", s.log());
    assert!(checked, "the resumed run showed no progress");
    assert!(waited, "the resumed run did not name the jobs it cancelled: {ev:?}\n{stderr}");
    assert!(stderr.contains("waiting for them to end"), "{stderr}");
    // In the jobcomp records: every old job ended before any new one of its
    // chunk started (seconds: equal is fine).
    let jobs = s.finished_jobs();
    let id = |j: &crate::common::slurm::JobRecord| j["JobId"].parse::<u32>().unwrap();
    let chunk = |j: &crate::common::slurm::JobRecord| j["Name"].rsplit_once("-a").unwrap().0.to_string();
    let (old, new): (Vec<_>, Vec<_>) = jobs
        .iter()
        .filter(|j| j["Name"].starts_with("dffmpeg-out") && !j["Name"].ends_with("-side"))
        .partition(|j| id(j) <= *left_ids.last().unwrap());
    assert!(old.iter().any(|j| left_ids.contains(&id(j))), "the old jobs ended: {jobs:?}");
    for o in &old {
        for n in new.iter().filter(|n| chunk(n) == chunk(o)) {
            assert!(o["EndTime"] <= n["StartTime"], "ran at once:\n{o:?}\n{n:?}");
        }
    }
    assert_same_video(&out, &input);
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}
