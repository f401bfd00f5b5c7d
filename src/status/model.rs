//! The status of one running transcode, folded from its events
//! (`transcode/report/events.rs`): a pure model, time passed in as seconds
//! since the Unix epoch, and the view of it that `status/PID.json` holds
//! (read back by `dffmpeg status` and the status page).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::transcode::events::Event;

/// Seconds between two samples of the history.
pub const HISTORY_EVERY: f64 = 15.0;
/// How far back the history goes.
pub const HISTORY_SPAN: f64 = 3600.0;
const KEEP_DONE: usize = 50;
const KEEP_SKIPPED: usize = 50;
const KEEP_FAILED: usize = 50;
const KEEP_WARNINGS: usize = 20;
/// Queued files listed (the count is always whole).
const SHOW_QUEUED: usize = 100;
/// Rates measured over less time than this are noise.
const MIN_RATE_SECONDS: f64 = 1.0;

/// What the status file says of the process itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    pub pid: u32,
    /// `watch` (the service, `transcode --watch`) or `batch` (one command).
    pub mode: String,
    /// The inventory (its canonical path, or `embedded local cluster`).
    pub inventory: String,
    /// Watched directories.
    pub watching: Vec<String>,
    pub output_dir: Option<String>,
    /// The status page's address, when this process serves it.
    pub page: Option<String>,
}

/// `status/PID.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusFile {
    pub version: u32,
    #[serde(flatten)]
    pub meta: Meta,
    /// The cluster as connected (empty until the first file starts it).
    pub cluster: String,
    pub started_at: f64,
    pub updated_at: f64,
    /// The batch has ended (the process is about to exit).
    pub finished: bool,
    pub counts: Counts,
    pub queued: Vec<QueuedFile>,
    pub running: Vec<RunningFile>,
    pub done: Vec<DoneFile>,
    pub skipped: Vec<SkippedFile>,
    pub failed: Vec<FailedFile>,
    pub nodes: Vec<NodeStatus>,
    pub warnings: Vec<Note>,
    pub history: History,
}

/// Files by state, whole (the lists are bounded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Files of a batch named up front (None: a watched folder).
    pub files: Option<usize>,
    pub queued: usize,
    pub running: usize,
    pub done: usize,
    pub skipped: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueuedFile {
    pub input: String,
    pub since: f64,
    /// Planned already: its chunks (they wait for a slot).
    pub chunks: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunningFile {
    pub input: String,
    pub output: String,
    /// `encoding`, `finishing` (side streams) or `merging`.
    pub stage: String,
    pub chunks: usize,
    pub chunks_done: usize,
    pub frames: u64,
    pub frames_done: u64,
    /// Frames per second of this file so far (this run's work).
    pub fps: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub started_at: f64,
    pub job_dir: String,
    /// Its chunks by node.
    pub nodes: Vec<FileNode>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileNode {
    pub node: String,
    pub running: usize,
    pub done: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DoneFile {
    pub input: String,
    pub output: String,
    pub frames: u64,
    pub seconds: f64,
    pub fps: f64,
    pub at: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SkippedFile {
    pub input: String,
    pub reason: String,
    pub at: f64,
}

/// A file dffmpeg gave up on (kept across restarts in `failed.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailedFile {
    pub input: String,
    pub reason: String,
    /// Its job directory when it was kept (finished chunks, logs).
    pub job_dir: Option<String>,
    /// The log of its last failed attempt (the encoder's stderr).
    pub log: Option<String>,
    pub at: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    #[default]
    Up,
    /// The node or the connection to it is gone.
    Lost,
    /// dffmpeg stopped sending it work (failures, stalls, a build whose
    /// chunks do not fit).
    GivenUp,
}

impl NodeState {
    pub fn word(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Lost => "lost",
            NodeState::GivenUp => "given up",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    pub name: String,
    pub arch: String,
    pub slots: usize,
    pub state: NodeState,
    /// Why it is lost or given up.
    pub reason: Option<String>,
    /// Attempts running now.
    pub running: usize,
    pub chunks: u64,
    pub frames: u64,
    pub failures: u64,
    /// Frames per second of one attempt (verified chunks' frames over
    /// their encode time).
    pub fps: Option<f64>,
    /// Frames per second of the whole node over the latest sample.
    pub throughput: Option<f64>,
    pub last_chunk_at: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Note {
    pub message: String,
    pub at: f64,
}

/// One sample every [`HISTORY_EVERY`] seconds over the last
/// [`HISTORY_SPAN`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    pub every: f64,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sample {
    pub at: f64,
    /// Files waiting (arrived or planned, no chunk started yet).
    pub queued: usize,
    /// Files under way.
    pub running: usize,
    /// Frames per second of each node over the sample.
    pub fps: BTreeMap<String, f64>,
}

/// A change to the failures kept across restarts.
#[derive(Debug, Clone, PartialEq)]
pub enum FailOp {
    Failed(FailedFile),
    /// The file was transcoded after all: its failure goes.
    Succeeded {
        input: String,
    },
}

/// A job of the batch, from its start to its end.
#[derive(Debug, Clone)]
struct Job {
    input: String,
    output: String,
    job_dir: String,
    chunks: usize,
    frames: u64,
    resumed_frames: u64,
    /// Verified, resumed ones included.
    chunks_done: usize,
    /// Frames of this run's verified chunks.
    frames_done: u64,
    started_at: f64,
    first_chunk_at: Option<f64>,
    merging: bool,
    done_by: BTreeMap<String, usize>,
    /// The log of its latest failed attempt.
    last_log: Option<String>,
}

#[derive(Debug, Clone)]
struct Attempt {
    job: usize,
    chunk: usize,
    node: String,
    of: u64,
    frames: u64,
}

#[derive(Debug, Clone, Default)]
struct NodeModel {
    status: NodeStatus,
    encode_seconds: f64,
    /// Frames encoded since the latest sample.
    work: u64,
}

/// The fold's state.
#[derive(Debug, Clone, Default)]
pub struct Model {
    meta: Meta,
    cluster: String,
    started_at: f64,
    finished: bool,
    files: Option<usize>,
    queued: VecDeque<QueuedFile>,
    jobs: BTreeMap<usize, Job>,
    attempts: HashMap<u64, Attempt>,
    nodes: Vec<NodeModel>,
    done: VecDeque<DoneFile>,
    skipped: VecDeque<SkippedFile>,
    failed: VecDeque<FailedFile>,
    counts: (usize, usize, usize),
    warnings: VecDeque<Note>,
    samples: VecDeque<Sample>,
    last_sample: f64,
    ops: Vec<FailOp>,
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T, keep: usize) {
    list.push_back(item);
    while list.len() > keep {
        list.pop_front();
    }
}

impl Model {
    pub fn new(meta: Meta, now: f64) -> Model {
        Model { meta, started_at: now, last_sample: now, ..Model::default() }
    }

    /// Fold one event in. True for an event about a file or a node (the
    /// status file is written at once), false for chunk traffic.
    pub fn apply(&mut self, ev: &Event, now: f64) -> bool {
        match ev {
            Event::ChunkStart { job, chunk, attempt, node, frames, .. } => {
                self.chunk_start(*attempt, (*job, *chunk), node, *frames, now)
            }
            Event::ChunkProgress { attempt, frames } => self.progress(*attempt, *frames),
            Event::ChunkDone { attempt, node, frames, seconds, .. } => {
                self.chunk_done(*attempt, node, *frames, *seconds, now)
            }
            Event::ChunkFailed { job, attempt, node, log, .. } => {
                self.attempts.remove(attempt);
                self.node_mut(node).status.failures += 1;
                if let (Some(j), Some(log)) = (self.jobs.get_mut(job), log) {
                    j.last_log = Some(log.clone());
                }
            }
            Event::ChunkCancelled { attempt, .. } => {
                self.attempts.remove(attempt);
            }
            Event::SideStreams { .. } => {}
            _ => {
                self.file_event(ev, now);
                return true;
            }
        }
        false
    }

    fn file_event(&mut self, ev: &Event, now: f64) {
        match ev {
            Event::BatchStart { cluster, files, nodes, .. } => {
                self.cluster = cluster.clone();
                self.files = (*files > 0).then_some(*files);
                for n in nodes {
                    let m = self.node_mut(&n.name);
                    m.status.arch = n.arch.clone();
                    m.status.slots = n.slots;
                }
            }
            Event::Queued { input } => {
                self.queued.push_back(QueuedFile { input: input.clone(), since: now, chunks: None });
            }
            Event::Warning { message } => self.warn(message, now),
            Event::JobStart {
                job,
                input,
                output,
                chunks,
                frames,
                resumed_chunks,
                resumed_frames,
                job_dir,
                ..
            } => {
                self.unqueue(input);
                let j = Job {
                    input: input.clone(),
                    output: output.clone(),
                    job_dir: job_dir.clone(),
                    chunks: *chunks,
                    frames: *frames,
                    resumed_frames: *resumed_frames,
                    chunks_done: *resumed_chunks,
                    frames_done: 0,
                    started_at: now,
                    first_chunk_at: None,
                    merging: false,
                    done_by: BTreeMap::new(),
                    last_log: None,
                };
                self.jobs.insert(*job, j);
            }
            Event::Merging { job, .. } => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.merging = true;
                }
            }
            Event::JobDone { job, output, frames, seconds, fps } => {
                self.job_done(*job, output, (*frames, *seconds, *fps), now)
            }
            Event::JobFailed { job, input, error, resumable } => {
                self.job_failed(*job, input, error, *resumable, now)
            }
            Event::JobSkipped { input, reason, .. } => {
                self.unqueue(input);
                self.counts.1 += 1;
                let s = SkippedFile { input: input.clone(), reason: clip(reason), at: now };
                push_bounded(&mut self.skipped, s, KEEP_SKIPPED);
            }
            Event::NodeDropped { node, reason, lost } => {
                let m = self.node_mut(node);
                m.status.state = if *lost { NodeState::Lost } else { NodeState::GivenUp };
                m.status.reason = Some(clip(reason));
            }
            Event::BatchDone { .. } => self.finished = true,
            _ => {}
        }
    }

    fn warn(&mut self, message: &str, now: f64) {
        push_bounded(&mut self.warnings, Note { message: clip(message), at: now }, KEEP_WARNINGS);
    }

    /// A file left the queue (planned, skipped or refused). Files leave it
    /// in the order they joined; a name is matched first, as the planned
    /// file's path is the canonical one.
    fn unqueue(&mut self, input: &str) {
        match self.queued.iter().position(|q| q.input == input) {
            Some(i) => {
                self.queued.remove(i);
            }
            None => {
                self.queued.pop_front();
            }
        }
    }

    fn node_mut(&mut self, name: &str) -> &mut NodeModel {
        let i = match self.nodes.iter().position(|n| n.status.name == name) {
            Some(i) => i,
            None => {
                let status = NodeStatus { name: name.to_string(), ..NodeStatus::default() };
                self.nodes.push(NodeModel { status, ..NodeModel::default() });
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    fn chunk_start(&mut self, attempt: u64, (job, chunk): (usize, usize), node: &str, of: u64, now: f64) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.first_chunk_at.get_or_insert(now);
        }
        self.node_mut(node);
        self.attempts.insert(attempt, Attempt { job, chunk, node: node.to_string(), of, frames: 0 });
    }

    fn progress(&mut self, attempt: u64, frames: u64) {
        let Some(a) = self.attempts.get_mut(&attempt) else { return };
        let more = frames.saturating_sub(a.frames);
        a.frames = a.frames.max(frames);
        let node = a.node.clone();
        self.node_mut(&node).work += more;
    }

    fn chunk_done(&mut self, attempt: u64, node: &str, frames: u64, seconds: f64, now: f64) {
        let counted = self.attempts.remove(&attempt);
        let more = frames.saturating_sub(counted.as_ref().map_or(0, |a| a.frames));
        let m = self.node_mut(node);
        m.work += more;
        m.encode_seconds += seconds;
        m.status.chunks += 1;
        m.status.frames += frames;
        m.status.last_chunk_at = Some(now);
        if let Some(j) = counted.and_then(|a| self.jobs.get_mut(&a.job)) {
            j.chunks_done += 1;
            j.frames_done += frames;
            *j.done_by.entry(node.to_string()).or_default() += 1;
        }
    }

    fn job_done(&mut self, job: usize, output: &str, (frames, seconds, fps): (u64, f64, f64), now: f64) {
        let Some(j) = self.jobs.remove(&job) else { return };
        self.counts.0 += 1;
        self.failed.retain(|f| f.input != j.input);
        self.ops.push(FailOp::Succeeded { input: j.input.clone() });
        let d = DoneFile { input: j.input, output: output.to_string(), frames, seconds, fps, at: now };
        push_bounded(&mut self.done, d, KEEP_DONE);
    }

    fn job_failed(&mut self, job: Option<usize>, input: &str, error: &str, resumable: bool, now: f64) {
        let j = match job {
            Some(id) => self.jobs.remove(&id),
            None => {
                self.unqueue(input);
                None
            }
        };
        self.counts.2 += 1;
        let (job_dir, log) = match j {
            Some(j) => (resumable.then_some(j.job_dir), j.last_log),
            None => (None, None),
        };
        let f = FailedFile { input: input.to_string(), reason: clip(error), job_dir, log, at: now };
        self.ops.push(FailOp::Failed(f.clone()));
        self.failed.retain(|x| x.input != f.input);
        push_bounded(&mut self.failed, f, KEEP_FAILED);
    }

    /// Whether anything is under way: files queued or running, attempts,
    /// frames not yet sampled. An idle transcode (a watch service with
    /// nothing to do) takes no samples: it sleeps.
    pub fn busy(&self) -> bool {
        !(self.queued.is_empty() && self.jobs.is_empty() && self.attempts.is_empty())
            || self.nodes.iter().any(|n| n.work > 0)
    }

    /// Take a history sample when one is due. Whether the history says
    /// something new (a sample like the one before can wait for the next
    /// write). After a pause (idle, nobody asked for samples), the pause is
    /// filled in: nothing encoded from just after the last sample until
    /// just before this one.
    pub fn tick(&mut self, now: f64) -> bool {
        let mut span = now - self.last_sample;
        if span < HISTORY_EVERY {
            return false;
        }
        if span > 2.5 * HISTORY_EVERY {
            for at in [self.last_sample + HISTORY_EVERY, now - HISTORY_EVERY] {
                let pause = self.pause_at(at);
                self.push_sample(pause);
            }
            span = HISTORY_EVERY;
        }
        let fps = self
            .nodes
            .iter_mut()
            .map(|n| {
                let rate = round1(n.work as f64 / span);
                n.work = 0;
                n.status.throughput = Some(rate);
                (n.status.name.clone(), rate)
            })
            .collect();
        let (queued, running) = self.waiting_and_running();
        let sample = Sample { at: round1(now), queued, running, fps };
        let new = self.samples.back().is_none_or(|last| {
            (last.queued, last.running, &last.fps) != (sample.queued, sample.running, &sample.fps)
        });
        self.push_sample(sample);
        self.last_sample = now;
        new
    }

    /// A sample of a pause at `at`: the queue as the last sample left it,
    /// no node encoding.
    fn pause_at(&self, at: f64) -> Sample {
        let last = self.samples.back();
        Sample {
            at: round1(at),
            queued: last.map_or(0, |l| l.queued),
            running: last.map_or(0, |l| l.running),
            fps: self.nodes.iter().map(|n| (n.status.name.clone(), 0.0)).collect(),
        }
    }

    fn push_sample(&mut self, sample: Sample) {
        let keep = (HISTORY_SPAN / HISTORY_EVERY).ceil() as usize + 1;
        push_bounded(&mut self.samples, sample, keep);
        let oldest = self.samples.back().map_or(0.0, |s| s.at) - HISTORY_SPAN - HISTORY_EVERY;
        while self.samples.front().is_some_and(|s| s.at < oldest) {
            self.samples.pop_front();
        }
    }

    /// The history as of `now`: idle since the last sample, the pause is
    /// shown (the samples themselves wait for work).
    fn history(&self, now: f64) -> History {
        let mut samples: Vec<Sample> = self.samples.iter().cloned().collect();
        let last = samples.last().map_or(self.started_at, |s| s.at);
        let idle_since = Some(last).filter(|at| !self.busy() && now - at > HISTORY_EVERY);
        if let Some(at) = idle_since {
            let pause = [at + HISTORY_EVERY, now].map(|t| Sample { at: round1(t), ..self.pause_at(t) });
            samples.extend(pause.into_iter().filter(|p| p.at <= now));
        }
        samples.retain(|s| s.at >= now - HISTORY_SPAN - HISTORY_EVERY);
        History { every: HISTORY_EVERY, samples }
    }

    fn waiting_and_running(&self) -> (usize, usize) {
        let waiting = self.jobs.values().filter(|j| self.waiting(j)).count();
        (self.queued.len() + waiting, self.jobs.len() - waiting)
    }

    /// Planned, but no chunk of it started yet.
    fn waiting(&self, j: &Job) -> bool {
        j.first_chunk_at.is_none() && j.chunks_done < j.chunks && !j.merging
    }

    /// The failures to record in `failed.json` since the last call.
    pub fn take_ops(&mut self) -> Vec<FailOp> {
        std::mem::take(&mut self.ops)
    }

    /// What the status file says now.
    pub fn view(&self, now: f64) -> StatusFile {
        let (queued, running) = self.waiting_and_running();
        StatusFile {
            version: 1,
            meta: self.meta.clone(),
            cluster: self.cluster.clone(),
            started_at: round1(self.started_at),
            updated_at: round1(now),
            finished: self.finished,
            counts: Counts {
                files: self.files,
                queued,
                running,
                done: self.counts.0,
                skipped: self.counts.1,
                failed: self.counts.2,
            },
            queued: self.queued_view(),
            running: self
                .jobs
                .iter()
                .filter(|(_, j)| !self.waiting(j))
                .map(|(id, j)| self.running_view(*id, j, now))
                .collect(),
            done: self.done.iter().cloned().collect(),
            skipped: self.skipped.iter().cloned().collect(),
            failed: self.failed.iter().cloned().collect(),
            nodes: self.nodes.iter().map(|n| self.node_view(n)).collect(),
            warnings: self.warnings.iter().cloned().collect(),
            history: self.history(now),
        }
    }

    fn queued_view(&self) -> Vec<QueuedFile> {
        let planned = self.jobs.values().filter(|j| self.waiting(j)).map(|j| QueuedFile {
            input: j.input.clone(),
            since: round1(j.started_at),
            chunks: Some(j.chunks),
        });
        planned.chain(self.queued.iter().cloned()).take(SHOW_QUEUED).collect()
    }

    fn running_view(&self, id: usize, j: &Job, now: f64) -> RunningFile {
        let mine = || self.attempts.values().filter(move |a| a.job == id);
        // Frames of running chunks: the furthest attempt of each.
        let mut best: BTreeMap<usize, u64> = BTreeMap::new();
        for a in mine() {
            let e = best.entry(a.chunk).or_default();
            *e = (*e).max(a.frames.min(a.of));
        }
        let this_run = j.frames_done + best.values().sum::<u64>();
        let frames_done = (j.resumed_frames + this_run).min(j.frames);
        let elapsed = j.first_chunk_at.map_or(0.0, |t| now - t);
        let fps = (elapsed >= MIN_RATE_SECONDS && this_run > 0).then(|| this_run as f64 / elapsed);
        let eta = fps.map(|f| round1(j.frames.saturating_sub(frames_done) as f64 / f));
        let mut nodes: BTreeMap<&str, FileNode> = BTreeMap::new();
        for a in mine() {
            nodes
                .entry(&a.node)
                .or_insert_with(|| FileNode { node: a.node.clone(), ..FileNode::default() })
                .running += 1;
        }
        for (n, done) in &j.done_by {
            nodes.entry(n).or_insert_with(|| FileNode { node: n.clone(), ..FileNode::default() }).done +=
                done;
        }
        let stage = match (j.merging, j.chunks_done >= j.chunks) {
            (true, _) => "merging",
            (false, true) => "finishing",
            (false, false) => "encoding",
        };
        RunningFile {
            input: j.input.clone(),
            output: j.output.clone(),
            stage: stage.into(),
            chunks: j.chunks,
            chunks_done: j.chunks_done,
            frames: j.frames,
            frames_done,
            fps: fps.map(round1),
            eta_seconds: eta,
            started_at: round1(j.started_at),
            job_dir: j.job_dir.clone(),
            nodes: nodes.into_values().collect(),
        }
    }

    fn node_view(&self, n: &NodeModel) -> NodeStatus {
        let running = self.attempts.values().filter(|a| a.node == n.status.name).count();
        let fps = (n.encode_seconds > 0.0).then(|| round1(n.status.frames as f64 / n.encode_seconds));
        NodeStatus { running, fps, ..n.status.clone() }
    }
}

/// Longest text kept of a reason or a warning (an encoder's message can be
/// long; the status stays small).
const MAX_TEXT: usize = 2000;

/// `text`, cut to [`MAX_TEXT`] bytes on a character boundary.
fn clip(text: &str) -> String {
    match crate::text::cut(text, MAX_TEXT) {
        whole if whole.len() == text.len() => text.to_string(),
        head => format!("{head}…"),
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests;
