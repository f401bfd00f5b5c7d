//! Running commands in tests: dffmpeg, its JSON events, and the one way a
//! test says a command must succeed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The dffmpeg of this build.
pub fn dffmpeg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dffmpeg"))
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("dffmpeg runs")
}

/// `out` of a command that must have succeeded (`what` names it when not).
pub fn success(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// The stdout of a command that must have succeeded.
pub fn ok(out: Output, what: &str) -> String {
    String::from_utf8_lossy(&success(out, what).stdout).into_owned()
}

/// JSON event lines of a `--json` run.
pub fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The events of a `--json` run that must have succeeded.
pub fn ok_events(out: Output) -> Vec<serde_json::Value> {
    events(&success(out, "dffmpeg"))
}

pub fn count_events(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

/// Nodes that finished at least one chunk (`chunk_done` events), sorted,
/// each once.
pub fn nodes_with_chunks(events: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "chunk_done")
        .filter_map(|e| e["node"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Run a `--json` command, calling `on_event` with each event (and the
/// command's pid) as it comes; its output and every event.
pub fn streaming(
    cmd: &mut Command,
    mut on_event: impl FnMut(&serde_json::Value, u32),
) -> (Output, Vec<serde_json::Value>) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let mut ev = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Ok(e) = serde_json::from_str::<serde_json::Value>(&line) {
            on_event(&e, pid);
            ev.push(e);
        }
    }
    (child.wait_with_output().expect("wait"), ev)
}

/// Live ffmpeg processes whose command line holds `marker` (zombies,
/// whose command line is gone, do not count).
pub fn ffmpeg_running(marker: &str) -> Vec<String> {
    let out = Command::new("pgrep").args(["-a", "-f", marker]).output().expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("ffmpeg") && !l.contains("pgrep"))
        .map(str::to_string)
        .collect()
}

/// Write `text` to `dir/name`; its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
    p
}

/// A PATH whose ffprobe logs its arguments (then runs the real one), and
/// the log: what this machine probed.
pub fn logged_ffprobe(d: &std::path::Path) -> (String, std::path::PathBuf) {
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = d.join("ffprobe.log");
    let shim = format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec /usr/bin/ffprobe \"$@\"\n", log.display());
    std::fs::write(bin.join("ffprobe"), shim).unwrap();
    std::fs::set_permissions(bin.join("ffprobe"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    (format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()), log)
}
