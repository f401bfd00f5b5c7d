//! The fold, driven by events as a batch sends them, time passed in.

use super::*;
use crate::transcode::events::NodeInfo;

fn meta() -> Meta {
    Meta {
        pid: 42,
        mode: "watch".into(),
        inventory: "/etc/dffmpeg/cluster.yaml".into(),
        watching: vec!["/srv/dffmpeg/upload".into()],
        output_dir: Some("/srv/dffmpeg/output".into()),
        page: Some("http://127.0.0.1:8080/".into()),
    }
}

fn batch_start(files: usize) -> Event {
    let node = |name: &str, arch: &str, slots| NodeInfo { name: name.into(), arch: arch.into(), slots };
    Event::BatchStart {
        cluster: "cluster.yaml: pc (4 slots), pi (2 slots)".into(),
        files,
        slots: 6,
        nodes: vec![node("pc", "x86_64", 4), node("pi", "aarch64", 2)],
    }
}

fn queued(input: &str) -> Event {
    Event::Queued { input: input.into() }
}

fn job_start(job: usize, input: &str, chunks: usize, frames: u64, resumed: (usize, u64)) -> Event {
    Event::JobStart {
        job,
        input: input.into(),
        output: input.replace("upload", "output"),
        chunks,
        frames,
        read_in_place: false,
        resumed_chunks: resumed.0,
        resumed_frames: resumed.1,
        job_dir: format!("/srv/dffmpeg/work/job{job}"),
    }
}

fn start(job: usize, chunk: usize, attempt: u64, node: &str, frames: u64) -> Event {
    Event::ChunkStart {
        file: String::new(),
        job,
        chunk,
        attempt,
        node: node.into(),
        frames,
        duplicate: false,
    }
}

fn progress(attempt: u64, frames: u64) -> Event {
    Event::ChunkProgress { attempt, frames }
}

fn done(job: usize, chunk: usize, attempt: u64, node: &str, frames: u64, seconds: f64) -> Event {
    Event::ChunkDone { job, chunk, attempt, node: node.into(), frames, seconds }
}

fn job_done(job: usize, output: &str, frames: u64) -> Event {
    Event::JobDone { job, output: output.into(), frames, seconds: 10.0, fps: frames as f64 / 10.0 }
}

fn job_failed(job: Option<usize>, input: &str, resumable: bool) -> Event {
    Event::JobFailed { job, input: input.into(), error: "chunk 3 failed 3 times".into(), resumable }
}

/// Fold `events`, all at time `now`; whether each was a file event.
fn fold(m: &mut Model, now: f64, events: &[Event]) -> Vec<bool> {
    events.iter().map(|e| m.apply(e, now)).collect()
}

#[test]
fn a_file_goes_from_queued_to_done_with_its_nodes() {
    let mut m = Model::new(meta(), 1000.0);
    let v = m.view(1000.0);
    assert_eq!((v.meta.pid, v.cluster.as_str(), v.nodes.len()), (42, "", 0), "before any file");
    let file_events = fold(&mut m, 1001.0, &[queued("/up/a.mp4"), batch_start(0), queued("/up/b.mp4")]);
    assert_eq!(file_events, [true, true, true]);
    let v = m.view(1001.0);
    assert_eq!(v.counts.files, None, "a watched folder has no total");
    assert_eq!((v.counts.queued, v.counts.running), (2, 0));
    assert_eq!(
        v.nodes.iter().map(|n| (n.name.as_str(), n.slots, n.state)).collect::<Vec<_>>(),
        [("pc", 4, NodeState::Up), ("pi", 2, NodeState::Up)]
    );
    // Planned: the canonical path leaves the queue in its place.
    m.apply(&job_start(0, "/real/up/a.mp4", 4, 400, (0, 0)), 1002.0);
    let v = m.view(1002.0);
    let q: Vec<_> = v.queued.iter().map(|q| (q.input.as_str(), q.chunks)).collect();
    assert_eq!(q, [("/real/up/a.mp4", Some(4)), ("/up/b.mp4", None)], "planned, then still being checked");
    assert!(v.running.is_empty());
    let chunk_events = fold(&mut m, 1004.0, &[start(0, 0, 1, "pc", 100), start(0, 1, 2, "pi", 100)]);
    assert_eq!(chunk_events, [false, false]);
    fold(&mut m, 1006.0, &[progress(1, 60), progress(2, 20), progress(2, 10)]);
    let v = m.view(1006.0);
    assert_eq!((v.counts.queued, v.counts.running), (1, 1));
    let a = &v.running[0];
    assert_eq!((a.stage.as_str(), a.chunks_done, a.frames_done), ("encoding", 0, 80));
    assert_eq!(a.fps, Some(40.0), "80 frames in the 2 s since its first chunk");
    assert_eq!(a.eta_seconds, Some(8.0));
    assert_eq!(a.job_dir, "/srv/dffmpeg/work/job0");
    let by_node: Vec<_> = a.nodes.iter().map(|n| (n.node.as_str(), n.running, n.done)).collect();
    assert_eq!(by_node, [("pc", 1, 0), ("pi", 1, 0)]);
    assert_eq!(v.nodes.iter().map(|n| n.running).collect::<Vec<_>>(), [1, 1]);
    fold(&mut m, 1008.0, &[done(0, 0, 1, "pc", 100, 4.0), start(0, 2, 3, "pc", 100)]);
    let v = m.view(1008.0);
    let a = &v.running[0];
    assert_eq!((a.chunks_done, a.frames_done), (1, 120));
    let by_node: Vec<_> = a.nodes.iter().map(|n| (n.node.as_str(), n.running, n.done)).collect();
    assert_eq!(by_node, [("pc", 1, 1), ("pi", 1, 0)]);
    let pc = &v.nodes[0];
    assert_eq!((pc.chunks, pc.frames, pc.fps, pc.last_chunk_at), (1, 100, Some(25.0), Some(1008.0)));
    fold(
        &mut m,
        1012.0,
        &[
            done(0, 1, 2, "pi", 100, 8.0),
            done(0, 2, 3, "pc", 100, 4.0),
            start(0, 3, 4, "pi", 100),
            done(0, 3, 4, "pi", 100, 4.0),
        ],
    );
    assert_eq!(m.view(1012.0).running[0].stage, "finishing", "side streams, then the merge");
    m.apply(&Event::Merging { job: 0, chunks: 4 }, 1013.0);
    assert_eq!(m.view(1013.0).running[0].stage, "merging");
    assert!(m.take_ops().is_empty());
    assert!(m.apply(&job_done(0, "/out/a.mp4", 400), 1014.0));
    let v = m.view(1014.0);
    assert!(v.running.is_empty());
    assert_eq!((v.counts.done, v.done[0].input.as_str(), v.done[0].at), (1, "/real/up/a.mp4", 1014.0));
    assert_eq!(m.take_ops(), [FailOp::Succeeded { input: "/real/up/a.mp4".into() }]);
    assert_eq!(v.nodes.iter().map(|n| n.running).collect::<Vec<_>>(), [0, 0]);
}

#[test]
fn failures_are_kept_with_their_reason_and_job_directory() {
    let mut m = Model::new(meta(), 0.0);
    fold(&mut m, 1.0, &[batch_start(3), queued("bad.mp4"), queued("/up/c.mp4"), queued("/up/d.mp4")]);
    // Refused before it was queued: no job directory.
    m.apply(&job_failed(None, "bad.mp4", false), 2.0);
    fold(
        &mut m,
        3.0,
        &[job_start(0, "/up/c.mp4", 2, 100, (0, 0)), job_start(1, "/up/d.mp4", 2, 100, (0, 0))],
    );
    let failed = Event::ChunkFailed {
        job: 0,
        chunk: 1,
        attempt: 1,
        node: "pi".into(),
        error: "ffmpeg exited with 1".into(),
        log: Some("/srv/dffmpeg/work/job0/logs/chunk_1.pi.attempt-1.log".into()),
    };
    fold(&mut m, 3.5, &[start(0, 1, 1, "pi", 50), failed]);
    m.apply(&job_failed(Some(0), "/up/c.mp4", true), 4.0);
    m.apply(&job_failed(Some(1), "/up/d.mp4", false), 4.0);
    let v = m.view(5.0);
    assert_eq!(v.counts.files, Some(3));
    assert_eq!((v.counts.failed, v.counts.queued, v.counts.running), (3, 0, 0));
    let failed: Vec<_> = v.failed.iter().map(|f| (f.input.as_str(), f.job_dir.as_deref(), f.at)).collect();
    assert_eq!(
        failed,
        [
            ("bad.mp4", None, 2.0),
            ("/up/c.mp4", Some("/srv/dffmpeg/work/job0"), 4.0),
            ("/up/d.mp4", None, 4.0),
        ]
    );
    assert_eq!(v.failed[1].reason, "chunk 3 failed 3 times");
    assert_eq!(v.failed[1].log.as_deref(), Some("/srv/dffmpeg/work/job0/logs/chunk_1.pi.attempt-1.log"));
    assert_eq!((v.failed[0].log.as_deref(), v.failed[2].log.as_deref()), (None, None));
    let ops = m.take_ops();
    assert_eq!(ops.len(), 3);
    assert!(matches!(&ops[1], FailOp::Failed(f) if f.input == "/up/c.mp4" && f.job_dir.is_some()));
    // Tried again in the same run (a later batch file of the same name): it
    // succeeds, and its failure goes.
    fold(&mut m, 6.0, &[queued("/up/c.mp4"), job_start(2, "/up/c.mp4", 1, 50, (1, 50))]);
    assert_eq!(m.view(6.0).running[0].stage, "finishing", "resumed whole: only the merge is left");
    m.apply(&job_done(2, "/out/c.mp4", 100), 7.0);
    let v = m.view(7.0);
    assert_eq!(v.failed.iter().map(|f| f.input.as_str()).collect::<Vec<_>>(), ["bad.mp4", "/up/d.mp4"]);
    assert_eq!(m.take_ops(), [FailOp::Succeeded { input: "/up/c.mp4".into() }]);
}

#[test]
fn nodes_lost_and_given_up_are_told_apart() {
    let mut m = Model::new(meta(), 0.0);
    fold(
        &mut m,
        1.0,
        &[batch_start(1), job_start(0, "/up/a.mp4", 3, 300, (0, 0)), start(0, 0, 1, "pi", 100)],
    );
    let failed = Event::ChunkFailed {
        job: 0,
        chunk: 0,
        attempt: 1,
        node: "pi".into(),
        error: "ssh: gone".into(),
        log: None,
    };
    assert!(!m.apply(&failed, 2.0));
    let lost = Event::NodeDropped { node: "pi".into(), reason: "ssh: gone".into(), lost: true };
    assert!(m.apply(&lost, 2.0));
    let stalled = Event::NodeDropped { node: "pc".into(), reason: "stalled twice".into(), lost: false };
    m.apply(&stalled, 3.0);
    let v = m.view(3.0);
    let nodes: Vec<_> = v
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.state, n.reason.as_deref(), n.failures, n.running))
        .collect();
    assert_eq!(
        nodes,
        [
            ("pc", NodeState::GivenUp, Some("stalled twice"), 0, 0),
            ("pi", NodeState::Lost, Some("ssh: gone"), 1, 0),
        ]
    );
    assert_eq!(NodeState::GivenUp.word(), "given up");
    assert_eq!(serde_json::to_value(NodeState::GivenUp).unwrap(), "given_up");
    // A node the batch did not announce still shows up.
    m.apply(&start(0, 1, 2, "nuc", 100), 4.0);
    assert_eq!(m.view(4.0).nodes[2].name, "nuc");
}

#[test]
fn duplicates_count_once_for_the_file_and_twice_for_throughput() {
    let mut m = Model::new(meta(), 0.0);
    fold(&mut m, 0.0, &[batch_start(1), job_start(0, "/up/a.mp4", 1, 100, (0, 0))]);
    fold(&mut m, 1.0, &[start(0, 0, 1, "pi", 100), start(0, 0, 2, "pc", 100)]);
    fold(&mut m, 5.0, &[progress(1, 30), progress(2, 90)]);
    assert_eq!(m.view(5.0).running[0].frames_done, 90, "the furthest attempt of the chunk");
    fold(&mut m, 6.0, &[done(0, 0, 2, "pc", 100, 5.0)]);
    m.apply(&Event::ChunkCancelled { job: 0, chunk: 0, attempt: 1, node: "pi".into() }, 6.0);
    m.tick(15.0);
    let v = m.view(15.0);
    assert_eq!(v.running[0].frames_done, 100);
    let s = &v.history.samples[0];
    assert_eq!((s.fps["pc"], s.fps["pi"]), (round1(100.0 / 15.0), 2.0));
    assert_eq!((s.queued, s.running), (0, 1));
    assert_eq!(v.nodes[0].throughput, Some(round1(100.0 / 15.0)));
}

#[test]
fn the_history_covers_the_last_hour_one_sample_per_period() {
    let mut m = Model::new(meta(), 0.0);
    fold(&mut m, 0.0, &[batch_start(0), queued("/up/a.mp4")]);
    assert!(!m.tick(10.0), "not due yet");
    assert!(m.view(10.0).history.samples.is_empty());
    let mut t = 0.0;
    for i in 0..400u64 {
        t = (i + 1) as f64 * HISTORY_EVERY;
        m.apply(&start(0, 0, i, "pc", 10), t - 1.0);
        m.apply(&progress(i, 30), t - 1.0);
        m.apply(&Event::ChunkCancelled { job: 0, chunk: 0, attempt: i, node: "pc".into() }, t - 1.0);
        assert_eq!(m.tick(t), i == 0, "the same sample again is nothing new");
    }
    let h = m.view(t).history;
    assert_eq!(h.every, HISTORY_EVERY);
    assert_eq!(h.samples.len(), 241, "an hour of samples and the one at its start");
    assert!(t - h.samples[0].at <= HISTORY_SPAN);
    assert!(h.samples.iter().all(|s| s.fps["pc"] == 2.0 && s.fps["pi"] == 0.0 && s.queued == 1), "{h:?}");
    // A view of all that stays small.
    let json = serde_json::to_vec(&m.view(t)).unwrap();
    assert!(json.len() < 64 << 10, "{} bytes", json.len());
}

#[test]
fn the_lists_are_bounded_the_counts_whole() {
    let mut m = Model::new(meta(), 0.0);
    m.apply(&batch_start(1000), 0.0);
    for i in 0..1000 {
        m.apply(&queued(&format!("/up/{i}.mp4")), 1.0);
    }
    for i in 0..300 {
        let skip = Event::JobSkipped {
            input: format!("/up/{i}.mp4"),
            output: String::new(),
            reason: "exists".into(),
        };
        m.apply(&skip, 2.0);
    }
    for i in 0..20 {
        m.apply(&Event::Warning { message: format!("w{i}") }, 3.0);
    }
    let v = m.view(3.0);
    assert_eq!((v.counts.queued, v.queued.len()), (700, 100));
    assert_eq!(v.queued[0].input, "/up/300.mp4", "in order");
    assert_eq!((v.counts.skipped, v.skipped.len()), (300, 50));
    assert_eq!(v.skipped.last().unwrap().input, "/up/299.mp4", "the latest kept");
    assert_eq!(v.warnings.len(), 20);
    m.apply(
        &Event::BatchDone {
            seconds: 1.0,
            frames: 0,
            files: Vec::new(),
            nodes: Vec::new(),
            controller_processes: 0,
        },
        4.0,
    );
    assert!(m.view(4.0).finished);
}

#[test]
fn a_status_file_reads_back_and_old_or_partial_ones_still_read() {
    let mut m = Model::new(meta(), 0.0);
    fold(&mut m, 1.0, &[batch_start(1), job_start(0, "/up/a.mp4", 2, 100, (0, 0)), start(0, 0, 1, "pc", 50)]);
    m.tick(20.0);
    let v = m.view(20.0);
    let back: StatusFile = serde_json::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(back, v);
    let partial: StatusFile =
        serde_json::from_str(r#"{"pid": 7, "mode": "batch", "nodes": [{"name": "x"}]}"#).unwrap();
    assert_eq!((partial.meta.pid, partial.nodes[0].state), (7, NodeState::Up));
}

#[test]
fn long_reasons_are_cut_on_a_character_boundary() {
    let mut m = Model::new(meta(), 0.0);
    let long = "é".repeat(5000);
    m.apply(
        &Event::JobFailed { job: None, input: "/up/a.mp4".into(), error: long.clone(), resumable: false },
        1.0,
    );
    m.apply(&Event::Warning { message: long }, 1.0);
    let v = m.view(1.0);
    assert!(v.failed[0].reason.len() <= 2004 && v.failed[0].reason.ends_with('…'));
    assert!(v.warnings[0].message.starts_with("éé"));
    assert_eq!(clip("short"), "short");
}

#[test]
fn an_idle_history_is_nothing_new_until_something_moves() {
    let mut m = Model::new(meta(), 0.0);
    m.apply(&batch_start(0), 0.0);
    assert!(m.tick(15.0), "the first sample");
    assert!(!m.tick(30.0) && !m.tick(45.0), "idle");
    m.apply(&queued("/up/a.mp4"), 50.0);
    assert!(m.tick(60.0), "a file arrived");
    assert_eq!(m.view(60.0).history.samples.len(), 4, "every sample is kept");
}

#[test]
fn an_idle_pause_is_filled_in_not_sampled() {
    let mut m = Model::new(meta(), 0.0);
    fold(&mut m, 0.0, &[batch_start(0), queued("/up/a.mp4"), job_start(0, "/up/a.mp4", 1, 300, (0, 0))]);
    fold(&mut m, 1.0, &[start(0, 0, 1, "pc", 300), progress(1, 150)]);
    assert!(m.busy());
    assert!(m.tick(15.0));
    fold(&mut m, 20.0, &[done(0, 0, 1, "pc", 300, 19.0), job_done(0, "/out/a.mp4", 300)]);
    assert!(m.busy(), "frames not yet sampled");
    assert!(m.tick(30.0));
    assert!(!m.busy(), "idle: the sink stops asking for samples");
    // An hour later, the page shows the pause as nothing encoded.
    let h = m.view(3630.0).history;
    let at: Vec<f64> = h.samples.iter().map(|s| s.at).collect();
    assert_eq!(at, [15.0, 30.0, 45.0, 3630.0], "the samples of the hour (and one before it), then the pause");
    assert!(h.samples[2..].iter().all(|s| s.fps["pc"] == 0.0 && s.queued == 0 && s.running == 0), "{h:?}");
    // A file comes: the next sample fills the pause in.
    fold(&mut m, 3700.0, &[queued("/up/b.mp4")]);
    assert!(m.tick(3702.0));
    let at: Vec<f64> = m.view(3702.0).history.samples.iter().map(|s| s.at).collect();
    assert_eq!(
        at,
        [3687.0, 3702.0],
        "the pause up to just before, then this sample; the rest is over an hour old"
    );
}
