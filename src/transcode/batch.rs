//! The batch: the files of one command on one cluster. They are prepared
//! one after the other (see `prepare.rs`), their chunks go into one queue
//! (see `dispatch.rs`) so nodes never idle between files, their side
//! streams encode on the controller one file at a time, and each file is
//! merged as soon as its chunks are verified — the first outputs appear
//! early. One bad file is reported and the others go on.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use tokio::sync::{mpsc, watch};

use super::cluster::Cluster;
use super::dispatch::{self, JobEnd, JobWork, Order, WorkerNode};
use super::events::{Event, FileResult, NodeStats, Sender};
use super::inputs::FileSpec;
use super::job::JobDir;
use super::merge::{self, MergeRequest};
use super::prepare::{self, Checked, PrepareError, Prepared};
use super::side::{SideError, SideFile};
use super::speeds::{self, Speeds};
use crate::remote::Node;

/// How one file ended.
#[derive(Debug)]
pub enum FileEnd {
    Done,
    /// Left alone (its output exists).
    Skipped(String),
    /// The input, output or options are wrong.
    Refused(anyhow::Error),
    /// The work failed; the job directory (if any) keeps what was done.
    Failed(anyhow::Error),
    /// No node of the cluster could be used.
    NoCluster(anyhow::Error),
    /// Stopped (Ctrl-C, SIGTERM): the same command resumes it.
    Interrupted(anyhow::Error),
}

/// A file and how it ended.
#[derive(Debug)]
pub struct FileOutcome {
    pub input: PathBuf,
    pub output: Option<PathBuf>,
    pub end: FileEnd,
}

/// What the batch needs besides its files and cluster.
pub struct Settings {
    pub prepare: prepare::Options,
    pub keep: bool,
    pub events: Sender,
    pub stop: watch::Receiver<bool>,
    pub started: Instant,
}

/// A file's job once queued.
struct Running {
    file: usize,
    prepared: Arc<Prepared>,
    dir: Arc<JobDir>,
    side: SideState,
    encoded: bool,
    quiet: bool,
    merged: bool,
    /// Nothing to resume (ffmpeg refused the options): its directory goes.
    discard: bool,
    started: Instant,
}

enum SideState {
    None,
    Pending,
    Running,
    Ready(SideFile),
}

/// Jobs whose side streams (audio, subtitles) the controller encodes at once.
/// They run beside the chunks, so one at a time made a folder of short
/// mpeg4 files wait for its audio (bench/batch.sh); two keep a 2-core
/// controller busy without starving it.
const SIDES_AT_ONCE: usize = 2;

/// What the helper tasks report to the batch.
enum Report {
    Prepared { spec: FileSpec, result: Box<Result<Prepared, PrepareError>> },
    PrepDone,
    Side { job: usize, result: Result<SideFile, SideError> },
    Merged { job: usize, result: anyhow::Result<()> },
}

/// Run the files on the cluster, as they come from `files` (a list, or a
/// watched directory), until that channel closes. `first`: the first file,
/// already checked (it overlapped connecting).
pub async fn run(
    files: mpsc::UnboundedReceiver<FileSpec>,
    first: Option<(FileSpec, Result<Checked, PrepareError>)>,
    cluster: Cluster,
    s: Settings,
) -> (Vec<FileOutcome>, Vec<NodeStats>) {
    let mut b = Batch::new(cluster, &s);
    let (reports, mut inbox) = mpsc::unbounded_channel();
    let (orders, orders_rx) = mpsc::unbounded_channel();
    let (ends_tx, mut ends) = mpsc::unbounded_channel();
    let nodes = std::mem::take(&mut b.nodes);
    let broker =
        tokio::spawn(dispatch::dispatch(nodes, orders_rx, ends_tx, s.events.clone(), s.stop.clone()));
    let even = b.facts.len() == 1;
    let prep = spawn_prep(files, first, &s, (b.slots, even), reports.clone());
    b.orders = Some(orders);
    b.reports = Some(reports);
    let mut stop = s.stop.clone();
    let mut broker = Some(broker);
    loop {
        if b.over() {
            break;
        }
        tokio::select! {
            Some(r) = inbox.recv() => b.report(r, &s),
            Some(e) = ends.recv() => b.job_end(e, &s),
            d = async { broker.as_mut().expect("guarded").await }, if broker.is_some() => {
                broker = None;
                // What the broker said before it ended comes first.
                while let Ok(e) = ends.try_recv() {
                    b.job_end(e, &s);
                }
                b.broker_done(d.ok());
            }
            _ = stop.wait_for(|x| *x), if !b.stopped => b.stop(),
        }
    }
    prep.abort();
    b.finish(&s)
}

/// Files checked (probed, preflighted) at once, ahead of the one being
/// planned. A check is mostly a handful of short ffmpeg and ffprobe runs
/// waiting on each other: one at a time, a folder of short files left the
/// nodes idle between them (bench/batch.sh, mpeg4).
const CHECKS_AHEAD: usize = 2;

/// A check running on its own task; aborted when dropped (a stopped batch).
struct Checking {
    file: Queued,
    task: tokio::task::JoinHandle<Result<Checked, PrepareError>>,
}

/// A file waiting to be prepared, and its size when it arrived (what is
/// queued behind a file is estimated from sizes).
struct Queued {
    spec: FileSpec,
    bytes: u64,
}

impl Queued {
    fn new(spec: FileSpec) -> Queued {
        let bytes = std::fs::metadata(&spec.input).map_or(0, |m| m.len());
        Queued { spec, bytes }
    }
}

impl Drop for Checking {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The files still to prepare: arrived but not yet checked, and being
/// checked (in order).
struct Prep {
    files: mpsc::UnboundedReceiver<FileSpec>,
    queue: VecDeque<Queued>,
    checking: VecDeque<Checking>,
    o: prepare::Options,
    slots: usize,
    even: bool,
    events: Sender,
}

impl Prep {
    /// Queue what has arrived.
    fn take_arrived(&mut self) {
        while let Ok(spec) = self.files.try_recv() {
            self.arrive(spec);
        }
    }

    /// A file joins the queue (and the status shows it).
    fn arrive(&mut self, spec: FileSpec) {
        // The reporter outlives the batch.
        let _ = self.events.send(Event::Queued { input: spec.input.display().to_string() });
        self.queue.push_back(Queued::new(spec));
    }

    /// The next file checked, in order (its check started up to
    /// [`CHECKS_AHEAD`] files before); None once no file is left.
    async fn next_checked(&mut self) -> Option<(FileSpec, Result<Checked, PrepareError>)> {
        self.take_arrived();
        if self.queue.is_empty() && self.checking.is_empty() {
            let spec = self.files.recv().await?;
            self.arrive(spec);
        }
        while self.checking.len() < CHECKS_AHEAD {
            let Some(file) = self.queue.pop_front() else { break };
            let (spec, o) = (file.spec.clone(), self.o.clone());
            let task = tokio::spawn(async move { prepare::check(&spec, &o).await });
            self.checking.push_back(Checking { file, task });
        }
        let mut next = self.checking.pop_front()?;
        let checked = match (&mut next.task).await {
            Ok(checked) => checked,
            Err(e) => Err(PrepareError::Failed(anyhow!(
                "the check of {} ended: {e}",
                next.file.spec.input.display()
            ))),
        };
        Some((next.file.spec.clone(), checked))
    }

    /// Plan a checked file for the slots and the files queued behind it.
    fn plan(&mut self, checked: Result<Checked, PrepareError>) -> Result<Prepared, PrepareError> {
        self.take_arrived();
        let behind = self.checking.iter().map(|c| &c.file).chain(self.queue.iter());
        let behind_bytes = behind.map(|f| f.bytes).sum();
        let share = prepare::Share { slots: self.slots, even: self.even, behind_bytes };
        checked.and_then(|c| prepare::plan(c, share, self.o.chunk))
    }
}

/// Prepare the files in order and report each, checking up to
/// [`CHECKS_AHEAD`] at once. Each new job's chunks are sized for the files
/// queued behind it (see `plan::Sizing::Guided`).
fn spawn_prep(
    files: mpsc::UnboundedReceiver<FileSpec>,
    first: Option<(FileSpec, Result<Checked, PrepareError>)>,
    s: &Settings,
    (slots, even): (usize, bool),
    reports: mpsc::UnboundedSender<Report>,
) -> tokio::task::JoinHandle<()> {
    let (queue, checking, o) = (VecDeque::new(), VecDeque::new(), s.prepare.clone());
    let mut prep = Prep { files, queue, checking, o, slots, even, events: s.events.clone() };
    let stop = s.stop.clone();
    tokio::spawn(async move {
        if let Some((spec, checked)) = first {
            let result = prep.plan(checked);
            // The batch listens until every file is reported.
            let _ = reports.send(Report::Prepared { spec, result: Box::new(result) });
        }
        while !*stop.borrow() {
            let Some((spec, checked)) = prep.next_checked().await else { break };
            let result = prep.plan(checked);
            // A closed channel: the batch ended early (stop, no node left).
            let _ = reports.send(Report::Prepared { spec, result: Box::new(result) });
        }
        // Likewise: nobody left to tell.
        let _ = reports.send(Report::PrepDone);
    })
}

struct Batch {
    outcomes: Vec<Option<FileOutcome>>,
    inputs: Vec<FileSpec>,
    jobs: Vec<Running>,
    nodes: Vec<WorkerNode<Arc<Node>>>,
    /// The compute nodes, for side streams (taken in turn, file by file).
    side_nodes: Vec<Arc<Node>>,
    /// Each node's facts: its encoders and architecture.
    facts: Vec<crate::facts::Facts>,
    keys: Vec<String>,
    stats: Vec<NodeStats>,
    slots: usize,
    orders: Option<mpsc::UnboundedSender<Order>>,
    reports: Option<mpsc::UnboundedSender<Report>>,
    prep_done: bool,
    broker_over: bool,
    /// Every node left the batch: nothing more can run.
    no_nodes: bool,
    stopped: bool,
    /// Jobs whose side streams are being encoded (at most [`SIDES_AT_ONCE`]).
    sides_running: usize,
    merge_busy: bool,
    learned: Vec<Option<(f64, usize)>>,
    settings_key: String,
}

/// What earlier jobs measured of each node, for these settings; the slots
/// chunks are planned for: those a node is known to sustain (a node that
/// shows more cores than it has ran fewer last time).
pub fn remember(cluster: &mut Cluster, settings_key: &str) -> usize {
    let store = speeds::default_path().map(|p| Speeds::load(&p)).unwrap_or_default();
    for n in cluster.nodes.iter_mut() {
        n.known = store.known(&n.key, settings_key);
    }
    cluster.nodes.iter().map(|n| n.known.map_or(n.slots, |k| k.slots.clamp(1, n.slots))).sum()
}

impl Batch {
    fn new(mut cluster: Cluster, s: &Settings) -> Batch {
        let settings_key = speeds::settings_key(&s.prepare.user.codec);
        let slots = remember(&mut cluster, &settings_key);
        Batch {
            outcomes: Vec::new(),
            inputs: Vec::new(),
            jobs: Vec::new(),
            slots,
            keys: cluster.nodes.iter().map(|n| n.key.clone()).collect(),
            stats: Vec::new(),
            facts: cluster.facts,
            side_nodes: cluster.nodes.iter().map(|n| n.transport.clone()).collect(),
            nodes: cluster.nodes,
            orders: None,
            reports: None,
            prep_done: false,
            broker_over: false,
            no_nodes: false,
            stopped: false,
            sides_running: 0,
            merge_busy: false,
            learned: Vec::new(),
            settings_key,
        }
    }

    fn send(&self, s: &Settings, ev: Event) {
        // The reporter outlives the batch.
        let _ = s.events.send(ev);
    }

    fn order(&self, o: Order) {
        if let Some(tx) = &self.orders {
            // The broker ends only after the batch closes it, or on stop.
            let _ = tx.send(o);
        }
    }

    /// Every file has ended (or we were stopped), nothing runs any more.
    fn over(&self) -> bool {
        if !self.broker_over || self.merge_busy || self.sides_running > 0 {
            return false;
        }
        if self.no_nodes {
            return true;
        }
        self.stopped || (self.prep_done && self.jobs.iter().all(|j| self.outcomes[j.file].is_some()))
    }

    fn end_file(&mut self, file: usize, output: Option<PathBuf>, end: FileEnd) {
        if self.outcomes[file].is_none() {
            self.outcomes[file] = Some(FileOutcome { input: self.inputs[file].input.clone(), output, end });
        }
    }

    fn report(&mut self, r: Report, s: &Settings) {
        match r {
            Report::Prepared { spec, result } => {
                self.inputs.push(spec);
                self.outcomes.push(None);
                self.prepared(self.inputs.len() - 1, *result, s)
            }
            Report::PrepDone => {
                self.prep_done = true;
                self.order(Order::Close);
            }
            Report::Side { job, result } => self.side_done(job, result, s),
            Report::Merged { job, result } => self.merged(job, result, s),
        }
    }

    fn prepared(&mut self, file: usize, result: Result<Prepared, PrepareError>, s: &Settings) {
        let p = match result {
            Ok(p) => p,
            Err(e) => return self.not_prepared(file, e, s),
        };
        let output = p.checked.output.clone();
        if self.no_nodes {
            let why = anyhow!("no node is left");
            let input = p.checked.input.display().to_string();
            self.send(s, Event::JobFailed { job: None, input, error: why.to_string(), resumable: true });
            return self.end_file(file, Some(output), FileEnd::Failed(why));
        }
        if let Some(enc) = &p.record.encoder {
            let able = self.facts.iter().filter(|f| f.has_encoder(enc)).count();
            if able == 0 {
                let why = anyhow!("no compute node has the encoder {enc}");
                self.send(
                    s,
                    Event::JobFailed {
                        job: None,
                        input: p.checked.input.display().to_string(),
                        error: why.to_string(),
                        resumable: true,
                    },
                );
                return self.end_file(file, Some(output), FileEnd::Failed(why));
            }
        }
        let job = self.jobs.len();
        let dir = p.checked.job.clone();
        let resumed: Vec<_> = p.record.plan.chunks.iter().filter(|c| dir.is_done(c.index)).collect();
        self.send(
            s,
            Event::JobStart {
                job,
                input: p.checked.input.display().to_string(),
                output: output.display().to_string(),
                chunks: p.record.plan.chunks.len(),
                frames: p.record.plan.total_frames,
                read_in_place: p.checked.io == super::context::Io::SharedSource,
                resumed_chunks: resumed.len(),
                resumed_frames: resumed.iter().map(|c| c.frames).sum(),
                job_dir: dir.dir.display().to_string(),
            },
        );
        let side = match p.side(&s.prepare.user) {
            Some(_) => SideState::Pending,
            None => SideState::None,
        };
        let prepared = Arc::new(p);
        let name =
            prepared.checked.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.order(Order::Add(JobWork {
            ctx: Arc::new(prepared.ctx()),
            dir: dir.clone(),
            file: name,
            weight: prepared.weight(),
            unable: self
                .facts
                .iter()
                .enumerate()
                .filter(|(_, f)| prepared.record.encoder.as_deref().is_some_and(|e| !f.has_encoder(e)))
                .map(|(i, _)| i)
                .collect(),
        }));
        self.jobs.push(Running {
            file,
            prepared,
            dir,
            side,
            encoded: false,
            quiet: false,
            merged: false,
            discard: false,
            started: Instant::now(),
        });
        self.next_side(s);
    }

    fn not_prepared(&mut self, file: usize, e: PrepareError, s: &Settings) {
        let input = self.inputs[file].input.display().to_string();
        let output = self.inputs[file].output.clone();
        match e {
            PrepareError::Skipped(why) => {
                let out = output.as_ref().map(|o| o.display().to_string()).unwrap_or_default();
                self.send(s, Event::JobSkipped { input, output: out, reason: why.clone() });
                self.end_file(file, output, FileEnd::Skipped(why));
            }
            PrepareError::Refused(e) => {
                self.send(
                    s,
                    Event::JobFailed { job: None, input, error: format!("{e:#}"), resumable: false },
                );
                self.end_file(file, output, FileEnd::Refused(e));
            }
            PrepareError::Failed(e) => {
                self.send(s, Event::JobFailed { job: None, input, error: format!("{e:#}"), resumable: true });
                self.end_file(file, output, FileEnd::Failed(e));
            }
        }
    }

    /// Start the next jobs' side streams, [`SIDES_AT_ONCE`] jobs at a time,
    /// in order.
    fn next_side(&mut self, s: &Settings) {
        while self.sides_running < SIDES_AT_ONCE && !self.stopped {
            if !self.start_side(s) {
                return;
            }
        }
    }

    /// Start the first pending job's side streams; false if there is none.
    fn start_side(&mut self, s: &Settings) -> bool {
        let Some(job) = self
            .jobs
            .iter()
            .position(|j| matches!(j.side, SideState::Pending) && self.outcomes[j.file].is_none())
        else {
            return false;
        };
        let Some(side) = self.jobs[job].prepared.side(&s.prepare.user) else {
            self.jobs[job].side = SideState::None;
            return true;
        };
        self.jobs[job].side = SideState::Running;
        self.sides_running += 1;
        let (dir, reports, events) = (self.jobs[job].dir.clone(), self.reports.clone(), s.events.clone());
        let node =
            (!self.side_nodes.is_empty()).then(|| self.side_nodes[job % self.side_nodes.len()].clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let result = side.run(&dir, node.as_deref()).await;
            if let Ok(f) = &result {
                // The reporter outlives the batch.
                let _ = events.send(Event::SideStreams {
                    job,
                    streams: side.streams,
                    seconds: t.elapsed().as_secs_f64(),
                    node: f.node.clone(),
                });
            }
            if let Some(r) = reports {
                // The batch listens until every task is done.
                let _ = r.send(Report::Side { job, result });
            }
        });
        true
    }

    fn side_done(&mut self, job: usize, result: Result<SideFile, SideError>, s: &Settings) {
        self.sides_running -= 1;
        match result {
            Ok(f) => self.jobs[job].side = SideState::Ready(f),
            Err(e) => {
                self.jobs[job].side = SideState::None;
                // Refused options are the same for every chunk: stop them.
                let resumable = matches!(e, SideError::Unreadable(_));
                let j = &self.jobs[job];
                let (file, output) = (j.file, j.prepared.checked.output.clone());
                let error = e.to_string();
                self.order(Order::Abandon { job, why: e.into() });
                let input = j.prepared.checked.input.display().to_string();
                self.send(s, Event::JobFailed { job: Some(job), input, error: error.clone(), resumable });
                let end = match resumable {
                    true => FileEnd::Failed(anyhow!("{error}")),
                    false => FileEnd::Refused(anyhow!("{error}")),
                };
                self.end_file(file, Some(output), end);
                self.jobs[job].discard = !resumable;
                self.tidy(job, s);
            }
        }
        self.next_side(s);
        self.next_merge(s);
    }

    fn job_end(&mut self, e: JobEnd, s: &Settings) {
        match e {
            JobEnd::Encoded(job) => {
                self.jobs[job].encoded = true;
                self.next_merge(s);
            }
            JobEnd::Failed { job, why } => {
                let j = &self.jobs[job];
                let (file, output, dir) = (j.file, j.prepared.checked.output.clone(), j.dir.dir.clone());
                let input = j.prepared.checked.input.display().to_string();
                if self.outcomes[file].is_none() {
                    self.send(
                        s,
                        Event::JobFailed { job: Some(job), input, error: why.to_string(), resumable: true },
                    );
                }
                let why = anyhow!(
                    "{why}; the finished chunks are kept in {}: run the same command again to resume",
                    dir.display()
                );
                self.end_file(file, Some(output), FileEnd::Failed(why));
            }
            JobEnd::Quiet(job) => {
                self.jobs[job].quiet = true;
                self.tidy(job, s);
            }
        }
    }

    /// Merge the next job whose chunks and side streams are ready, one at a
    /// time, in the order they became ready.
    fn next_merge(&mut self, s: &Settings) {
        if self.merge_busy || self.stopped {
            return;
        }
        let ready = self.jobs.iter().position(|j| {
            j.encoded
                && !j.merged
                && self.outcomes[j.file].is_none()
                && !matches!(j.side, SideState::Pending | SideState::Running)
        });
        let Some(job) = ready else { return };
        self.merge_busy = true;
        let j = &self.jobs[job];
        self.send(s, Event::Merging { job, chunks: j.prepared.record.plan.chunks.len() });
        let (p, dir, reports) = (j.prepared.clone(), j.dir.clone(), self.reports.clone());
        let side = match &j.side {
            SideState::Ready(f) => Some(f.clone()),
            _ => None,
        };
        let (muxer, overwrite) = (s.prepare.user.muxer.clone(), s.prepare.overwrite);
        tokio::spawn(async move {
            let c = &p.checked;
            let side_start = c.probe.side_start();
            let result = merge::merge(&MergeRequest {
                job: &dir,
                plan: &p.record.plan,
                source: &c.source,
                video_index: c.probe.video,
                plain: p.record.encode.plain.as_ref(),
                side: side.as_ref().map(|f| (f, side_start)),
                muxer_args: &muxer,
                format: &c.format,
                output: &c.output,
                out_dir: &c.out_dir,
                overwrite,
            })
            .await;
            if let Some(r) = reports {
                // The batch listens until every task is done.
                let _ = r.send(Report::Merged { job, result });
            }
        });
    }

    fn merged(&mut self, job: usize, result: anyhow::Result<()>, s: &Settings) {
        self.merge_busy = false;
        let j = &mut self.jobs[job];
        let (file, output) = (j.file, j.prepared.checked.output.clone());
        match result {
            Ok(()) => {
                j.merged = true;
                let frames = j.prepared.record.plan.total_frames;
                let seconds = j.started.elapsed().as_secs_f64();
                self.send(
                    s,
                    Event::JobDone {
                        job,
                        output: output.display().to_string(),
                        frames,
                        seconds,
                        fps: frames as f64 / seconds.max(1e-9),
                    },
                );
                self.end_file(file, Some(output), FileEnd::Done);
                self.tidy(job, s);
            }
            Err(e) => {
                let input = j.prepared.checked.input.display().to_string();
                self.send(
                    s,
                    Event::JobFailed { job: Some(job), input, error: format!("{e:#}"), resumable: true },
                );
                self.end_file(file, Some(output), FileEnd::Failed(e));
            }
        }
        self.next_merge(s);
    }

    /// A merged (or refused) job whose attempts are all over: its
    /// directory goes (a merged one's unless `--keep`).
    fn tidy(&mut self, job: usize, s: &Settings) {
        let j = &self.jobs[job];
        let gone = (j.merged && !s.keep) || j.discard;
        if !(gone && (j.quiet || self.broker_over)) {
            return;
        }
        if let Err(e) = j.dir.remove() {
            self.send(s, Event::Warning { message: format!("{e:#}") });
        }
    }

    fn broker_done(&mut self, d: Option<dispatch::Dispatched>) {
        self.broker_over = true;
        if let Some(d) = d {
            self.no_nodes = d.live_nodes == 0;
            self.stats = d.stats;
            self.learned = d.learned;
        }
        // Jobs the broker left unfinished (no node left, or stopped).
        for j in &self.jobs {
            if !j.encoded && self.outcomes[j.file].is_none() {
                let why = match self.stopped {
                    true => anyhow!("interrupted; the finished chunks are kept in {}: run the same command again to resume", j.dir.dir.display()),
                    false => anyhow!("no node is left; the finished chunks are kept in {}: run the same command again to resume", j.dir.dir.display()),
                };
                let (file, output) = (j.file, j.prepared.checked.output.clone());
                self.outcomes[file] = Some(FileOutcome {
                    input: self.inputs[file].input.clone(),
                    output: Some(output),
                    end: FileEnd::Failed(why),
                });
            }
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
    }

    fn finish(mut self, s: &Settings) -> (Vec<FileOutcome>, Vec<NodeStats>) {
        self.save_speeds();
        for (n, st) in self.stats.iter_mut().enumerate() {
            st.arch = self.facts.get(n).map(|f| f.arch.clone()).unwrap_or_default();
        }
        let outcomes: Vec<FileOutcome> = self
            .outcomes
            .into_iter()
            .zip(&self.inputs)
            .map(|(o, f)| {
                o.unwrap_or_else(|| FileOutcome {
                    input: f.input.clone(),
                    output: f.output.clone(),
                    end: FileEnd::Interrupted(anyhow!("interrupted before it started")),
                })
            })
            .collect();
        let frames = self.jobs.iter().filter(|j| j.merged).map(|j| j.prepared.record.plan.total_frames).sum();
        let files = outcomes.iter().map(file_result).collect();
        // The reporter outlives the batch.
        let _ = s.events.send(Event::BatchDone {
            seconds: s.started.elapsed().as_secs_f64(),
            frames,
            files,
            nodes: self.stats.clone(),
            controller_processes: crate::process::started(),
        });
        (outcomes, self.stats)
    }

    fn save_speeds(&self) {
        let Some(path) = speeds::default_path() else { return };
        let mut store = Speeds::load(&path);
        let measured: Vec<(String, Option<(f64, usize)>)> =
            self.keys.iter().cloned().zip(self.learned.iter().copied()).collect();
        store.learn(&self.settings_key, &measured);
        // Speeds are a help, not a result: the next job measures again.
        let _ = store.save(&path);
    }
}

fn file_result(o: &FileOutcome) -> FileResult {
    let (status, reason) = match &o.end {
        FileEnd::Done => ("done", None),
        FileEnd::Skipped(why) => ("skipped", Some(why.clone())),
        FileEnd::Refused(e) | FileEnd::Failed(e) | FileEnd::NoCluster(e) => {
            ("failed", Some(format!("{e:#}")))
        }
        FileEnd::Interrupted(e) => ("interrupted", Some(format!("{e:#}"))),
    };
    FileResult {
        input: o.input.display().to_string(),
        output: o.output.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        status,
        reason,
    }
}
