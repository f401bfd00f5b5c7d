//! What the user sees: one Ansible-like line per task and node as results
//! arrive, diffs under changed files with `--diff`, then `PLAY RECAP` with
//! one line per node, `NODE : ok=N changed=N unreachable=N failed=N
//! skipped=N`. With `--json`, one JSON object per line instead. `-v` adds
//! detail lines (each node's facts, each change batch); the log file
//! (`--log-file`) gets every human line, detail included, whatever the mode.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::json;

use crate::text::printable as clean;

/// Where report lines go (stdout, or a buffer in tests).
pub type Sink = Arc<Mutex<dyn Write + Send>>;

pub fn stdout_sink() -> Sink {
    Arc::new(Mutex::new(std::io::stdout()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recap {
    pub ok: u32,
    pub changed: u32,
    pub unreachable: u32,
    pub failed: u32,
    pub skipped: u32,
}

/// One task's result on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    pub node: String,
    pub task: String,
    pub step: Option<String>,
    pub status: Status,
    pub handler: bool,
    /// Summaries of what changed (or would change).
    pub changes: Vec<String>,
    /// Why it failed or was skipped.
    pub msg: Option<String>,
    /// Unified diffs (with `--diff`).
    pub diff: Option<String>,
}

/// `ok: [pi3] name`, `changed: [pi3] name (what)`, `failed: [pi3] name =>
/// message`, `skipping: [pi3] name (why)`. Text from the node (messages,
/// change summaries naming its paths) is printed without terminal escapes.
pub fn task_line(e: &TaskEvent) -> String {
    let word = match e.status {
        Status::Ok => "ok",
        Status::Changed => "changed",
        Status::Failed => "failed",
        Status::Skipped => "skipping",
    };
    let name = if e.handler { format!("handler: {}", e.task) } else { e.task.clone() };
    let mut line = format!("{word}: [{}] {name}", e.node);
    match e.status {
        Status::Changed if !e.changes.is_empty() => {
            line.push_str(&format!(" ({})", clean(&e.changes.join("; "))))
        }
        Status::Failed => {
            line.push_str(&format!(" => {}", clean(e.msg.as_deref().unwrap_or("failed").trim())))
        }
        Status::Skipped => {
            if let Some(m) = &e.msg {
                line.push_str(&format!(" ({})", clean(m)));
            }
        }
        _ => {}
    }
    line
}

pub fn recap_line(node: &str, r: &Recap) -> String {
    format!(
        "{node} : ok={} changed={} unreachable={} failed={} skipped={}",
        r.ok, r.changed, r.unreachable, r.failed, r.skipped
    )
}

/// Collects results per node and prints them.
pub struct Reporter {
    sink: Sink,
    json: bool,
    show_diff: bool,
    verbose: bool,
    recaps: Mutex<BTreeMap<String, Recap>>,
}

impl Reporter {
    pub fn new(sink: Sink, json: bool, show_diff: bool, nodes: &[String]) -> Reporter {
        Reporter {
            sink,
            json,
            show_diff,
            verbose: false,
            recaps: Mutex::new(nodes.iter().map(|n| (n.clone(), Recap::default())).collect()),
        }
    }

    /// With `-v`: detail lines on the screen too.
    pub fn with_verbose(mut self, verbose: bool) -> Reporter {
        self.verbose = verbose;
        self
    }

    /// A line (or block) for the user: `human` in the log file, and on
    /// stdout as it is or as `json` (with `--json`).
    fn emit(&self, human: &str, json: impl FnOnce() -> serde_json::Value) {
        crate::log::line(human);
        if self.json {
            self.json_line(json());
        } else {
            self.write(human);
        }
    }

    /// A detail (`-v`): `  [node] text`; always in the log file.
    pub fn detail(&self, node: &str, text: &str) {
        let human = format!("  [{node}] {}\n", clean(text));
        if self.verbose {
            self.emit(&human, || json!({"event": "detail", "node": node, "msg": text}));
        } else {
            crate::log::line(&human);
        }
    }

    fn write(&self, text: &str) {
        if let Ok(mut w) = self.sink.lock() {
            // A closed stdout must not abort the run: results are still
            // applied, and the exit status still tells.
            let _ = w.write_all(text.as_bytes());
            let _ = w.flush();
        }
    }

    fn json_line(&self, v: serde_json::Value) {
        self.write(&format!("{v}\n"));
    }

    /// A free-standing line (human mode only), e.g. which cluster is used.
    pub fn note(&self, text: &str) {
        self.emit(&format!("{text}\n"), || json!({"event": "note", "msg": text}));
    }

    pub fn start(&self, inventory: &str, nodes: &[String], check: bool) {
        let mode = if check { " (check mode: nothing is changed)" } else { "" };
        let human = format!("cluster: {inventory} — {} node(s): {}{mode}\n", nodes.len(), nodes.join(", "));
        self.emit(
            &human,
            || json!({"event": "start", "inventory": inventory, "nodes": nodes, "check": check}),
        );
    }

    pub fn task(&self, e: TaskEvent) {
        if let Ok(mut r) = self.recaps.lock() {
            let rec = r.entry(e.node.clone()).or_default();
            match e.status {
                Status::Ok => rec.ok += 1,
                Status::Changed => rec.changed += 1,
                Status::Failed => rec.failed += 1,
                Status::Skipped => rec.skipped += 1,
            }
        }
        let diff = if self.show_diff { e.diff.clone() } else { None };
        let mut text = task_line(&e);
        text.push('\n');
        if let Some(d) = &diff {
            text.push_str(&clean(d));
        }
        self.emit(&text, || {
            json!({
                "event": "task",
                "node": e.node,
                "task": e.task,
                "step": e.step,
                "handler": e.handler,
                "status": e.status,
                "changes": e.changes,
                "msg": e.msg,
                "diff": diff,
            })
        });
    }

    /// A host key trusted for the first time (recorded in dffmpeg's
    /// known_hosts): its fingerprints, to compare with the node's own
    /// (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on it).
    pub fn host_key(&self, node: &str, host: &str, fingerprints: &[String]) {
        let fps = if fingerprints.is_empty() { "(none read)".to_string() } else { fingerprints.join(", ") };
        let human = format!("new host key: [{node}] {host} {fps} (first contact: now trusted)\n");
        self.emit(
            &human,
            || json!({"event": "host_key", "node": node, "host": host, "fingerprints": fingerprints}),
        );
    }

    pub fn unreachable(&self, node: &str, msg: &str) {
        if let Ok(mut r) = self.recaps.lock() {
            r.entry(node.to_string()).or_default().unreachable += 1;
        }
        let human = format!("unreachable: [{node}] => {}\n", clean(msg.trim()));
        self.emit(&human, || json!({"event": "unreachable", "node": node, "msg": msg}));
    }

    pub fn recaps(&self) -> BTreeMap<String, Recap> {
        self.recaps.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Print the recap in `order`; returns the nodes that failed or were
    /// unreachable.
    pub fn finish(&self, order: &[String]) -> Vec<String> {
        let recaps = self.recaps();
        let failed: Vec<String> = order
            .iter()
            .filter(|n| recaps.get(*n).map(|r| r.failed > 0 || r.unreachable > 0).unwrap_or(false))
            .cloned()
            .collect();
        let limit = (!failed.is_empty()).then(|| failed.join(","));
        let mut text = String::from("\nPLAY RECAP\n");
        for n in order {
            text.push_str(&recap_line(n, &recaps.get(n).cloned().unwrap_or_default()));
            text.push('\n');
        }
        if let Some(l) = &limit {
            text.push_str(&format!("\nfailed or unreachable, to retry: --limit {l}\n"));
        }
        self.emit(&text, || {
            let nodes: Vec<_> = order
                .iter()
                .map(|n| {
                    let r = recaps.get(n).cloned().unwrap_or_default();
                    json!({"node": n, "ok": r.ok, "changed": r.changed, "unreachable": r.unreachable, "failed": r.failed, "skipped": r.skipped})
                })
                .collect();
            json!({"event": "recap", "nodes": nodes, "failed_nodes": failed, "limit": limit})
        });
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(status: Status) -> TaskEvent {
        TaskEvent {
            node: "pi3".into(),
            task: "exports".into(),
            step: Some("exports".into()),
            status,
            handler: false,
            changes: vec!["update /etc/exports".into()],
            msg: Some("boom\n".into()),
            diff: Some("--- a (before)\n+++ a (after)\n".into()),
        }
    }

    #[test]
    fn lines() {
        assert_eq!(task_line(&ev(Status::Ok)), "ok: [pi3] exports");
        assert_eq!(task_line(&ev(Status::Changed)), "changed: [pi3] exports (update /etc/exports)");
        assert_eq!(task_line(&ev(Status::Failed)), "failed: [pi3] exports => boom");
        assert_eq!(task_line(&ev(Status::Skipped)), "skipping: [pi3] exports (boom\n)");
        let mut h = ev(Status::Changed);
        h.handler = true;
        h.changes.clear();
        assert_eq!(task_line(&h), "changed: [pi3] handler: exports");
        let r = Recap { ok: 3, changed: 1, unreachable: 0, failed: 0, skipped: 2 };
        assert_eq!(recap_line("pi3", &r), "pi3 : ok=3 changed=1 unreachable=0 failed=0 skipped=2");
    }

    fn buf() -> (Arc<Mutex<Vec<u8>>>, Sink) {
        let b = Arc::new(Mutex::new(Vec::new()));
        (b.clone(), b)
    }

    #[test]
    fn recap_block_and_retry_limit() {
        let (b, sink) = buf();
        let nodes = vec!["pi3".to_string(), "pi2".to_string(), "nuc".to_string()];
        let r = Reporter::new(sink, false, true, &nodes);
        r.task(ev(Status::Changed));
        r.task(ev(Status::Ok));
        r.unreachable("pi2", "connection refused");
        let mut f = ev(Status::Failed);
        f.node = "nuc".into();
        r.task(f);
        assert_eq!(r.finish(&nodes), vec!["pi2", "nuc"]);
        let text = String::from_utf8(b.lock().unwrap().clone()).unwrap();
        assert!(text.contains("changed: [pi3] exports (update /etc/exports)\n--- a (before)\n"));
        assert!(text.contains("unreachable: [pi2] => connection refused\n"));
        assert!(text.contains(
            "PLAY RECAP\npi3 : ok=1 changed=1 unreachable=0 failed=0 skipped=0\npi2 : ok=0 changed=0 unreachable=1 failed=0 skipped=0\nnuc : ok=0 changed=0 unreachable=0 failed=1 skipped=0\n"
        ), "{text}");
        assert!(text.ends_with("--limit pi2,nuc\n"));
    }

    #[test]
    fn node_text_loses_its_escapes() {
        let mut f = ev(Status::Failed);
        f.msg = Some("E: \u{1b}[2J\u{1b}]0;pwned\u{7}broken\r".into());
        assert_eq!(task_line(&f), "failed: [pi3] exports => E: broken");
        let (b, sink) = buf();
        let r = Reporter::new(sink, false, true, &["pi3".to_string()]);
        let mut c = ev(Status::Changed);
        c.diff = Some("-old\u{1b}[1A\n+new\n".into());
        r.task(c);
        r.unreachable("pi3", "gone\u{1b}[K");
        let text = String::from_utf8(b.lock().unwrap().clone()).unwrap();
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("-old\n+new\n") && text.contains("=> gone\n"), "{text:?}");
    }

    #[test]
    fn json_events() {
        let (b, sink) = buf();
        let nodes = vec!["pi3".to_string()];
        let r = Reporter::new(sink, true, false, &nodes);
        r.start("inv.yaml", &nodes, false);
        r.task(ev(Status::Changed));
        assert!(r.finish(&nodes).is_empty());
        let text = String::from_utf8(b.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["status"], "changed");
        assert_eq!(lines[1]["diff"], serde_json::Value::Null);
        assert_eq!(lines[2]["event"], "recap");
        assert_eq!(lines[2]["nodes"][0]["changed"], 1);
        assert_eq!(lines[2]["limit"], serde_json::Value::Null);
    }
}
