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
        Event::SideStreams { job, streams, seconds, node } => {
            let file = tally.file_prefix(*job);
            let on = node.as_ref().map(|n| format!(" on {n}")).unwrap_or_default();
            vec![line(Chunk, format!("{file}side streams: {streams} encoded{on} in {seconds:.1} s"))]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job_start(job: usize, input: &str) -> Event {
        Event::JobStart {
            job,
            input: input.into(),
            output: format!("{input}.mkv"),
            chunks: 2,
            frames: 20,
            read_in_place: false,
            resumed_chunks: 0,
            resumed_frames: 0,
            job_dir: "/j".into(),
        }
    }

    fn told(tally: &mut Tally, ev: Event) -> Vec<(Level, String)> {
        tally.apply(&ev);
        tell(tally, &ev).into_iter().map(|l| (l.level, l.text)).collect()
    }

    #[test]
    fn a_batch_names_each_file_in_its_chunk_lines() {
        let mut t = Tally::new();
        let cluster = "c\x1b[31m".to_string();
        let start = Event::BatchStart { cluster, files: 2, slots: 3, nodes: vec![] };
        let lines = told(&mut t, start);
        assert_eq!(lines, [(Level::File, "cluster: c".into()), (Level::File, "2 files on 3 slots".into())]);
        let lines = told(&mut t, job_start(1, "/v/b.mp4"));
        assert_eq!(lines[0], (Level::File, "[2/2] /v/b.mp4 -> /v/b.mp4.mkv: 20 frames in 2 chunks".into()));
        let ev =
            Event::ChunkDone { job: 1, chunk: 0, attempt: 7, node: "pi".into(), frames: 10, seconds: 2.0 };
        let lines = told(&mut t, ev);
        assert_eq!(lines, [(Level::Chunk, "[2/2] b.mp4: chunk 0 done on pi: 10 frames, 5.0 fps".into())]);
        let ev = Event::JobFailed { job: Some(1), input: "b.mp4".into(), error: "x".into(), resumable: true };
        assert_eq!(told(&mut t, ev), [(Level::File, "failed: b.mp4: x".into())]);
        assert_eq!(t.files_ended, 1);
    }

    #[test]
    fn one_file_alone_leaves_its_failure_to_the_command() {
        let mut t = Tally::new();
        told(&mut t, Event::BatchStart { cluster: "c".into(), files: 1, slots: 1, nodes: vec![] });
        told(&mut t, job_start(0, "a.mp4"));
        let ev = Event::ChunkStart {
            file: "a.mp4".into(),
            job: 0,
            chunk: 1,
            attempt: 1,
            node: "pi".into(),
            frames: 10,
            duplicate: true,
        };
        let lines = told(&mut t, ev);
        assert_eq!(lines, [(Level::Chunk, "chunk 1 -> pi: 10 frames (duplicate of a slow one)".into())]);
        assert!(t.busy());
        let ev = Event::JobFailed { job: Some(0), input: "a.mp4".into(), error: "x".into(), resumable: true };
        assert_eq!(told(&mut t, ev), [(Level::Detail, "failed: a.mp4: x".into())]);
    }
}
