//! Dispatch: one broker task owns the scheduler and every decision; one
//! task per slot of every node pulls work from it, runs the attempt and
//! sends the result back. Everything the broker hears is a typed message
//! on one channel ([`Msg`]), so it reacts to what happens — a slot asking
//! for work, an encoder's progress, an encode or a verification ending, a
//! new job of the batch — with no polling, no lock and no sleep; a timer
//! wakes it only for the watchdog.
//!
//! Verification runs on the controller in its own task while the node's
//! slot goes on with its next chunk: the node's record of its part (see
//! `encode.sh`) compared with the plan, or — no record, or one that does
//! not pass — this machine's own ffprobe of the part. Jobs and nodes are known by the ids
//! the batch and the cluster gave them; the broker keeps the nodes'
//! `Worker`s (their stats) and hands them back when it is over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::remote::Transport;
use crate::transcode::chunk_log::{Header, Tail};
use crate::transcode::context::JobContext;
use crate::transcode::encode::{Attempt, AttemptError, Encoded};
use crate::transcode::events::{Event, Sender};
use crate::transcode::failure::{self, JobFailure, LastFailure};
use crate::transcode::ids::{JobId, NodeId};
use crate::transcode::job::{AttemptFiles, JobDir, Seal};
use crate::transcode::scheduler::{Assignment, Failure, Next, NodeSpec, Scheduler, Usage};
use crate::transcode::verify::{ChunkFacts, CodecParams, VerifyError};
use crate::transcode::worker::Workers;

/// A job of the batch, ready to encode.
pub struct JobWork {
    /// Its id, given by the batch (the broker and the scheduler use it as is).
    pub id: JobId,
    pub ctx: Arc<JobContext>,
    pub dir: Arc<JobDir>,
    /// What its file is called in events.
    pub file: String,
    /// The work of one of its frames (megapixels).
    pub weight: f64,
    /// Nodes that cannot run it (no encoder for it).
    pub unable: Vec<NodeId>,
}

/// What the batch tells the broker.
pub enum Order {
    /// A new job joins the queue, at its end.
    Add(JobWork),
    /// A job cannot finish (its side streams failed, ...): stop its chunks.
    Abandon { job: JobId, why: JobFailure },
    /// No more jobs will come.
    Close,
}

/// What the broker tells the batch about a job (by the id the batch gave it).
#[derive(Debug)]
pub enum JobEnd {
    /// Every chunk is verified: the job can be merged.
    Encoded(JobId),
    /// The job cannot finish (resumable: its verified chunks are kept).
    Failed { job: JobId, why: JobFailure },
    /// No attempt of the job is running any more (losing duplicates
    /// stopped): its directory may go.
    Quiet(JobId),
}

/// What the broker knows at the end.
pub struct Dispatched<T> {
    /// The nodes, with what each did (`stats`) and measured (`learned`).
    pub workers: Workers<T>,
    /// Stopped by the user.
    pub interrupted: bool,
    /// Nodes still in (0: every node left; nothing more can run).
    pub live_nodes: usize,
}

/// What a slot tells the broker.
enum Msg {
    Ready { node: NodeId, reply: oneshot::Sender<Option<Work>> },
    Progress { attempt: u64, frames: u64 },
    Encoded { attempt: u64, result: Encoded, seconds: f64 },
    Verified { attempt: u64, result: Box<Result<(ChunkFacts, Seal), AttemptError>> },
    SlotEnded,
}

/// One attempt, handed to a slot.
struct Work {
    a: Assignment,
    job: Arc<JobWork>,
    files: AttemptFiles,
    cancel: watch::Receiver<bool>,
}

/// An attempt the broker has handed out.
struct Live {
    job: JobId,
    chunk: usize,
    node: NodeId,
    files: AttemptFiles,
    cancel: watch::Sender<bool>,
    /// Encoded, now being verified.
    verifying: bool,
    seconds: f64,
    /// The encode's CPU and wall time, if the node reported them.
    usage: Option<Usage>,
    /// Its encoder's stderr, for the log if verification fails.
    stderr: Tail,
    /// The node's record of the part it made (see `encode.sh`), while it
    /// is the one being checked.
    record: Option<String>,
}

struct Broker<T> {
    /// The nodes; their `stats` are kept here.
    workers: Workers<T>,
    sched: Scheduler,
    jobs: HashMap<JobId, Arc<JobWork>>,
    /// Each job's reference codec parameters (the preflight's), once known.
    references: HashMap<JobId, CodecParams>,
    live: HashMap<u64, Live>,
    waiting: Vec<(NodeId, oneshot::Sender<Option<Work>>)>,
    events: Sender,
    ends: mpsc::UnboundedSender<JobEnd>,
    msgs: mpsc::UnboundedSender<Msg>,
    slots_alive: usize,
    stopping: bool,
    closed: bool,
}

/// Run the batch's chunks on `workers` until every job is over (or `stop`).
pub async fn dispatch<T: Transport + Clone + 'static>(
    workers: Workers<T>,
    mut orders: mpsc::UnboundedReceiver<Order>,
    ends: mpsc::UnboundedSender<JobEnd>,
    events: Sender,
    mut stop: watch::Receiver<bool>,
) -> Dispatched<T> {
    let specs = workers.map(|n| NodeSpec { slots: n.slots, capacity: n.capacity, known: n.known });
    let (msgs, mut inbox) = mpsc::unbounded_channel();
    let mut b = Broker {
        workers,
        sched: Scheduler::new(&specs),
        jobs: HashMap::new(),
        references: HashMap::new(),
        live: HashMap::new(),
        waiting: Vec::new(),
        events,
        ends,
        msgs,
        slots_alive: 0,
        stopping: false,
        closed: false,
    };
    b.start_slots();
    let mut orders_open = true;
    while !b.over() {
        let wake = b.wake_at();
        tokio::select! {
            m = inbox.recv() => match m {
                Some(m) => b.handle(m),
                None => break,
            },
            o = orders.recv(), if orders_open => match o {
                Some(o) => b.order(o),
                None => { orders_open = false; b.order(Order::Close) }
            },
            _ = stop.wait_for(|s| *s), if !b.stopping => b.stop_all(),
            _ = tokio::time::sleep_until(wake.into()), if !b.live.is_empty() || !b.waiting.is_empty() => {}
        }
        b.watchdog();
        b.assign();
    }
    let learned = b.sched.learned();
    for (id, w) in learned.iter_ids() {
        b.workers[id].learned = *w;
    }
    Dispatched { live_nodes: b.sched.live_nodes(), workers: b.workers, interrupted: b.stopping }
}

impl<T: Transport + Clone + 'static> Broker<T> {
    fn send(&self, ev: Event) {
        // The reporter ends only after the batch: a closed channel here
        // means it crashed, and the work goes on without it.
        let _ = self.events.send(ev);
    }

    fn end(&self, e: JobEnd) {
        // The batch listens until the broker returns.
        let _ = self.ends.send(e);
    }

    fn start_slots(&mut self) {
        for (n, node) in self.workers.iter_ids() {
            for _ in 0..node.slots {
                self.slots_alive += 1;
                let (transport, threads, msgs) = (node.transport.clone(), node.threads, self.msgs.clone());
                tokio::spawn(async move { slot(transport, threads, n, msgs).await });
            }
        }
    }

    /// Done: every slot has ended and nothing is being verified; or every
    /// job is over and what still runs is being stopped.
    fn over(&self) -> bool {
        if self.slots_alive == 0 {
            return self.live.is_empty();
        }
        (self.stopping || self.sched.finished()) && self.live.is_empty() && self.waiting.is_empty()
    }

    /// When the broker must look again by itself: the watchdog's next
    /// check, and now and then while slots wait for work.
    fn wake_at(&self) -> Instant {
        let now = Instant::now();
        let idle = now + Duration::from_secs(1);
        match self.sched.next_check(now) {
            Some(t) if self.waiting.is_empty() => t,
            Some(t) => t.min(idle),
            None => idle,
        }
    }

    fn order(&mut self, o: Order) {
        match o {
            Order::Add(job) => {
                let done: Vec<bool> = job.ctx.plan.chunks.iter().map(|c| job.dir.is_done(c.index)).collect();
                let frames: Vec<u64> = job.ctx.plan.chunks.iter().map(|c| c.frames).collect();
                let id = job.id;
                self.sched.add_job(id, &frames, &done, job.weight, &job.unable);
                if let Some(r) = job.dir.reference() {
                    self.references.insert(id, r);
                }
                self.jobs.insert(id, Arc::new(job));
                if self.sched.job_left(id) == 0 {
                    self.end(JobEnd::Encoded(id));
                    self.end(JobEnd::Quiet(id));
                }
            }
            Order::Abandon { job, why } => {
                let stop = self.sched.abandon_job(job);
                self.cancel(&stop);
                self.end(JobEnd::Failed { job, why });
                self.quiet_check(job);
            }
            Order::Close => {
                self.closed = true;
                self.sched.close();
            }
        }
    }

    fn handle(&mut self, m: Msg) {
        let now = Instant::now();
        match m {
            Msg::Ready { node, reply } => self.waiting.push((node, reply)),
            Msg::Progress { attempt, frames } => {
                // At most one event per new frame, whatever a node prints.
                if let Some(frames) = self.sched.progress(attempt, frames, now) {
                    self.send(Event::ChunkProgress { attempt, frames });
                }
            }
            Msg::Encoded { attempt, result, seconds } => self.encoded(attempt, result, seconds),
            Msg::Verified { attempt, result } => self.verified(attempt, *result),
            Msg::SlotEnded => self.slots_alive -= 1,
        }
    }

    /// Give every waiting slot what the scheduler has for it.
    fn assign(&mut self) {
        let now = Instant::now();
        let waiting = std::mem::take(&mut self.waiting);
        for (node, reply) in waiting {
            if self.stopping {
                // The slot ends: nothing more for it.
                let _ = reply.send(None);
                continue;
            }
            match self.sched.next(node, now) {
                Next::Run(a) => {
                    let work = self.hand_out(node, a);
                    if let Err(Some(w)) = reply.send(Some(work)) {
                        // The slot is gone (its task ended): the chunk goes back.
                        self.sched.cancelled(w.a.attempt, now);
                        self.live.remove(&w.a.attempt);
                    }
                }
                Next::Wait => self.waiting.push((node, reply)),
                // This node gets nothing more: its slot ends.
                Next::Done => {
                    // The worker may be gone already (its node dropped).
                    let _ = reply.send(None);
                }
            }
        }
    }

    fn hand_out(&mut self, node: NodeId, a: Assignment) -> Work {
        let job = self.jobs[&a.job].clone();
        let files = job.dir.attempt_files(a.chunk, a.attempt);
        let (tx, rx) = watch::channel(false);
        self.live.insert(
            a.attempt,
            Live {
                job: a.job,
                chunk: a.chunk,
                node,
                files: files.clone(),
                cancel: tx,
                verifying: false,
                seconds: 0.0,
                usage: None,
                stderr: Tail::default(),
                record: None,
            },
        );
        let st = &mut self.workers[node].stats;
        // Its shell (encode.sh), its encoder and the check of its part:
        // ffprobe, awk, and tee or wc.
        st.processes += 5;
        st.retries += u64::from(a.retry);
        st.duplicates += u64::from(a.duplicate);
        self.send(Event::ChunkStart {
            file: job.file.clone(),
            job: a.job,
            chunk: a.chunk,
            attempt: a.attempt,
            node: self.workers[node].name.clone(),
            frames: job.ctx.plan.chunks[a.chunk].frames,
            duplicate: a.duplicate,
        });
        Work { a, job, files, cancel: rx }
    }

    fn encoded(&mut self, attempt: u64, result: Encoded, seconds: f64) {
        match result {
            Encoded::Written { usage, stderr, record } => {
                if let Some(l) = self.live.get_mut(&attempt) {
                    l.seconds = seconds;
                    l.usage = usage;
                    l.stderr = stderr;
                    l.record = record;
                }
                self.verify(attempt)
            }
            Encoded::Cancelled => self.cancelled(attempt),
            Encoded::Failed(e, stderr) => self.failed(attempt, e, stderr),
        }
    }

    /// Check the part, in its own task: the node's record of it against
    /// the plan, or (no record) the part itself with ffprobe here.
    fn verify(&mut self, attempt: u64) {
        let Some(l) = self.live.get_mut(&attempt) else { return };
        l.verifying = true;
        let job = self.jobs[&l.job].clone();
        let (chunk, part, msgs) = (l.chunk, l.files.part.clone(), self.msgs.clone());
        let record = l.record.clone();
        tokio::spawn(async move {
            let result = check_part(&job, chunk, &part, record.as_deref()).await;
            // The broker outlives every verification it started.
            let _ = msgs.send(Msg::Verified { attempt, result: Box::new(result) });
        });
    }

    fn verified(&mut self, attempt: u64, result: Result<(ChunkFacts, Seal), AttemptError>) {
        let Some(l) = self.live.get_mut(&attempt) else { return };
        let stderr = std::mem::take(&mut l.stderr);
        let job = l.job;
        let checked = result.and_then(|(facts, seal)| match self.references.get(&job) {
            Some(r) => match facts.params.difference(r) {
                Some(diff) => Err(AttemptError::Mismatch(diff)),
                None => Ok((facts, seal)),
            },
            None => Ok((facts, seal)),
        });
        // Before a chunk is refused on its node's record, this machine's own
        // ffprobe has the last word: the node's may name things otherwise
        // (another build), be missing, or fail where this one reads the part.
        if checked.is_err() && l.record.take().is_some() {
            l.stderr = stderr;
            self.verify(attempt);
            return;
        }
        match checked {
            Ok((facts, seal)) => self.succeeded(attempt, facts, seal),
            Err(e) => self.failed(attempt, e, stderr),
        }
    }

    fn succeeded(&mut self, attempt: u64, facts: ChunkFacts, seal: Seal) {
        let now = Instant::now();
        let Some(l) = self.live.remove(&attempt) else { return };
        let dir = self.jobs[&l.job].dir.clone();
        let won = self.sched.succeeded(attempt, now, l.usage);
        let node = self.workers[l.node].name.clone();
        if !won.won {
            dir.discard(&l.files.part);
            self.send(Event::ChunkCancelled { job: l.job, chunk: l.chunk, attempt, node });
            self.quiet_check(l.job);
            return;
        }
        if let Err(e) = dir.keep_chunk(&l.files.part, l.chunk, seal) {
            // The chunk is verified but cannot be kept: the job fails
            // (resumable), the others go on.
            let why = JobFailure::KeepChunk { chunk: l.chunk, error: e };
            let stop = self.sched.abandon_job(l.job);
            self.cancel(&stop);
            self.end(JobEnd::Failed { job: l.job, why });
            self.quiet_check(l.job);
            return;
        }
        if !self.references.contains_key(&l.job) {
            if let Err(e) = dir.save_reference(&facts.params) {
                self.send(Event::Warning {
                    message: format!("cannot save the job's codec parameters: {e:#}"),
                });
            }
            self.references.insert(l.job, facts.params);
        }
        let st = &mut self.workers[l.node].stats;
        st.chunks += 1;
        st.frames += facts.frames;
        st.encode_seconds += l.seconds;
        self.cancel(&won.stop);
        self.send(Event::ChunkDone {
            job: l.job,
            chunk: l.chunk,
            attempt,
            node,
            frames: facts.frames,
            seconds: l.seconds,
        });
        if let Some(job) = won.job_done {
            self.end(JobEnd::Encoded(job));
        }
        self.quiet_check(l.job);
    }

    fn cancelled(&mut self, attempt: u64) {
        let Some(l) = self.live.remove(&attempt) else { return };
        self.sched.cancelled(attempt, Instant::now());
        self.jobs[&l.job].dir.discard(&l.files.part);
        self.jobs[&l.job].dir.discard(&l.files.source_part);
        let node = self.workers[l.node].name.clone();
        self.send(Event::ChunkCancelled { job: l.job, chunk: l.chunk, attempt, node });
        self.quiet_check(l.job);
    }

    fn failed(&mut self, attempt: u64, error: AttemptError, stderr: Tail) {
        if self.controller_disk_full(attempt, &error) {
            return;
        }
        let Some(l) = self.live.remove(&attempt) else { return };
        let dir = self.jobs[&l.job].dir.clone();
        dir.discard(&l.files.part);
        dir.discard(&l.files.source_part);
        let node = self.workers[l.node].name.clone();
        self.workers[l.node].stats.failures += 1;
        let how = match &error {
            AttemptError::NodeLost(_) => Failure::NodeLost,
            // A node whose build makes chunks that do not fit leaves at once.
            AttemptError::Mismatch(_) => Failure::NodeUnfit,
            _ => Failure::Chunk,
        };
        let after = self.sched.failed(attempt, how, Instant::now());
        let dropped = after.node_dropped;
        self.cancel(&after.stop);
        let message = failure::error_text(&error, &node);
        let log = self.keep_log(&l, &node, &message, &stderr);
        self.send(Event::ChunkFailed {
            job: l.job,
            chunk: l.chunk,
            attempt,
            node: node.clone(),
            error: message.clone(),
            log: log.clone(),
        });
        let message = match &log {
            Some(log) => format!("{message} (log: {log})"),
            None => message,
        };
        if dropped {
            self.send(Event::NodeDropped {
                node,
                reason: message.clone(),
                lost: matches!(error, AttemptError::NodeLost(_)),
            });
        }
        for (job, why) in after.failed_jobs {
            let (node, chunk) = (self.workers[l.node].name.clone(), l.chunk);
            let last = LastFailure { node, chunk, error: error.clone(), log: log.clone() };
            self.end(JobEnd::Failed { job, why: JobFailure::Attempts { why, last } });
            self.quiet_check(job);
        }
        self.quiet_check(l.job);
    }

    /// Keep a failed attempt's log in its job directory; its path (none
    /// when it cannot be written: a warning says why).
    fn keep_log(&self, l: &Live, node: &str, error: &str, stderr: &Tail) -> Option<String> {
        let job = &self.jobs[&l.job];
        let frames = job.ctx.plan.chunks[l.chunk].frames;
        let h = Header { file: &job.file, chunk: l.chunk, frames, node, error };
        match job.dir.keep_log(&h, stderr) {
            Ok(path) => Some(path.display().to_string()),
            Err(e) => {
                self.send(Event::Warning {
                    message: format!("cannot keep the log of chunk {}: {e:#}", l.chunk),
                });
                None
            }
        }
    }

    /// A chunk that failed because this machine's disk is full (with
    /// `storage: ssh` the chunks come back to it) is not the node's fault:
    /// the job stops, named for what it is, and no node is held to blame.
    fn controller_disk_full(&mut self, attempt: u64, error: &AttemptError) -> bool {
        let Some(l) = self.live.get(&attempt) else { return false };
        let job = &self.jobs[&l.job];
        if matches!(error, AttemptError::NodeLost(_) | AttemptError::Mismatch(_)) {
            return false;
        }
        let free = crate::safefs::free_bytes(&job.dir.dir).unwrap_or(u64::MAX);
        if free >= 16 << 20 {
            return false;
        }
        let (id, dir) = (l.job, job.dir.clone());
        let why = JobFailure::DiskFull { dir: dir.dir.clone(), free };
        self.cancelled(attempt);
        let stop = self.sched.abandon_job(id);
        self.cancel(&stop);
        self.send(Event::Warning { message: why.to_string() });
        self.end(JobEnd::Failed { job: id, why });
        self.quiet_check(id);
        true
    }

    /// Stop attempts (their result no longer matters).
    fn cancel(&self, attempts: &[u64]) {
        for a in attempts {
            if let Some(l) = self.live.get(a) {
                // A slot already past its encode ignores it.
                let _ = l.cancel.send(true);
            }
        }
    }

    fn stop_all(&mut self) {
        self.stopping = true;
        let all: Vec<u64> = self.live.keys().copied().collect();
        self.cancel(&all);
    }

    /// The watchdog: attempts stuck without a new frame are stopped and
    /// their chunks go elsewhere.
    fn watchdog(&mut self) {
        for s in self.sched.stalled(Instant::now()) {
            let node = self.workers[s.node].name.clone();
            let mut stop = s.stop.clone();
            stop.push(s.attempt);
            self.cancel(&stop);
            let why = match s.overtime {
                true => format!(
                    "still running after {:.0} s, far longer than its chunk should take: attempt abandoned, node {node} is suspect",
                    s.seconds
                ),
                false => format!("no new frame for {:.0} s: attempt abandoned, node {node} is suspect", s.seconds),
            };
            self.send(Event::ChunkFailed {
                job: s.job,
                chunk: s.chunk,
                attempt: s.attempt,
                node: node.clone(),
                error: why.clone(),
                log: None,
            });
            self.workers[s.node].stats.failures += 1;
            if s.node_dropped {
                self.send(Event::NodeDropped { node, reason: "stalled twice".into(), lost: false });
            }
        }
    }

    /// Tell the batch when a job has nothing running any more.
    fn quiet_check(&self, job: JobId) {
        let over = self.sched.job_left(job) == 0 || self.sched.job_failed(job);
        if over && !self.live.values().any(|l| l.job == job) {
            self.end(JobEnd::Quiet(job));
        }
    }
}

/// Verify an encoded part: the very file under its name now (a regular
/// file, within the size any encode of its frames may take), probed
/// through its descriptor and sealed, so that the file kept is the file
/// checked.
async fn check_part(
    job: &JobWork,
    chunk: usize,
    part: &str,
    record: Option<&str>,
) -> Result<(ChunkFacts, Seal), AttemptError> {
    let unreadable = |e: String| AttemptError::Verify(VerifyError::Unreadable(e));
    let c = &job.ctx.plan.chunks[chunk];
    let file = job.dir.open_part(part).map_err(|e| unreadable(format!("{e:#}")))?;
    let size = file.metadata().map_err(|e| unreadable(e.to_string()))?.len();
    let cap = crate::transcode::verify::chunk_cap(c.frames, job.weight);
    if size > cap {
        return Err(VerifyError::TooLarge { size, cap }.into());
    }
    let facts = match record {
        Some(text) => {
            let facts = crate::transcode::verify::parse_record(text)?;
            if let Some(seen) = facts.bytes.filter(|&b| b != size) {
                return Err(unreadable(format!("the node wrote {seen} bytes, {size} are here")));
            }
            facts
        }
        None => crate::transcode::verify::inspect(&crate::safefs::file_fd_path(&file)).await?,
    };
    crate::transcode::verify::check(&facts, c, &job.ctx.plan)?;
    let mut seal = tokio::task::spawn_blocking(move || Seal::of(&file))
        .await
        .map_err(|e| unreadable(e.to_string()))?
        .map_err(|e| unreadable(e.to_string()))?;
    seal.start = facts.start;
    Ok((facts, seal))
}

/// One slot of a node: ask for work, run it, report, again.
async fn slot<T: Transport>(transport: T, threads: Option<u32>, n: NodeId, msgs: mpsc::UnboundedSender<Msg>) {
    loop {
        let (reply, answer) = oneshot::channel();
        if msgs.send(Msg::Ready { node: n, reply }).is_err() {
            break;
        }
        let Ok(Some(work)) = answer.await else { break };
        let attempt = work.a.attempt;
        let chunk = &work.job.ctx.plan.chunks[work.a.chunk];
        let on_frames = |frames: u64| {
            // The broker outlives every slot.
            let _ = msgs.send(Msg::Progress { attempt, frames });
        };
        let run = Attempt {
            node: &transport,
            threads,
            ctx: &work.job.ctx,
            job: &work.job.dir,
            chunk,
            files: &work.files,
            size_cap: crate::transcode::verify::chunk_cap(chunk.frames, work.job.weight),
            attempt,
        };
        let started = Instant::now();
        let result = run.run(work.cancel, &on_frames).await;
        let seconds = started.elapsed().as_secs_f64();
        if msgs.send(Msg::Encoded { attempt, result, seconds }).is_err() {
            break;
        }
    }
    // The broker may already be gone: then nobody counts slots any more.
    let _ = msgs.send(Msg::SlotEnded);
}
