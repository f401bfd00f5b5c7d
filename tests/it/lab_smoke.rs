//! Proves the test-host harness in tests/common (needs root).

use crate::common::aptmirror::AptMirror;
use crate::common::lab::{HostOpts, Lab};
use crate::common::run::ok;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn hosts_are_isolated_reachable_and_cleaned_up() {
    let mut lab = Lab::new("smoke", 71);
    let t = Instant::now();
    let a = lab.add_host("alpha", HostOpts::default());
    let ta = t.elapsed();
    let b = lab.add_host("beta", HostOpts { cpus: Some(0.5), ..Default::default() });
    eprintln!("host start: alpha {ta:?}, beta {:?}", t.elapsed() - ta);
    assert_ne!(a.ip, b.ip);
    assert_eq!(lab.gateway_ip(), "198.18.71.1");
    assert_eq!(lab.host("beta").ip, b.ip);

    // ssh with the client key answers the host name, on both hosts.
    for h in [&a, &b] {
        let out = Command::new("ssh")
            .arg("-i")
            .arg(lab.client_key())
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
            .arg(format!("root@{}", h.ip))
            .arg("hostname")
            .output()
            .expect("run ssh");
        assert_eq!(ok(out, "ssh hostname").trim(), h.name);
    }
    // Hosts reach each other by name; exec sees the host's own network and hostname.
    assert_eq!(a.exec_ok("hostname").trim(), "alpha");
    let script = "getent hosts beta; ip -4 -o addr show eth0; \
        timeout 5 bash -c 'exec 3<>/dev/tcp/beta/22 && head -c 4 <&3'";
    let seen = ok(lab.ssh("root", &a).arg(script).output().unwrap(), "ssh alpha").trim().to_string();
    assert!(seen.contains(&b.ip) && seen.contains(&a.ip) && seen.ends_with("SSH-"), "{seen}");

    // A file written in one host's /etc is its own.
    a.exec_ok("echo alpha-only > /etc/dlab-smoke");
    assert!(!Path::new("/etc/dlab-smoke").exists(), "host file leaked to the machine");
    assert!(!b.root().join("etc/dlab-smoke").exists(), "host file leaked to the other host");
    assert_eq!(b.exec("cat /etc/dlab-smoke").status.code(), Some(1));
    assert_eq!(fs::read_to_string(a.root().join("etc/dlab-smoke")).unwrap(), "alpha-only\n");
    // /tmp is the host's own tmpfs.
    a.exec_ok("echo x > /tmp/dlab-smoke");
    assert!(!Path::new("/tmp/dlab-smoke").exists());
    assert!(b.exec("test -e /tmp/dlab-smoke").status.code() == Some(1));

    // CPU quota: the file holds 0.5 CPU, and the host's processes are in that cgroup.
    assert!(a.cgroup().is_none());
    let cg = b.cgroup().expect("beta has a cgroup");
    assert_eq!(fs::read_to_string(cg.join("cpu.cfs_quota_us")).unwrap().trim(), "50000");
    assert_eq!(fs::read_to_string(cg.join("cpu.cfs_period_us")).unwrap().trim(), "100000");
    let sh_pid = b.exec_ok("echo $$").trim().to_string();
    let procs = fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert!(!procs.trim().is_empty(), "no process in {}", cg.display());
    let cg_of_shell = b.exec_ok("cat /proc/self/cgroup");
    assert!(cg_of_shell.contains(&format!(":cpu:/{}", b.netns())), "{sh_pid}: {cg_of_shell}");

    // share() makes a machine directory visible (and writable) in the host.
    let shared = tempfile::tempdir().unwrap();
    fs::write(shared.path().join("from-machine"), "hello\n").unwrap();
    a.share(shared.path(), "/srv/share");
    assert_eq!(a.exec_ok("cat /srv/share/from-machine"), "hello\n");
    a.exec_ok("echo back > /srv/share/from-host");
    assert_eq!(fs::read_to_string(shared.path().join("from-host")).unwrap(), "back\n");

    // pids_matching sees the host's processes, not the machine's.
    a.exec_ok("sleep 300 >/dev/null 2>&1 & echo started");
    // The shell returns once it has forked: the child may not have exec'd sleep yet.
    let t = Instant::now();
    let mut pids = a.pids_matching("sleep 300");
    while pids.is_empty() && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        pids = a.pids_matching("sleep 300");
    }
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert!(b.pids_matching("sleep 300").is_empty());

    // kill(): ssh fails, every process of the host is gone, the other host lives on.
    a.kill();
    let out = lab.ssh("root", &a).arg("true").output().unwrap();
    assert!(!out.status.success(), "ssh still works after kill");
    assert!(a.pids_matching("").is_empty(), "processes left in a killed host");
    assert!(!a.exec("true").status.success());
    assert_eq!(ok(lab.ssh("root", &b).arg("hostname").output().unwrap(), "ssh beta").trim(), "beta");
    // ... and restart() brings it back with its files.
    a.restart();
    assert_eq!(a.exec_ok("cat /etc/dlab-smoke"), "alpha-only\n");
    assert_eq!(ok(lab.ssh("root", &a).arg("hostname").output().unwrap(), "ssh alpha").trim(), "alpha");

    // Dropping the lab works with a killed host too.
    b.kill();
    let dir = lab.dir().to_path_buf();
    drop(lab);
    let ns = netns_list();
    assert!(!ns.contains("dl-smoke-"), "namespaces left: {ns}");
    assert!(!Path::new("/sys/class/net/dl-smoke").exists(), "bridge left");
    assert!(!Path::new("/sys/fs/cgroup/cpu/dl-smoke-beta").exists(), "cgroup left");
    assert!(!dir.exists(), "lab dir left");
}

#[test]
fn new_lab_removes_leftovers_of_a_crashed_one() {
    let mut lab = Lab::new("crash", 72);
    lab.add_host("h", HostOpts { cpus: Some(1.0), ..Default::default() });
    std::mem::forget(lab); // a crashed test: nothing cleaned up
    assert!(netns_list().contains("dl-crash-h"));
    let mut lab = Lab::new("crash", 72);
    assert!(!netns_list().contains("dl-crash-h"));
    let h = lab.add_host("h", HostOpts::default());
    assert_eq!(h.exec_ok("hostname").trim(), "h");
    drop(lab);
    assert!(!netns_list().contains("dl-crash-"));
    assert!(!Path::new("/sys/class/net/dl-crash").exists());
}

#[test]
fn pi_user_installs_nfs_common_from_the_test_mirror() {
    let mut lab = Lab::new("apt", 73);
    let pi = lab.add_host("pi", HostOpts::default());
    pi.add_user("pi", "raspberry");
    AptMirror::build();
    let mirror = AptMirror::serve(&lab.gateway_ip(), 8080);
    mirror.use_on(&pi);
    // The public mirrors' layouts all work (same packages everywhere).
    let u = &mirror.url;
    fs::write(
        pi.root().join("etc/apt/sources.list.d/dffmpeg-test-mirror.list"),
        format!(
            "deb {u}/debian bookworm main contrib non-free non-free-firmware
deb {u}/debian bookworm-updates main
deb {u}/debian-security bookworm-security main
deb {u}/debian trixie-backports main
deb {u}/raspbian/raspbian bookworm main contrib non-free rpi
deb {u}/ubuntu noble main restricted universe multiverse
deb {u}/ubuntu jammy-security main
"
        ),
    )
    .unwrap();
    // The machine has the NFS packages; remove them from the host so that apt fetches them.
    pi.exec_ok("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d");
    pi.exec_ok("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q nfs-kernel-server nfs-common");
    assert!(!pi.exec("dpkg -s nfs-common | grep -q 'ok installed'").status.success());

    // As pi, logging in with the password, through sudo, like a fresh Raspberry Pi.
    let out = lab
        .ssh_password("pi", "raspberry", &pi)
        .arg("id -un && sudo -n apt-get update -q && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nfs-common")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let log = ok(out, "apt-get update/install as pi");
    assert!(!stderr.contains("W:") && !stderr.contains("E:"), "apt warned:\n{stderr}");
    assert!(log.starts_with("pi\n"), "{log}");
    assert!(log.contains(&format!("{}/debian bookworm", mirror.url)), "{log}");
    assert!(log.contains("nfs-common"), "{log}");
    assert!(!log.contains("W:") && !log.contains("E:"), "apt warned:\n{log}");
    assert!(log.contains(&format!("{u}/raspbian/raspbian bookworm InRelease")), "{log}");
    pi.exec_ok("dpkg -s nfs-common | grep -q 'Status: install ok installed'");
    let requests = mirror.requests();
    assert!(requests.contains("GET /debian/pool/nfs-common_"), "{requests}");
}
