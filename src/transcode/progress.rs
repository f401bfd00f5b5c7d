//! Events of a job and the three ways to show them: progress bars on a
//! terminal, plain lines otherwise, one JSON object per line with `--json`.
//! The reporter owns all display state; workers only send events.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

/// A line on stdout; a closed stdout (`| head`) is not an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeStats {
    pub node: String,
    /// The node's `uname -m` (from its facts): x86_64, aarch64, armv7l ...
    pub arch: String,
    pub chunks: u64,
    pub frames: u64,
    /// Seconds spent encoding accepted chunks.
    pub encode_seconds: f64,
    pub failures: u64,
    pub retries: u64,
    /// Duplicate attempts this node started (idle slot at the end of the queue).
    pub duplicates: u64,
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

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    JobStart {
        cluster: String,
        input: String,
        output: String,
        chunks: usize,
        frames: u64,
        slots: usize,
        resumed_chunks: usize,
        resumed_frames: u64,
    },
    Warning {
        message: String,
    },
    ChunkStart {
        chunk: usize,
        attempt: u64,
        node: String,
        slot: usize,
        frames: u64,
        duplicate: bool,
    },
    ChunkProgress {
        attempt: u64,
        frames: u64,
    },
    ChunkDone {
        chunk: usize,
        attempt: u64,
        node: String,
        frames: u64,
        seconds: f64,
    },
    ChunkFailed {
        chunk: usize,
        attempt: u64,
        node: String,
        error: String,
    },
    /// A duplicate attempt stopped because the other one finished first.
    ChunkCancelled {
        chunk: usize,
        attempt: u64,
        node: String,
    },
    NodeDropped {
        node: String,
        reason: String,
    },
    SideStreams {
        streams: usize,
        seconds: f64,
    },
    Merging {
        chunks: usize,
    },
    JobDone {
        output: String,
        frames: u64,
        seconds: f64,
        fps: f64,
        nodes: Vec<NodeStats>,
    },
    JobFailed {
        error: String,
        resumable: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Bars,
    Plain,
    Json,
}

impl Mode {
    pub fn choose(json: bool) -> Mode {
        if json {
            Mode::Json
        } else if std::io::stdout().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        }
    }
}

pub type Sender = mpsc::UnboundedSender<Event>;

/// Run the reporter until every sender is gone.
pub fn spawn(mode: Mode) -> (Sender, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(report(mode, rx));
    (tx, handle)
}

struct Running {
    chunk: usize,
    frames: u64,
    started: Instant,
    bar: Option<ProgressBar>,
}

struct State {
    mode: Mode,
    total: u64,
    done_frames: u64,
    resumed_frames: u64,
    chunk_frames: HashMap<usize, u64>,
    running: HashMap<u64, Running>,
    started: Instant,
    last_line: Instant,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
}

impl State {
    fn frames_now(&self) -> u64 {
        let mut best: HashMap<usize, u64> = HashMap::new();
        for r in self.running.values() {
            let e = best.entry(r.chunk).or_default();
            *e = (*e).max(r.frames);
        }
        self.done_frames + best.values().sum::<u64>()
    }

    fn rate(&self) -> (u64, f64, Option<f64>) {
        let done = self.frames_now().min(self.total);
        let elapsed = self.started.elapsed().as_secs_f64();
        let fps = if elapsed > 0.0 { done.saturating_sub(self.resumed_frames) as f64 / elapsed } else { 0.0 };
        let eta = (fps > 0.0).then(|| (self.total - done) as f64 / fps);
        (done, fps, eta)
    }

    fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => say!("{line}"),
        }
    }
}

async fn report(mode: Mode, mut rx: mpsc::UnboundedReceiver<Event>) {
    let mut st = State {
        mode,
        total: 0,
        done_frames: 0,
        resumed_frames: 0,
        chunk_frames: HashMap::new(),
        running: HashMap::new(),
        started: Instant::now(),
        last_line: Instant::now(),
        multi: None,
        overall: None,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => handle(&mut st, ev),
                None => break,
            },
            _ = tick.tick() => periodic(&mut st),
        }
    }
    if let Some(m) = st.multi.take() {
        let _ = m.clear();
    }
    let _ = std::io::stdout().flush();
}

fn periodic(st: &mut State) {
    if st.total == 0 {
        return;
    }
    let (done, fps, eta) = st.rate();
    match st.mode {
        Mode::Json => emit_json(&serde_json::json!({
            "event": "progress", "frames_done": done, "frames": st.total, "fps": round2(fps), "eta_seconds": eta.map(round2),
        })),
        Mode::Plain => {
            if st.last_line.elapsed() >= Duration::from_secs(5) && !st.running.is_empty() {
                st.last_line = Instant::now();
                say!(
                    "progress: {done}/{} frames, {fps:.1} fps{}",
                    st.total,
                    eta.map(|e| format!(", ETA {}", hms(e))).unwrap_or_default()
                );
            }
        }
        Mode::Bars => {
            if let Some(b) = &st.overall {
                b.set_position(done);
                b.set_message(format!("{fps:.1} fps"));
            }
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn hms(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn emit_json<T: Serialize>(v: &T) {
    if let Ok(line) = serde_json::to_string(v) {
        say!("{line}");
    }
}

fn handle(st: &mut State, ev: Event) {
    if st.mode == Mode::Json && !matches!(ev, Event::ChunkProgress { .. }) {
        emit_json(&ev);
    }
    match ev {
        Event::JobStart { cluster, input, output, chunks, frames, slots, resumed_chunks, resumed_frames } => {
            st.total = frames;
            st.done_frames = resumed_frames;
            st.resumed_frames = resumed_frames;
            st.started = Instant::now();
            if st.mode == Mode::Json {
                return;
            }
            say!("cluster: {cluster}");
            say!("{input} -> {output}: {frames} frames in {chunks} chunks on {slots} slots");
            if resumed_chunks > 0 {
                say!("resuming: {resumed_chunks} chunks ({resumed_frames} frames) already done");
            }
            if st.mode == Mode::Bars {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
                let bar = multi.add(ProgressBar::new(frames));
                bar.set_style(
                    ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} frames  {msg}  ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_position(resumed_frames);
                st.overall = Some(bar);
                st.multi = Some(multi);
            }
        }
        Event::Warning { message } => {
            if st.mode != Mode::Json {
                st.println(&format!("warning: {message}"));
            }
        }
        Event::ChunkStart { chunk, attempt, node, slot, frames, duplicate } => {
            st.chunk_frames.insert(chunk, frames);
            let bar = st.multi.as_ref().map(|m| {
                let b = m.add(ProgressBar::new(frames));
                b.set_style(
                    ProgressStyle::with_template("  {prefix:<14} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.set_prefix(format!("{node}#{slot}"));
                b.set_message(format!(
                    "chunk {chunk}{}: starting",
                    if duplicate { " (duplicate)" } else { "" }
                ));
                b
            });
            if st.mode == Mode::Plain {
                say!(
                    "chunk {chunk} -> {node}#{slot}{}",
                    if duplicate { " (duplicate of a slow one)" } else { "" }
                );
            }
            st.running.insert(attempt, Running { chunk, frames: 0, started: Instant::now(), bar });
        }
        Event::ChunkProgress { attempt, frames } => {
            if let Some(r) = st.running.get_mut(&attempt) {
                r.frames = frames;
                if let Some(b) = &r.bar {
                    let of = st.chunk_frames.get(&r.chunk).copied().unwrap_or(0);
                    let fps = frames as f64 / r.started.elapsed().as_secs_f64().max(1e-3);
                    b.set_message(format!("chunk {}: {frames}/{of} frames, {fps:.1} fps", r.chunk));
                }
            }
        }
        Event::ChunkDone { chunk, attempt, node, frames, seconds } => {
            finish(st, attempt);
            st.done_frames += frames;
            let fps = if seconds > 0.0 { frames as f64 / seconds } else { 0.0 };
            match st.mode {
                Mode::Plain => {
                    say!("chunk {chunk} done on {node}: {frames} frames, {fps:.1} fps")
                }
                Mode::Bars => {
                    if let Some(b) = &st.overall {
                        b.set_position(st.frames_now().min(st.total));
                    }
                }
                Mode::Json => {}
            }
        }
        Event::ChunkFailed { chunk, attempt, node, error } => {
            finish(st, attempt);
            if st.mode != Mode::Json {
                st.println(&format!("chunk {chunk} failed on {node}: {error}"));
            }
        }
        Event::ChunkCancelled { attempt, .. } => finish(st, attempt),
        Event::NodeDropped { node, reason } => {
            if st.mode != Mode::Json {
                st.println(&format!("warning: node {node} left the job: {reason}"));
            }
        }
        Event::SideStreams { streams, seconds } => {
            if st.mode == Mode::Plain {
                say!("side streams: {streams} encoded in {seconds:.1} s");
            }
        }
        Event::Merging { chunks } => {
            if let Some(m) = st.multi.take() {
                let _ = m.clear();
            }
            st.overall = None;
            if st.mode != Mode::Json {
                say!("merging {chunks} chunks");
            }
        }
        Event::JobDone { output, frames, seconds, fps, nodes } => {
            if st.mode == Mode::Json {
                return;
            }
            say!("done: {output}: {frames} frames in {seconds:.1} s ({fps:.1} fps)");
            say!(
                "{:<16} {:<8} {:>6} {:>8} {:>8} {:>8} {:>7} {:>10}",
                "node",
                "arch",
                "chunks",
                "frames",
                "fps",
                "failures",
                "retries",
                "duplicates"
            );
            for n in nodes {
                say!(
                    "{:<16} {:<8} {:>6} {:>8} {:>8.1} {:>8} {:>7} {:>10}",
                    n.node,
                    n.arch,
                    n.chunks,
                    n.frames,
                    n.fps(),
                    n.failures,
                    n.retries,
                    n.duplicates
                );
            }
        }
        Event::JobFailed { .. } => {
            if let Some(m) = st.multi.take() {
                let _ = m.clear();
            }
        }
    }
}

fn finish(st: &mut State, attempt: u64) {
    if let Some(r) = st.running.remove(&attempt) {
        if let (Some(b), Some(m)) = (r.bar, &st.multi) {
            b.finish_and_clear();
            m.remove(&b);
        }
    }
}
