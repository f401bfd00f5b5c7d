//! Events of a batch and the three ways to show them: progress bars on a
//! terminal, plain lines otherwise, one JSON object per line with `--json`
//! (each with `t`, seconds since dffmpeg started, so that a consumer can
//! draw a timeline). The reporter owns all display state; the pipeline
//! only sends events.
//!
//! Each event's line has a [`Level`]: files, failures and warnings are
//! always shown; chunks only in plain output of one command (a terminal
//! has its bars); `--watch` (a service: its output is the journal) shows
//! one line per file event and no periodic progress; `-v` shows every
//! line. The log file (`--log-file`) gets every line, whatever is shown.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

use super::events::{Event, FileResult, NodeStats, Sender};

/// A line on stdout; a closed stdout (`| head`) is not an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Bars,
    Plain,
    Json,
}

/// How the reporter shows a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub mode: Mode,
    /// `-v`: every line, above the bars and in a watch too.
    pub verbose: bool,
    /// `--watch`: one line per file event, no progress lines.
    pub watch: bool,
}

/// Who sees a line.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Level {
    /// Everyone: files starting and ending, failures, warnings, the summary.
    File,
    /// A file's stages (merging): not in a watch.
    Stage,
    /// Chunks and side streams: plain output of one command.
    Chunk,
    /// Only with `-v`.
    Detail,
}

impl View {
    fn shows(&self, level: Level) -> bool {
        match (self.mode, level) {
            (Mode::Json, _) => false,
            _ if self.verbose => true,
            (_, Level::File) => true,
            (_, Level::Stage) => !self.watch,
            (Mode::Plain, Level::Chunk) => !self.watch,
            _ => false,
        }
    }
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

/// Run the reporter until every sender is gone. `started`: when dffmpeg
/// started (the events' `t`).
pub fn spawn(view: View, started: Instant) -> (Sender, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(report(view, started, rx));
    (tx, handle)
}

struct Running {
    job: usize,
    chunk: usize,
    of: u64,
    frames: u64,
    started: Instant,
    bar: Option<ProgressBar>,
}

/// A file under way.
struct Current {
    name: String,
}

struct State {
    view: View,
    /// dffmpeg's start, for `t`.
    t0: Instant,
    files: usize,
    files_ended: usize,
    /// Frames of the files announced so far, and of their chunks verified.
    total: u64,
    done_frames: u64,
    resumed_frames: u64,
    running: HashMap<u64, Running>,
    current: HashMap<usize, Current>,
    started: Instant,
    last_line: Instant,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
}

impl State {
    fn frames_now(&self) -> u64 {
        let mut best: HashMap<(usize, usize), u64> = HashMap::new();
        for r in self.running.values() {
            let e = best.entry((r.job, r.chunk)).or_default();
            *e = (*e).max(r.frames.min(r.of));
        }
        self.done_frames + best.values().sum::<u64>()
    }

    /// Frames done, frames per second of this run, seconds left.
    fn rate(&self) -> (u64, f64, Option<f64>) {
        let done = self.frames_now().min(self.total);
        let elapsed = self.started.elapsed().as_secs_f64();
        let fps = if elapsed > 0.0 { done.saturating_sub(self.resumed_frames) as f64 / elapsed } else { 0.0 };
        let eta = (fps > 0.0).then(|| (self.total - done) as f64 / fps);
        (done, fps, eta)
    }

    /// A line of the batch's story: into the log file, and on the screen
    /// when the view shows its level (above the bars, if any). File and
    /// node names in it are shown without terminal escapes or control
    /// characters (`--json` carries them JSON-escaped instead).
    fn out(&self, level: Level, line: &str) {
        let line = &crate::text::printable(line);
        crate::log::line(line);
        if !self.view.shows(level) {
            return;
        }
        match &self.multi {
            Some(m) => {
                // A terminal that went away: nothing to print to.
                let _ = m.println(line);
            }
            None => say!("{line}"),
        }
    }

    /// Many files (a batch, or a watch: its count is not known).
    fn many(&self) -> bool {
        self.files != 1
    }

    /// `[2/12] name` in a batch, `[2] name` in a watch, `name` alone for one file.
    fn file_tag(&self, job: usize) -> String {
        let name = self.current.get(&job).map(|c| c.name.as_str()).unwrap_or("");
        match self.files {
            0 => format!("[{}] {name}", job + 1),
            1 => name.to_string(),
            n => format!("[{}/{n}] {name}", job + 1),
        }
    }

    /// `TAG: ` before a chunk's line when there are many files.
    fn file_prefix(&self, job: usize) -> String {
        if self.many() {
            format!("{}: ", self.file_tag(job))
        } else {
            String::new()
        }
    }
}

async fn report(view: View, t0: Instant, mut rx: mpsc::UnboundedReceiver<Event>) {
    let now = Instant::now();
    let mut st = State {
        view,
        t0,
        files: 0,
        files_ended: 0,
        total: 0,
        done_frames: 0,
        resumed_frames: 0,
        running: HashMap::new(),
        current: HashMap::new(),
        started: now,
        last_line: now,
        multi: None,
        overall: None,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    // After a quiet spell, one tick, not a burst of the missed ones.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Ticks only while attempts run: an idle watch never wakes up.
        let busy = !st.running.is_empty();
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => handle(&mut st, ev),
                None => break,
            },
            _ = tick.tick(), if busy => periodic(&mut st),
        }
    }
    if let Some(m) = st.multi.take() {
        // Clearing a terminal that is gone changes nothing.
        let _ = m.clear();
    }
    // A closed stdout: nothing left to flush to.
    let _ = std::io::stdout().flush();
}

fn periodic(st: &mut State) {
    if st.total == 0 {
        return;
    }
    let (done, fps, eta) = st.rate();
    match st.view.mode {
        Mode::Json => emit_json(
            st,
            &serde_json::json!({
                "event": "progress", "frames_done": done, "frames": st.total, "fps": round2(fps),
                "eta_seconds": eta.map(round2), "files_done": st.files_ended, "files": st.files,
            }),
        ),
        // A watch's output is a service's journal: no progress lines there.
        Mode::Plain if st.view.watch => {}
        Mode::Plain => {
            if st.last_line.elapsed() >= Duration::from_secs(5) && !st.running.is_empty() {
                st.last_line = Instant::now();
                let files = if st.files > 1 {
                    format!("{}/{} files, ", st.files_ended, st.files)
                } else {
                    String::new()
                };
                say!(
                    "progress: {files}{done}/{} frames, {fps:.1} fps{}",
                    st.total,
                    eta.map(|e| format!(", ETA {}", hms(e))).unwrap_or_default()
                );
            }
        }
        Mode::Bars => {
            if let Some(b) = &st.overall {
                b.set_length(st.total);
                b.set_position(done);
                let files = if st.files > 1 {
                    format!("{}/{} files  ", st.files_ended, st.files)
                } else {
                    String::new()
                };
                b.set_message(format!("{files}{fps:.1} fps"));
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

/// One JSON line, with `t`: seconds since dffmpeg started.
fn emit_json<T: Serialize>(st: &State, v: &T) {
    let Ok(mut value) = serde_json::to_value(v) else { return };
    if let serde_json::Value::Object(m) = &mut value {
        m.insert("t".into(), serde_json::json!(round3(st.t0.elapsed().as_secs_f64())));
    }
    if let Ok(line) = serde_json::to_string(&value) {
        say!("{line}");
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn handle(st: &mut State, ev: Event) {
    if st.view.mode == Mode::Json && !matches!(ev, Event::ChunkProgress { .. }) {
        emit_json(st, &ev);
    }
    match ev {
        Event::BatchStart { cluster, files, slots, .. } => batch_start(st, &cluster, files, slots),
        Event::Queued { .. } => {}
        Event::Warning { message } => st.out(Level::File, &format!("warning: {message}")),
        Event::JobStart {
            job,
            input,
            output,
            chunks,
            frames,
            read_in_place,
            resumed_chunks,
            resumed_frames,
            ..
        } => {
            let counts = (chunks, frames, read_in_place);
            job_start(st, job, (&input, &output), counts, (resumed_chunks, resumed_frames))
        }
        Event::ChunkStart { file, job, chunk, attempt, node, frames, duplicate } => {
            chunk_start(st, (file, job, chunk, attempt), &node, frames, duplicate)
        }
        Event::ChunkProgress { attempt, frames } => chunk_progress(st, attempt, frames),
        ev @ (Event::ChunkDone { .. } | Event::ChunkFailed { .. } | Event::ChunkCancelled { .. }) => {
            chunk_end(st, ev)
        }
        Event::NodeDropped { node, reason, .. } => {
            st.out(Level::File, &format!("warning: node {node} left the job: {reason}"))
        }
        Event::SideStreams { job, streams, seconds } => {
            let file = st.file_prefix(job);
            st.out(Level::Chunk, &format!("{file}side streams: {streams} encoded in {seconds:.1} s"));
        }
        Event::Merging { job, chunks } => {
            let what = if st.many() { format!("{}: merging", st.file_tag(job)) } else { "merging".into() };
            st.out(Level::Stage, &format!("{what} {chunks} chunks"));
        }
        Event::JobDone { job, output, frames, seconds, fps } => {
            st.files_ended += 1;
            st.current.remove(&job);
            st.out(Level::File, &format!("done: {output}: {frames} frames in {seconds:.1} s ({fps:.1} fps)"));
        }
        Event::JobFailed { job, input, error, .. } => {
            st.files_ended += 1;
            if let Some(job) = job {
                st.current.remove(&job);
            }
            // One file alone: its error ends the command (and is printed then).
            let level = if st.many() { Level::File } else { Level::Detail };
            st.out(level, &format!("failed: {input}: {error}"));
        }
        Event::JobSkipped { input, reason, .. } => {
            st.out(Level::File, &format!("skipped: {input}: {reason}"))
        }
        Event::BatchDone { seconds, frames, files, nodes, .. } => {
            batch_done(st, seconds, frames, &files, &nodes)
        }
    }
}

/// An attempt's end: its chunk done, failed (with its log) or stopped.
fn chunk_end(st: &mut State, ev: Event) {
    match ev {
        Event::ChunkDone { job, chunk, attempt, node, frames, seconds } => {
            finish(st, attempt);
            st.done_frames += frames;
            let fps = if seconds > 0.0 { frames as f64 / seconds } else { 0.0 };
            let file = st.file_prefix(job);
            st.out(
                Level::Chunk,
                &format!("{file}chunk {chunk} done on {node}: {frames} frames, {fps:.1} fps"),
            );
        }
        Event::ChunkFailed { job, chunk, attempt, node, error, log } => {
            finish(st, attempt);
            let log = log.map(|l| format!(" (log: {l})")).unwrap_or_default();
            let file = st.file_prefix(job);
            st.out(Level::File, &format!("{file}chunk {chunk} failed on {node}: {error}{log}"));
        }
        Event::ChunkCancelled { job, chunk, attempt, node } => {
            finish(st, attempt);
            let file = st.file_prefix(job);
            st.out(
                Level::Detail,
                &format!("{file}chunk {chunk} stopped on {node}: another attempt finished it"),
            );
        }
        _ => {}
    }
}

fn batch_start(st: &mut State, cluster: &str, files: usize, slots: usize) {
    st.files = files;
    st.started = Instant::now();
    st.out(Level::File, &format!("cluster: {cluster}"));
    match files {
        0 => st.out(Level::File, &format!("watching: new files go on {slots} slots")),
        1 => {}
        _ => st.out(Level::File, &format!("{files} files on {slots} slots")),
    }
    if st.view.mode == Mode::Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} frames  {msg}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        st.overall = Some(bar);
        st.multi = Some(multi);
    }
}

fn job_start(
    st: &mut State,
    job: usize,
    (input, output): (&str, &str),
    (chunks, frames, read_in_place): (usize, u64, bool),
    (resumed_chunks, resumed_frames): (usize, u64),
) {
    st.total += frames;
    st.done_frames += resumed_frames;
    st.resumed_frames += resumed_frames;
    let name =
        std::path::Path::new(input).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    st.current.insert(job, Current { name });
    let tag = match st.files {
        0 => format!("[{}] ", job + 1),
        1 => String::new(),
        n => format!("[{}/{n}] ", job + 1),
    };
    st.out(Level::File, &format!("{tag}{input} -> {output}: {frames} frames in {chunks} chunks"));
    let how = match read_in_place {
        true => "the nodes read the input in place",
        false => "the controller sends each chunk's packets to its node",
    };
    st.out(Level::Detail, &format!("{tag}{how}"));
    if resumed_chunks > 0 {
        st.out(
            Level::File,
            &format!("{tag}resuming: {resumed_chunks} chunks ({resumed_frames} frames) already done"),
        );
    }
}

fn chunk_start(
    st: &mut State,
    (file, job, chunk, attempt): (String, usize, usize, u64),
    node: &str,
    frames: u64,
    duplicate: bool,
) {
    let bar = st.multi.as_ref().map(|m| {
        let b = m.add(ProgressBar::new(frames));
        b.set_style(
            ProgressStyle::with_template("  {prefix:<14} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.set_prefix(crate::text::printable(node));
        let file = if st.files > 1 { format!("{file} ") } else { String::new() };
        b.set_message(crate::text::printable(&format!(
            "{file}chunk {chunk}{}: starting",
            if duplicate { " (duplicate)" } else { "" }
        )));
        b
    });
    let file = st.file_prefix(job);
    let dup = if duplicate { " (duplicate of a slow one)" } else { "" };
    st.out(Level::Chunk, &format!("{file}chunk {chunk} -> {node}: {frames} frames{dup}"));
    st.running.insert(attempt, Running { job, chunk, of: frames, frames: 0, started: Instant::now(), bar });
}

fn chunk_progress(st: &mut State, attempt: u64, frames: u64) {
    let Some(r) = st.running.get_mut(&attempt) else { return };
    r.frames = frames;
    if let Some(b) = &r.bar {
        let fps = frames as f64 / r.started.elapsed().as_secs_f64().max(1e-3);
        b.set_message(format!("chunk {}: {frames}/{} frames, {fps:.1} fps", r.chunk, r.of));
    }
}

fn batch_done(st: &mut State, seconds: f64, frames: u64, files: &[FileResult], nodes: &[NodeStats]) {
    if let Some(m) = st.multi.take() {
        // Clearing a terminal that is gone changes nothing.
        let _ = m.clear();
    }
    st.overall = None;
    if files.len() > 1 {
        let count = |s: &str| files.iter().filter(|f| f.status == s).count();
        st.out(
            Level::File,
            &format!(
                "batch: {} done, {} skipped, {} failed; {frames} frames in {seconds:.1} s",
                count("done"),
                count("skipped"),
                count("failed")
            ),
        );
        for f in files.iter().filter(|f| f.status != "done") {
            let line = format!("  {:<7} {}: {}", f.status, f.input, f.reason.as_deref().unwrap_or(""));
            st.out(Level::File, &line);
        }
    }
    if nodes.iter().all(|n| n.chunks == 0 && n.failures == 0) {
        return;
    }
    st.out(Level::File, &node_table(nodes));
}

/// The per-node summary: a header and a line per node.
fn node_table(nodes: &[NodeStats]) -> String {
    let mut t = format!(
        "{:<16} {:<8} {:>6} {:>8} {:>8} {:>8} {:>7} {:>10}",
        "node", "arch", "chunks", "frames", "fps", "failures", "retries", "duplicates"
    );
    for n in nodes {
        t.push_str(&format!(
            "\n{:<16} {:<8} {:>6} {:>8} {:>8.1} {:>8} {:>7} {:>10}",
            n.node,
            n.arch,
            n.chunks,
            n.frames,
            n.fps(),
            n.failures,
            n.retries,
            n.duplicates
        ));
    }
    t
}

fn finish(st: &mut State, attempt: u64) {
    if let Some(r) = st.running.remove(&attempt) {
        if let (Some(b), Some(m)) = (r.bar, &st.multi) {
            b.finish_and_clear();
            m.remove(&b);
        }
    }
}
