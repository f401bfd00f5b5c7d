//! The seed's real cluster, on this x86 machine: test hosts whose root is a
//! Debian bookworm arm64 or armhf userland (`tests/arm/armroot.sh`, cached in
//! /var/tmp) running Debian's own ARM sshd and ffmpeg through qemu-user, next
//! to x86 hosts; and the aarch64 and armv7 builds of dffmpeg itself, as the
//! Debian packages `scripts/dist.sh` makes (its cargo dir is kept in /var/tmp).
//!
//! * a mixed cluster — x86 controller, an arm64, an armhf and an x86 node —
//!   with storage ssh and nfs, libx264 and mpeg4: frame-exact, every node
//!   encodes chunks, and the ARM and x86 builds' chunks merge into one stream;
//!   `dffmpeg facts` names each node's architecture;
//! * the blog's Pi 3B: the armv7 package installed with apt on an armhf host
//!   that says it is Raspbian, user pi with a password; `dffmpeg setup
//!   --ask-pass` run there brings up itself, an arm64 and an x86 node, and
//!   `dffmpeg transcode` from there is frame-exact;
//! * the arm64 and armhf packages install with `apt install ./…deb`, run,
//!   bring their man pages and completions, and `dpkg -r` removes them.
//!
//! The emulated ARM nodes encode 10-16 times slower than an x86 core and
//! start ffmpeg 3-4 times slower; the x86 node gets half a CPU (see
//! [`X86_CPUS`]) and the clips are tiny: this is about correctness, not speed.
//! Lab tags start with `arm`, nets 101-109.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use crate::common::lab::{q, Host, HostOpts, Lab};
use crate::common::media::*;
use crate::common::picluster::{Kind, NfsPackages, Os, PiCluster, Spec, INVENTORY, SHARED_DIR};
use crate::common::run::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The x86 node's CPU quota. Before it has encoded anything, the scheduler
/// rates a node by its CPUs scaled by what the measured nodes do per CPU,
/// and an emulated ARM "CPU" does a twelfth of an x86 one: at 0.08 CPU (about
/// an ARM core's real speed) the x86 node would never get a chunk; at 0.5
/// it gets one, is then measured fast and takes the rest of the queue, while
/// the ARM nodes' first chunks still finish first and are merged.
const X86_CPUS: f64 = 0.5;

/// Runs a script on this machine; panics with its output unless it succeeds.
fn sh(what: &str, cmd: &mut Command) -> String {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = ok(out, what);
    eprintln!("{what}: {:.1} s", t.elapsed().as_secs_f64());
    stdout
}

/// Holds an exclusive flock on `path` while alive (between processes).
struct FileLock(#[allow(dead_code)] fs::File);

impl FileLock {
    fn take(path: &str) -> FileLock {
        let f = fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {path}: {e}"));
        // SAFETY: flock on an open fd; released when the file is closed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {path}: {}", std::io::Error::last_os_error());
        FileLock(f)
    }
}

/// The cached Debian bookworm root of `arch` (arm64, armhf), built by
/// tests/arm/armroot.sh on first use. Both are built then, side by side:
/// each build is mostly one emulated dpkg at a time, so two take little
/// longer than one (several minutes).
fn armroot(arch: &str) -> PathBuf {
    static ROOTS: OnceLock<[PathBuf; 2]> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let _lock = FileLock::take("/var/tmp/dffmpeg-armroot.lock");
        let build = |arch: &str| {
            let script = format!("{REPO}/tests/arm/armroot.sh");
            PathBuf::from(
                sh(&format!("armroot.sh {arch}"), Command::new("bash").arg(script).arg(arch)).trim(),
            )
        };
        std::thread::scope(|s| {
            let arm64 = s.spawn(|| build("arm64"));
            let armhf = s.spawn(|| build("armhf"));
            let join = |t: std::thread::ScopedJoinHandle<'_, PathBuf>| {
                t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
            };
            [join(arm64), join(armhf)]
        })
    });
    match arch {
        "arm64" => roots[0].clone(),
        "armhf" => roots[1].clone(),
        _ => panic!("no ARM root for {arch}"),
    }
}

fn arm_host(arch: &str) -> HostOpts {
    HostOpts { lower: Some(armroot(arch)), ..Default::default() }
}

/// `scripts/dist.sh arm64 armhf`, once per test process: the directory of
/// `dffmpeg_VERSION_{arm64,armhf}.deb`. Its cargo dir stays in /var/tmp, so
/// a later run only rebuilds what changed; the docs come from this build.
fn debs() -> &'static Path {
    static DEBS: OnceLock<PathBuf> = OnceLock::new();
    DEBS.get_or_init(|| {
        let base = Path::new("/var/tmp/dffmpeg-dist");
        fs::create_dir_all(base).expect("create /var/tmp/dffmpeg-dist");
        let _lock = FileLock::take("/var/tmp/dffmpeg-dist.lock");
        let out = base.join("debs");
        let summary = sh(
            "scripts/dist.sh arm64 armhf",
            Command::new(format!("{REPO}/scripts/dist.sh"))
                .args(["arm64", "armhf"])
                .env("DIST_BUILD", base.join("build"))
                .env("DIST_OUT", &out)
                .env("DIST_DOCS_BIN", env!("CARGO_BIN_EXE_dffmpeg")),
        );
        eprint!("{summary}");
        out
    })
}

fn deb(arch: &str) -> PathBuf {
    let p = debs().join(format!("dffmpeg_{VERSION}_{arch}.deb"));
    assert!(p.is_file(), "{} missing", p.display());
    p
}

/// Copies the package into the host and installs it as a Pi owner would:
/// `apt install ./dffmpeg_VERSION_ARCH.deb` (nothing to download: its
/// dependencies are there).
fn apt_install(host: &Host, arch: &str) -> String {
    let deb = deb(arch);
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    fs::copy(&deb, host.root().join("root").join(&name)).expect("copy the package into the host");
    let t = Instant::now();
    let out = host
        .exec_ok(&format!("cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./{name} 2>&1"));
    eprintln!("{}: apt install ./{name}: {:.1} s", host.name, t.elapsed().as_secs_f64());
    out
}

/// Inventory of the mixed cluster: this machine is the controller (and the
/// storage node with nfs); the nodes log in as root with the lab's key.
fn mixed_inventory(dir: &Path, lab: &Lab, storage: &str, shared: Option<&Path>) -> PathBuf {
    let mut y = format!("cluster:\n  storage: {storage}\n");
    if let Some(s) = shared {
        y += &format!("  shared_dir: \"{}\"\n", s.display());
    }
    y += &format!(
        "defaults: {{ user: root, identity_file: \"{}\" }}\nnodes:\n  ctl: {{ host: local, roles: [controller{}] }}\n",
        lab.client_key().display(),
        if storage == "nfs" { ", storage" } else { "" }
    );
    for h in lab.hosts() {
        y += &format!("  {}: {{ host: {}, roles: [compute] }}\n", h.name, h.ip);
    }
    let p = dir.join(format!("inventory-{storage}.yaml"));
    fs::write(&p, y).unwrap();
    p
}

/// Decodes every frame; ffmpeg reports nothing wrong.
fn decodes_cleanly(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{}: {err}", path.display());
}

/// The video's codec and profile (`h264 High`, `mpeg4 Simple Profile` ...).
fn codec(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,profile,pix_fmt"])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A clip with a keyframe every 10 frames (0.4 s), so that `--chunk 0.4`
/// makes chunks of 10 frames: enough of them for every node.
fn clip_in(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    clip(&p, 4, true, &["-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-c:a", "aac"]);
    p
}

/// `dffmpeg facts --json` lines: (node, arch, os, ffmpeg version line,
/// dpkg arch, has the encoder asked for).
fn node_facts(lines: &[serde_json::Value]) -> Vec<(String, String, String, String, String, bool)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    lines
        .iter()
        .map(|f| {
            (
                s(&f["node"]),
                s(&f["arch"]),
                format!("{}/{}", s(&f["os_id"]), s(&f["os_codename"])),
                s(&f["ffmpeg_version"]),
                s(&f["dpkg_arch"]),
                f["has_encoder"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The chunk events of a job, one short line each (for failure messages).
fn chunk_log(ev: &[serde_json::Value]) -> String {
    let mut s = String::new();
    for e in
        ev.iter().filter(|e| e["event"].as_str().is_some_and(|k| k.starts_with("chunk") || k == "job_done"))
    {
        s += &format!("{e}\n");
    }
    s
}

/// The batch_done table: node -> (arch, chunks, fps).
fn job_done(ev: &[serde_json::Value]) -> Vec<(String, String, u64, f64)> {
    let done = ev.iter().find(|e| e["event"] == "batch_done").expect("a batch_done event");
    done["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or_default().to_string(),
                n["arch"].as_str().unwrap_or_default().to_string(),
                n["chunks"].as_u64().unwrap_or_default(),
                n["frames"].as_f64().unwrap_or_default()
                    / n["encode_seconds"].as_f64().unwrap_or(1.0).max(1e-9),
            )
        })
        .collect()
}

const X264: &[&str] = &["-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-c:a", "aac"];
const MPEG4: &[&str] = &["-c:v", "mpeg4", "-q:v", "5", "-c:a", "aac"];

#[test]
fn mixed_cluster_of_arm64_armhf_and_x86_nodes() {
    let t0 = Instant::now();
    // Not needed here, but the packages are built by another test of this
    // file, running alongside: wait for that build, which takes both cores
    // for minutes on a fresh machine, so that it does not change the nodes'
    // relative speeds while this test's jobs run.
    debs();
    let d = workdir("arm-mixed");
    let mut lab = Lab::new("armmix", 101);
    lab.add_host("a64", arm_host("arm64"));
    lab.add_host("a32", arm_host("armhf"));
    lab.add_host("x86", HostOpts { cpus: Some(X86_CPUS), ..Default::default() });
    let known = d.join("known_hosts");
    // Each run is a first job (a state of its own: no speeds remembered),
    // so every node, the emulated armhf one too, is measured on a chunk of
    // its own; with this machine's speeds.json, an earlier run's slow
    // armhf node would rightly be left idle while x86 finishes sooner.
    let runs = std::cell::Cell::new(0);
    let transcode = |inv: &Path| {
        runs.set(runs.get() + 1);
        let mut c = dffmpeg();
        c.env("DFFMPEG_KNOWN_HOSTS", &known)
            .env("XDG_STATE_HOME", d.join(format!("state-{}", runs.get())))
            .arg("transcode")
            .arg("-I")
            .arg(inv);
        c
    };
    let ssh_inv = mixed_inventory(&d, &lab, "ssh", None);

    // facts: each node's architecture, OS and ffmpeg, from the node itself.
    let facts = |encoder: &str, json: bool| {
        let mut c = dffmpeg();
        c.env("DFFMPEG_KNOWN_HOSTS", &known).arg("facts").arg(&ssh_inv).args(["--encoder", encoder]);
        if json {
            c.arg("--json");
        }
        success(run(&mut c), "dffmpeg facts")
    };
    let table = String::from_utf8_lossy(&facts("libx264", false).stdout).into_owned();
    eprintln!("{table}");
    let want = [
        ("ctl", "x86_64", "amd64"),
        ("a64", "aarch64", "arm64"),
        ("a32", "armv7l", "armhf"),
        ("x86", "x86_64", "amd64"),
    ];
    let found = node_facts(&events(&facts("libx264", true)));
    let ffmpeg = &found[0].3;
    assert!(ffmpeg.starts_with("5.1."), "the version word: {found:?}");
    for ((node, arch, dpkg), f) in want.iter().zip(&found) {
        assert_eq!(f.0, *node);
        assert_eq!((f.1.as_str(), f.2.as_str(), f.4.as_str()), (*arch, "debian/bookworm", *dpkg), "{node}");
        assert_eq!(&f.3, ffmpeg, "{node}: the same Debian ffmpeg, built for {arch}");
        assert!(f.5, "{node} has libx264");
        // The table shows the same.
        let row = table.lines().find(|l| l.starts_with(&format!("{node} "))).unwrap_or_default();
        for cell in ["yes", arch, "debian/bookworm", ffmpeg.as_str()] {
            assert!(row.split_whitespace().any(|w| w == cell), "{node}: {cell} in {row:?}\n{table}");
        }
    }

    // The three builds have the same software encoders; they differ in
    // hardware ones: the armhf build has no NVENC (nor QSV, which only the
    // amd64 build has).
    let nvenc: Vec<bool> = node_facts(&events(&facts("h264_nvenc", true))).iter().map(|f| f.5).collect();
    assert_eq!(nvenc, [true, true, false, true], "h264_nvenc on ctl, a64, a32, x86");

    // The shared directory: one machine directory bound at the same path in
    // every host (the NFS mount's stand-in).
    let shared = d.join("shared");
    fs::create_dir_all(&shared).unwrap();
    for h in lab.hosts() {
        h.share(&shared, shared.to_str().unwrap());
    }
    let nfs_inv = mixed_inventory(&d, &lab, "nfs", Some(&shared));
    let input = clip_in(&d, "in.mp4");
    let inside = clip_in(&shared, "in.mp4");
    let want = frame_count(&input);

    for (storage, inv, src) in [("ssh", &ssh_inv, &input), ("nfs", &nfs_inv, &inside)] {
        for (codec_name, args) in [("libx264", X264), ("mpeg4", MPEG4)] {
            let what = format!("{storage} {codec_name}");
            let out = d.join(format!("out-{storage}-{codec_name}.mkv"));
            let t = Instant::now();
            let ev = ok_events(run(transcode(inv)
                .args(["--json", "--chunk", "0.4", "-o"])
                .arg(&out)
                .arg(src)
                .args(args)));
            let secs = t.elapsed().as_secs_f64();
            let start = ev.iter().find(|e| e["event"] == "job_start").expect("a job_start event");
            assert_eq!(start["read_in_place"], storage == "nfs", "{what}: {start}");
            // No node was left out: the ARM builds' chunks met the x86
            // preflight's codec parameters.
            for bad in ["node_dropped", "chunk_failed", "warning"] {
                let found: Vec<_> = ev.iter().filter(|e| e["event"] == bad).collect();
                assert!(found.is_empty(), "{what}: {found:?}");
            }
            assert_eq!(
                nodes_with_chunks(&ev),
                ["a32", "a64", "x86"],
                "{what}: every node encoded chunks\n{}",
                chunk_log(&ev)
            );
            let table = job_done(&ev);
            let arches: Vec<(&str, &str)> = table.iter().map(|(n, a, ..)| (n.as_str(), a.as_str())).collect();
            assert_eq!(arches, [("a64", "aarch64"), ("a32", "armv7l"), ("x86", "x86_64")], "{what}");
            let fps: Vec<String> =
                table.iter().map(|(n, a, c, f)| format!("{n} ({a}) {c} chunks at {f:.1} fps")).collect();
            eprintln!("{what}: {secs:.1} s; {}", fps.join(", "));
            assert_eq!(frame_count(&out), want, "{what}: frame-exact");
            assert_same_timestamps(&out, src);
            decodes_cleanly(&out);
            let c = codec(&out);
            assert!(c.starts_with(if codec_name == "libx264" { "h264," } else { "mpeg4," }), "{what}: {c}");
        }
    }

    // The plain report's summary table names each node's architecture.
    let out = d.join("out-plain.mkv");
    let res = success(
        run(transcode(&ssh_inv).args(["--chunk", "0.4", "-o"]).arg(&out).arg(&input).args(MPEG4)),
        "dffmpeg",
    );
    let text = String::from_utf8_lossy(&res.stdout);
    let head = text.lines().position(|l| l.starts_with("node ")).unwrap_or_else(|| panic!("{text}"));
    let words: Vec<Vec<&str>> = text.lines().skip(head).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(words[0][..3], ["node", "arch", "chunks"], "{text}");
    let rows: Vec<(&str, &str)> = words[1..].iter().map(|w| (w[0], w[1])).collect();
    assert_eq!(rows, [("a64", "aarch64"), ("a32", "armv7l"), ("x86", "x86_64")], "{text}");
    assert_eq!(frame_count(&out), want);
    for h in lab.hosts() {
        assert!(h.pids_matching("ffmpeg").is_empty(), "ffmpeg left running on {}", h.name);
    }
    drop(lab);
    let _ = fs::remove_dir_all(&d);
    eprintln!("mixed cluster: {:.1} s", t0.elapsed().as_secs_f64());
}

/// Every video frame's timestamp, relative to the first, as in the source.
fn assert_same_timestamps(a: &Path, b: &Path) {
    let (ta, tb) = (packet_times(a, "v:0"), packet_times(b, "v:0"));
    assert_eq!(ta.len(), tb.len(), "{} vs {}", a.display(), b.display());
    for (x, y) in ta.iter().zip(&tb) {
        assert!(((x - ta[0]) - (y - tb[0])).abs() < 0.0015, "timestamps differ: {x} vs {y}");
    }
}

#[test]
fn the_arm_packages_install_run_and_remove_cleanly() {
    let mut lab = Lab::new("armdeb", 103);
    for (arch, uname) in [("arm64", "aarch64"), ("armhf", "armv7l")] {
        let h = lab.add_host(&format!("deb-{arch}"), arm_host(arch));
        assert_eq!(h.exec_ok("uname -m").trim(), uname);
        let log = apt_install(&h, arch);
        assert!(!log.contains("http"), "nothing downloaded: {log}");
        let files = h.exec_ok("dpkg -L dffmpeg");
        for f in [
            "/usr/bin/dffmpeg",
            "/usr/share/man/man1/dffmpeg.1.gz",
            "/usr/share/man/man1/dffmpeg-transcode.1.gz",
            "/usr/share/man/man1/dffmpeg-setup.1.gz",
            "/usr/share/man/man1/dffmpeg-facts.1.gz",
            "/usr/share/bash-completion/completions/dffmpeg",
            "/usr/share/zsh/vendor-completions/_dffmpeg",
            "/usr/share/fish/vendor_completions.d/dffmpeg.fish",
            "/usr/share/doc/dffmpeg/copyright",
            "/usr/share/doc/dffmpeg/examples/inventory.example.yaml",
        ] {
            assert!(files.lines().any(|l| l == f), "{arch}: {f} not in the package:\n{files}");
            h.exec_ok(&format!("test -s {f}"));
        }
        let status =
            h.exec_ok("dpkg-query -W -f='${Architecture} ${Version} ${Depends} ${Recommends}' dffmpeg");
        assert!(status.starts_with(&format!("{arch} {VERSION} ")), "{status}");
        for dep in ["libc6 (>= 2.", "libgcc-s1", "openssh-client"] {
            assert!(status.contains(dep), "Depends: {dep} in {status}");
        }
        assert!(status.ends_with(" ffmpeg"), "Recommends: ffmpeg in {status}");
        // The binary runs here: it is this architecture's build.
        assert_eq!(h.exec_ok("dffmpeg --version").trim(), format!("dffmpeg {VERSION}"));
        let file = h.exec_ok("od -An -tx1 -j18 -N2 /usr/bin/dffmpeg");
        let machine = if arch == "arm64" { "b7 00" } else { "28 00" }; // EM_AARCH64, EM_ARM
        assert_eq!(file.trim(), machine, "{arch}: ELF machine");
        // The man page is roff for dffmpeg, the completions load in their shell.
        let man = h.exec_ok("gzip -dc /usr/share/man/man1/dffmpeg-transcode.1.gz");
        assert!(man.starts_with(".ie") || man.contains(".TH dffmpeg-transcode 1"), "{man}");
        assert!(man.contains("chunk"), "{man}");
        h.exec_ok(
            "bash -c '. /usr/share/bash-completion/completions/dffmpeg && complete -p dffmpeg' | grep -q _dffmpeg",
        );
        assert!(h.exec_ok("cat /usr/share/zsh/vendor-completions/_dffmpeg").starts_with("#compdef dffmpeg"));
        assert!(h
            .exec_ok("cat /usr/share/fish/vendor_completions.d/dffmpeg.fish")
            .contains("complete -c dffmpeg"));
        // A user's mistake: one clear message, exit 2.
        let bad = h.exec("dffmpeg facts /nonexistent.yaml");
        assert_eq!(bad.status.code(), Some(2), "{bad:?}");
        assert_eq!(String::from_utf8_lossy(&bad.stderr).trim().lines().count(), 1, "{bad:?}");

        // dpkg -r: every file of the package is gone, nothing of it is left but
        // the directories other packages share; purge leaves no trace.
        h.exec_ok("dpkg -r dffmpeg >/dev/null");
        for f in files.lines().filter(|l| l.starts_with('/')) {
            let left = h.exec(&format!("test -f {} || test -L {}", q(f), q(f)));
            assert!(!left.status.success(), "{arch}: {f} left after dpkg -r");
        }
        h.exec_ok("test ! -e /usr/share/doc/dffmpeg && ! command -v dffmpeg");
        h.exec_ok("dpkg -P dffmpeg >/dev/null; ! dpkg-query -W dffmpeg 2>/dev/null");
        assert!(h.exec_ok("ls /var/lib/dpkg/info").lines().all(|l| !l.starts_with("dffmpeg.")));
    }
}

/// The blog's Pi 3B inventory, written on the Pi: pi3 is where dffmpeg runs
/// (`host: local`, every role); pi4 (arm64) and nuc (x86) compute.
fn pi_inventory(c: &PiCluster) -> String {
    format!(
        "# The blog's cluster, with a 64-bit Pi and a PC.\ncluster:\n  shared_dir: {SHARED_DIR}\n  storage: nfs\n\
         defaults: {{ user: pi, become: true }}\nnodes:\n  \
         pi3: {{ host: local, roles: [controller, compute, storage] }}\n  \
         pi4: {{ host: {}, roles: [compute] }}\n  \
         nuc: {{ host: {}, roles: [compute] }}\n",
        c.host("pi4").ip,
        c.host("nuc").ip
    )
}

#[test]
fn a_pi3_runs_the_armv7_build_as_controller_and_storage() {
    let t0 = Instant::now();
    let specs = [
        Spec { name: "pi3", os: Os::RaspbianBookworm, kind: Kind::Controller, uid_offset: 0 },
        Spec { name: "pi4", os: Os::DebianBookworm, kind: Kind::Compute, uid_offset: 0 },
        Spec { name: "nuc", os: Os::DebianTrixie, kind: Kind::Compute, uid_offset: 1 },
    ];
    let opts =
        [arm_host("armhf"), arm_host("arm64"), HostOpts { cpus: Some(X86_CPUS), ..Default::default() }];
    let mut c = PiCluster::with_opts("armpi", 102, &specs, &opts, NfsPackages::Kept);
    let pi3 = c.host("pi3").clone();
    assert_eq!(pi3.exec_ok("uname -m").trim(), "armv7l");
    assert!(pi3.exec_ok("cat /etc/os-release").contains("ID=raspbian"));
    // The Pi owner installs the armhf package.
    apt_install(&pi3, "armhf");
    c.bin = "/usr/bin/dffmpeg".into();
    assert_eq!(c.dffmpeg("--version", None).stdout.trim(), format!("dffmpeg {VERSION}"));

    // First bring-up, the password asked once; the ARM nodes' packages are
    // there, so no apt_mirror is needed.
    c.write_inventory(&pi_inventory(&c));
    let first = c.setup_ask_pass("--accept-new-host-keys");
    assert_eq!(first.code, 0, "{first}");
    for n in ["pi3", "pi4", "nuc"] {
        let v = first.counts(n);
        assert_eq!((v[2], v[3]), (0, 0), "{n}: {first}");
        assert!(v[1] > 0, "{n} changed: {first}");
    }
    eprintln!("pi3 (armv7 dffmpeg): first setup --ask-pass in {:.1} s", first.secs);
    let again = c.setup("");
    assert_eq!(again.code, 0, "{again}");
    for n in ["pi3", "pi4", "nuc"] {
        assert_eq!(again.changed(n), 0, "{n}: {again}");
    }
    eprintln!("pi3: no-op setup in {:.1} s", again.secs);
    let m = c.host("pi4").exec_ok("cat /proc/mounts");
    assert!(m.contains(&format!(" {SHARED_DIR}/work ")), "pi4 mounted the work dir: {m}");

    // facts from the Pi: every node's architecture.
    let facts = c.dffmpeg(&format!("facts {INVENTORY} --json --encoder libx264"), None);
    assert_eq!(facts.code, 0, "{facts}");
    let lines: Vec<serde_json::Value> =
        facts.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let found: Vec<(String, String, String, String)> =
        node_facts(&lines).into_iter().map(|f| (f.0, f.1, f.2, f.4)).collect();
    let want = [
        ("pi3", "armv7l", "raspbian/bookworm", "armhf"),
        ("pi4", "aarch64", "debian/bookworm", "arm64"),
        ("nuc", "x86_64", "debian/trixie", "amd64"),
    ];
    let want: Vec<(String, String, String, String)> =
        want.iter().map(|w| (w.0.into(), w.1.into(), w.2.into(), w.3.into())).collect();
    assert_eq!(found, want, "{facts}");

    // A transcode from the Pi, the source in the shared upload directory.
    let input = clip_in(&c.shared.join("upload"), "clip.mp4");
    let tr = c.dffmpeg(
        &format!(
            "transcode -I {INVENTORY} --json --chunk 0.4 -o {SHARED_DIR}/output/clip.mkv {SHARED_DIR}/upload/clip.mp4 {}",
            X264.join(" ")
        ),
        None,
    );
    assert_eq!(tr.code, 0, "{tr}");
    let ev: Vec<serde_json::Value> = tr.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let nodes = nodes_with_chunks(&ev);
    let table = job_done(&ev);
    eprintln!("transcode on the Pi: {:.1} s, chunks by {nodes:?}: {table:?}", tr.secs);
    let arches: Vec<(&str, &str)> = table.iter().map(|(n, a, ..)| (n.as_str(), a.as_str())).collect();
    assert_eq!(arches, [("pi3", "armv7l"), ("pi4", "aarch64"), ("nuc", "x86_64")]);
    assert!(nodes.len() >= 2, "chunks by {nodes:?}\n{tr}");
    let output = c.shared.join("output/clip.mkv");
    assert_eq!(frame_count(&output), frame_count(&input), "frame-exact");
    assert_same_timestamps(&output, &input);
    decodes_cleanly(&output);
    let left = pi3.exec_ok(&format!("ls -A {SHARED_DIR}/work"));
    assert!(left.trim().is_empty(), "job directory left: {left}");
    drop(c);
    eprintln!("pi3 test: {:.1} s", t0.elapsed().as_secs_f64());
}
