//! The reporter's running count of a batch — files, frames, the attempts
//! under way — kept once for every sink: the lines' file tags and the
//! progress rate read it.

use std::collections::HashMap;
use std::time::Instant;

use super::events::Event;

/// An attempt under way.
pub struct Running {
    pub job: usize,
    pub chunk: usize,
    /// Frames of its chunk, and done so far.
    pub of: u64,
    pub frames: u64,
    pub started: Instant,
}

pub struct Tally {
    /// Files of the batch (0: a watch, whose count is not known).
    pub files: usize,
    pub files_ended: usize,
    /// Frames of the files announced so far.
    pub total: u64,
    /// Frames of the chunks verified (resumed ones included).
    done_frames: u64,
    resumed_frames: u64,
    pub running: HashMap<u64, Running>,
    /// The input file names of the jobs under way.
    names: HashMap<usize, String>,
    /// When the batch started, for the rate.
    started: Instant,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            files: 0,
            files_ended: 0,
            total: 0,
            done_frames: 0,
            resumed_frames: 0,
            running: HashMap::new(),
            names: HashMap::new(),
            started: Instant::now(),
        }
    }

    /// Count `ev` in.
    pub fn apply(&mut self, ev: &Event) {
        match ev {
            Event::BatchStart { files, .. } => {
                self.files = *files;
                self.started = Instant::now();
            }
            Event::JobStart { job, input, frames, resumed_frames, .. } => {
                self.total += frames;
                self.done_frames += resumed_frames;
                self.resumed_frames += resumed_frames;
                let name = std::path::Path::new(input).file_name();
                self.names.insert(*job, name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            }
            &Event::ChunkStart { job, chunk, attempt, frames, .. } => {
                let r = Running { job, chunk, of: frames, frames: 0, started: Instant::now() };
                self.running.insert(attempt, r);
            }
            Event::ChunkProgress { attempt, frames } => {
                if let Some(r) = self.running.get_mut(attempt) {
                    r.frames = *frames;
                }
            }
            Event::ChunkDone { attempt, frames, .. } => {
                self.running.remove(attempt);
                self.done_frames += frames;
            }
            Event::ChunkFailed { attempt, .. } | Event::ChunkCancelled { attempt, .. } => {
                self.running.remove(attempt);
            }
            Event::JobDone { job, .. } => {
                self.files_ended += 1;
                self.names.remove(job);
            }
            Event::JobFailed { job, .. } => {
                self.files_ended += 1;
                if let Some(job) = job {
                    self.names.remove(job);
                }
            }
            _ => {}
        }
    }

    /// Attempts are running (the reporter ticks only then).
    pub fn busy(&self) -> bool {
        !self.running.is_empty()
    }

    fn frames_now(&self) -> u64 {
        let mut best: HashMap<(usize, usize), u64> = HashMap::new();
        for r in self.running.values() {
            let e = best.entry((r.job, r.chunk)).or_default();
            *e = (*e).max(r.frames.min(r.of));
        }
        self.done_frames + best.values().sum::<u64>()
    }

    /// Frames done, frames per second of this run, seconds left.
    pub fn rate(&self) -> (u64, f64, Option<f64>) {
        let done = self.frames_now().min(self.total);
        let elapsed = self.started.elapsed().as_secs_f64();
        let fps = if elapsed > 0.0 { done.saturating_sub(self.resumed_frames) as f64 / elapsed } else { 0.0 };
        let eta = (fps > 0.0).then(|| (self.total - done) as f64 / fps);
        (done, fps, eta)
    }

    /// Many files (a batch, or a watch: its count is not known).
    pub fn many(&self) -> bool {
        self.files != 1
    }

    /// `[2/12] name` in a batch, `[2] name` in a watch, `name` alone for one file.
    pub fn file_tag(&self, job: usize) -> String {
        let name = self.names.get(&job).map(|n| n.as_str()).unwrap_or("");
        match self.files {
            0 => format!("[{}] {name}", job + 1),
            1 => name.to_string(),
            n => format!("[{}/{n}] {name}", job + 1),
        }
    }

    /// `TAG: ` before a chunk's line when there are many files.
    pub fn file_prefix(&self, job: usize) -> String {
        if self.many() {
            format!("{}: ", self.file_tag(job))
        } else {
            String::new()
        }
    }
}
