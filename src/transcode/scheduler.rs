//! Scheduler decisions, free of I/O: a pull queue of chunks, longest first.
//! Each node's slots ask for work when they free up, so fast nodes simply
//! take more chunks. Failed chunks go back to the queue for another node;
//! a node that keeps failing or is lost leaves the job; once the queue is
//! empty, idle slots duplicate the slowest running chunk and the first
//! verified result wins.

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

#[derive(Debug, Default)]
struct NodeState {
    consecutive_failures: u32,
    dropped: bool,
}

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
    pub fn new(frames: Vec<u64>, done: Vec<bool>, nodes: usize) -> Scheduler {
        let mut order: Vec<usize> = (0..frames.len()).filter(|&i| !done[i]).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(frames[i]), i));
        Scheduler {
            failures: vec![0; frames.len()],
            failed_on: vec![Vec::new(); frames.len()],
            frames,
            pending: order.into(),
            running: Vec::new(),
            done,
            nodes: (0..nodes).map(|_| NodeState::default()).collect(),
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
        // Next queued chunk that has not already failed on this node.
        if let Some(pos) = self.pending.iter().position(|&c| !self.failed_on[c].contains(&node)) {
            let chunk = self.pending.remove(pos).unwrap_or_default();
            return self.start(chunk, node, now, false);
        }
        if !self.pending.is_empty() {
            return Next::Wait;
        }
        // Queue empty: duplicate the running chunk expected to finish last,
        // if it runs elsewhere and alone.
        let candidate = self
            .running
            .iter()
            .filter(|r| !self.done[r.chunk] && r.node != node)
            .filter(|r| self.running.iter().filter(|o| o.chunk == r.chunk).count() == 1)
            .filter(|r| !self.failed_on[r.chunk].contains(&node))
            .max_by(|a, b| {
                self.remaining(a, now)
                    .partial_cmp(&self.remaining(b, now))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|r| r.chunk);
        match candidate {
            Some(chunk) => self.start(chunk, node, now, true),
            None => Next::Wait,
        }
    }

    /// Expected seconds left for an attempt (unknown rate: its whole size,
    /// counted as slow).
    fn remaining(&self, r: &Running, now: Instant) -> f64 {
        let left = self.frames[r.chunk].saturating_sub(r.frames) as f64;
        let elapsed = now.duration_since(r.started).as_secs_f64();
        if r.frames == 0 || elapsed <= 0.0 {
            return f64::MAX / 2.0 + left;
        }
        left / (r.frames as f64 / elapsed)
    }

    pub fn progress(&mut self, attempt: u64, frames: u64) {
        if let Some(r) = self.running.iter_mut().find(|r| r.attempt == attempt) {
            r.frames = frames;
        }
    }

    fn take(&mut self, attempt: u64) -> Option<Running> {
        let pos = self.running.iter().position(|r| r.attempt == attempt)?;
        Some(self.running.remove(pos))
    }

    /// A verified result. Returns whether it is the winner (first one) and
    /// the other attempts of the same chunk, to be stopped.
    pub fn succeeded(&mut self, attempt: u64) -> (bool, Vec<u64>) {
        let Some(r) = self.take(attempt) else {
            return (false, vec![]);
        };
        self.nodes[r.node].consecutive_failures = 0;
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

    fn run(n: &Next) -> &Assignment {
        match n {
            Next::Run(a) => a,
            other => panic!("expected work, got {other:?}"),
        }
    }

    #[test]
    fn longest_first_and_fast_nodes_take_more() {
        let now = Instant::now();
        let mut s = Scheduler::new(vec![10, 30, 20, 5], vec![false; 4], 2);
        let a = run(&s.next(0, now)).clone();
        assert_eq!(a.chunk, 1);
        let b = run(&s.next(1, now)).clone();
        assert_eq!(b.chunk, 2);
        // Node 0 is fast: it finishes and takes the rest.
        s.succeeded(a.attempt);
        let c = run(&s.next(0, now)).clone();
        assert_eq!(c.chunk, 0);
        s.succeeded(c.attempt);
        let d = run(&s.next(0, now)).clone();
        assert_eq!(d.chunk, 3);
        s.succeeded(d.attempt);
        // Queue empty: node 0 duplicates the chunk still running on node 1.
        let e = run(&s.next(0, now)).clone();
        assert!(e.duplicate);
        assert_eq!(e.chunk, 2);
        // The duplicate wins; the original is to be stopped.
        assert_eq!(s.succeeded(e.attempt), (true, vec![b.attempt]));
        s.cancelled(b.attempt);
        assert_eq!(s.next(1, now), Next::Finished);
    }

    #[test]
    fn a_failed_chunk_is_retried_on_another_node() {
        let now = Instant::now();
        let mut s = Scheduler::new(vec![10], vec![false], 2);
        let a = run(&s.next(0, now)).clone();
        s.failed(a.attempt, false);
        // Not again on node 0 ...
        assert_eq!(s.next(0, now), Next::Wait);
        // ... but on node 1, marked as a retry.
        let b = run(&s.next(1, now)).clone();
        assert!(b.retry);
        s.succeeded(b.attempt);
        assert_eq!(s.next(0, now), Next::Finished);
    }

    #[test]
    fn a_lost_node_leaves_and_its_chunk_goes_back() {
        let now = Instant::now();
        let mut s = Scheduler::new(vec![10, 10], vec![false; 2], 2);
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
        let mut s = Scheduler::new(vec![10], vec![false], 1);
        let a = run(&s.next(0, now)).clone();
        s.failed(a.attempt, true);
        assert_eq!(s.next(0, now), Next::Failed("no node is left".into()));
    }

    #[test]
    fn a_chunk_failing_everywhere_fails_the_job() {
        let now = Instant::now();
        let mut s = Scheduler::new(vec![10], vec![false], 2);
        let a = run(&s.next(0, now)).clone();
        s.failed(a.attempt, false);
        let b = run(&s.next(1, now)).clone();
        s.failed(b.attempt, false);
        assert!(matches!(s.next(0, now), Next::Failed(m) if m.contains("every node")));
    }

    #[test]
    fn resumed_chunks_are_not_queued() {
        let now = Instant::now();
        let mut s = Scheduler::new(vec![10, 20], vec![false, true], 1);
        let a = run(&s.next(0, now)).clone();
        assert_eq!(a.chunk, 0);
        s.succeeded(a.attempt);
        assert_eq!(s.next(0, now), Next::Finished);
    }
}
