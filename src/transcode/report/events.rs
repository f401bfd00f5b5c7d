//! The events of a batch and the results they carry: what every stage
//! sends (through a [`Sender`]) and every sink reads — the reporter's
//! printers, the status files (`crate::status::sink`), a `--json` consumer
//! (each event is one JSON object, tagged by `event`).

use serde::Serialize;
use tokio::sync::mpsc;

use crate::transcode::ids::JobId;

/// Where the stages send their events (the status sink, then the reporter).
pub type Sender = mpsc::UnboundedSender<Event>;

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeStats {
    pub node: String,
    /// `uname -m` of the node (x86_64, aarch64, armv7l).
    pub arch: String,
    pub chunks: u64,
    pub frames: u64,
    /// Seconds spent encoding accepted chunks.
    pub encode_seconds: f64,
    pub failures: u64,
    pub retries: u64,
    /// Duplicate attempts this node started (idle slot at the end of the queue).
    pub duplicates: u64,
    /// Programs dffmpeg started there: each attempt's shell, encoder and
    /// the check of its part (ffprobe, awk, tee or wc) — a local node's
    /// also count as the controller's.
    pub processes: u64,
}

impl NodeStats {
    pub fn fps(&self) -> f64 {
        if self.encode_seconds > 0.0 {
            self.frames as f64 / self.encode_seconds
        } else {
            0.0
        }
    }
}

/// A compute node of the batch, as connected.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub name: String,
    /// `uname -m` of the node.
    pub arch: String,
    /// Attempts it may run at once.
    pub slots: usize,
}

/// How one file of a batch ended.
#[derive(Debug, Clone, Serialize)]
pub struct FileResult {
    pub input: String,
    pub output: String,
    /// done, skipped or failed.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    BatchStart {
        cluster: String,
        files: usize,
        slots: usize,
        nodes: Vec<NodeInfo>,
    },
    /// A file joined the batch's queue (it is checked and planned next).
    Queued {
        input: String,
    },
    Warning {
        message: String,
    },
    JobStart {
        job: JobId,
        input: String,
        output: String,
        chunks: usize,
        frames: u64,
        /// The nodes read the source in place (shared storage, no split).
        read_in_place: bool,
        resumed_chunks: usize,
        resumed_frames: u64,
        /// Its job directory (chunks, plan; kept when the job fails).
        job_dir: String,
    },
    ChunkStart {
        #[serde(skip)]
        file: String,
        job: JobId,
        chunk: usize,
        attempt: u64,
        node: String,
        frames: u64,
        duplicate: bool,
    },
    ChunkProgress {
        attempt: u64,
        frames: u64,
    },
    ChunkDone {
        job: JobId,
        chunk: usize,
        attempt: u64,
        node: String,
        frames: u64,
        seconds: f64,
    },
    ChunkFailed {
        job: JobId,
        chunk: usize,
        attempt: u64,
        node: String,
        error: String,
        /// The attempt's log in the job directory (its encoder's stderr).
        #[serde(skip_serializing_if = "Option::is_none")]
        log: Option<String>,
    },
    /// A duplicate attempt stopped because the other one finished first.
    ChunkCancelled {
        job: JobId,
        chunk: usize,
        attempt: u64,
        node: String,
    },
    NodeDropped {
        node: String,
        reason: String,
        /// The node or the connection to it is gone (else dffmpeg gave up
        /// on it: failures, stalls, a build whose chunks do not fit).
        lost: bool,
    },
    SideStreams {
        job: JobId,
        streams: usize,
        seconds: f64,
        /// The node that encoded them (none: this machine, or a resumed
        /// job had them).
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    Merging {
        job: JobId,
        chunks: usize,
    },
    JobDone {
        job: JobId,
        output: String,
        frames: u64,
        seconds: f64,
        fps: f64,
    },
    JobFailed {
        /// None: it failed before it was queued.
        job: Option<JobId>,
        input: String,
        error: String,
        resumable: bool,
    },
    /// A file of the batch left alone (its output exists, ...).
    JobSkipped {
        input: String,
        output: String,
        reason: String,
    },
    BatchDone {
        seconds: f64,
        frames: u64,
        files: Vec<FileResult>,
        nodes: Vec<NodeStats>,
        /// Programs started on the controller (ffmpeg, ffprobe, ssh, the
        /// local nodes' attempts).
        controller_processes: u64,
    },
}
