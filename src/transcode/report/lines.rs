//! The batch's story in lines: what each event says, and who sees it (its
//! [`Level`]). Every line goes into the log file; each printer shows the
//! levels its mode shows. File and node names in a line are made printable
//! here (no terminal escapes or control characters; `--json` carries them
//! JSON-escaped instead).

use super::events::{Event, FileResult, NodeStats};
use super::tally::Tally;

/// Who sees a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    /// Everyone: files starting and ending, failures, warnings, the summary.
    File,
    /// A file's stages (merging): not in a watch.
    Stage,
    /// Chunks and side streams: plain output of one command.
    Chunk,
    /// Only with `-v`.
    Detail,
}

pub struct Line {
    pub level: Level,
    pub text: String,
}

fn line(level: Level, text: String) -> Line {
    Line { level, text: crate::text::printable(&text) }
}

/// The lines that tell `ev`, with `tally` counted after it.
pub fn tell(tally: &Tally, ev: &Event) -> Vec<Line> {
    use Level::*;
    match ev {
        Event::BatchStart { cluster, files, slots, .. } => batch_start(cluster, *files, *slots),
        Event::Warning { message } => vec![line(File, format!("warning: {message}"))],
        Event::JobStart { .. } => job_start(tally, ev),
        Event::ChunkStart { .. }
        | Event::ChunkDone { .. }
        | Event::ChunkFailed { .. }
        | Event::ChunkCancelled { .. } => chunk(tally, ev).into_iter().collect(),
        Event::NodeDropped { node, reason, .. } => {
            vec![line(File, format!("warning: node {node} left the job: {reason}"))]
        }
        Event::SideStreams { job, streams, seconds } => {
            let file = tally.file_prefix(*job);
            vec![line(Chunk, format!("{file}side streams: {streams} encoded in {seconds:.1} s"))]
        }
        Event::Merging { job, chunks } => {
            let what =
                if tally.many() { format!("{}: merging", tally.file_tag(*job)) } else { "merging".into() };
            vec![line(Stage, format!("{what} {chunks} chunks"))]
        }
        Event::JobDone { output, frames, seconds, fps, .. } => {
            vec![line(File, format!("done: {output}: {frames} frames in {seconds:.1} s ({fps:.1} fps)"))]
        }
        Event::JobFailed { input, error, .. } => {
            // One file alone: its error ends the command (and is printed then).
            let level = if tally.many() { File } else { Detail };
            vec![line(level, format!("failed: {input}: {error}"))]
        }
        Event::JobSkipped { input, reason, .. } => vec![line(File, format!("skipped: {input}: {reason}"))],
        Event::BatchDone { seconds, frames, files, nodes, .. } => batch_done(*seconds, *frames, files, nodes),
        Event::Queued { .. } | Event::ChunkProgress { .. } => vec![],
    }
}

fn batch_start(cluster: &str, files: usize, slots: usize) -> Vec<Line> {
    let mut out = vec![line(Level::File, format!("cluster: {cluster}"))];
    match files {
        0 => out.push(line(Level::File, format!("watching: new files go on {slots} slots"))),
        1 => {}
        _ => out.push(line(Level::File, format!("{files} files on {slots} slots"))),
    }
    out
}

fn job_start(tally: &Tally, ev: &Event) -> Vec<Line> {
    let &Event::JobStart {
        job,
        ref input,
        ref output,
        chunks,
        frames,
        read_in_place,
        resumed_chunks,
        resumed_frames,
        ..
    } = ev
    else {
        return vec![];
    };
    let tag = match tally.files {
        0 => format!("[{}] ", job + 1),
        1 => String::new(),
        n => format!("[{}/{n}] ", job + 1),
    };
    let mut out =
        vec![line(Level::File, format!("{tag}{input} -> {output}: {frames} frames in {chunks} chunks"))];
    let how = match read_in_place {
        true => "the nodes read the input in place",
        false => "the controller sends each chunk's packets to its node",
    };
    out.push(line(Level::Detail, format!("{tag}{how}")));
    if resumed_chunks > 0 {
        let text = format!("{tag}resuming: {resumed_chunks} chunks ({resumed_frames} frames) already done");
        out.push(line(Level::File, text));
    }
    out
}

/// An attempt's start, or its end: its chunk done, failed (with its log)
/// or stopped.
fn chunk(tally: &Tally, ev: &Event) -> Option<Line> {
    let line = |level, text| Some(line(level, text));
    match ev {
        Event::ChunkStart { job, chunk, node, frames, duplicate, .. } => {
            let file = tally.file_prefix(*job);
            let dup = if *duplicate { " (duplicate of a slow one)" } else { "" };
            line(Level::Chunk, format!("{file}chunk {chunk} -> {node}: {frames} frames{dup}"))
        }
        Event::ChunkDone { job, chunk, node, frames, seconds, .. } => {
            let fps = if *seconds > 0.0 { *frames as f64 / seconds } else { 0.0 };
            let file = tally.file_prefix(*job);
            line(Level::Chunk, format!("{file}chunk {chunk} done on {node}: {frames} frames, {fps:.1} fps"))
        }
        Event::ChunkFailed { job, chunk, node, error, log, .. } => {
            let log = log.as_ref().map(|l| format!(" (log: {l})")).unwrap_or_default();
            let file = tally.file_prefix(*job);
            line(Level::File, format!("{file}chunk {chunk} failed on {node}: {error}{log}"))
        }
        Event::ChunkCancelled { job, chunk, node, .. } => {
            let file = tally.file_prefix(*job);
            line(Level::Detail, format!("{file}chunk {chunk} stopped on {node}: another attempt finished it"))
        }
        _ => None,
    }
}

fn batch_done(seconds: f64, frames: u64, files: &[FileResult], nodes: &[NodeStats]) -> Vec<Line> {
    let mut out = vec![];
    if files.len() > 1 {
        let count = |s: &str| files.iter().filter(|f| f.status == s).count();
        let (done, skipped, failed) = (count("done"), count("skipped"), count("failed"));
        let text = format!(
            "batch: {done} done, {skipped} skipped, {failed} failed; {frames} frames in {seconds:.1} s"
        );
        out.push(line(Level::File, text));
        for f in files.iter().filter(|f| f.status != "done") {
            let text = format!("  {:<7} {}: {}", f.status, f.input, f.reason.as_deref().unwrap_or(""));
            out.push(line(Level::File, text));
        }
    }
    if nodes.iter().any(|n| n.chunks != 0 || n.failures != 0) {
        out.push(line(Level::File, node_table(nodes)));
    }
    out
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
