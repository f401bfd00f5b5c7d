//! `transcode --dry-run`: the plan a run would follow — chunks, first
//! assignments, how inputs are read, an estimate from remembered speeds —
//! and nothing written: no job directory, no output, no output folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dffmpeg::transcode::speeds::{self, Speeds};
use serde_json::Value;

use crate::common::media::*;
use crate::common::run::*;

const ARGS: [&str; 4] = ["-c:v", "mpeg4", "-c:a", "aac"];

/// Every entry under `dir`: size, mode and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u32, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            all.insert(p, (m.len(), m.mode(), m.mtime(), m.mtime_nsec()));
        }
    }
    all
}

/// `--dry-run --json`'s plan.
fn plan(cmd: &mut std::process::Command) -> Value {
    let out = ok(run(cmd), "dry run");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The chunks of a file's plan cover its frames, end to end.
fn assert_partition(file: &Value, frames: u64) {
    let chunks = file["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty(), "{file}");
    let sum: u64 = chunks.iter().map(|c| c["frames"].as_u64().unwrap()).sum();
    assert_eq!(sum, frames, "{file}");
    assert_eq!(file["frames"].as_u64(), Some(frames));
    for (i, w) in chunks.windows(2).enumerate() {
        assert_eq!(w[0]["index"].as_u64(), Some(i as u64));
        assert_eq!(w[0]["end"], w[1]["start"], "{file}");
    }
}

/// One file, no inventory: the plan in text and JSON; the estimate comes
/// from remembered speeds; nothing is written.
#[test]
fn a_dry_run_plans_a_file_and_writes_nothing() {
    let d = workdir("dry-one");
    let input = sample(&d, "in.mp4", 6);
    let state = d.join("state");
    std::fs::create_dir(&state).unwrap();
    let before = snapshot(&d);
    let cmd = |json: bool| {
        let mut c = dffmpeg();
        c.env("XDG_STATE_HOME", &state).args(["transcode", "--dry-run", "--chunk", "2"]);
        if json {
            c.arg("--json");
        }
        c.arg(&input).args(ARGS);
        c
    };
    let text = ok(run(&mut cmd(false)), "dry run");
    for line in [
        "dry run: nothing is written",
        "the nodes read the input in place",
        "first chunks:",
        "estimate: none",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    let p = plan(&mut cmd(true));
    let file = &p["files"][0];
    assert_eq!(file["status"], "new");
    assert_eq!(file["input_read"], "in place");
    assert_eq!(file["output"], d.join("in.dffmpeg.mp4").display().to_string());
    assert_partition(file, frame_count(&input));
    assert_eq!(file["chunks"].as_array().unwrap().len(), 3, "--chunk 2 of 6 s");
    let first = p["first"].as_array().unwrap();
    assert!(!first.is_empty() && first.iter().all(|f| f["node"] == "local"), "{p}");
    assert_eq!(p["estimate_seconds"], Value::Null);
    assert_eq!(snapshot(&d), before, "the dry run wrote something");

    // A speed remembered for these settings gives an estimate: the work
    // (frames × megapixels) over what the slots do per second.
    let mut s = Speeds::default();
    let codec: Vec<String> = ARGS.iter().map(|a| a.to_string()).collect();
    s.learn(&speeds::settings_key(&codec), &[("local@local".into(), Some((7.68, 1)))]);
    s.save(&state.join("dffmpeg/speeds.json")).unwrap();
    let before = snapshot(&d);
    let p = plan(&mut cmd(true));
    let estimate = p["estimate_seconds"].as_f64().unwrap();
    assert!((estimate - 150.0 * 0.0768 / 7.68).abs() < 0.11, "{p}");
    assert_eq!(p["nodes"][0]["remembered_rate"].as_f64(), Some(7.68));
    assert_eq!(snapshot(&d), before, "the dry run wrote something");
    let _ = std::fs::remove_dir_all(&d);
}

/// A folder on an inventory with shared storage: each file planned (one
/// inside the shared directory read in place, one outside split there),
/// an existing output skipped; no output folder, no job directory made.
#[test]
fn a_dry_run_of_a_folder_on_an_inventory() {
    let d = workdir("dry-folder");
    let shared = d.join("shared");
    std::fs::create_dir_all(shared.join("work")).unwrap();
    let season = shared.join("season");
    std::fs::create_dir_all(season.join("disc 2")).unwrap();
    sample(&season, "e1.mp4", 4);
    sample(&season.join("disc 2"), "e2.mp4", 6);
    sample(&season, "e3.mp4", 2);
    std::fs::write(season.join("notes.txt"), "not a video\n").unwrap();
    let elsewhere = sample(&d, "elsewhere.mp4", 3);
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("e3.mp4"), "done before\n").unwrap();
    let inv = format!(
        "cluster: {{ storage: nfs, shared_dir: \"{}\" }}\nnodes:\n  here: {{ host: local, roles: [controller, compute, storage] }}\n",
        shared.display()
    );
    let inv = write(&d, "inventory.yaml", &inv);
    let before = snapshot(&d);
    let p = plan(
        dffmpeg()
            .env("XDG_STATE_HOME", d.join("state"))
            .args(["transcode", "--dry-run", "--json", "--settle", "0", "-I"])
            .arg(&inv)
            .arg("-O")
            .arg(&out)
            .arg(&season)
            .arg(&elsewhere)
            .args(ARGS),
    );
    assert_eq!(snapshot(&d), before, "the dry run wrote something");
    let files = p["files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{p}");
    let by_name = |n: &str| files.iter().find(|f| f["input"].as_str().unwrap().ends_with(n)).unwrap();
    assert_eq!(by_name("e1.mp4")["input_read"], "in place", "{p}");
    assert_partition(by_name("e1.mp4"), 100);
    assert_partition(by_name("disc 2/e2.mp4"), 150);
    assert_eq!(by_name("e2.mp4")["output"], out.join("disc 2/e2.mp4").display().to_string());
    assert_eq!(by_name("e3.mp4")["status"], "skip");
    assert_eq!(by_name("elsewhere.mp4")["input_read"], "shared");
    assert!(p["cluster"].as_str().unwrap().contains("inventory.yaml"), "{p}");
    assert_eq!(p["nodes"][0]["name"], "here");
    assert!(!p["first"].as_array().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&d);
}

/// A job the run would resume: its own plan, its verified chunks marked,
/// the rest started first; the job directory is left as it was. A single
/// file the run would refuse exits 2.
#[test]
fn a_dry_run_shows_what_a_resume_would_do() {
    let d = workdir("dry-resume");
    let input = sample(&d, "in.mp4", 6);
    let out = d.join("out.mp4");
    let run_args = |c: &mut std::process::Command| {
        c.args(["--chunk", "2", "-o"]).arg(&out).arg(&input).args(ARGS);
    };
    let mut real = dffmpeg();
    real.args(["transcode", "--keep"]);
    run_args(&mut real);
    success(run(&mut real), "transcode --keep");
    let job = d.join(".out.mp4.dffmpeg-job");
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(job.join("chunk_00001.nut")).unwrap();
    let before = snapshot(&d);
    let mut dry = dffmpeg();
    dry.args(["transcode", "--dry-run", "--json"]);
    run_args(&mut dry);
    let p = plan(&mut dry);
    assert_eq!(snapshot(&d), before, "the dry run wrote something");
    let file = &p["files"][0];
    assert_eq!(file["status"], "resume", "{p}");
    let done: Vec<bool> =
        file["chunks"].as_array().unwrap().iter().map(|c| c["done"].as_bool().unwrap()).collect();
    assert_eq!(done, [true, false, true]);
    assert_eq!(p["first"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["first"][0]["chunk"], 1);

    std::fs::write(&out, "exists\n").unwrap();
    let r = run(dffmpeg().args(["transcode", "--dry-run", "-o"]).arg(&out).arg(&input).args(ARGS));
    let text = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.status.code(), Some(2), "{text}");
    assert!(text.contains("refused: output") && text.contains("use -y"), "{text}");
    let _ = std::fs::remove_dir_all(&d);
}
