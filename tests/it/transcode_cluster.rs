//! Distributed transcoding over SSH on test hosts (network namespaces with
//! their own sshd and CPU quotas): both storage modes, a node dying, nodes
//! unreachable, a node with a different ffmpeg build, Ctrl-C and resume.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::lab::{HostOpts, Lab};
use crate::common::media::*;
use crate::common::run::*;

/// A compute node of a test inventory.
struct TestNode {
    name: String,
    host: String,
}

fn write_inventory(
    dir: &Path,
    lab: &Lab,
    storage: &str,
    shared: Option<&Path>,
    nodes: &[TestNode],
) -> PathBuf {
    let mut y = String::from("cluster:\n");
    y.push_str(&format!("  storage: {storage}\n"));
    if let Some(s) = shared {
        y.push_str(&format!("  shared_dir: \"{}\"\n", s.display()));
    }
    y.push_str(&format!(
        "defaults: {{ user: root, identity_file: \"{}\" }}\nnodes:\n  ctl: {{ host: local, roles: [controller{}] }}\n",
        lab.client_key().display(),
        if storage == "nfs" { ", storage" } else { "" }
    ));
    for n in nodes {
        y.push_str(&format!("  {}: {{ host: {}, roles: [compute] }}\n", n.name, n.host));
    }
    write(dir, "inventory.yaml", &y)
}

fn cluster_cmd(dir: &Path, inventory: &Path) -> Command {
    let mut c = dffmpeg();
    c.env("DFFMPEG_KNOWN_HOSTS", dir.join("known_hosts")).arg("transcode").arg("-I").arg(inventory);
    c
}

/// `transcode -I inventory --json --chunk 1 -o out input ARGS...`, which must succeed.
fn transcode_json(d: &Path, inv: &Path, out: &Path, input: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    ok_events(run(cluster_cmd(d, inv).args(["--json", "--chunk", "1", "-o"]).arg(out).arg(input).args(args)))
}

/// [`transcode_json`] with ARGS, this machine's ffprobe logged (see
/// `logged_ffprobe`): the events and the log.
fn transcode_json_logged(
    d: &Path,
    inv: &Path,
    out: &Path,
    input: &Path,
) -> (Vec<serde_json::Value>, PathBuf) {
    let (path, log) = logged_ffprobe(d);
    let ev = ok_events(run(cluster_cmd(d, inv)
        .env("PATH", path)
        .args(["--json", "--chunk", "1", "-o"])
        .arg(out)
        .arg(input)
        .args(ARGS)));
    (ev, log)
}

/// The nodes checked their chunks: this machine probed the preflight's two
/// first frames only, not one chunk each.
fn assert_nodes_checked_their_chunks(ev: &[serde_json::Value], log: &Path) {
    let chunks = ev.iter().filter(|e| e["event"] == "chunk_done").count();
    let probed = std::fs::read_to_string(log).unwrap().lines().filter(|l| l.contains("packet=pts")).count();
    assert!(chunks >= 6 && probed <= 2, "{chunks} chunks, {probed} chunk probes here");
}

/// No ffmpeg left on any live host (stopped duplicates, dropped nodes).
fn assert_no_ffmpeg(lab: &Lab) {
    for h in lab.hosts().iter().filter(|h| h.is_running()) {
        assert!(h.pids_matching("ffmpeg").is_empty(), "ffmpeg left running on {}", h.name);
    }
}

/// The `job_start` event of a one-file run.
fn job_start(ev: &[serde_json::Value]) -> &serde_json::Value {
    ev.iter().find(|e| e["event"] == "job_start").expect("a job_start event")
}

const ARGS: &[&str] = &["-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-c:a", "aac"];

fn three_hosts(tag: &str, net: u8) -> (Lab, Vec<TestNode>) {
    let mut lab = Lab::new(tag, net);
    let mut nodes = Vec::new();
    for (name, cpus) in [("a", 1.0), ("b", 1.0), ("c", 0.5)] {
        let h = lab.add_host(name, HostOpts { cpus: Some(cpus), ..Default::default() });
        nodes.push(TestNode { name: name.into(), host: h.ip.clone() });
    }
    (lab, nodes)
}

#[test]
fn ssh_storage_three_hosts_matches_a_local_run() {
    let d = workdir("cl-ssh");
    let (lab, nodes) = three_hosts("clssh", 81);
    let input = sample(&d, "in.mp4", 12);
    let inv = write_inventory(&d, &lab, "ssh", None, &nodes);
    let out = d.join("out.mp4");
    let (ev, log) = transcode_json_logged(&d, &inv, &out, &input);
    assert_nodes_checked_their_chunks(&ev, &log);
    let cluster = ev[0]["cluster"].as_str().unwrap();
    assert!(cluster.contains("inventory.yaml"), "{}", ev[0]);
    // Slots follow each host's CPU quota, not the machine's cores it sees.
    assert!(cluster.contains("a (1 slot), b (1 slot), c (1 slot)"), "{cluster}");
    // First contact (a fresh known_hosts): each key trusted is named.
    for n in ["a", "b", "c"] {
        let named = ev.iter().any(|e| {
            e["event"] == "warning"
                && e["message"].as_str().is_some_and(|m| m.starts_with(&format!("new host key: node {n} (")))
        });
        assert!(named, "no new host key named for {n}: {ev:?}");
    }
    assert_eq!(nodes_with_chunks(&ev), ["a", "b", "c"], "every host did chunks");
    let local = d.join("local.mp4");
    ok_events(run(dffmpeg()
        .args(["transcode", "--json", "--chunk", "1", "-o"])
        .arg(&local)
        .arg(&input)
        .args(ARGS)));
    assert_same_video(&out, &local);
    assert_eq!(frame_count(&out), frame_count(&input));
    // The audio was encoded on a node from packets sent over SSH: the same
    // packets, at the same times, as this machine's own encode.
    let side = ev.iter().find(|e| e["event"] == "side_streams").expect("side streams");
    assert!(["a", "b", "c"].contains(&side["node"].as_str().unwrap_or("")), "{side}");
    assert_eq!(packet_times(&out, "a:0"), packet_times(&local, "a:0"));
    assert_no_ffmpeg(&lab);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn nfs_storage_through_a_shared_directory() {
    let d = workdir("cl-nfs");
    let (lab, nodes) = three_hosts("clnfs", 82);
    // The shared directory: one directory of this machine, bound at the same
    // path into every host (the NFS mount's stand-in). A space and a quote in
    // its name check the quoting of every remote path.
    let shared = d.join("share dir 'x'");
    std::fs::create_dir_all(&shared).unwrap();
    for h in lab.hosts() {
        h.share(&shared, shared.to_str().unwrap());
    }
    let input = sample(&d, "in $(touch pwned) ü.mp4", 12);
    let inv = write_inventory(&d, &lab, "nfs", Some(&shared), &nodes);
    let out = d.join("out.mkv");
    let ev = transcode_json(&d, &inv, &out, &input, ARGS);
    assert_eq!(nodes_with_chunks(&ev), ["a", "b", "c"]);
    assert_eq!(frame_count(&out), frame_count(&input));
    for h in lab.hosts() {
        assert!(
            !h.root().join("root/pwned").exists() && !h.root().join("pwned").exists(),
            "nothing executed"
        );
    }
    assert_eq!(job_start(&ev)["read_in_place"], false, "{ev:?}");
    // A source inside the shared directory: the nodes read it in place
    // (no split), through the same quoting of every remote path.
    let inside = shared.join("media $x; 'ü'.mp4");
    std::fs::rename(&input, &inside).unwrap();
    let out2 = shared.join("out 2.mkv");
    let (ev, log) = transcode_json_logged(&d, &inv, &out2, &inside);
    assert_eq!(job_start(&ev)["read_in_place"], true, "{ev:?}");
    assert_nodes_checked_their_chunks(&ev, &log);
    // A node encoded the audio too, reading the source in place.
    let side = ev.iter().find(|e| e["event"] == "side_streams").expect("side streams");
    assert!(["a", "b", "c"].contains(&side["node"].as_str().unwrap_or("")), "{side}");
    assert_eq!(nodes_with_chunks(&ev), ["a", "b", "c"]);
    assert_eq!(frame_count(&out2), frame_count(&inside));
    assert_same_video(&out2, &out);
    // The job directory in the shared work dir is gone after success.
    let left: Vec<_> = std::fs::read_dir(shared.join("work")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    assert_no_ffmpeg(&lab);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_host_dying_mid_job_fails_over() {
    let d = workdir("cl-kill");
    let mut lab = Lab::new("clkill", 83);
    let a = lab.add_host("a", HostOpts { cpus: Some(1.0), ..Default::default() });
    let b = lab.add_host("b", HostOpts { cpus: Some(0.25), ..Default::default() });
    let nodes = [
        TestNode { name: "a".into(), host: a.ip.clone() },
        TestNode { name: "b".into(), host: b.ip.clone() },
    ];
    let input = sample(&d, "in.mp4", 12);
    let inv = write_inventory(&d, &lab, "ssh", None, &nodes);
    let out = d.join("out.mp4");
    let mut running_on_b = 0i64;
    let mut killed = false;
    let (res, ev) = streaming(
        cluster_cmd(&d, &inv).args(["--json", "--chunk", "1", "-o"]).arg(&out).arg(&input).args(ARGS),
        |e, _| {
            let on_b = e["node"] == "b";
            match e["event"].as_str() {
                Some("chunk_start") if on_b => running_on_b += 1,
                Some("chunk_done" | "chunk_failed" | "chunk_cancelled") if on_b => running_on_b -= 1,
                // Kill b while it works, once a's first chunk is in.
                Some("chunk_done") if !killed && running_on_b > 0 => {
                    b.kill();
                    killed = true;
                }
                _ => {}
            }
        },
    );
    assert!(killed, "b was never busy");
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let dropped: Vec<_> = ev.iter().filter(|e| e["event"] == "node_dropped").collect();
    assert!(dropped.iter().any(|e| e["node"] == "b"), "the report shows the failover: {ev:?}");
    let done = ev.iter().find(|e| e["event"] == "batch_done").unwrap();
    let b_stats = done["nodes"].as_array().unwrap().iter().find(|n| n["node"] == "b").unwrap();
    assert!(b_stats["failures"].as_u64().unwrap() >= 1);
    assert_eq!(frame_count(&out), frame_count(&input));
    assert_same_video(&out, &input);
    assert_no_ffmpeg(&lab);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unreachable_hosts() {
    let d = workdir("cl-unreach");
    let mut lab = Lab::new("clunr", 84);
    let a = lab.add_host("a", HostOpts::default());
    let input = sample(&d, "in.mp4", 4);
    // .250 is on the lab's bridge but no host answers there.
    let ghost = TestNode { name: "ghost".into(), host: "198.18.84.250".into() };
    let nodes = [TestNode { name: "a".into(), host: a.ip.clone() }, ghost];
    let inv = write_inventory(&d, &lab, "ssh", None, &nodes);
    let out = d.join("out.mp4");
    let ev = transcode_json(&d, &inv, &out, &input, ARGS);
    let warn: Vec<_> = ev.iter().filter(|e| e["event"] == "warning").collect();
    assert!(warn.iter().any(|w| w["message"].as_str().unwrap().contains("ghost")), "{ev:?}");
    assert_eq!(nodes_with_chunks(&ev), ["a"]);
    assert_eq!(frame_count(&out), frame_count(&input));

    // Nobody answers: a clear error, exit 1, nothing written.
    let nodes = [TestNode { name: "ghost".into(), host: "198.18.84.250".into() }];
    let inv = write_inventory(&d, &lab, "ssh", None, &nodes);
    let out2 = d.join("out2.mp4");
    let res = run(cluster_cmd(&d, &inv).arg("-o").arg(&out2).arg(&input).args(ARGS));
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(err.contains("ghost") && err.contains("no compute node"), "{err}");
    assert!(!out2.exists());
    assert_no_ffmpeg(&lab);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

/// Host `host`'s ffmpeg, as another build: `options` (shell words) go
/// before the output of every command line.
fn different_build(lab: &Lab, host: &str, options: &str) {
    let wrapper = lab.host(host).root().join("usr/local/bin/ffmpeg");
    std::fs::create_dir_all(wrapper.parent().unwrap()).unwrap();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# a different build\nn=$#; i=0; for a in \"$@\"; do i=$((i+1)); \
             if [ $i -eq $n ]; then set -- \"$@\" {options} \"$a\"; else set -- \"$@\" \"$a\"; fi; shift; done\n\
             exec /usr/bin/ffmpeg \"$@\"\n"
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&wrapper).status().unwrap();
}

#[test]
fn a_node_with_a_different_ffmpeg_build_is_left_out() {
    let d = workdir("cl-mixed");
    let (lab, nodes) = three_hosts("clmix", 85);
    // Host c's ffmpeg makes 4:4:4 video, as another build might.
    different_build(&lab, "c", "-pix_fmt yuv444p");
    // Host b has no ffprobe: its records say so, and this machine probes
    // its parts instead.
    let no_probe = lab.host("b").root().join("usr/local/bin/ffprobe");
    std::fs::create_dir_all(no_probe.parent().unwrap()).unwrap();
    std::fs::write(&no_probe, "#!/bin/sh\necho 'sh: 1: ffprobe: not found' >&2\nexit 127\n").unwrap();
    Command::new("chmod").arg("+x").arg(&no_probe).status().unwrap();
    let input = sample(&d, "in.mp4", 12);
    let inv = write_inventory(&d, &lab, "ssh", None, &nodes);
    let out = d.join("out.mp4");
    let ev = transcode_json(&d, &inv, &out, &input, ARGS);
    let rejected = ev
        .iter()
        .find(|e| e["event"] == "chunk_failed" && e["node"] == "c")
        .unwrap_or_else(|| panic!("no chunk of c was rejected: {ev:?}"));
    let why = rejected["error"].as_str().unwrap();
    assert!(why.contains("pixel format") && why.contains("yuv444p") && why.contains("node c"), "{why}");
    assert!(ev.iter().any(|e| e["event"] == "node_dropped" && e["node"] == "c"));
    assert!(!nodes_with_chunks(&ev).contains(&"c".to_string()));
    assert!(nodes_with_chunks(&ev).contains(&"b".to_string()), "{ev:?}");
    assert!(!ev.iter().any(|e| e["event"] == "chunk_failed" && e["node"] == "b"), "{ev:?}");
    assert_eq!(frame_count(&out), frame_count(&input));
    let v = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=pix_fmt", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), "yuv420p");
    assert_no_ffmpeg(&lab);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

/// An interlaced, anamorphic MPEG-2 TS on the cluster, split and sent over
/// SSH, then read in place from the shared directory: the output's video
/// stream carries what one plain ffmpeg gives it (field order, colour range,
/// aspect ratio, ...). Host c's ffmpeg tags full range, as another build
/// might: its chunks are rejected, naming the property and the node.
#[test]
fn interlaced_source_keeps_its_properties_on_the_cluster() {
    let d = workdir("cl-props");
    let (lab, nodes) = three_hosts("prcol", 111);
    different_build(&lab, "c", "-color_range:v:0 pc");
    let shared = d.join("shared");
    for h in lab.hosts() {
        h.share(&shared, shared.to_str().unwrap());
    }
    let input = shared.join("in.ts");
    interlaced_ts(&input, 6, "tff", "64/45");
    let args = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23"];
    let plain = d.join("plain.mkv");
    ffmpeg(&[&["-i", input.to_str().unwrap()], &args[..], &[plain.to_str().unwrap()]].concat());
    let want = video_props(&plain);
    assert!(want.contains(&("field_order", "tb".into())), "{want:?}");
    for storage in ["ssh", "nfs"] {
        let inv = write_inventory(&d, &lab, storage, (storage == "nfs").then_some(shared.as_path()), &nodes);
        let out = d.join(format!("out-{storage}.mkv"));
        let ev = transcode_json(&d, &inv, &out, &input, &args);
        assert_eq!(job_start(&ev)["read_in_place"], storage == "nfs", "{ev:?}");
        let rejected = ev
            .iter()
            .find(|e| e["event"] == "chunk_failed" && e["node"] == "c")
            .unwrap_or_else(|| panic!("no chunk of c was rejected: {ev:?}"));
        let why = rejected["error"].as_str().unwrap();
        assert!(why.contains("colour range pc differs") && why.contains("node c"), "{why}");
        assert_eq!(nodes_with_chunks(&ev), ["a", "b"]);
        assert_same_video(&out, &input);
        let got = video_props(&out);
        let table = props_table(&[("plain ffmpeg", &want), (storage, &got)]);
        println!("{storage}:\n{table}");
        assert_eq!(got, want, "{table}");
    }
    assert_no_ffmpeg(&lab);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn ctrl_c_stops_ffmpeg_on_every_host_and_the_rerun_resumes() {
    let d = workdir("cl-int");
    let (lab, nodes) = three_hosts("clint", 86);
    let input = sample(&d, "in.mp4", 12);
    let inv = write_inventory(&d, &lab, "ssh", None, &nodes);
    let out = d.join("out.mp4");
    let args = ["-c:v", "libx264", "-preset", "slow", "-c:a", "aac"];
    let mut interrupted = false;
    let (res, _) = streaming(
        cluster_cmd(&d, &inv).args(["--json", "--chunk", "1", "-o"]).arg(&out).arg(&input).args(args),
        |e, pid| {
            if e["event"] == "chunk_done" && !interrupted {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid as i32, libc::SIGINT) };
                interrupted = true;
            }
        },
    );
    assert_eq!(res.status.code(), Some(1), "{}", String::from_utf8_lossy(&res.stderr));
    for h in lab.hosts() {
        assert!(h.pids_matching("ffmpeg").is_empty(), "ffmpeg left on {}", h.name);
    }
    let ev = transcode_json(&d, &inv, &out, &input, &args);
    let start = ev.iter().find(|e| e["event"] == "job_start").unwrap();
    assert!(start["resumed_chunks"].as_u64().unwrap() >= 1);
    assert_eq!(frame_count(&out), frame_count(&input));
    assert_no_ffmpeg(&lab);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn inventory_errors_name_the_place() {
    let d = workdir("cl-inv");
    let input = sample(&d, "in.mp4", 1);
    for (yaml, needle) in [
        ("nodes:\n  a: { hots: x, roles: [compute, controller] }\n", "inventory.yaml:2:8"),
        ("nodes:\n  a: { host: local, roles: [controler] }\n", "inventory.yaml:2:29"),
        ("nodes:\n  a: { host: local, roles: [compute] }\n", "controller"),
        ("nodes:\n  a: { host: x, port: 70000, roles: [compute, controller] }\n", "port"),
        ("nodes: [unclosed\n", "inventory.yaml:"),
    ] {
        let inv = d.join("inventory.yaml");
        std::fs::write(&inv, yaml).unwrap();
        let res = run(dffmpeg().arg("transcode").arg("-I").arg(&inv).arg(&input));
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{yaml}: {err}");
        assert!(err.contains(needle), "{yaml}: expected {needle} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Two 1.0-CPU hosts over ssh; `freeze(b)` is called once b's first chunk
/// shows progress. The job must finish on a within `bound` of the freeze,
/// frame-exact, the report must name b, and no ssh of dffmpeg's to b may
/// be left running on this machine. Returns the events.
fn frozen_job(
    tag: &str,
    net: u8,
    bound: Duration,
    freeze: impl Fn(&crate::common::lab::Host),
) -> Vec<serde_json::Value> {
    let d = workdir(tag);
    let mut lab = Lab::new(tag, net);
    let a = lab.add_host("a", HostOpts { cpus: Some(1.0), ..Default::default() });
    let b = lab.add_host("b", HostOpts { cpus: Some(1.0), ..Default::default() });
    let nodes = [
        TestNode { name: "a".into(), host: a.ip.clone() },
        TestNode { name: "b".into(), host: b.ip.clone() },
    ];
    // Long enough (about 30 s of work for one host here) that the queue
    // outlasts the watchdog's least patience (15 s): otherwise a's endgame
    // duplicate of b's chunk ends the job first. 720p, x264 medium.
    let input = d.join("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=25:duration=40",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        input.to_str().unwrap(),
    ]);
    let inv = write_inventory(&d, &lab, "ssh", None, &nodes);
    let out = d.join("out.mp4");
    let mut frozen_at: Option<std::time::Instant> = None;
    let args = ["-c:v", "libx264", "-preset", "medium"];
    let (res, ev) = streaming(
        cluster_cmd(&d, &inv).args(["--json", "--chunk", "2", "-o"]).arg(&out).arg(&input).args(args),
        |e, _| {
            let b_busy = e["event"] == "chunk_start" && e["node"] == "b";
            if b_busy && frozen_at.is_none() {
                // Give its encoder a moment to start, then freeze.
                std::thread::sleep(Duration::from_millis(700));
                freeze(&b);
                frozen_at = Some(std::time::Instant::now());
            }
        },
    );
    let frozen_at = frozen_at.expect("b never took a chunk");
    let took = frozen_at.elapsed();
    b.thaw();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert!(took < bound, "the job took {took:?} after the freeze (bound {bound:?})");
    assert_eq!(frame_count(&out), frame_count(&input));
    assert_same_video(&out, &input);
    // Nothing of dffmpeg's toward b is left on this machine.
    let clients = Command::new("pgrep").args(["-ax", "ssh"]).output().unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&clients.stdout)
        .lines()
        .filter(|l| l.contains(&b.ip))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
    ev
}

/// A node that hangs with its connection up (its ffmpeg stopped, as on an
/// NFS hard mount that hangs): only the watchdog can tell. Its chunk goes
/// to the other node; the node is named.
#[test]
fn a_hung_encoder_is_abandoned_by_the_watchdog() {
    let ev = frozen_job("clhang", 88, Duration::from_secs(90), |b| {
        for pid in b.pids_matching("ffmpeg") {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        }
    });
    let stalled = ev
        .iter()
        .find(|e| e["event"] == "chunk_failed" && e["node"] == "b")
        .unwrap_or_else(|| panic!("b's chunk was not given up: {ev:?}"));
    assert!(stalled["error"].as_str().unwrap().contains("no new frame"), "{stalled}");
    let done = ev.iter().find(|e| e["event"] == "batch_done").unwrap();
    let b_stats = done["nodes"].as_array().unwrap().iter().find(|n| n["node"] == "b").unwrap();
    assert!(b_stats["failures"].as_u64().unwrap() >= 1, "{done}");
}

/// A whole host frozen (every process stopped, its TCP connection open):
/// the SSH keepalive or the watchdog gives it up, the job finishes on the
/// other host, and the report names it.
#[test]
fn a_frozen_host_is_given_up_and_named() {
    let ev = frozen_job("clfrz", 89, Duration::from_secs(90), |b| b.freeze());
    assert!(
        ev.iter().any(|e| (e["event"] == "node_dropped" || e["event"] == "chunk_failed") && e["node"] == "b"),
        "the report names b: {ev:?}"
    );
}

/// `--dry-run` over SSH: a host never seen is named and left out, not
/// trusted (no known_hosts written); once trusted, its chunks would be
/// streamed to it, and the plan says so.
#[test]
fn a_dry_run_over_ssh_trusts_no_new_host() {
    let d = workdir("cl-dry");
    let mut lab = Lab::new("cldry", 94);
    let h = lab.add_host("a", HostOpts { cpus: Some(1.0), ..Default::default() });
    let nodes = [TestNode { name: "a".into(), host: h.ip.clone() }];
    let input = sample(&d, "in.mp4", 4);
    let inv = write_inventory(&d, &lab, "ssh", None, &nodes);
    let out = d.join("out.mp4");
    let dry = || {
        let mut c = cluster_cmd(&d, &inv);
        c.args(["--dry-run", "--json", "-o"]).arg(&out).arg(&input).args(ARGS);
        run(&mut c)
    };
    let r = dry();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("no compute node") && err.contains("unknown host key"), "{err}");
    assert!(!d.join("known_hosts").exists());
    assert!(!out.exists());

    // A real run trusts it (first use); the dry run then plans on it.
    ok_events(run(cluster_cmd(&d, &inv)
        .args(["--json", "-o"])
        .arg(d.join("real.mp4"))
        .arg(&input)
        .args(ARGS)));
    let known = std::fs::read(d.join("known_hosts")).unwrap();
    let r = dry();
    let p: serde_json::Value = serde_json::from_str(&ok(r, "dry run")).unwrap();
    assert_eq!(p["files"][0]["input_read"], "streamed", "{p}");
    assert_eq!(p["nodes"][0]["name"], "a");
    assert!(p["first"].as_array().unwrap().iter().all(|f| f["node"] == "a"), "{p}");
    assert_eq!(std::fs::read(d.join("known_hosts")).unwrap(), known);
    assert!(!out.exists() && !d.join(".out.mp4.dffmpeg-job").exists());
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}
