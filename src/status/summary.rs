//! `dffmpeg status` for people: the [`Report`] as a few lines per running
//! transcode, then the failures.

use std::fmt::Write;

use super::fmt::{ago, duration, opt1, span};
use super::model::StatusFile;
use super::store::Report;

/// Failures listed (the count is whole).
const SHOW_FAILED: usize = 20;
const SHOW_QUEUED: usize = 10;

pub fn text(r: &Report) -> String {
    let mut o = String::new();
    match r.transcodes.len() {
        0 => o.push_str("No transcode is running.\n"),
        1 => o.push_str("1 transcode is running.\n"),
        n => {
            let _ = writeln!(o, "{n} transcodes are running.");
        }
    }
    for t in &r.transcodes {
        o.push('\n');
        transcode(&mut o, t, r.generated_at);
    }
    if !r.failed.is_empty() {
        let _ = writeln!(o, "\nFailed ({}; each until it is transcoded):", r.failed.len());
        for f in r.failed.iter().take(SHOW_FAILED) {
            let _ = writeln!(o, "  {} ({})", f.input, ago(r.generated_at, f.at));
            let _ = writeln!(o, "    {}", f.reason);
            if let Some(log) = &f.log {
                let _ = writeln!(o, "    log: {log}");
            }
            if let Some(dir) = &f.job_dir {
                let _ = writeln!(o, "    job directory: {dir}");
            }
        }
        if r.failed.len() > SHOW_FAILED {
            let _ = writeln!(
                o,
                "  and {} more (dffmpeg status --json lists them all)",
                r.failed.len() - SHOW_FAILED
            );
        }
    }
    for p in &r.problems {
        let _ = writeln!(o, "\nwarning: {p}");
    }
    o
}

fn transcode(o: &mut String, t: &StatusFile, now: f64) {
    let what = match (t.meta.mode.as_str(), t.meta.watching.is_empty()) {
        ("watch", false) => format!(
            "watching {} -> {}",
            t.meta.watching.join(", "),
            t.meta.output_dir.as_deref().unwrap_or("?")
        ),
        _ => "transcode".into(),
    };
    let _ = writeln!(
        o,
        "{what} (pid {}, running {}, updated {})",
        t.meta.pid,
        span(now - t.started_at),
        ago(now, t.updated_at)
    );
    if !t.cluster.is_empty() {
        let _ = writeln!(o, "  cluster: {}", t.cluster);
    }
    if let Some(page) = &t.meta.page {
        let _ = writeln!(o, "  status page: {page}");
    }
    let c = &t.counts;
    let of = c.files.map(|n| format!(" of {n}")).unwrap_or_default();
    let _ = writeln!(
        o,
        "  files{of}: {} queued, {} in progress, {} done, {} skipped, {} failed",
        c.queued, c.running, c.done, c.skipped, c.failed
    );
    for f in &t.running {
        let pct = if f.frames > 0 { f.frames_done as f64 * 100.0 / f.frames as f64 } else { 0.0 };
        let nodes: Vec<String> =
            f.nodes.iter().map(|n| format!("{} {} running, {} done", n.node, n.running, n.done)).collect();
        let _ = writeln!(
            o,
            "  {} {}: {pct:.0}% ({}/{} chunks), {} fps, ETA {}",
            f.stage,
            f.input,
            f.chunks_done,
            f.chunks,
            opt1(f.fps),
            f.eta_seconds.map_or_else(|| "–".into(), duration)
        );
        if !nodes.is_empty() {
            let _ = writeln!(o, "    chunks: {}", nodes.join("; "));
        }
    }
    for q in t.queued.iter().take(SHOW_QUEUED) {
        let _ = writeln!(o, "  queued {} ({})", q.input, span(now - q.since));
    }
    if c.queued > SHOW_QUEUED {
        let _ = writeln!(o, "  and {} more queued", c.queued - SHOW_QUEUED);
    }
    nodes(o, t, now);
    for w in t.warnings.iter().rev().take(3) {
        let _ = writeln!(o, "  warning ({}): {}", ago(now, w.at), w.message);
    }
}

fn nodes(o: &mut String, t: &StatusFile, now: f64) {
    if t.nodes.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "  {:<14} {:<9} {:<8} {:>5} {:>7} {:>6} {:>8} {:>10} {:>8}  last chunk",
        "node", "state", "arch", "slots", "running", "chunks", "fps", "throughput", "failures"
    );
    for n in &t.nodes {
        let _ = writeln!(
            o,
            "  {:<14} {:<9} {:<8} {:>5} {:>7} {:>6} {:>8} {:>10} {:>8}  {}",
            n.name,
            n.state.word(),
            n.arch,
            n.slots,
            n.running,
            n.chunks,
            opt1(n.fps),
            opt1(n.throughput),
            n.failures,
            n.last_chunk_at.map_or_else(|| "–".into(), |at| ago(now, at))
        );
        if let Some(why) = &n.reason {
            let _ = writeln!(o, "    {}: {why}", n.state.word());
        }
    }
}
