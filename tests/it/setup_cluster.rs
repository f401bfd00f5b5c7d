//! `dffmpeg setup` on test hosts, the blog's way: stock Raspberry Pis with
//! a password, dffmpeg running on the Pi 3B (controller + compute +
//! storage) as user pi, real sshd, sudo, apt (from a signed mirror served on
//! the test bridge), exportfs, mount(8) and /etc/fstab (NFS mounts through a
//! stand-in mount.nfs: see tests/it/common/picluster.rs). Then a transcode over
//! the provisioned cluster, through the shared directory.
//!
//! One test, in order: first bring-up with --ask-pass; what it wrote
//! (sources, exports, fstab, the data path, permissions); a no-op re-run;
//! drift found by --check --diff and repaired; an x86 Debian box joining;
//! drift of the exports; an unreachable node and the --limit it prints;
//! --limit; the node removed again; `dffmpeg transcode` with storage: nfs.

use crate::common::lab::{q, Host};
use crate::common::media::{frame_count, sample};
use crate::common::picluster::*;
use crate::common::run::ok;

/// An address of the test net where nothing answers.
const GHOST: &str = "198.18.91.250";

/// The inventory of `nodes` (pi3 the controller, `ghost` an address where
/// nothing answers).
fn inventory(c: &PiCluster, nodes: &[&str]) -> String {
    let ghost = format!("host: {GHOST}");
    let specs: Vec<(&str, &str)> =
        nodes.iter().map(|n| (*n, if *n == "ghost" { ghost.as_str() } else { "" })).collect();
    c.inventory(&specs)
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect()
}

/// The exports file's lines for these compute nodes: upload and output
/// ro, work rw.
fn exports(want: &[&str]) -> Vec<String> {
    let line = |dir: &str, opts: &str| {
        let hosts: Vec<String> =
            want.iter().map(|h| format!("{h}({opts},sync,no_subtree_check,root_squash)")).collect();
        format!("{SHARED_DIR}/{dir} {}", hosts.join(" "))
    };
    vec![line("upload", "ro"), line("work", "rw"), line("output", "ro")]
}

/// The storage node's kernel-side export table lists exactly these nodes.
fn exportfs(pi3: &Host, want: &[&str]) {
    let v = pi3.exec_ok("exportfs -v");
    let mut seen: Vec<(String, String, String)> = exportfs_entries(&v)
        .iter()
        .map(|e| (e.path.clone(), e.client.clone(), e.mode().to_string()))
        .collect();
    seen.sort();
    let mut expect = Vec::new();
    for h in want {
        for (d, m) in [("output", "ro"), ("upload", "ro"), ("work", "rw")] {
            expect.push((format!("{SHARED_DIR}/{d}"), h.to_string(), m.to_string()));
        }
    }
    expect.sort();
    assert_eq!(seen, expect, "exportfs -v:\n{v}");
    assert!(!v.contains('*') && !v.contains("<world>"), "{v}");
}

/// The shared directory's lines of a host's fstab.
fn fstab(c: &PiCluster, h: &str) -> Vec<String> {
    lines(&c.cat(h, "/etc/fstab")).into_iter().filter(|l| l.contains(SHARED_DIR)).collect()
}

/// What they must be: NFS from the storage node, nosuid,nodev, automounted.
fn want_fstab(storage: &str) -> Vec<String> {
    [("upload", "ro"), ("work", "rw"), ("output", "ro")]
        .iter()
        .map(|(d, m)| {
            format!("{storage}:{SHARED_DIR}/{d} {SHARED_DIR}/{d} nfs {m},nosuid,nodev,_netdev,nofail,noatime,x-systemd.automount 0 0")
        })
        .collect()
}

/// The mount options of a shared subdirectory on a host, if mounted.
fn mounted(h: &Host, d: &str) -> Option<String> {
    let m = h.exec_ok("cat /proc/mounts");
    m.lines()
        .find(|l| l.split(' ').nth(1) == Some(&format!("{SHARED_DIR}/{d}")))
        .map(|l| l.split(' ').nth(3).unwrap_or("").to_string())
}

/// The two Pis of the blog, stock.
fn two_pis() -> [Spec; 2] {
    [
        Spec { name: "pi3", os: Os::RaspbianBookworm, kind: Kind::Controller, uid_offset: 0 },
        Spec { name: "pi2", os: Os::RaspbianBookworm, kind: Kind::Compute, uid_offset: 0 },
    ]
}

/// Steps 1-3: the first bring-up of the two Pis with the password, what it
/// did (keys, apt, exports, mounts, the data path), a no-op re-run, and
/// drift found by --check --diff and repaired.
#[test]
fn setup_brings_up_two_pis_and_repairs_drift() {
    let c = PiCluster::new("setit", 91, &two_pis());
    let (pi3, pi2) = (c.host("pi3").clone(), c.host("pi2").clone());
    let url = c.mirror.url.clone();
    let (pi3_ip, pi2_ip) = (pi3.ip.clone(), pi2.ip.clone());
    for h in [&pi3, &pi2] {
        assert!(!h.exec("dpkg -s nfs-common 2>/dev/null | grep -q 'ok installed'").status.success());
        assert!(!h.exec("test -e /home/pi/.ssh/authorized_keys").status.success());
    }

    // 1. First bring-up of the two Pis, the password asked once (on stdin).
    c.write_inventory(&inventory(&c, &["pi3", "pi2"]));
    let first = c.setup_ask_pass("--accept-new-host-keys");
    let changed = first.assert_clean(&["pi3", "pi2"]);
    assert!(changed.iter().all(|&n| n > 0), "{first}");
    assert!(
        first.stdout.contains("changed: [pi2] install the controller's key with the password"),
        "{first}"
    );
    assert!(
        first.stdout.contains("changed: [pi3] controller SSH key /home/pi/.ssh/dffmpeg_ed25519"),
        "{first}"
    );
    // The new host's key fingerprint is in the report (pi3 is `host: local`).
    assert!(first.stdout.contains(&format!("new host key: [pi2] {pi2_ip} ED25519 SHA256:")), "{first}");
    assert!(!first.stdout.contains("new host key: [pi3]"), "{first}");
    eprintln!("first bring-up: {:.2} s", first.secs);
    // dffmpeg's own key, restricted to the controller's address.
    let pubkey = c.cat("pi3", "/home/pi/.ssh/dffmpeg_ed25519.pub");
    let want = format!("from=\"{pi3_ip}\",restrict {}", pubkey.trim());
    assert_eq!(lines(&c.cat("pi2", "/home/pi/.ssh/authorized_keys")), [want]);
    pi3.exec_ok(&format!("ssh-keygen -F {pi2_ip} -f {KNOWN_HOSTS} | grep -q ."));
    // The password was never written anywhere.
    for h in [&pi3, &pi2] {
        let found = h.exec("grep -rlsF raspberry /home/pi /tmp /root");
        assert!(found.stdout.is_empty(), "password stored: {}", String::from_utf8_lossy(&found.stdout));
    }

    // apt: Raspbian sources from the mirror, NFS packages fetched from it.
    for h in ["pi3", "pi2"] {
        assert_eq!(
            lines(&c.cat(h, "/etc/apt/sources.list")),
            [format!("deb {url}/raspbian/raspbian/ bookworm main contrib non-free rpi")]
        );
    }
    pi3.exec_ok("dpkg -s nfs-kernel-server | grep -q 'Status: install ok installed'");
    pi2.exec_ok("dpkg -s nfs-common | grep -q 'Status: install ok installed'");
    let requests = c.mirror.requests();
    assert!(requests.contains("GET /raspbian/raspbian/pool/nfs-common_"), "{requests}");
    assert!(requests.contains("GET /raspbian/raspbian/pool/nfs-kernel-server_"), "{requests}");
    // The diverted mount.nfs stayed diverted: nfs-common's went aside.
    assert!(pi2.exec_ok("cat /sbin/mount.nfs").contains("stand-in"));
    pi2.exec_ok("test -x /sbin/mount.nfs.distrib");

    // Exports: only the compute nodes' addresses, upload/output ro, work rw.
    assert_eq!(lines(&c.cat("pi3", "/etc/exports.d/dffmpeg.exports")), exports(&[&pi2_ip]));
    exportfs(&pi3, &[&pi2_ip]);

    // Shared directory: root:dffmpeg 2775, the same gid everywhere, nothing
    // world-writable.
    for d in ["", "/upload", "/work", "/output"] {
        let st = pi3.exec_ok(&format!("stat -c '%a %U %G %g' {SHARED_DIR}{d}"));
        assert_eq!(st.trim(), "2775 root dffmpeg 2775", "{SHARED_DIR}{d}");
    }
    for h in [&pi3, &pi2] {
        assert!(h.exec_ok("id -nG pi").split_whitespace().any(|g| g == "dffmpeg"));
    }

    // fstab on pi2: type nfs, nosuid,nodev,_netdev,nofail, an automount from the next boot, same path as on the storage
    // node; mounted through mount(8) and the stand-in mount.nfs.
    assert_eq!(fstab(&c, "pi2"), want_fstab(&pi3_ip));
    assert!(mounted(&pi2, "upload").unwrap().starts_with("ro,"));
    assert!(mounted(&pi2, "work").unwrap().starts_with("rw,"));
    // No set-uid program or device node on the share works on a node.
    for d in ["upload", "work", "output"] {
        let opts = mounted(&pi2, d).unwrap();
        assert!(
            opts.split(',').any(|o| o == "nosuid") && opts.split(',').any(|o| o == "nodev"),
            "{d}: {opts}"
        );
    }
    let log = c.cat("pi2", "/var/log/mount.nfs-standin.log");
    assert!(log.contains(&format!("mounted {pi3_ip}:{SHARED_DIR}/work on {SHARED_DIR}/work")), "{log}");

    // The data path: pi writes on pi2, it is on pi3, owned by pi and the
    // shared group; upload is read-only over NFS.
    ok(c.as_pi("pi2", &format!("echo from-pi2 > {SHARED_DIR}/work/from-pi2")), "write as pi on pi2");
    assert_eq!(c.cat("pi3", &format!("{SHARED_DIR}/work/from-pi2")), "from-pi2\n");
    let st = pi3.exec_ok(&format!("stat -c '%U %G' {SHARED_DIR}/work/from-pi2"));
    assert_eq!(st.trim(), "pi dffmpeg");
    let ro = c.as_pi("pi2", &format!("touch {SHARED_DIR}/upload/x"));
    assert!(!ro.status.success() && String::from_utf8_lossy(&ro.stderr).contains("Read-only"), "{ro:?}");
    ok(c.as_pi("pi2", &format!("rm {SHARED_DIR}/work/from-pi2")), "rm as pi on pi2");
    let ww = pi3.exec_ok(&format!("find {SHARED_DIR} -perm -0002"));
    assert!(ww.trim().is_empty(), "world-writable: {ww}");

    // 2. Re-run: nothing to do, key-only now.
    let noop = c.setup("");
    assert_eq!(noop.assert_clean(&["pi3", "pi2"]), [0, 0], "{noop}");
    eprintln!("no-op re-run: {:.2} s", noop.secs);

    // 3. Drift on pi2: someone made the work mount read-only in fstab and
    // remounted it. --check --diff finds it and changes nothing.
    let work_rw = format!(
        "{pi3_ip}:{SHARED_DIR}/work {SHARED_DIR}/work nfs rw,nosuid,nodev,_netdev,nofail,noatime,x-systemd.automount 0 0"
    );
    let work_ro = work_rw.replace(" rw,", " ro,");
    pi2.exec_ok(&format!(
        "sed -i 's|^{work_rw}$|{work_ro}|' /etc/fstab && umount {SHARED_DIR}/work && mount {SHARED_DIR}/work"
    ));
    let drifted = c.cat("pi2", "/etc/fstab");
    assert!(drifted.contains(&work_ro));
    assert!(mounted(&pi2, "work").unwrap().starts_with("ro,"));
    let check = c.setup("--check --diff");
    assert_eq!(check.assert_clean(&["pi3", "pi2"]), [0, 1], "{check}");
    assert!(check.stdout.contains(&format!("\n-{work_ro}\n")), "{check}");
    assert!(check.stdout.contains(&format!("\n+{work_rw}\n")), "{check}");
    assert!(check.stdout.contains("--- /etc/fstab") && check.stdout.contains("+++ /etc/fstab"), "{check}");
    assert_eq!(c.cat("pi2", "/etc/fstab"), drifted, "--check changed nothing");
    assert!(mounted(&pi2, "work").unwrap().starts_with("ro,"));
    // A normal run repairs it: the line, and the mount (remounted rw).
    let fix = c.setup("");
    assert_eq!(fix.assert_clean(&["pi3", "pi2"]), [0, 1], "{fix}");
    assert_eq!(fstab(&c, "pi2"), want_fstab(&pi3_ip));
    assert!(mounted(&pi2, "work").unwrap().starts_with("rw,"));
}

/// Steps 4-8, on two Pis brought up first: an x86 Debian trixie box
/// joins, drift on the storage node, a node that does not answer, --limit,
/// and a transcode on the provisioned cluster.
#[test]
fn a_box_joins_and_the_cluster_transcodes() {
    let t0 = std::time::Instant::now();
    // nuc's pi has another uid than the Pis' (its first user is its owner):
    // only the shared group's gid is common, as with real NFS.
    let [a, b] = two_pis();
    let nuc_spec = Spec { name: "nuc", os: Os::DebianTrixie, kind: Kind::Compute, uid_offset: 1 };
    let c = PiCluster::new("setjn", 93, &[a, b, nuc_spec]);
    let (pi3, nuc) = (c.host("pi3").clone(), c.host("nuc").clone());
    let url = c.mirror.url.clone();
    let (pi3_ip, pi2_ip, nuc_ip) = (pi3.ip.clone(), c.host("pi2").ip.clone(), nuc.ip.clone());
    let uid = |h: &Host| h.exec_ok("id -u pi").trim().to_string();
    assert_ne!(uid(&nuc), uid(&pi3), "nuc's pi has its own uid");
    c.write_inventory(&inventory(&c, &["pi3", "pi2"]));
    c.setup_ask_pass("--accept-new-host-keys").assert_clean(&["pi3", "pi2"]);

    // 4. An x86 Debian trixie box joins (its key installed with the
    // password): it is provisioned, pi3's exports now include it, pi2 has
    // nothing to do.
    let three = ["pi3", "pi2", "nuc"];
    c.write_inventory(&inventory(&c, &three));
    let join = c.setup_ask_pass("--accept-new-host-keys");
    let changed = join.assert_clean(&["pi3", "pi2", "nuc"]);
    assert_eq!(changed[..2], [2, 0], "pi3: exports + exportfs; pi2: nothing\n{join}");
    assert!(changed[2] > 0, "{join}");
    assert!(join.stdout.contains("ok: [pi2] install the controller's key with the password"), "{join}");
    assert_eq!(
        lines(&c.cat("nuc", "/etc/apt/sources.list")),
        [
            format!("deb {url}/debian trixie main contrib non-free non-free-firmware"),
            format!("deb {url}/debian trixie-updates main contrib non-free non-free-firmware"),
            format!("deb {url}/debian-security trixie-security main contrib non-free non-free-firmware"),
        ]
    );
    nuc.exec_ok("test -f /etc/apt/sources.list.d/debian.sources.disabled && ! test -e /etc/apt/sources.list.d/debian.sources");
    assert!(c.mirror.requests().contains("GET /debian/pool/nfs-common_"));
    assert_eq!(lines(&c.cat("pi3", "/etc/exports.d/dffmpeg.exports")), exports(&[&pi2_ip, &nuc_ip]));
    exportfs(&pi3, &[&pi2_ip, &nuc_ip]);
    assert_eq!(fstab(&c, "nuc"), want_fstab(&pi3_ip));
    // pi on nuc (another uid) writes through the shared group; pi on pi3
    // reads it and removes it.
    ok(c.as_pi("nuc", &format!("echo from-nuc > {SHARED_DIR}/work/from-nuc")), "write as pi on nuc");
    assert_eq!(pi3.exec_ok(&format!("stat -c %G {SHARED_DIR}/work/from-nuc")).trim(), "dffmpeg");
    ok(
        c.as_pi("pi3", &format!("cat {SHARED_DIR}/work/from-nuc && rm {SHARED_DIR}/work/from-nuc")),
        "pi on pi3",
    );
    let noop3 = c.setup("");
    assert_eq!(noop3.assert_clean(&["pi3", "pi2", "nuc"]), [0, 0, 0], "{noop3}");
    eprintln!("no-op re-run, 3 nodes: {:.2} s", noop3.secs);

    // 5. Drift on the storage node: the work export opened to everyone.
    // Found by --check --diff (the exports file and the exportfs it would
    // run), left alone, repaired.
    let exports_path = "/etc/exports.d/dffmpeg.exports";
    pi3.exec_ok(&format!("sed -i 's|^\\({SHARED_DIR}/work\\) |\\1 *(rw) |' {exports_path}"));
    let drifted = c.cat("pi3", exports_path);
    assert!(drifted.contains("/work *(rw) "), "{drifted}");
    let check = c.setup("--check --diff");
    assert_eq!(check.assert_clean(&["pi3", "pi2", "nuc"]), [2, 0, 0], "{check}");
    assert!(check.stdout.contains(&format!("\n-{SHARED_DIR}/work *(rw) ")), "{check}");
    assert_eq!(c.cat("pi3", exports_path), drifted);
    let fix = c.setup("");
    assert_eq!(fix.assert_clean(&["pi3", "pi2", "nuc"]), [2, 0, 0], "{fix}");
    assert!(!c.cat("pi3", exports_path).contains('*'));
    exportfs(&pi3, &[&pi2_ip, &nuc_ip]);

    // 6. A node that does not answer: reported unreachable, the others are
    // fine, exit 1, and the failed nodes are printed as a --limit value.
    // (A new node, so --ask-pass: no password is tried on a node that does
    // not answer, and it is reported once, as unreachable.)
    c.write_inventory(&inventory(&c, &["pi3", "pi2", "nuc", "ghost"]));
    let r = c.setup_ask_pass("--accept-new-host-keys");
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.lines().any(|l| l == "ghost : ok=0 changed=0 unreachable=1 failed=0 skipped=0"), "{r}");
    for n in ["pi3", "pi2", "nuc"] {
        let v = r.counts(n);
        assert_eq!((v[2], v[3]), (0, 0), "{n}: {r}");
    }
    assert_eq!(r.changed("pi3"), 2, "the exports list ghost too: {r}");
    assert!(!r.stdout.contains("[ghost] install"), "{r}");
    let limit =
        r.stdout.trim_end().lines().last().unwrap().split("--limit ").nth(1).unwrap_or("").to_string();
    assert_eq!(limit, "ghost", "{r}");
    let again = c.setup(&format!("--limit {limit}"));
    assert_eq!(again.code, 1, "{again}");
    assert_eq!(again.recap().len(), 1, "{again}");

    // 7. --limit: only that node runs.
    c.write_inventory(&inventory(&c, &three));
    let only = c.setup("--limit pi2");
    assert_eq!(only.assert_clean(&["pi2"]), [0], "{only}");
    assert!(!only.stdout.contains("[pi3]") && !only.stdout.contains("[nuc]"), "{only}");
    // ghost leaves the inventory: it leaves the exports.
    let back = c.setup("");
    assert_eq!(back.assert_clean(&["pi3", "pi2", "nuc"]), [2, 0, 0], "{back}");
    exportfs(&pi3, &[&pi2_ip, &nuc_ip]);

    // 8. Transcode on the provisioned cluster, storage: nfs: the job's
    // chunks go through the shared work directory, encoded by pi on every
    // node (nuc's pi with another uid).
    let input = sample(&c.shared.join("upload"), "clip.mp4", 6);
    let tr = c.dffmpeg(
        &format!(
            "transcode -I {INVENTORY} --json --chunk 1 -o {SHARED_DIR}/output/clip.mkv {SHARED_DIR}/upload/clip.mp4 -c:v libx264 -preset veryfast -crf 28 -c:a aac"
        ),
        None,
    );
    assert_eq!(tr.code, 0, "{tr}");
    let mut nodes: Vec<String> = tr
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "chunk_done")
        .filter_map(|e| e["node"].as_str().map(str::to_string))
        .collect();
    nodes.sort();
    nodes.dedup();
    assert!(nodes.contains(&"pi2".into()) && nodes.contains(&"nuc".into()), "chunks by {nodes:?}\n{tr}");
    let output = c.shared.join("output/clip.mkv");
    assert_eq!(frame_count(&output), frame_count(&input));
    let left = pi3.exec_ok(&format!("ls -A {}", q(&format!("{SHARED_DIR}/work"))));
    assert!(left.trim().is_empty(), "job directory left: {left}");
    eprintln!("transcode: {:.2} s; whole test {:.1} s", tr.secs, t0.elapsed().as_secs_f64());
}
