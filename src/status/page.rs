//! The status page: the [`Report`] as one HTML page, rendered on the
//! server — tables, and SVG plots of each node's throughput and of the
//! queue over the last hour. No script: the page reloads itself every
//! [`REFRESH_SECONDS`]. Every string from outside (file names, node names,
//! reasons) goes through [`esc`].

use std::fmt::Write;

use super::fmt::{ago, clock, count, duration, file_name, opt1, parent, span};
use super::model::{FailedFile, RunningFile, StatusFile, HISTORY_SPAN};
use super::store::Report;

pub const REFRESH_SECONDS: u32 = 5;
/// Rows of the done, skipped and warning lists shown.
const SHOW_RECENT: usize = 10;
const SHOW_QUEUED: usize = 20;
const COLORS: &[&str] =
    &["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

/// HTML text: `& < > " '` escaped (for element content and quoted
/// attribute values alike).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1f2937;background:#f3f4f6}
header{background:#111827;color:#f9fafb;padding:12px 24px;display:flex;gap:16px;align-items:baseline}
header h1{font-size:20px;margin:0}header span{color:#9ca3af;font-size:13px}
main{max-width:1100px;margin:0 auto;padding:8px 24px 24px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 2px #0000001a;padding:12px 18px;margin:16px 0}
h2{font-size:17px;margin:4px 0}h3{font-size:14px;margin:16px 0 6px;color:#374151;text-transform:uppercase;letter-spacing:.04em}
.meta{color:#6b7280;font-size:13px;margin:2px 0 8px;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:14px}
th{text-align:left;font-weight:600;color:#6b7280;font-size:12px;border-bottom:1px solid #e5e7eb;padding:4px 8px;white-space:nowrap}
td{border-bottom:1px solid #f3f4f6;padding:5px 8px;vertical-align:top;overflow-wrap:anywhere}
td:first-child{min-width:11em}td.when,th.when{white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.dir{color:#9ca3af;font-size:12px}
.chips span{display:inline-block;background:#f3f4f6;border-radius:12px;padding:2px 10px;margin:0 6px 4px 0;font-size:13px}
.chips b{font-variant-numeric:tabular-nums}
.bar{background:#e5e7eb;border-radius:4px;height:8px;width:140px;display:inline-block;vertical-align:middle;margin-right:6px}
.bar div{background:#2563eb;height:8px;border-radius:4px}
.state{border-radius:10px;padding:1px 8px;font-size:12px;white-space:nowrap}
.up{background:#dcfce7;color:#166534}.lost{background:#fee2e2;color:#991b1b}.given_up{background:#fef3c7;color:#92400e}
.stage{font-size:12px;color:#1e40af;background:#dbeafe;border-radius:10px;padding:1px 8px;white-space:nowrap}
.reason{color:#991b1b;font-size:13px}.why{color:#6b7280;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{flex:1 1 460px}
.legend span{display:inline-block;margin-right:12px;font-size:13px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.empty{color:#9ca3af;font-style:italic}
footer{color:#9ca3af;font-size:12px;text-align:center;padding:8px}
";

/// The whole page.
pub fn html(r: &Report) -> String {
    let mut h = String::with_capacity(16 << 10);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>dffmpeg status</title><style>{STYLE}</style></head><body>\
         <header><h1>dffmpeg</h1><span>{} · status at {}</span></header><main>",
        esc(&r.host),
        clock(r.generated_at)
    );
    if r.transcodes.is_empty() {
        h.push_str("<section id=\"idle\"><h2>No transcode is running</h2>");
        h.push_str("<p class=\"meta\">Nothing runs on this machine now (no status file of a live dffmpeg).</p></section>");
    }
    for t in &r.transcodes {
        transcode(&mut h, t, r.generated_at);
    }
    failed(&mut h, &r.failed, r.generated_at);
    if !r.problems.is_empty() {
        h.push_str("<section id=\"problems\"><h2>Unreadable status files</h2><ul>");
        for p in &r.problems {
            let _ = write!(h, "<li>{}</li>", esc(p));
        }
        h.push_str("</ul></section>");
    }
    let _ = writeln!(
        h,
        "</main><footer>Read-only; reloads every {REFRESH_SECONDS} s. The same as <code>dffmpeg status</code>; \
         as JSON: <a href=\"/status.json\">/status.json</a>. State: {}</footer></body></html>",
        esc(&r.state_dir)
    );
    h
}

fn transcode(h: &mut String, t: &StatusFile, now: f64) {
    let title = match (t.meta.mode.as_str(), t.meta.watching.is_empty()) {
        ("watch", false) => format!(
            "Watching {} → {}",
            esc(&t.meta.watching.join(", ")),
            esc(t.meta.output_dir.as_deref().unwrap_or("?"))
        ),
        _ => match t.counts.files {
            Some(n) => format!("Transcoding {n} file{}", if n == 1 { "" } else { "s" }),
            None => "Transcoding".into(),
        },
    };
    let _ = write!(h, "<section class=\"transcode\" data-pid=\"{}\"><h2>{title}</h2>", t.meta.pid);
    let cluster = if t.cluster.is_empty() { "not connected yet".to_string() } else { t.cluster.clone() };
    let _ = write!(
        h,
        "<p class=\"meta\">{} · pid {} · running {} · updated {}{}</p>",
        esc(&cluster),
        t.meta.pid,
        span(now - t.started_at),
        ago(now, t.updated_at),
        if t.finished { " · finishing" } else { "" }
    );
    let c = &t.counts;
    let _ = write!(
        h,
        "<div class=\"chips\"><span><b>{}</b> queued</span><span><b>{}</b> in progress</span>\
         <span><b>{}</b> done</span><span><b>{}</b> skipped</span><span><b>{}</b> failed</span></div>",
        c.queued, c.running, c.done, c.skipped, c.failed
    );
    running(h, &t.running);
    queued(h, t, now);
    nodes(h, t, now);
    charts(h, t, now);
    recent(h, t, now);
    h.push_str("</section>");
}

/// A file: its name, and its folder in small print.
fn file_cell(path: &str) -> String {
    format!("{}<div class=\"dir\">{}</div>", esc(file_name(path)), esc(parent(path)))
}

fn running(h: &mut String, files: &[RunningFile]) {
    h.push_str("<h3>In progress</h3>");
    if files.is_empty() {
        h.push_str("<p class=\"empty\" id=\"running\">No file is being transcoded.</p>");
        return;
    }
    h.push_str(
        "<table id=\"running\"><tr><th>File</th><th>Stage</th><th>Progress</th><th class=n>fps</th>\
         <th class=n>ETA</th><th>Chunks by node</th></tr>",
    );
    for f in files {
        let pct = if f.frames > 0 { f.frames_done as f64 * 100.0 / f.frames as f64 } else { 0.0 };
        let by_node: Vec<String> = f
            .nodes
            .iter()
            .map(|n| match n.running {
                0 => format!("{}: {} done", esc(&n.node), n.done),
                r => format!("{}: {} done, <b>{r} running</b>", esc(&n.node), n.done),
            })
            .collect();
        let _ = write!(
            h,
            "<tr class=\"file\"><td>{}</td><td><span class=\"stage\">{}</span></td>\
             <td><span class=\"bar\"><div style=\"width:{pct:.1}%\"></div></span>{pct:.0}%\
             <div class=\"dir\">{} of {}, {} of {} frames</div></td>\
             <td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
            file_cell(&f.input),
            esc(&f.stage),
            f.chunks_done,
            count(f.chunks, "chunk"),
            f.frames_done,
            f.frames,
            opt1(f.fps),
            f.eta_seconds.map_or_else(|| "–".into(), duration),
            if by_node.is_empty() { "–".into() } else { by_node.join("<br>") }
        );
    }
    h.push_str("</table>");
}

fn queued(h: &mut String, t: &StatusFile, now: f64) {
    if t.queued.is_empty() {
        return;
    }
    h.push_str("<h3>Queued</h3><table id=\"queued\"><tr><th>File</th><th>Waiting</th><th>Planned</th></tr>");
    for q in t.queued.iter().take(SHOW_QUEUED) {
        let planned = q.chunks.map_or_else(|| "being checked".into(), |c| count(c, "chunk"));
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{planned}</td></tr>",
            file_cell(&q.input),
            span(now - q.since)
        );
    }
    h.push_str("</table>");
    let more = t.counts.queued.saturating_sub(SHOW_QUEUED.min(t.queued.len()));
    if more > 0 {
        let _ = write!(h, "<p class=\"meta\">and {more} more</p>");
    }
}

fn nodes(h: &mut String, t: &StatusFile, now: f64) {
    h.push_str("<h3>Nodes</h3>");
    if t.nodes.is_empty() {
        h.push_str("<p class=\"empty\" id=\"nodes\">Not connected yet: the nodes are reached when the first file comes.</p>");
        return;
    }
    h.push_str(
        "<table id=\"nodes\"><tr><th>Node</th><th>State</th><th>Arch</th><th class=n>Slots</th>\
         <th class=n>Running</th><th class=n>Chunks</th><th class=n>fps / attempt</th>\
         <th class=n>Throughput</th><th class=n>Failures</th><th>Last chunk</th></tr>",
    );
    for n in &t.nodes {
        let state = serde_json::to_value(n.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let why =
            n.reason.as_deref().map(|r| format!("<div class=\"why\">{}</div>", esc(r))).unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td><span class=\"state {}\">{}</span>{why}</td><td>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
            esc(&n.name),
            esc(&state),
            n.state.word(),
            esc(&n.arch),
            n.slots,
            n.running,
            n.chunks,
            opt1(n.fps),
            n.throughput.map_or_else(|| "–".into(), |x| format!("{x:.1} fps")),
            n.failures,
            n.last_chunk_at.map_or_else(|| "–".into(), |at| ago(now, at)),
        );
    }
    h.push_str("</table>");
}

fn recent(h: &mut String, t: &StatusFile, now: f64) {
    if !t.done.is_empty() {
        h.push_str(
            "<h3>Done</h3><table id=\"done\"><tr><th>File</th><th>Output</th><th class=n>Frames</th>\
             <th class=n>Took</th><th class=n>fps</th><th>When</th></tr>",
        );
        for d in t.done.iter().rev().take(SHOW_RECENT) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.1}</td><td>{}</td></tr>",
                file_cell(&d.input),
                file_cell(&d.output),
                d.frames,
                duration(d.seconds),
                d.fps,
                ago(now, d.at)
            );
        }
        h.push_str("</table>");
    }
    if !t.skipped.is_empty() {
        h.push_str("<h3>Skipped</h3><table id=\"skipped\"><tr><th>File</th><th>Why</th><th>When</th></tr>");
        for s in t.skipped.iter().rev().take(SHOW_RECENT) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                file_cell(&s.input),
                esc(&s.reason),
                ago(now, s.at)
            );
        }
        h.push_str("</table>");
    }
    if !t.warnings.is_empty() {
        h.push_str("<h3>Warnings</h3><table id=\"warnings\">");
        for w in t.warnings.iter().rev().take(SHOW_RECENT) {
            let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(&w.message), ago(now, w.at));
        }
        h.push_str("</table>");
    }
}

fn failed(h: &mut String, failed: &[FailedFile], now: f64) {
    h.push_str("<section id=\"failed\"><h2>Failed</h2>");
    if failed.is_empty() {
        h.push_str("<p class=\"empty\">No file failed.</p></section>");
        return;
    }
    h.push_str(
        "<p class=\"meta\">Files dffmpeg gave up on, newest first; each stays here until it is transcoded. \
         The watch service tries them again when it restarts.</p>\
         <table><tr><th>File</th><th>Reason</th><th class=when>When</th><th>Job directory</th></tr>",
    );
    for f in failed {
        let log =
            f.log.as_deref().map(|l| format!("<div class=\"why\">log: {}</div>", esc(l))).unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"reason\">{}{log}</td><td class=when>{}</td><td>{}</td></tr>",
            file_cell(&f.input),
            esc(&f.reason),
            ago(now, f.at),
            f.job_dir.as_deref().map_or_else(|| "–".into(), esc)
        );
    }
    h.push_str("</table></section>");
}

/// A line series: name, color, points (Unix time, value).
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

fn charts(h: &mut String, t: &StatusFile, now: f64) {
    let history = &t.history;
    h.push_str("<h3>Last hour</h3><div class=\"charts\">");
    // The nodes in the table's order (their colors stay put), then any
    // that only the history knows.
    let mut names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
    for s in &history.samples {
        for name in s.fps.keys() {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    let nodes: Vec<Series> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let pts = history.samples.iter().filter_map(|s| s.fps.get(*name).map(|v| (s.at, *v))).collect();
            (*name, COLORS[i % COLORS.len()], pts)
        })
        .collect();
    chart(h, "Throughput by node (frames per second)", &nodes, (now, history.every), false);
    let queue: Vec<Series> = vec![
        ("queued", "#d97706", history.samples.iter().map(|s| (s.at, s.queued as f64)).collect()),
        ("in progress", "#2563eb", history.samples.iter().map(|s| (s.at, s.running as f64)).collect()),
    ];
    chart(h, "Files queued and in progress", &queue, (now, history.every), true);
    h.push_str("</div>");
}

const W: f64 = 520.0;
const H: f64 = 170.0;
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;
const RIGHT: f64 = 10.0;

/// A plot of `series` over the last hour; `steps`: counts, drawn as steps.
fn chart(h: &mut String, title: &str, series: &[Series], (now, every): (f64, f64), steps: bool) {
    let max = series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(0.0, f64::max);
    let top = 4.0 * nice_step(max / 4.0);
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * (1.0 - ((now - t) / HISTORY_SPAN).clamp(0.0, 1.0));
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v / top).clamp(0.0, 1.0));
    let _ = write!(
        h,
        "<div class=\"chart\"><div class=\"meta\">{}</div><svg viewBox=\"0 0 {W} {H}\" width=\"100%\" \
         role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"10\" fill=\"#6b7280\">",
        esc(title),
        esc(title)
    );
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let at = y(v);
        let _ = write!(
            h,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"#e5e7eb\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 4.0,
            at + 3.0,
            trim_number(v),
        );
    }
    for m in [60, 45, 30, 15, 0] {
        let label = if m == 0 { "now".to_string() } else { format!("−{m} min") };
        let anchor = if m == 0 { "end" } else { "middle" };
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{label}</text>",
            x(now - f64::from(m) * 60.0),
            H - 5.0
        );
    }
    for (_, color, pts) in series {
        if let [(t, v)] = pts.as_slice() {
            // One sample alone: a dot (a line needs two).
            let _ = write!(h, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"/>", x(*t), y(*v));
            continue;
        }
        let pts = if steps { stepped(pts) } else { pts.clone() };
        let points: Vec<String> = pts.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = write!(
            h,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    if series.iter().all(|s| s.2.is_empty()) {
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">nothing yet (a sample every {every:.0} s)</text>",
            (W + LEFT) / 2.0,
            H / 2.0
        );
    }
    h.push_str("</svg><div class=\"legend\">");
    for (name, color, _) in series {
        let _ = write!(h, "<span><i style=\"background:{color}\"></i>{}</span>", esc(name));
    }
    h.push_str("</div></div>");
}

/// A count holds until the next sample: a corner before each change.
fn stepped(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pts.len() * 2);
    for (i, p) in pts.iter().enumerate() {
        if i > 0 {
            out.push((p.0, pts[i - 1].1));
        }
        out.push(*p);
    }
    out
}

/// The smallest of 1, 2, 5 × 10^n at or above `x`, at least 1 (the
/// step between gridlines: whole numbers).
fn nice_step(x: f64) -> f64 {
    if !(x.is_finite() && x > 1.0) {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    // 2.5 only where it makes whole numbers (25, 250, ...).
    let steps: &[f64] = if p >= 10.0 { &[1.0, 2.0, 2.5, 5.0, 10.0] } else { &[1.0, 2.0, 5.0, 10.0] };
    steps.iter().map(|m| m * p).find(|v| *v >= x).unwrap_or(10.0 * p)
}

fn trim_number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::model::{FileNode, History, Meta, NodeStatus, Sample};

    #[test]
    fn everything_from_outside_is_escaped() {
        assert_eq!(esc("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
        let evil = "<script>alert(1)</script>\"'&.mp4";
        let t = StatusFile {
            meta: Meta {
                pid: 7,
                mode: "watch".into(),
                watching: vec![format!("/up/{evil}")],
                ..Meta::default()
            },
            cluster: evil.into(),
            running: vec![RunningFile {
                input: format!("/up/{evil}"),
                stage: "encoding".into(),
                nodes: vec![FileNode { node: evil.into(), running: 1, done: 2 }],
                ..RunningFile::default()
            }],
            nodes: vec![NodeStatus { name: evil.into(), reason: Some(evil.into()), ..NodeStatus::default() }],
            history: History {
                every: 15.0,
                samples: vec![Sample {
                    at: 90.0,
                    fps: [(evil.to_string(), 3.0)].into(),
                    ..Sample::default()
                }],
            },
            ..StatusFile::default()
        };
        let failed = FailedFile {
            input: evil.into(),
            reason: evil.into(),
            job_dir: Some(evil.into()),
            log: Some(evil.into()),
            at: 1.0,
        };
        let r = Report {
            host: evil.into(),
            state_dir: evil.into(),
            generated_at: 100.0,
            transcodes: vec![t],
            failed: vec![failed],
            problems: vec![evil.into()],
        };
        let page = html(&r);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("\"'&."), "{page}");
        assert!(page.matches("&lt;script&gt;").count() >= 8, "{page}");
    }

    #[test]
    fn an_idle_machine_says_so() {
        let page = html(&Report { generated_at: 1.0, ..Report::default() });
        assert!(page.contains("No transcode is running") && page.contains("No file failed"), "{page}");
        assert!(page.contains("http-equiv=\"refresh\""));
    }

    #[test]
    fn plot_scales() {
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(0.3), 1.0);
        assert_eq!(nice_step(3.2), 5.0);
        assert_eq!(nice_step(47.0 / 4.0), 20.0);
        assert_eq!(nice_step(100.0 / 4.0), 25.0);
        assert_eq!(nice_step(2.2), 5.0, "whole numbers under 10");
        assert_eq!(nice_step(120.0), 200.0);
        assert_eq!(stepped(&[(0.0, 1.0), (15.0, 3.0)]), [(0.0, 1.0), (15.0, 1.0), (15.0, 3.0)]);
    }
}
