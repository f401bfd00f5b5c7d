//! Dispatch: one task per slot of every node pulls chunks from the
//! scheduler, runs attempts, and records verified results.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::job::AttemptFiles;
use super::job::JobDir;
use super::progress::{Event, NodeStats, Sender};
use super::scheduler::{Next, NodeSpec, Scheduler};
use super::verify::CodecParams;
use super::worker::{self, FailKind, JobContext, Outcome};
use crate::remote::Transport;

/// A node as the dispatcher sees it.
pub struct WorkerNode<T> {
    pub name: String,
    pub transport: T,
    pub slots: usize,
    /// Threads per encode (None: leave it to ffmpeg or the user's -threads).
    pub threads: Option<u32>,
    /// CPUs it offers: its speed guess until it has encoded frames.
    pub capacity: f64,
}

#[derive(Debug)]
pub enum DispatchError {
    Interrupted,
    Failed(String),
}

struct Shared {
    sched: Scheduler,
    cancels: HashMap<u64, watch::Sender<bool>>,
    stats: Vec<NodeStats>,
    reference: Option<CodecParams>,
    /// The latest failure, for the message when the job gives up.
    last_error: Option<String>,
    /// Verifications of encoded chunks, running on the controller.
    verifiers: Vec<tokio::task::JoinHandle<()>>,
    fatal: Option<DispatchError>,
}

struct Env<T> {
    nodes: Vec<WorkerNode<T>>,
    ctx: Arc<JobContext>,
    job: Arc<JobDir>,
    events: Sender,
    shared: Mutex<Shared>,
    changed: Notify,
    stop: watch::Receiver<bool>,
}

impl<T> Env<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, ev: Event) {
        let _ = self.events.send(ev);
    }
}

/// Every chunk verified. Attempts that lost to a duplicate may still be
/// stopping, or being verified: await `stragglers` before the job directory
/// goes (the merge need not wait for them).
pub struct Dispatched {
    pub stats: Vec<NodeStats>,
    pub stragglers: Vec<tokio::task::JoinHandle<()>>,
}

/// Wait (at most `limit`) until every stopped attempt is gone.
pub async fn settle(stragglers: Vec<tokio::task::JoinHandle<()>>, limit: Duration) {
    let _ = tokio::time::timeout(limit, join_all(stragglers)).await;
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

pub async fn dispatch<T: Transport + 'static>(
    nodes: Vec<WorkerNode<T>>,
    ctx: Arc<JobContext>,
    job: Arc<JobDir>,
    events: Sender,
    stop: watch::Receiver<bool>,
) -> Result<Dispatched, DispatchError> {
    let chunks = &ctx.plan.chunks;
    let done: Vec<bool> = chunks.iter().map(|c| job.is_done(c.index)).collect();
    let shared = Shared {
        sched: Scheduler::new(
            chunks.iter().map(|c| c.frames).collect(),
            done,
            &nodes.iter().map(|n| NodeSpec { slots: n.slots, capacity: n.capacity }).collect::<Vec<_>>(),
        ),
        cancels: HashMap::new(),
        stats: nodes.iter().map(|n| NodeStats { node: n.name.clone(), ..Default::default() }).collect(),
        reference: job.reference(),
        last_error: None,
        verifiers: Vec::new(),
        fatal: None,
    };
    let env =
        Arc::new(Env { nodes, ctx, job, events, shared: Mutex::new(shared), changed: Notify::new(), stop });

    let mut tasks = Vec::new();
    for (n, node) in env.nodes.iter().enumerate() {
        for slot in 0..node.slots {
            let env = env.clone();
            tasks.push(tokio::spawn(async move { slot_loop(&env, n, slot).await }));
        }
    }
    // Stop every running attempt when the job is stopped.
    let canceller = {
        let env = env.clone();
        tokio::spawn(async move {
            let mut stop = env.stop.clone();
            let _ = stop.wait_for(|s| *s).await;
            stop_all(&env);
        })
    };
    // Until every slot is done, or every chunk is (then the slots left are
    // stopping attempts that lost to a duplicate).
    let total = env.ctx.plan.chunks.len();
    loop {
        let notified = env.changed.notified();
        {
            let mut sh = env.lock();
            sh.verifiers.retain(|t| !t.is_finished());
            if sh.sched.done_count() == total
                || (tasks.iter().all(|t| t.is_finished()) && sh.verifiers.is_empty())
            {
                break;
            }
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    tasks.append(&mut std::mem::take(&mut env.lock().verifiers));
    let (finished, stragglers): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|t| t.is_finished());
    for t in finished {
        let _ = t.await;
    }
    canceller.abort();

    let outcome = {
        let mut sh = env.lock();
        if let Some(f) = sh.fatal.take() {
            Err(f)
        } else if *env.stop.borrow() {
            Err(DispatchError::Interrupted)
        } else if sh.sched.done_count() == total {
            Ok(std::mem::take(&mut sh.stats))
        } else {
            match sh.sched.next(0, Instant::now()) {
                Next::Finished => Ok(std::mem::take(&mut sh.stats)),
                Next::Failed(why) => Err(DispatchError::Failed(match &sh.last_error {
                    Some(last) => format!("{why}; last failure: {last}"),
                    None => why,
                })),
                _ => Err(DispatchError::Failed("no node is left".into())),
            }
        }
    };
    match outcome {
        Ok(stats) => Ok(Dispatched { stats, stragglers }),
        Err(e) => {
            join_all(stragglers).await;
            Err(e)
        }
    }
}

fn stop_all<T>(env: &Env<T>) {
    for tx in env.lock().cancels.values() {
        let _ = tx.send(true);
    }
    env.changed.notify_waiters();
}

async fn slot_loop<T: Transport + 'static>(env: &Arc<Env<T>>, n: usize, slot: usize) {
    loop {
        if *env.stop.borrow() {
            return;
        }
        let notified = env.changed.notified();
        let next = {
            let mut sh = env.lock();
            if sh.fatal.is_some() {
                return;
            }
            sh.sched.next(n, Instant::now())
        };
        let a = match next {
            Next::Finished => return,
            Next::Failed(_) => {
                // The job cannot finish: stop what still runs elsewhere.
                stop_all(env);
                return;
            }
            Next::Wait => {
                let mut stop = env.stop.clone();
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                continue;
            }
            Next::Run(a) => a,
        };
        // Slots waiting for a better chunk see a new schedule.
        env.changed.notify_waiters();
        let chunk = &env.ctx.plan.chunks[a.chunk];
        let node = &env.nodes[n];
        let (tx, rx) = watch::channel(false);
        {
            let mut sh = env.lock();
            sh.cancels.insert(a.attempt, tx);
            if a.retry {
                sh.stats[n].retries += 1;
            }
            if a.duplicate {
                sh.stats[n].duplicates += 1;
            }
        }
        env.send(Event::ChunkStart {
            chunk: a.chunk,
            attempt: a.attempt,
            node: node.name.clone(),
            slot,
            frames: chunk.frames,
            duplicate: a.duplicate,
        });
        let files = env.job.attempt_files(a.chunk, a.attempt);
        let started = Instant::now();
        let attempt_id = a.attempt;
        let on_frames = |frames: u64| {
            env.lock().sched.progress(attempt_id, frames, Instant::now());
            env.send(Event::ChunkProgress { attempt: attempt_id, frames });
        };
        let encoded =
            worker::encode(&node.transport, node.threads, &env.ctx, &env.job, chunk, &files, rx, &on_frames)
                .await;
        let seconds = started.elapsed().as_secs_f64();
        match encoded {
            Some(outcome) => {
                record(env, n, a.chunk, a.attempt, outcome, &files, seconds);
                env.changed.notify_waiters();
            }
            None => {
                // Verified on the controller while this slot takes its next
                // chunk: the node does not wait for ffprobe.
                let task = {
                    let env = env.clone();
                    tokio::spawn(async move {
                        let outcome = worker::verify(
                            &env.ctx,
                            &env.ctx.plan.chunks[a.chunk],
                            &env.job.local_path(&files.part),
                        )
                        .await;
                        record(&env, n, a.chunk, a.attempt, outcome, &files, seconds);
                        env.changed.notify_waiters();
                    })
                };
                env.lock().verifiers.push(task);
            }
        }
    }
}

fn record<T>(
    env: &Env<T>,
    n: usize,
    chunk: usize,
    attempt: u64,
    outcome: Outcome,
    files: &AttemptFiles,
    seconds: f64,
) {
    let node = env.nodes[n].name.clone();
    let mut sh = env.lock();
    sh.cancels.remove(&attempt);
    env.job.discard(&files.source_part);
    let failure = match outcome {
        Outcome::Done(facts) => {
            let mismatch = sh.reference.as_ref().and_then(|r| facts.params.difference(r));
            match mismatch {
                Some(diff) => Some((
                    FailKind::Mismatch,
                    format!("chunk rejected: {diff} (node {node} runs a different ffmpeg build?)"),
                )),
                None => {
                    let (won, others) = sh.sched.succeeded(attempt, Instant::now());
                    if won {
                        if let Err(e) = env.job.keep_chunk(&files.part, chunk) {
                            sh.fatal = Some(DispatchError::Failed(format!("cannot keep chunk {chunk}: {e}")));
                        }
                        if sh.reference.is_none() {
                            let _ = env.job.save_reference(&facts.params);
                            sh.reference = Some(facts.params);
                        }
                        let st = &mut sh.stats[n];
                        st.chunks += 1;
                        st.frames += facts.frames;
                        st.encode_seconds += seconds;
                        for o in others {
                            if let Some(tx) = sh.cancels.get(&o) {
                                let _ = tx.send(true);
                            }
                        }
                        drop(sh);
                        env.send(Event::ChunkDone { chunk, attempt, node, frames: facts.frames, seconds });
                    } else {
                        env.job.discard(&files.part);
                        drop(sh);
                        env.send(Event::ChunkCancelled { chunk, attempt, node });
                    }
                    return;
                }
            }
        }
        Outcome::Cancelled => {
            sh.sched.cancelled(attempt);
            env.job.discard(&files.part);
            drop(sh);
            env.send(Event::ChunkCancelled { chunk, attempt, node });
            return;
        }
        Outcome::Failed { kind, error } => Some((kind, error)),
    };
    let Some((kind, error)) = failure else { return };
    env.job.discard(&files.part);
    // The options were checked by the preflight on the controller: a failing
    // encoder here is this node's problem (its build, its disk, its
    // permissions), so the chunk goes to another node.
    sh.stats[n].failures += 1;
    sh.last_error = Some(format!("node {node}, chunk {chunk}: {error}"));
    // A lost node or one whose build makes mismatching chunks leaves the
    // job at once; the chunk is not held against other nodes.
    let after = sh.sched.failed(attempt, matches!(kind, FailKind::NodeLost | FailKind::Mismatch));
    let stop_on_node = if after.node_dropped { sh.sched.attempts_on(n) } else { vec![] };
    for o in &stop_on_node {
        if let Some(tx) = sh.cancels.get(o) {
            let _ = tx.send(true);
        }
    }
    drop(sh);
    env.send(Event::ChunkFailed { chunk, attempt, node: node.clone(), error: error.clone() });
    if after.node_dropped {
        env.send(Event::NodeDropped { node, reason: error });
    }
}
