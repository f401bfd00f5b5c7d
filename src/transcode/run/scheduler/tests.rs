//! The scheduler's rules, one test each, time passed in.

use super::*;

/// `n` nodes of one slot and one CPU each, speeds remembered as equal (so
/// that no probing gets in the way of what a test is about).
fn nodes(n: usize) -> Vec<NodeSpec> {
    vec![known(1, 1.0, None); n]
}

fn known(slots: usize, relative: f64, slot_rate: Option<f64>) -> NodeSpec {
    NodeSpec { slots, capacity: slots as f64, known: Some(KnownSpeed { slot_rate, relative, slots }) }
}

fn unknown(slots: usize) -> NodeSpec {
    NodeSpec { slots, capacity: slots as f64, known: None }
}

fn at(t0: Instant, secs: f64) -> Instant {
    t0 + Duration::from_secs_f64(secs)
}

fn run(n: &Next) -> &Assignment {
    match n {
        Next::Run(a) => a,
        other => panic!("expected work, got {other:?}"),
    }
}

fn one_job(frames: &[u64], specs: &[NodeSpec]) -> Scheduler {
    let mut s = Scheduler::new(specs);
    s.add_job(frames, &vec![false; frames.len()], 1.0, &[]);
    s.close();
    s
}

#[test]
fn longest_first_and_fast_nodes_take_more() {
    let t0 = Instant::now();
    let mut s = one_job(&[10, 30, 20, 5], &nodes(2));
    let a = run(&s.next(0, t0)).clone();
    assert_eq!(a.chunk, 1);
    let b = run(&s.next(1, t0)).clone();
    assert_eq!(b.chunk, 2);
    // Node 0 does 10 frames/s, node 1 only 1.
    s.progress(b.attempt, 3, at(t0, 3.0));
    s.succeeded(a.attempt, at(t0, 3.0), None);
    let c = run(&s.next(0, at(t0, 3.0))).clone();
    assert_eq!(c.chunk, 0);
    s.succeeded(c.attempt, at(t0, 4.0), None);
    let d = run(&s.next(0, at(t0, 4.0))).clone();
    assert_eq!(d.chunk, 3);
    s.succeeded(d.attempt, at(t0, 4.5), None);
    // Queue empty: node 0 would finish chunk 2 (2 s) long before node 1
    // (25 s): it duplicates it.
    let e = run(&s.next(0, at(t0, 4.5))).clone();
    assert!(e.duplicate);
    assert_eq!(e.chunk, 2);
    // The duplicate wins; the original is to be stopped; the job is done.
    let won = s.succeeded(e.attempt, at(t0, 6.5), None);
    assert_eq!(won, Success { won: true, stop: vec![b.attempt], job_done: Some(0) });
    s.cancelled(b.attempt, at(t0, 6.5));
    assert_eq!(s.next(1, at(t0, 6.5)), Next::Done);
    assert!(s.finished());
}

#[test]
fn a_slow_node_does_not_duplicate_a_fast_nodes_slow_start() {
    let t0 = Instant::now();
    let specs = [known(1, 1.0, None), known(1, 0.1, None)];
    let mut s = one_job(&[10, 100, 100], &specs);
    assert_eq!(run(&s.next(0, t0)).chunk, 1);
    let small = run(&s.next(1, t0)).clone();
    assert_eq!(small.chunk, 0, "the slow node gets the short chunk");
    // Node 0 finishes in 2 s (50 frames/s) and takes the last chunk.
    s.succeeded(0, at(t0, 2.0), None);
    let last = run(&s.next(0, at(t0, 2.0))).clone();
    assert_eq!(last.chunk, 2);
    s.succeeded(small.attempt, at(t0, 2.5), None);
    // One second in, its encoder has shown 2 frames (a lookahead): no
    // measure yet; node 0's finished chunk is. So the slow node (25 s for
    // the chunk) does not duplicate it.
    s.progress(last.attempt, 2, at(t0, 3.0));
    assert_eq!(s.next(1, at(t0, 3.0)), Next::Wait);
}

#[test]
fn a_slow_slot_takes_only_what_it_finishes_in_time() {
    let t0 = Instant::now();
    // Guided sizes; one node 4 times as fast as the other.
    let specs = [known(1, 4.0, None), known(1, 1.0, None)];
    let mut s = one_job(&[400, 200, 100, 50, 40], &specs);
    // The slow node asks first: the long chunks are the fast node's
    // (400 frames: 400 s here, 100 s there), not the 50 at the end.
    let slow = run(&s.next(1, t0)).clone();
    assert_eq!(slow.chunk, 2, "the largest chunk it finishes before the fast node would");
    let fast = run(&s.next(0, t0)).clone();
    assert_eq!(fast.chunk, 0);
    // With nothing it can finish sooner, a slow slot waits.
    let mut s = one_job(&[100, 100], &specs);
    let f = run(&s.next(0, t0)).clone();
    assert_eq!(f.chunk, 0);
    assert_eq!(s.next(1, t0), Next::Wait, "the fast node finishes both by 50 s, the slow one 100 s");
    // The fast node turns out stuck (no frame after 120 s, 25 expected;
    // counted as 120 s late): the slow node takes the queued chunk.
    assert_eq!(s.next(1, at(t0, 60.0)), Next::Wait);
    assert_eq!(run(&s.next(1, at(t0, 120.0))).chunk, 1);
}

#[test]
fn an_unknown_node_measures_on_the_shortest_chunk_first() {
    let t0 = Instant::now();
    // Three nodes that all look the same (2 cores), none remembered.
    let mut s = one_job(&[300, 200, 100, 50, 40], &[unknown(2), unknown(2), unknown(2)]);
    let a = run(&s.next(0, t0)).clone();
    let b = run(&s.next(1, t0)).clone();
    let c = run(&s.next(2, t0)).clone();
    assert_eq!((a.chunk, b.chunk, c.chunk), (4, 3, 2), "the shortest chunks, one per node");
    assert_eq!(s.next(0, t0), Next::Wait, "one attempt at a time until measured");
    // Node 0 is fast (40 frames in 1 s, a whole CPU); it may open its
    // second slot and takes the long chunks.
    s.succeeded(a.attempt, at(t0, 1.0), Some(Usage { cpu_seconds: 0.95, wall_seconds: 1.0 }));
    assert_eq!(s.active_slots(0), 2);
    assert_eq!(run(&s.next(0, at(t0, 1.0))).chunk, 0);
    assert_eq!(run(&s.next(0, at(t0, 1.0))).chunk, 1);
    // Node 2 shows 10 frames/s: it is slow, and the queue is empty now.
    s.progress(c.attempt, 35, at(t0, 3.5));
    assert_eq!(s.next(2, at(t0, 3.5)), Next::Wait);
}

#[test]
fn slots_follow_the_cpu_a_node_really_has() {
    let t0 = Instant::now();
    // Node 1 shows 2 cores but has a quarter of one (a hidden quota).
    let mut s = one_job(&[50; 8], &[unknown(2), unknown(2)]);
    let a = run(&s.next(0, t0)).clone();
    let b = run(&s.next(1, t0)).clone();
    s.succeeded(a.attempt, at(t0, 2.0), Some(Usage { cpu_seconds: 1.9, wall_seconds: 2.0 }));
    s.succeeded(b.attempt, at(t0, 8.0), Some(Usage { cpu_seconds: 2.0, wall_seconds: 8.0 }));
    assert_eq!(s.active_slots(1), 1, "a quarter CPU: one slot");
    assert_eq!(s.active_slots(0), 2, "a whole CPU per slot: it may try a second");
    // Node 0's two slots then each get half a CPU: one whole CPU, one slot.
    let c = run(&s.next(0, at(t0, 8.0))).clone();
    let d = run(&s.next(0, at(t0, 8.0))).clone();
    s.succeeded(c.attempt, at(t0, 12.0), Some(Usage { cpu_seconds: 2.0, wall_seconds: 4.0 }));
    assert_eq!(s.active_slots(0), 1);
    // 50 frames in 4 s with half a CPU: alone, a slot does them in 2 s.
    assert!((s.slot_rate(0) - 25.0).abs() < 0.1, "{}", s.slot_rate(0));
    s.succeeded(d.attempt, at(t0, 12.0), Some(Usage { cpu_seconds: 2.0, wall_seconds: 4.0 }));
    assert_eq!(s.active_slots(0), 1);
    assert!((s.slot_rate(0) - 25.0).abs() < 0.1, "{}", s.slot_rate(0));
    // A 4-core Pi with no quota grows to its 4 slots.
    let mut s = one_job(&[50; 20], &[unknown(4), unknown(1)]);
    let mut t = 0.0;
    for want in [2, 3, 4, 4] {
        let mut attempts = Vec::new();
        while let Next::Run(a) = s.next(0, at(t0, t)) {
            attempts.push(a.attempt);
        }
        t += 4.0;
        for a in attempts {
            s.succeeded(a, at(t0, t), Some(Usage { cpu_seconds: 3.9, wall_seconds: 4.0 }));
        }
        assert_eq!(s.active_slots(0), want);
    }
}

#[test]
fn a_remembered_node_starts_informed() {
    let t0 = Instant::now();
    // Node 1 ran these settings before at 5 frames/s with one slot: no
    // probing, and the list schedule leaves it the short chunk only.
    let specs = [known(2, 1.0, Some(30.0)), known(2, 0.2, Some(5.0))];
    let mut s = one_job(&[300, 300, 40], &specs);
    assert_eq!(run(&s.next(1, t0)).chunk, 2);
    assert_eq!(s.next(1, t0), Next::Wait, "remembered: one slot (its 2 shown are 1 CPU)");
    assert_eq!(run(&s.next(0, t0)).chunk, 0);
    assert_eq!(run(&s.next(0, t0)).chunk, 1);
}

#[test]
fn a_single_node_does_not_probe() {
    let t0 = Instant::now();
    let mut s = one_job(&[100, 50, 10], &[unknown(2)]);
    assert_eq!(run(&s.next(0, t0)).chunk, 0);
    assert_eq!(run(&s.next(0, t0)).chunk, 1);
}

#[test]
fn the_watchdog_gives_a_frozen_attempt_to_another_node() {
    let t0 = Instant::now();
    let mut s = one_job(&[300, 300], &[known(1, 1.0, Some(30.0)), known(1, 1.0, Some(30.0))]);
    let a = run(&s.next(0, t0)).clone();
    let b = run(&s.next(1, t0)).clone();
    s.progress(a.attempt, 90, at(t0, 3.0));
    s.progress(b.attempt, 90, at(t0, 3.0));
    // Node 1 freezes at 3 s. 60 frames at 30/s is 2 s: 4 × that is under
    // the 15 s minimum, so it stalls at 18 s.
    s.progress(a.attempt, 270, at(t0, 9.0));
    assert!(s.stalled(at(t0, 17.0)).is_empty());
    let next = s.next_check(at(t0, 17.0)).unwrap();
    assert!(next > at(t0, 17.5) && next <= at(t0, 18.1), "{:?}", next - t0);
    let stalls = s.stalled(at(t0, 18.5));
    assert_eq!(stalls.len(), 1);
    assert_eq!((stalls[0].attempt, stalls[0].node, stalls[0].node_dropped), (b.attempt, 1, false));
    // Node 1 is suspect: no work for it; node 0 takes the chunk again.
    s.succeeded(a.attempt, at(t0, 19.0), None);
    assert_eq!(s.next(1, at(t0, 19.0)), Next::Wait);
    let c = run(&s.next(0, at(t0, 19.0))).clone();
    assert_eq!(c.chunk, b.chunk);
    // A late result of the abandoned attempt counts for nothing.
    assert_eq!(s.succeeded(b.attempt, at(t0, 20.0), None), Success::default());
    assert_eq!(s.succeeded(c.attempt, at(t0, 29.0), None).job_done, Some(0));
}

#[test]
fn a_node_stalling_twice_leaves() {
    let t0 = Instant::now();
    let mut s = one_job(&[30, 30, 30], &[known(1, 1.0, Some(30.0)), known(1, 1.0, Some(30.0))]);
    let a = run(&s.next(1, t0)).clone();
    assert_eq!(s.stalled(at(t0, 16.0)).len(), 1);
    let _ = a;
    let b = run(&s.next(1, at(t0, 50.0))).clone();
    let st = s.stalled(at(t0, 66.0));
    assert_eq!(st.len(), 1);
    assert!(st[0].node_dropped);
    assert!(s.is_dropped(1));
    assert_eq!(s.next(1, at(t0, 70.0)), Next::Done);
    let _ = b;
}

#[test]
fn chunks_of_jobs_queue_in_file_order_and_each_job_completes() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(&nodes(1));
    let j0 = s.add_job(&[10, 20], &[false, false], 1.0, &[]);
    let j1 = s.add_job(&[50], &[false], 1.0, &[]);
    s.close();
    let order: Vec<(usize, usize)> = (0..3)
        .map(|i| {
            let a = run(&s.next(0, at(t0, i as f64))).clone();
            let done = s.succeeded(a.attempt, at(t0, i as f64 + 0.5), None);
            if (a.job, a.chunk) == (0, 0) {
                assert_eq!(done.job_done, Some(j0));
            }
            if a.job == 1 {
                assert_eq!(done.job_done, Some(j1));
            }
            (a.job, a.chunk)
        })
        .collect();
    assert_eq!(order, [(0, 1), (0, 0), (1, 0)], "the first file first, each longest first");
    assert!(s.finished());
}

#[test]
fn an_open_batch_waits_for_more_jobs() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(&nodes(1));
    assert_eq!(s.next(0, t0), Next::Wait, "jobs may still come");
    s.add_job(&[10], &[false], 1.0, &[]);
    let a = run(&s.next(0, t0)).clone();
    s.succeeded(a.attempt, t0, None);
    assert_eq!(s.next(0, t0), Next::Wait);
    s.close();
    assert_eq!(s.next(0, t0), Next::Done);
}

#[test]
fn a_failed_chunk_is_retried_on_another_node() {
    let now = Instant::now();
    let mut s = one_job(&[10], &nodes(2));
    let a = run(&s.next(0, now)).clone();
    s.failed(a.attempt, Failure::Chunk, now);
    // Not again on node 0 ...
    assert_eq!(s.next(0, now), Next::Wait);
    // ... but on node 1, marked as a retry.
    let b = run(&s.next(1, now)).clone();
    assert!(b.retry);
    s.succeeded(b.attempt, now, None);
    assert_eq!(s.next(0, now), Next::Done);
}

#[test]
fn a_lost_node_leaves_and_its_chunk_goes_back() {
    let now = Instant::now();
    let mut s = one_job(&[10, 10], &nodes(2));
    let a = run(&s.next(0, now)).clone();
    let after = s.failed(a.attempt, Failure::NodeLost, now);
    assert!(after.node_dropped);
    assert!(s.is_dropped(0));
    assert_eq!(s.next(0, now), Next::Done);
    let b = run(&s.next(1, now)).clone();
    assert_eq!(b.chunk, a.chunk);
}

#[test]
fn every_job_fails_when_no_node_is_left() {
    let now = Instant::now();
    let mut s = Scheduler::new(&nodes(1));
    s.add_job(&[10], &[false], 1.0, &[]);
    s.add_job(&[10], &[false], 1.0, &[]);
    s.close();
    let a = run(&s.next(0, now)).clone();
    let after = s.failed(a.attempt, Failure::NodeLost, now);
    assert_eq!(after.failed_jobs, [(0, GiveUp::NoNode), (1, GiveUp::NoNode)]);
    assert_eq!(GiveUp::NoNode.to_string(), "no node is left");
    assert!(s.finished());
}

#[test]
fn a_chunk_failing_everywhere_fails_its_job_only() {
    let now = Instant::now();
    let mut s = Scheduler::new(&[known(2, 1.0, None), known(2, 1.0, None)]);
    s.add_job(&[10], &[false], 1.0, &[]);
    s.add_job(&[5], &[false], 1.0, &[]);
    s.close();
    let a = run(&s.next(0, now)).clone();
    let b = run(&s.next(1, now)).clone();
    assert_eq!((a.job, b.job), (0, 1));
    s.failed(a.attempt, Failure::Chunk, now);
    let c = run(&s.next(1, now)).clone();
    assert_eq!(c.job, 0);
    let after = s.failed(c.attempt, Failure::Chunk, now);
    assert_eq!(after.failed_jobs.len(), 1);
    assert_eq!(after.failed_jobs[0], (0, GiveUp::EveryNode { chunk: 0 }), "{after:?}");
    assert_eq!(after.failed_jobs[0].1.to_string(), "chunk 0 failed on every node still in");
    // The other job goes on.
    assert_eq!(s.succeeded(b.attempt, now, None).job_done, Some(1));
    assert!(s.finished());
}

#[test]
fn resumed_chunks_are_not_queued() {
    let now = Instant::now();
    let mut s = Scheduler::new(&nodes(1));
    s.add_job(&[10, 20], &[false, true], 1.0, &[]);
    s.close();
    let a = run(&s.next(0, now)).clone();
    assert_eq!(a.chunk, 0);
    assert_eq!(s.succeeded(a.attempt, now, None).job_done, Some(0));
    assert_eq!(s.next(0, now), Next::Done);
}

#[test]
fn an_abandoned_job_stops_its_attempts() {
    let now = Instant::now();
    let mut s = Scheduler::new(&nodes(2));
    s.add_job(&[10, 10, 10], &[false; 3], 1.0, &[]);
    s.close();
    let a = run(&s.next(0, now)).clone();
    let b = run(&s.next(1, now)).clone();
    let mut stop = s.abandon_job(0);
    stop.sort();
    assert_eq!(stop, [a.attempt, b.attempt]);
    assert!(s.finished());
    s.cancelled(a.attempt, now);
    assert_eq!(s.next(0, now), Next::Done);
}

#[test]
fn lying_progress_is_capped_and_never_remembered() {
    // A node prints frame=10^15 and then fails: the count stops at the
    // chunk's frames, and nothing of it is learned.
    let t0 = Instant::now();
    let mut s = one_job(&[100, 100], &[unknown(1), unknown(1)]);
    let a = run(&s.next(0, t0)).clone();
    s.progress(a.attempt, 1_000_000_000_000_000, at(t0, 4.0));
    let rate = s.slot_rate(0);
    assert!(rate <= 100.0 / 4.0 + 1e-9, "rate {rate}");
    s.failed(a.attempt, Failure::Chunk, at(t0, 5.0));
    assert_eq!(s.learned(), vec![None, None]);
    // A verified chunk's rate is learned, finite.
    let b = run(&s.next(1, at(t0, 5.0))).clone();
    s.succeeded(b.attempt, at(t0, 15.0), Some(Usage { cpu_seconds: f64::INFINITY, wall_seconds: 10.0 }));
    let learned = s.learned();
    assert_eq!(learned[0], None);
    assert!(learned[1].is_some_and(|(r, slots)| r.is_finite() && r > 0.0 && slots == 1), "{learned:?}");
}

#[test]
fn an_attempt_that_never_ends_is_given_up() {
    // Frames keep coming (so the stall rule never fires), but the attempt
    // runs far past its chunk's expected time: it is abandoned.
    let t0 = Instant::now();
    let mut s = one_job(&[300, 300], &[known(1, 1.0, Some(30.0)), known(1, 1.0, Some(30.0))]);
    let a = run(&s.next(0, t0)).clone();
    for i in 1..=120 {
        s.progress(a.attempt, i * 2, at(t0, i as f64));
        assert_eq!(s.stalled(at(t0, i as f64)), vec![], "at {i} s");
    }
    // 300 frames at 30/s: 10 s expected; the limit is 10 × that, at least 120 s.
    assert_eq!(s.next_check(at(t0, 120.0)), Some(at(t0, 120.0)));
    let st = s.stalled(at(t0, 121.0));
    assert_eq!(st.len(), 1);
    assert!(st[0].overtime && st[0].seconds >= 120.0, "{st:?}");
}
