//! Scheduler decisions, free of I/O, time passed in: one queue of the
//! chunks of every job of a batch, and which node's slot runs which.
//!
//! - **Queue**: jobs in the order they were added (files finish in order),
//!   each job's chunks longest first; a failed chunk goes to the front.
//! - **List schedule**: a free slot takes a chunk only if no other slot
//!   would finish it sooner, by each node's frames per second — so a slow
//!   node takes a short chunk, or waits, instead of holding the last long
//!   one while fast slots idle.
//! - **Speeds are measured, not guessed**: a node whose speed is unknown
//!   (nothing remembered, nothing measured yet) runs one attempt at a time,
//!   on the shortest chunk, until its own frame rate shows. Its core count
//!   says little (a Pi's four cores look like a PC's four).
//! - **Slots follow measurement**: an attempt's CPU time over its wall time
//!   tells how much of a CPU each slot really got; a node whose slots each
//!   got a whole CPU may open one more (up to its slots), one whose slots
//!   share less than they look like (a hidden CPU quota) closes slots.
//! - **Failures**: a failed chunk is retried on another node; a node that
//!   fails [`MAX_NODE_FAILURES`] times in a row or is lost leaves the
//!   batch; a chunk failing [`MAX_CHUNK_FAILURES`] times fails its job (the
//!   other jobs go on).
//! - **Watchdog**: an attempt that shows no new frame for much longer than
//!   its node should need is abandoned and its chunk goes elsewhere; the
//!   node is suspect (no new work for a while); stalling twice, it leaves.
//! - **Tail**: once the queue is empty, an idle slot that would finish a
//!   running chunk sooner duplicates it; the first verified result wins.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many times a chunk may fail before its job gives up.
pub const MAX_CHUNK_FAILURES: u32 = 3;
/// Consecutive failures after which a node leaves the batch.
pub const MAX_NODE_FAILURES: u32 = 3;
/// Seconds an attempt must have run before its own frame rate counts:
/// encoders with a lookahead (x264: 40 frames) show their first frames late.
const MIN_RATE_SECONDS: f64 = 3.0;
/// Frames an encoder may take before it shows one (x264's lookahead plus
/// some): the watchdog's unit of patience.
const STALL_FRAMES: u64 = 60;
/// The watchdog waits this many units (and at least [`STALL_MIN_SECONDS`]).
const STALL_FACTOR: f64 = 4.0;
const STALL_MIN_SECONDS: f64 = 15.0;
/// How long a node that stalled gets no new work.
const SUSPECT_SECONDS: f64 = 30.0;
/// Stalls after which a node leaves the batch.
const MAX_NODE_STALLS: u32 = 2;
/// CPU time over wall time from which a slot counts as having had a whole
/// CPU (there may be room for one more).
const FULL_CPU: f64 = 0.85;
/// The hard limit of an attempt, however it reports progress: this many
/// times its chunk's expected time at its node's rate, and at least
/// [`HARD_MIN_SECONDS`] (an encoder that prints ever more frames and never
/// ends is given up, and its chunk goes elsewhere).
const HARD_FACTOR: f64 = 10.0;
const HARD_MIN_SECONDS: f64 = 120.0;
/// The largest slot rate (work per second) taken as real: a 4K frame is
/// about 8 units, so this is some 10,000 4K frames a second per slot.
pub const MAX_RATE: f64 = 1e5;

#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub attempt: u64,
    pub job: usize,
    /// The chunk's index in its job.
    pub chunk: usize,
    pub duplicate: bool,
    /// The chunk failed before (on some node).
    pub retry: bool,
}

#[derive(Debug, PartialEq)]
pub enum Next {
    Run(Assignment),
    /// Nothing for this slot now; ask again when something changes.
    Wait,
    /// Nothing more for this node, ever (it left, or all work is over).
    Done,
}

/// What an earlier job measured of a node (see `speeds.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownSpeed {
    /// Frames per second of one slot with this job's settings, if it ran
    /// them before.
    pub slot_rate: Option<f64>,
    /// One of its slots' speed relative to the fastest slot of that job.
    pub relative: f64,
    /// Attempts it ran at once without each getting less than a CPU.
    pub slots: usize,
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSpec {
    /// At most this many attempts at once.
    pub slots: usize,
    /// CPUs it shows (cores, or a visible quota): the speed guess of last
    /// resort, relative to other nodes.
    pub capacity: f64,
    pub known: Option<KnownSpeed>,
}

/// CPU and wall time of a finished encode on its node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
}

#[derive(Debug)]
struct Running {
    attempt: u64,
    chunk: usize,
    node: usize,
    started: Instant,
    frames: u64,
    /// When `frames` last grew (or the start).
    moved: Instant,
    /// ∫ attempts running on its node dt, for the node's real CPUs.
    together: f64,
    touched: Instant,
    /// Seconds it may run at all, fixed when it starts (see [`HARD_FACTOR`]).
    limit: f64,
}

#[derive(Debug)]
struct NodeState {
    max_slots: usize,
    /// Attempts it may run at once now (slots follow measurement).
    active: usize,
    /// Speed guess per slot until measured.
    capacity: f64,
    /// Measured (or remembered) frames per second of one slot.
    rate: Option<f64>,
    rate_from_done: bool,
    /// Nothing remembered and nothing measured yet.
    unknown: bool,
    consecutive_failures: u32,
    stalls: u32,
    suspect_until: Option<Instant>,
    dropped: bool,
    /// CPUs its slots got together, last measured.
    cpus: Option<f64>,
}

#[derive(Debug)]
struct ChunkState {
    job: usize,
    index: usize,
    frames: u64,
    done: bool,
    failures: u32,
    failed_on: Vec<usize>,
}

#[derive(Debug, Default)]
struct JobState {
    failed: bool,
    /// Chunks not verified yet.
    left: usize,
    /// Work per frame (megapixels: a 4K frame is more work than a 720p
    /// one): rates are work per second, so that files of other sizes in
    /// one batch share them.
    weight: f64,
}

#[derive(Debug)]
pub struct Scheduler {
    chunks: Vec<ChunkState>,
    jobs: Vec<JobState>,
    pending: VecDeque<usize>,
    running: Vec<Running>,
    nodes: Vec<NodeState>,
    next_attempt: u64,
    /// No more jobs will be added.
    closed: bool,
    /// A cluster of one node has nothing to choose: no probing.
    single: bool,
}

/// How an attempt failed, as far as the scheduler cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The chunk failed on this node (held against both).
    Chunk,
    /// The node is gone: it leaves, the chunk is not held against it.
    NodeLost,
    /// The node's build makes chunks that do not fit: it leaves, and the
    /// chunk counts as failed there.
    NodeUnfit,
}

/// Why the scheduler gives up a job (the text is what the user reads).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum GiveUp {
    /// A chunk failed as often as a chunk may.
    #[error("chunk {chunk} failed {times} times")]
    Attempts { chunk: usize, times: u32 },
    /// A queued chunk failed on every node still in.
    #[error("chunk {chunk} failed on every node still in")]
    EveryNode { chunk: usize },
    #[error("no node is left")]
    NoNode,
}

/// What the driver must do after a failure.
#[derive(Debug, PartialEq, Default)]
pub struct AfterFailure {
    /// The node just left the batch.
    pub node_dropped: bool,
    /// Jobs that cannot finish now, and why.
    pub failed_jobs: Vec<(usize, GiveUp)>,
    /// Attempts to stop (their node left, or their job failed).
    pub stop: Vec<u64>,
}

/// A verified result.
#[derive(Debug, PartialEq, Default)]
pub struct Success {
    /// The first result of its chunk (else thrown away).
    pub won: bool,
    /// Other attempts of the same chunk, to be stopped.
    pub stop: Vec<u64>,
    /// Its job's last chunk: the job can be merged.
    pub job_done: Option<usize>,
}

/// An attempt the watchdog gave up on.
#[derive(Debug, PartialEq)]
pub struct Stall {
    pub attempt: u64,
    pub node: usize,
    pub job: usize,
    pub chunk: usize,
    pub seconds: f64,
    /// Abandoned for running past its hard limit (not for a lack of new
    /// frames): `seconds` is then how long it ran.
    pub overtime: bool,
    /// The node stalled too often and left the batch (its other attempts
    /// are in `stop`).
    pub node_dropped: bool,
    pub stop: Vec<u64>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Scheduler {
    pub fn new(nodes: &[NodeSpec]) -> Scheduler {
        let mut nodes: Vec<NodeState> = nodes.iter().map(node_state).collect();
        if let [only] = nodes.as_mut_slice() {
            only.active = only.max_slots;
        }
        Scheduler {
            chunks: Vec::new(),
            jobs: Vec::new(),
            pending: VecDeque::new(),
            running: Vec::new(),
            single: nodes.len() == 1,
            nodes,
            next_attempt: 0,
            closed: false,
        }
    }

    /// Add a job: `frames[i]` is chunk i's size, `done[i]` whether it is
    /// verified already (resume), `weight` the work of one of its frames;
    /// the nodes in `unable` cannot run it (no encoder for it). Returns the
    /// job's number.
    pub fn add_job(&mut self, frames: &[u64], done: &[bool], weight: f64, unable: &[usize]) -> usize {
        let job = self.jobs.len();
        let first = self.chunks.len();
        for (index, &f) in frames.iter().enumerate() {
            let done = done.get(index).copied().unwrap_or(false);
            self.chunks.push(ChunkState {
                job,
                index,
                frames: f,
                done,
                failures: 0,
                failed_on: unable.to_vec(),
            });
        }
        let mut order: Vec<usize> = (first..self.chunks.len()).filter(|&c| !self.chunks[c].done).collect();
        order.sort_by_key(|&c| (std::cmp::Reverse(self.chunks[c].frames), c));
        self.jobs.push(JobState { failed: false, left: order.len(), weight: weight.max(1e-9) });
        self.pending.extend(order);
        job
    }

    /// No more jobs will come: slots may stop once the last one is over.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Whether every job is over (verified or failed) and no more will come.
    pub fn finished(&self) -> bool {
        self.closed && self.jobs.iter().all(|j| j.failed || j.left == 0)
    }

    pub fn job_left(&self, job: usize) -> usize {
        self.jobs[job].left
    }

    pub fn job_failed(&self, job: usize) -> bool {
        self.jobs[job].failed
    }

    pub fn live_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| !n.dropped).count()
    }

    pub fn is_dropped(&self, node: usize) -> bool {
        self.nodes[node].dropped
    }

    /// Attempts a node may run at once now.
    pub fn active_slots(&self, node: usize) -> usize {
        self.nodes[node].active
    }

    /// What was measured of each node (None: nothing), for the next job.
    /// Only a rate that verified chunks measured counts (progress lines are
    /// the node's word), and only a finite one in range.
    pub fn learned(&self) -> Vec<Option<(f64, usize)>> {
        self.nodes
            .iter()
            .map(|n| {
                let rate =
                    n.rate.filter(|r| n.rate_from_done && r.is_finite() && *r > 0.0 && *r <= MAX_RATE)?;
                Some((rate, n.active))
            })
            .collect()
    }

    /// A chunk's work.
    fn work(&self, chunk: usize) -> f64 {
        let c = &self.chunks[chunk];
        c.frames as f64 * self.jobs[c.job].weight
    }

    /// The work of `frames` frames of a chunk's job.
    fn work_of(&self, chunk: usize, frames: u64) -> f64 {
        frames as f64 * self.jobs[self.chunks[chunk].job].weight
    }

    fn running_on(&self, node: usize) -> usize {
        self.running.iter().filter(|r| r.node == node).count()
    }

    /// Bring the concurrency integrals of `node`'s attempts up to `now`
    /// (before one starts or ends there).
    fn touch(&mut self, node: usize, now: Instant) {
        let k = self.running_on(node) as f64;
        for r in self.running.iter_mut().filter(|r| r.node == node) {
            r.together += k * secs(now.saturating_duration_since(r.touched));
            r.touched = now;
        }
    }

    fn start(&mut self, chunk: usize, node: usize, now: Instant, duplicate: bool) -> Next {
        self.touch(node, now);
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        // From what was known of the node before it ran: its own progress
        // lines (the node's word) cannot stretch it.
        let limit = (HARD_FACTOR * self.work(chunk) / self.slot_rate(node)).clamp(HARD_MIN_SECONDS, 1e9);
        self.running.push(Running {
            attempt,
            chunk,
            node,
            started: now,
            frames: 0,
            moved: now,
            together: 0.0,
            touched: now,
            limit,
        });
        let c = &self.chunks[chunk];
        Next::Run(Assignment { attempt, job: c.job, chunk: c.index, duplicate, retry: c.failures > 0 })
    }

    fn take(&mut self, attempt: u64, now: Instant) -> Option<Running> {
        let node = self.running.iter().find(|r| r.attempt == attempt)?.node;
        self.touch(node, now);
        let pos = self.running.iter().position(|r| r.attempt == attempt)?;
        Some(self.running.remove(pos))
    }

    /// Work for an idle slot of `node`.
    pub fn next(&mut self, node: usize, now: Instant) -> Next {
        let st = &self.nodes[node];
        if st.dropped || self.finished() {
            return Next::Done;
        }
        if st.suspect_until.is_some_and(|t| now < t) || self.running_on(node) >= st.active {
            return Next::Wait;
        }
        if st.unknown && !self.single {
            // Measure before holding a long chunk: the shortest one.
            return match self.shortest_for(node) {
                Some(pos) => self.take_pending(pos, node, now),
                None => Next::Wait,
            };
        }
        if let Some(pos) = self.pick(node, now) {
            return self.take_pending(pos, node, now);
        }
        if !self.pending.is_empty() {
            return Next::Wait;
        }
        match self.duplicate_for(node, now) {
            Some(chunk) => self.start(chunk, node, now, true),
            None => Next::Wait,
        }
    }

    fn take_pending(&mut self, pos: usize, node: usize, now: Instant) -> Next {
        match self.pending.remove(pos) {
            Some(chunk) => self.start(chunk, node, now, false),
            None => Next::Wait,
        }
    }

    /// The queue position of the shortest chunk `node` may run.
    fn shortest_for(&self, node: usize) -> Option<usize> {
        self.pending
            .iter()
            .enumerate()
            .filter(|(_, &c)| !self.chunks[c].failed_on.contains(&node))
            .min_by(|(pa, &a), (pb, &b)| self.work(a).total_cmp(&self.work(b)).then(pa.cmp(pb)))
            .map(|(pos, _)| pos)
    }

    /// Queue empty: the running chunk expected to finish last, if it runs
    /// elsewhere and alone and this slot would finish it sooner.
    fn duplicate_for(&self, node: usize, now: Instant) -> Option<usize> {
        let mine = |c: usize| self.work(c) / self.slot_rate(node);
        self.running
            .iter()
            .filter(|r| !self.chunks[r.chunk].done && r.node != node)
            .filter(|r| self.running.iter().filter(|o| o.chunk == r.chunk).count() == 1)
            .filter(|r| !self.chunks[r.chunk].failed_on.contains(&node))
            .map(|r| (r.chunk, self.remaining(r, now)))
            .filter(|&(c, left)| mine(c) < left)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(c, _)| c)
    }

    /// Slots that may take work, as `(node, seconds until free, the asking
    /// slot)`: busy ones with their attempt's time left, idle ones at 0.
    fn slots(&self, asker: usize, now: Instant) -> Vec<(usize, f64, bool)> {
        let mut slots = Vec::new();
        for (m, st) in self.nodes.iter().enumerate() {
            let out = st.dropped || st.suspect_until.is_some_and(|t| now < t);
            if out && m != asker {
                continue;
            }
            let busy: Vec<f64> =
                self.running.iter().filter(|r| r.node == m).map(|r| self.remaining(r, now)).collect();
            let idle = st.active.saturating_sub(busy.len()).max(usize::from(m == asker));
            slots.extend(busy.into_iter().map(|t| (m, t, false)));
            slots.extend((0..idle).map(|i| (m, 0.0, m == asker && i == 0)));
        }
        slots
    }

    /// The position in the queue of the chunk `node`'s idle slot should
    /// take: the first one that a list schedule of the queue (in order,
    /// each chunk to the slot that would finish it first, ties to the
    /// asking slot) gives to it. None: every queued chunk is better left
    /// to other slots (or failed on this node).
    fn pick(&self, node: usize, now: Instant) -> Option<usize> {
        let rates: Vec<f64> = (0..self.nodes.len()).map(|m| self.slot_rate(m)).collect();
        let mut slots = self.slots(node, now);
        for (pos, &c) in self.pending.iter().enumerate() {
            let work = self.work(c);
            let finish = |&(m, free, asker): &(usize, f64, bool)| {
                let t = free + work / rates[m];
                // Ties go to the asking slot: it is free now.
                if asker {
                    t * (1.0 - 1e-9)
                } else {
                    t
                }
            };
            let best = slots
                .iter_mut()
                .filter(|s| !self.chunks[c].failed_on.contains(&s.0))
                .min_by(|a, b| finish(a).total_cmp(&finish(b)));
            let Some(best) = best else { continue };
            if best.2 {
                return Some(pos);
            }
            best.1 = finish(best);
        }
        None
    }

    /// Frames per second of one slot of `node`: measured or remembered,
    /// else its guess scaled by what the measured nodes do per unit of
    /// guess.
    fn slot_rate(&self, node: usize) -> f64 {
        let st = &self.nodes[node];
        if let Some(r) = st.rate {
            return r;
        }
        let per_unit: Vec<f64> = self.nodes.iter().filter_map(|n| n.rate.map(|r| r / n.capacity)).collect();
        let scale = match per_unit.is_empty() {
            true => 1.0,
            false => per_unit.iter().sum::<f64>() / per_unit.len() as f64,
        };
        (st.capacity * scale).max(1e-6)
    }

    /// Expected seconds left for an attempt: the frames it has left at its
    /// own rate (once that counts), else at its node's; an attempt that has
    /// shown no frame yet is as far as its time says, and one past its
    /// expected time counts as late by as much again.
    fn remaining(&self, r: &Running, now: Instant) -> f64 {
        let left = self.work_of(r.chunk, self.chunks[r.chunk].frames.saturating_sub(r.frames));
        let elapsed = secs(now.saturating_duration_since(r.started));
        if r.frames > 0 {
            let rate = match elapsed >= MIN_RATE_SECONDS {
                true => self.work_of(r.chunk, r.frames) / elapsed,
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
    /// The count taken (capped at the chunk's frames) when it grew, else
    /// None: only growth is worth reporting.
    pub fn progress(&mut self, attempt: u64, frames: u64, now: Instant) -> Option<u64> {
        let pos = self.running.iter().position(|r| r.attempt == attempt)?;
        // A node's count is its word: never past the chunk's frames.
        let frames = frames.min(self.chunks[self.running[pos].chunk].frames);
        let work = self.work_of(self.running[pos].chunk, frames);
        let r = &mut self.running[pos];
        let grew = frames > r.frames;
        if grew {
            r.moved = now;
        }
        r.frames = frames;
        let elapsed = secs(now.saturating_duration_since(r.started));
        let node = &mut self.nodes[r.node];
        node.suspect_until = None;
        if frames > 0 && elapsed >= MIN_RATE_SECONDS && !node.rate_from_done {
            node.rate = Some((work / elapsed).min(MAX_RATE));
            node.unknown = false;
        }
        grew.then_some(frames)
    }

    /// A verified result, with its encode's CPU and wall time when known.
    pub fn succeeded(&mut self, attempt: u64, now: Instant, usage: Option<Usage>) -> Success {
        let Some(r) = self.take(attempt, now) else {
            return Success::default();
        };
        let elapsed = secs(now.saturating_duration_since(r.started));
        let work = self.work(r.chunk);
        let node = &mut self.nodes[r.node];
        node.consecutive_failures = 0;
        node.stalls = 0;
        if elapsed > 0.0 {
            node.rate = Some((work / elapsed).min(MAX_RATE));
            node.rate_from_done = true;
            node.unknown = false;
        }
        let sane = |u: &Usage| {
            u.wall_seconds > 0.0 && u.cpu_seconds.is_finite() && u.cpu_seconds >= 0.0 && elapsed > 0.0
        };
        match usage.filter(sane) {
            Some(u) => adapt_slots(node, u.cpu_seconds / u.wall_seconds, r.together / elapsed),
            // Without a CPU time, the visible slots it is.
            None if node.cpus.is_none() => node.active = node.max_slots,
            None => {}
        }
        let c = &mut self.chunks[r.chunk];
        if c.done || self.jobs[c.job].failed {
            return Success::default();
        }
        c.done = true;
        let job = c.job;
        self.jobs[job].left -= 1;
        self.pending.retain(|&p| p != r.chunk);
        let stop = self.running.iter().filter(|o| o.chunk == r.chunk).map(|o| o.attempt).collect();
        Success { won: true, stop, job_done: (self.jobs[job].left == 0).then_some(job) }
    }

    /// An attempt stopped (its twin won, or the job is stopping).
    pub fn cancelled(&mut self, attempt: u64, now: Instant) {
        if let Some(r) = self.take(attempt, now) {
            self.requeue(r.chunk);
        }
    }

    /// Put a chunk back at the front of the queue unless it is done, queued,
    /// running elsewhere or its job failed.
    fn requeue(&mut self, chunk: usize) {
        let c = &self.chunks[chunk];
        if !c.done
            && !self.jobs[c.job].failed
            && !self.pending.contains(&chunk)
            && !self.running.iter().any(|o| o.chunk == chunk)
        {
            self.pending.push_front(chunk);
        }
    }

    /// A failed attempt.
    pub fn failed(&mut self, attempt: u64, how: Failure, now: Instant) -> AfterFailure {
        let node_lost = how == Failure::NodeLost;
        let Some(r) = self.take(attempt, now) else {
            return AfterFailure::default();
        };
        let mut after = AfterFailure::default();
        let node = &mut self.nodes[r.node];
        node.consecutive_failures += 1;
        if !node.dropped && (how != Failure::Chunk || node.consecutive_failures >= MAX_NODE_FAILURES) {
            after.stop = self.drop_node(r.node);
            after.node_dropped = true;
        }
        let c = &mut self.chunks[r.chunk];
        if !c.done && !node_lost {
            c.failures += 1;
            c.failed_on.push(r.node);
        }
        let (job, failures) = (c.job, c.failures);
        if failures >= MAX_CHUNK_FAILURES {
            let why = GiveUp::Attempts { chunk: c.index, times: failures };
            self.fail_job(job, why, &mut after);
        } else {
            self.requeue(r.chunk);
        }
        self.fail_hopeless(&mut after);
        after
    }

    /// Take a node out of the batch; its attempts to stop.
    fn drop_node(&mut self, node: usize) -> Vec<u64> {
        self.nodes[node].dropped = true;
        self.running.iter().filter(|r| r.node == node).map(|r| r.attempt).collect()
    }

    /// A job that cannot finish: its queued chunks go, its attempts stop.
    fn fail_job(&mut self, job: usize, why: GiveUp, after: &mut AfterFailure) {
        if self.end_job(job, &mut after.stop) {
            after.failed_jobs.push((job, why));
        }
    }

    /// End a job that is still open: its queued chunks go, its attempts go
    /// into `stop`. False: it had ended already.
    fn end_job(&mut self, job: usize, stop: &mut Vec<u64>) -> bool {
        if self.jobs[job].failed || self.jobs[job].left == 0 {
            return false;
        }
        self.jobs[job].failed = true;
        self.pending.retain(|&c| self.chunks[c].job != job);
        stop.extend(self.running.iter().filter(|r| self.chunks[r.chunk].job == job).map(|r| r.attempt));
        true
    }

    /// Give up a job from outside (its side streams failed, say: the
    /// caller knows why); the attempts to stop.
    pub fn abandon_job(&mut self, job: usize) -> Vec<u64> {
        let mut stop = Vec::new();
        self.end_job(job, &mut stop);
        stop
    }

    /// Jobs no live node can finish: none left at all, or a queued chunk
    /// that failed on every node still in.
    fn fail_hopeless(&mut self, after: &mut AfterFailure) {
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&n| !self.nodes[n].dropped).collect();
        let open: Vec<usize> =
            (0..self.jobs.len()).filter(|&j| !self.jobs[j].failed && self.jobs[j].left > 0).collect();
        for job in open {
            if live.is_empty() {
                self.fail_job(job, GiveUp::NoNode, after);
                continue;
            }
            let stuck = self.pending.iter().copied().find(|&c| {
                self.chunks[c].job == job
                    && live.iter().all(|n| self.chunks[c].failed_on.contains(n))
                    && !self.running.iter().any(|o| o.chunk == c)
            });
            if let Some(c) = stuck {
                self.fail_job(job, GiveUp::EveryNode { chunk: self.chunks[c].index }, after);
            }
        }
    }

    /// The watchdog: attempts that showed no new frame for much longer than
    /// their node should need. Each is abandoned (its chunk queued again,
    /// its node suspect), to be stopped by the driver.
    pub fn stalled(&mut self, now: Instant) -> Vec<Stall> {
        let late: Vec<(u64, f64, bool)> = self
            .running
            .iter()
            .filter_map(|r| {
                let ran = secs(now.saturating_duration_since(r.started));
                let quiet = secs(now.saturating_duration_since(r.moved));
                match (ran > r.limit, quiet > self.patience(r)) {
                    (true, _) => Some((r.attempt, ran, true)),
                    (false, true) => Some((r.attempt, quiet, false)),
                    _ => None,
                }
            })
            .collect();
        let mut stalls = Vec::new();
        for (attempt, seconds, overtime) in late {
            let Some(r) = self.take(attempt, now) else { continue };
            let node = &mut self.nodes[r.node];
            node.stalls += 1;
            node.suspect_until = Some(now + Duration::from_secs_f64(SUSPECT_SECONDS));
            let node_dropped = !node.dropped && node.stalls >= MAX_NODE_STALLS;
            let stop = if node_dropped { self.drop_node(r.node) } else { Vec::new() };
            self.requeue(r.chunk);
            let c = &self.chunks[r.chunk];
            stalls.push(Stall {
                attempt,
                node: r.node,
                job: c.job,
                chunk: c.index,
                seconds,
                overtime,
                node_dropped,
                stop,
            });
        }
        let mut after = AfterFailure::default();
        self.fail_hopeless(&mut after);
        stalls
    }

    /// Seconds without a new frame after which an attempt stalls.
    fn patience(&self, r: &Running) -> f64 {
        (STALL_FACTOR * self.work_of(r.chunk, STALL_FRAMES) / self.slot_rate(r.node)).max(STALL_MIN_SECONDS)
    }

    /// When the watchdog should look next (None: nothing runs).
    pub fn next_check(&self, now: Instant) -> Option<Instant> {
        self.running
            .iter()
            .flat_map(|r| {
                [
                    r.moved + Duration::from_secs_f64(self.patience(r)),
                    r.started + Duration::from_secs_f64(r.limit),
                ]
            })
            .min()
            .map(|t| t.max(now))
    }
}

fn node_state(n: &NodeSpec) -> NodeState {
    let max_slots = n.slots.max(1);
    let per_slot = n.capacity.max(0.01) / max_slots as f64;
    let (capacity, rate, active, unknown) = match n.known {
        Some(k) => (k.relative.max(0.01), k.slot_rate, k.slots.clamp(1, max_slots), false),
        // Unknown: one attempt until it shows its speed (see `next`), then
        // as many as measuring allows.
        None => (per_slot, None, 1, true),
    };
    NodeState {
        max_slots,
        active,
        capacity,
        rate,
        rate_from_done: false,
        unknown,
        consecutive_failures: 0,
        stalls: 0,
        suspect_until: None,
        dropped: false,
        cpus: None,
    }
}

/// Slots follow measurement: `share` is the CPU time over wall time of a
/// finished attempt, `together` how many of its node's attempts ran at
/// once on average meanwhile.
fn adapt_slots(node: &mut NodeState, share: f64, together: f64) {
    let cpus = share * together.max(1.0);
    node.cpus = Some(cpus);
    node.active = if share >= FULL_CPU {
        // Every slot had a whole CPU: maybe there is room for one more.
        if together >= node.active as f64 - 0.5 {
            (node.active + 1).min(node.max_slots)
        } else {
            node.active
        }
    } else {
        (cpus.round() as usize).clamp(1, node.max_slots)
    };
    // The rate was measured with `together` attempts sharing `cpus`: with
    // fewer slots now, each gets more (up to a whole CPU), and so goes
    // faster — else a hidden 1-CPU node that tried two slots would look
    // half as fast as it is once back to one.
    if share > 0.0 && share < FULL_CPU && together > node.active as f64 + 0.25 {
        let each = (cpus / node.active as f64).min(1.0);
        if each > share {
            node.rate = node.rate.map(|r| r * each / share);
        }
    }
}

#[cfg(test)]
mod tests;
