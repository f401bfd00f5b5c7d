//! Scheduler decisions, free of I/O: a pull queue of chunks, longest first.
//! Each node's slots ask for work when they free up, so fast nodes simply
//! take more chunks. A slot takes the next chunk only if no other slot
//! would finish it sooner (a list schedule of the queue over every slot,
//! by each node's speed: measured frames per second, or its CPUs until it
//! has encoded something), so a slow node does not hold the last long
//! chunk while a fast one idles. Failed chunks go back to the queue for
//! another node; a node that keeps failing or is lost leaves the job; once
//! the queue is empty, an idle slot that would finish a running chunk
//! sooner duplicates it and the first verified result wins.

use std::collections::VecDeque;
use std::time::Instant;

/// How many times a chunk may fail before the job gives up on it.
pub const MAX_CHUNK_FAILURES: u32 = 3;
/// Consecutive failures after which a node leaves the job.
pub const MAX_NODE_FAILURES: u32 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub attempt: u64,
    pub chunk: usize,
    pub duplicate: bool,
    /// The chunk failed before (on some node).
    pub retry: bool,
}

#[derive(Debug, PartialEq)]
pub enum Next {
    Run(Assignment),
    /// Nothing for this node now; ask again when something changes.
    Wait,
    /// Every chunk is done.
    Finished,
    /// The job cannot finish; why.
    Failed(String),
}

#[derive(Debug)]
struct Running {
    attempt: u64,
    chunk: usize,
    node: usize,
    started: Instant,
    frames: u64,
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSpec {
    pub slots: usize,
    /// CPUs it offers (cores, or its CPU quota): its speed guess until it
    /// has encoded frames.
    pub capacity: f64,
}

#[derive(Debug, Default)]
struct NodeState {
    consecutive_failures: u32,
    dropped: bool,
    slots: usize,
    /// CPUs per slot.
    capacity: f64,
    /// Measured frames per second of one slot: its latest finished attempt
    /// (start-up included), or until there is one its running attempt's.
    rate: Option<f64>,
    rate_from_done: bool,
}

/// Seconds an attempt must have run before its own frame rate counts:
/// encoders with a lookahead (x264: 40 frames) show their first frames late.
const MIN_RATE_SECONDS: f64 = 3.0;

#[derive(Debug)]
pub struct Scheduler {
    frames: Vec<u64>,
    pending: VecDeque<usize>,
    running: Vec<Running>,
    done: Vec<bool>,
    failures: Vec<u32>,
    failed_on: Vec<Vec<usize>>,
    nodes: Vec<NodeState>,
    next_attempt: u64,
    failed: Option<String>,
}

/// What the driver must do after a failure.
#[derive(Debug, PartialEq, Default)]
pub struct AfterFailure {
    /// The node just left the job.
    pub node_dropped: bool,
}

impl Scheduler {
    /// `frames[i]`: chunk i's size; `done[i]`: already verified (resume).
    pub fn new(frames: Vec<u64>, done: Vec<bool>, nodes: &[NodeSpec]) -> Scheduler {
        let mut order: Vec<usize> = (0..frames.len()).filter(|&i| !done[i]).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(frames[i]), i));
        Scheduler {
            failures: vec![0; frames.len()],
            failed_on: vec![Vec::new(); frames.len()],
            frames,
            pending: order.into(),
            running: Vec::new(),
            done,
            nodes: nodes
                .iter()
                .map(|n| NodeState {
                    slots: n.slots.max(1),
                    capacity: n.capacity.max(0.01) / n.slots.max(1) as f64,
                    ..NodeState::default()
                })
                .collect(),
            next_attempt: 0,
            failed: None,
        }
    }

    pub fn done_count(&self) -> usize {
        self.done.iter().filter(|d| **d).count()
    }

    pub fn live_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| !n.dropped).count()
    }

    pub fn is_dropped(&self, node: usize) -> bool {
        self.nodes[node].dropped
    }

    fn start(&mut self, chunk: usize, node: usize, now: Instant, duplicate: bool) -> Next {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.running.push(Running { attempt, chunk, node, started: now, frames: 0 });
        Next::Run(Assignment { attempt, chunk, duplicate, retry: self.failures[chunk] > 0 })
    }

    pub fn next(&mut self, node: usize, now: Instant) -> Next {
        if let Some(why) = &self.failed {
            return Next::Failed(why.clone());
        }
        if self.done.iter().all(|d| *d) {
            return Next::Finished;
        }
        if self.nodes[node].dropped {
            return Next::Finished;
        }
        if let Some(pos) = self.pick(node, now) {
            let chunk = self.pending.remove(pos).unwrap_or_default();
            return self.start(chunk, node, now, false);
        }
        if !self.pending.is_empty() {
            return Next::Wait;
        }
        // Queue empty: duplicate the running chunk expected to finish last,
        // if it runs elsewhere and alone and this slot would finish it sooner.
        let mine = |c: usize| self.frames[c] as f64 / self.slot_rate(node);
        let candidate = self
            .running
            .iter()
            .filter(|r| !self.done[r.chunk] && r.node != node)
            .filter(|r| self.running.iter().filter(|o| o.chunk == r.chunk).count() == 1)
            .filter(|r| !self.failed_on[r.chunk].contains(&node))
            .map(|r| (r.chunk, self.remaining(r, now)))
            .filter(|&(c, left)| mine(c) < left)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(c, _)| c);
        match candidate {
            Some(chunk) => self.start(chunk, node, now, true),
            None => Next::Wait,
        }
    }

    /// The position in the queue of the chunk `node`'s idle slot should
    /// take: the first one that a list schedule of the queue (longest
    /// first, each chunk to the slot that would finish it first, ties to
    /// the asking slot) gives to it. None: every queued chunk is better
    /// left to other slots (or failed on this node).
    fn pick(&self, node: usize, now: Instant) -> Option<usize> {
        let rates: Vec<f64> = (0..self.nodes.len()).map(|m| self.slot_rate(m)).collect();
        // (node, seconds until free, the asking slot)
        let mut slots: Vec<(usize, f64, bool)> = Vec::new();
        for (m, st) in self.nodes.iter().enumerate().filter(|(_, st)| !st.dropped) {
            let busy: Vec<f64> =
                self.running.iter().filter(|r| r.node == m).map(|r| self.remaining(r, now)).collect();
            let idle = st.slots.saturating_sub(busy.len()).max(usize::from(m == node));
            slots.extend(busy.into_iter().map(|t| (m, t, false)));
            slots.extend((0..idle).map(|i| (m, 0.0, m == node && i == 0)));
        }
        for (pos, &c) in self.pending.iter().enumerate() {
            let finish = |&(m, free, asker): &(usize, f64, bool)| {
                let t = free + self.frames[c] as f64 / rates[m];
                // Ties go to the asking slot: it is free now.
                if asker {
                    t * (1.0 - 1e-9)
                } else {
                    t
                }
            };
            let best = slots
                .iter_mut()
                .filter(|s| !self.failed_on[c].contains(&s.0))
                .min_by(|a, b| finish(a).total_cmp(&finish(b)));
            let Some(best) = best else { continue };
            if best.2 {
                return Some(pos);
            }
            best.1 = finish(best);
        }
        None
    }

    /// Frames per second of one slot of `node`: measured, else its CPUs
    /// per slot scaled by what the measured nodes do per CPU.
    fn slot_rate(&self, node: usize) -> f64 {
        let st = &self.nodes[node];
        if let Some(r) = st.rate {
            return r;
        }
        let per_cpu: Vec<f64> = self.nodes.iter().filter_map(|n| n.rate.map(|r| r / n.capacity)).collect();
        let scale = if per_cpu.is_empty() { 1.0 } else { per_cpu.iter().sum::<f64>() / per_cpu.len() as f64 };
        (st.capacity * scale).max(1e-6)
    }

    /// Expected seconds left for an attempt: the frames it has left at its
    /// own rate (once that counts), else at its node's; an attempt that has
    /// shown no frame yet is as far as its time says, and one past its
    /// expected time counts as late by as much again.
    fn remaining(&self, r: &Running, now: Instant) -> f64 {
        let left = self.frames[r.chunk].saturating_sub(r.frames) as f64;
        let elapsed = now.saturating_duration_since(r.started).as_secs_f64();
        if r.frames > 0 {
            let rate = match elapsed >= MIN_RATE_SECONDS {
                true => r.frames as f64 / elapsed,
                false => self.slot_rate(r.node),
            };
            return left / rate;
        }
        let expected = left / self.slot_rate(r.node);
        if elapsed <= expected {
            expected - elapsed
        } else {
            elapsed
        }
    }

    /// An attempt's frames so far; they also measure its node's speed.
    pub fn progress(&mut self, attempt: u64, frames: u64, now: Instant) {
        if let Some(r) = self.running.iter_mut().find(|r| r.attempt == attempt) {
            r.frames = frames;
            let elapsed = now.saturating_duration_since(r.started).as_secs_f64();
            let node = &mut self.nodes[r.node];
            if frames > 0 && elapsed >= MIN_RATE_SECONDS && !node.rate_from_done {
                node.rate = Some(frames as f64 / elapsed);
            }
        }
    }

    fn take(&mut self, attempt: u64) -> Option<Running> {
        let pos = self.running.iter().position(|r| r.attempt == attempt)?;
        Some(self.running.remove(pos))
    }

    /// A verified result. Returns whether it is the winner (first one) and
    /// the other attempts of the same chunk, to be stopped.
    pub fn succeeded(&mut self, attempt: u64, now: Instant) -> (bool, Vec<u64>) {
        let Some(r) = self.take(attempt) else {
            return (false, vec![]);
        };
        let elapsed = now.saturating_duration_since(r.started).as_secs_f64();
        let node = &mut self.nodes[r.node];
        node.consecutive_failures = 0;
        if elapsed > 0.0 {
            node.rate = Some(self.frames[r.chunk] as f64 / elapsed);
            node.rate_from_done = true;
        }
        if self.done[r.chunk] {
            return (false, vec![]);
        }
        self.done[r.chunk] = true;
        self.pending.retain(|&c| c != r.chunk);
        let others = self.running.iter().filter(|o| o.chunk == r.chunk).map(|o| o.attempt).collect();
        (true, others)
    }

    /// An attempt stopped because its twin won, or the job is stopping.
    pub fn cancelled(&mut self, attempt: u64) {
        if let Some(r) = self.take(attempt) {
            if !self.done[r.chunk]
                && !self.pending.contains(&r.chunk)
                && !self.running.iter().any(|o| o.chunk == r.chunk)
            {
                self.pending.push_front(r.chunk);
            }
        }
    }

    /// A failed attempt; `node_lost` when the node itself is gone.
    pub fn failed(&mut self, attempt: u64, node_lost: bool) -> AfterFailure {
        let Some(r) = self.take(attempt) else {
            return AfterFailure::default();
        };
        let mut after = AfterFailure::default();
        let node = &mut self.nodes[r.node];
        node.consecutive_failures += 1;
        if !node.dropped && (node_lost || node.consecutive_failures >= MAX_NODE_FAILURES) {
            node.dropped = true;
            after.node_dropped = true;
        }
        if !self.done[r.chunk] {
            if !node_lost {
                self.failures[r.chunk] += 1;
                self.failed_on[r.chunk].push(r.node);
            }
            let twin_running = self.running.iter().any(|o| o.chunk == r.chunk);
            if self.failures[r.chunk] >= MAX_CHUNK_FAILURES {
                self.failed = Some(format!("chunk {} failed {} times", r.chunk, self.failures[r.chunk]));
            } else if !twin_running && !self.pending.contains(&r.chunk) {
                self.pending.push_front(r.chunk);
            }
        }
        if self.live_nodes() == 0 && self.failed.is_none() {
            self.failed = Some("no node is left".into());
        }
        // A queued chunk that failed on every node still in the job.
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&n| !self.nodes[n].dropped).collect();
        if self.failed.is_none() {
            if let Some(&c) =
                self.pending.iter().find(|&&c| live.iter().all(|n| self.failed_on[c].contains(n)))
            {
                if !self.running.iter().any(|o| o.chunk == c) {
                    self.failed = Some(format!("chunk {c} failed on every node still in the job"));
                }
            }
        }
        after
    }

    /// Chunks the dropped node was running have to go back to the queue;
    /// the driver reports their attempts through `failed`/`cancelled`.
    pub fn attempts_on(&self, node: usize) -> Vec<u64> {
        self.running.iter().filter(|r| r.node == node).map(|r| r.attempt).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    /// `n` nodes of one slot and one CPU each.
    fn nodes(n: usize) -> Vec<NodeSpec> {
        vec![NodeSpec { slots: 1, capacity: 1.0 }; n]
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

    #[test]
    fn longest_first_and_fast_nodes_take_more() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(vec![10, 30, 20, 5], vec![false; 4], &nodes(2));
        let a = run(&s.next(0, t0)).clone();
        assert_eq!(a.chunk, 1);
        let b = run(&s.next(1, t0)).clone();
        assert_eq!(b.chunk, 2);
        // Node 0 does 10 frames/s, node 1 only 1.
        s.progress(b.attempt, 3, at(t0, 3.0));
        // Node 0 finishes and takes the rest.
        s.succeeded(a.attempt, at(t0, 3.0));
        let c = run(&s.next(0, at(t0, 3.0))).clone();
        assert_eq!(c.chunk, 0);
        s.succeeded(c.attempt, at(t0, 4.0));
        let d = run(&s.next(0, at(t0, 4.0))).clone();
        assert_eq!(d.chunk, 3);
        s.succeeded(d.attempt, at(t0, 4.5));
        // Queue empty: node 0 would finish chunk 2 (2 s) long before node 1
        // (25 s): it duplicates it.
        let e = run(&s.next(0, at(t0, 4.5))).clone();
        assert!(e.duplicate);
        assert_eq!(e.chunk, 2);
        // The duplicate wins; the original is to be stopped.
        assert_eq!(s.succeeded(e.attempt, at(t0, 6.5)), (true, vec![b.attempt]));
        s.cancelled(b.attempt);
        assert_eq!(s.next(1, at(t0, 6.5)), Next::Finished);
    }

    #[test]
    fn a_slow_node_does_not_duplicate_a_fast_nodes_slow_start() {
        let t0 = Instant::now();
        let specs = [NodeSpec { slots: 1, capacity: 1.0 }, NodeSpec { slots: 1, capacity: 0.1 }];
        let mut s = Scheduler::new(vec![10, 100, 100], vec![false; 3], &specs);
        assert_eq!(run(&s.next(0, t0)).chunk, 1);
        let small = run(&s.next(1, t0)).clone();
        assert_eq!(small.chunk, 0, "the slow node gets the short chunk");
        // Node 0 finishes in 2 s (50 frames/s) and takes the last chunk.
        s.succeeded(0, at(t0, 2.0));
        let last = run(&s.next(0, at(t0, 2.0))).clone();
        assert_eq!(last.chunk, 2);
        s.succeeded(small.attempt, at(t0, 2.5));
        // One second in, its encoder has shown 2 frames (a lookahead): no
        // measure yet; node 0's finished chunk is. So the slow node (25 s
        // for the chunk) does not duplicate it.
        s.progress(last.attempt, 2, at(t0, 3.0));
        assert_eq!(s.next(1, at(t0, 3.0)), Next::Wait);
    }

    #[test]
    fn a_slow_slot_takes_only_what_it_finishes_in_time() {
        let t0 = Instant::now();
        // Guided sizes; one fast node (4 CPUs in 1 slot) and a quarter one.
        let specs = [NodeSpec { slots: 1, capacity: 4.0 }, NodeSpec { slots: 1, capacity: 1.0 }];
        let mut s = Scheduler::new(vec![400, 200, 100, 50, 40], vec![false; 5], &specs);
        // The slow node asks first: the long chunks are the fast node's
        // (400 frames: 400 s here, 100 s there), not the 50 at the end.
        let slow = run(&s.next(1, t0)).clone();
        assert_eq!(slow.chunk, 2, "the largest chunk it finishes before the fast node would");
        let fast = run(&s.next(0, t0)).clone();
        assert_eq!(fast.chunk, 0);
        // With nothing it can finish sooner, a slow slot waits.
        let mut s = Scheduler::new(vec![100, 100], vec![false; 2], &specs);
        let f = run(&s.next(0, t0)).clone();
        assert_eq!(f.chunk, 0);
        assert_eq!(s.next(1, t0), Next::Wait, "the fast node finishes both by 50 s, the slow one 100 s");
        // The fast node turns out stuck (no frame after 120 s, 25 expected;
        // counted as 120 s late): the slow node takes the queued chunk.
        assert_eq!(s.next(1, at(t0, 60.0)), Next::Wait);
        assert_eq!(run(&s.next(1, at(t0, 120.0))).chunk, 1);
    }

    #[test]
    fn a_failed_chunk_is_retried_on_another_node() {
        let now = Instant::now();
        let mut s = Scheduler::new(vec![10], vec![false], &nodes(2));
        let a = run(&s.next(0, now)).clone();
        s.failed(a.attempt, false);
        // Not again on node 0 ...
        assert_eq!(s.next(0, now), Next::Wait);
        // ... but on node 1, marked as a retry.
        let b = run(&s.next(1, now)).clone();
        assert!(b.retry);
        s.succeeded(b.attempt, now);
        assert_eq!(s.next(0, now), Next::Finished);
    }

    #[test]
    fn a_lost_node_leaves_and_its_chunk_goes_back() {
        let now = Instant::now();
        let mut s = Scheduler::new(vec![10, 10], vec![false; 2], &nodes(2));
        let a = run(&s.next(0, now)).clone();
        let after = s.failed(a.attempt, true);
        assert!(after.node_dropped);
        assert!(s.is_dropped(0));
        assert_eq!(s.next(0, now), Next::Finished);
        let b = run(&s.next(1, now)).clone();
        assert_eq!(b.chunk, a.chunk);
    }

    #[test]
    fn the_job_fails_when_no_node_is_left() {
        let now = Instant::now();
        let mut s = Scheduler::new(vec![10], vec![false], &nodes(1));
        let a = run(&s.next(0, now)).clone();
        s.failed(a.attempt, true);
        assert_eq!(s.next(0, now), Next::Failed("no node is left".into()));
    }

    #[test]
    fn a_chunk_failing_everywhere_fails_the_job() {
        let now = Instant::now();
        let mut s = Scheduler::new(vec![10], vec![false], &nodes(2));
        let a = run(&s.next(0, now)).clone();
        s.failed(a.attempt, false);
        let b = run(&s.next(1, now)).clone();
        s.failed(b.attempt, false);
        assert!(matches!(s.next(0, now), Next::Failed(m) if m.contains("every node")));
    }

    #[test]
    fn resumed_chunks_are_not_queued() {
        let now = Instant::now();
        let mut s = Scheduler::new(vec![10, 20], vec![false, true], &nodes(1));
        let a = run(&s.next(0, now)).clone();
        assert_eq!(a.chunk, 0);
        s.succeeded(a.attempt, now);
        assert_eq!(s.next(0, now), Next::Finished);
    }
}
