//! `dffmpeg setup` with `cluster.engine: slurm` on stock test hosts with a
//! password only (user pi, real sshd, sudo): it brings Slurm up — one munge
//! key (made on the controller, copied to each node over the SSH bootstrap,
//! 0400 munge), slurm.conf from each node's facts on every host,
//! slurmctld on the controller and slurmd on the compute nodes (no systemd
//! in test hosts: started as forking daemons) — and a re-run changes
//! nothing. A node added to the inventory joins (its NodeName everywhere,
//! the daemons restarted), drift of the key is repaired without the key
//! ever being shown, and `dffmpeg transcode` runs through the Slurm that
//! setup brought up, frame-exact.
//!
//! The Slurm packages are this machine's (the hosts' roots are overlays of
//! it), so no apt runs. Like a fresh package install, each compute host
//! starts with a munge key of its own, and the controller with none. The
//! one thing of the host's machinery prepared by hand: the named cgroup
//! mount Slurm 22.05's slurmd insists on (systemd makes it on a real node).

use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::common::lab::{q, Host, HostOpts, Lab};
use crate::common::media::{assert_same_video, sample, workdir};
use crate::common::picluster::{Run, KNOWN_HOSTS, PASSWORD, USER};

const INVENTORY: &str = "/home/pi/cluster.yaml";
/// The shared directory, at the same path on every host (the cluster's
/// filesystem; no storage node in the inventory).
const SHARED: &str = "/srv/shared";
const KEY: &str = "/etc/munge/munge.key";
const CONF: &str = "/etc/slurm/slurm.conf";

struct SlurmHosts {
    lab: Lab,
    shared: PathBuf,
}

impl SlurmHosts {
    fn new(names: &[&str], net: u8) -> SlurmHosts {
        let mut lab = Lab::new("slset", net);
        let shared = workdir("slurm-setup-shared");
        for (i, name) in names.iter().enumerate() {
            // Compute hosts with one CPU each (their CPUs in slurm.conf).
            let opts = HostOpts { cpus: (i > 0).then_some(1.0), ..Default::default() };
            let h = lab.add_host(name, opts);
            h.add_user(USER, PASSWORD);
            h.share(&shared, SHARED);
            let key = if i == 0 {
                format!("rm -f {KEY}")
            } else {
                format!("head -c 1024 /dev/urandom > {KEY} && chown munge:munge {KEY} && chmod 0400 {KEY}")
            };
            h.exec_ok(&format!(
                "{key}\nrm -f {CONF}\nchown {USER}: {SHARED}\n\
                 mkdir -p /sys/fs/cgroup/systemd\n\
                 mountpoint -q /sys/fs/cgroup/systemd || mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd"
            ));
        }
        SlurmHosts { lab, shared }
    }

    fn ctl(&self) -> &Host {
        &self.lab.hosts()[0]
    }

    /// The inventory of `nodes` (the first the controller, `host: local`).
    fn write_inventory(&self, nodes: &[&str]) {
        let mut y = format!(
            "cluster:\n  engine: slurm\n  partition: video\n  shared_dir: {SHARED}\n\
             defaults: {{ user: pi, become: true }}\nnodes:\n  {}: {{ host: local, roles: [controller] }}\n",
            nodes[0]
        );
        for n in &nodes[1..] {
            y += &format!("  {n}: {{ host: {}, roles: [compute] }}\n", self.lab.host(n).ip);
        }
        let c = self.ctl();
        std::fs::write(c.root().join(INVENTORY.trim_start_matches('/')), y).unwrap();
        c.exec_ok(&format!("chown {USER}: {INVENTORY}"));
    }

    /// `COMMAND` as pi on the controller (login shell).
    fn as_pi(&self, cmd: &str) -> Run {
        let t = Instant::now();
        let out = self.ctl().exec(&format!("su - {USER} -c {}", q(cmd)));
        let run = Run::ended(&out, t);
        eprintln!("=== {cmd}\n{run}");
        run
    }

    fn setup(&self, extra: &str) -> Run {
        let bin = env!("CARGO_BIN_EXE_dffmpeg");
        self.as_pi(&format!("DFFMPEG_KNOWN_HOSTS={KNOWN_HOSTS} {} setup {INVENTORY} {extra}", q(bin)))
    }

    fn setup_ask_pass(&self) -> Run {
        let bin = env!("CARGO_BIN_EXE_dffmpeg");
        self.as_pi(&format!(
            "printf '%s\\n' {} | DFFMPEG_KNOWN_HOSTS={KNOWN_HOSTS} {} setup {INVENTORY} --ask-pass --accept-new-host-keys",
            q(PASSWORD),
            q(bin)
        ))
    }

    /// `sinfo` on the controller: `NODE STATE` lines, sorted.
    fn sinfo(&self) -> Vec<String> {
        let out = self.ctl().exec("sinfo --noheader --Node --format='%N %t'");
        let mut l: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        l.sort();
        l
    }

    /// Waits until Slurm lists exactly these nodes, idle (slurmd registers
    /// a moment after it starts).
    fn wait_idle(&self, nodes: &[&str]) {
        let want: Vec<String> = nodes.iter().map(|n| format!("{n} idle")).collect();
        let start = Instant::now();
        while self.sinfo() != want {
            if start.elapsed() > Duration::from_secs(90) {
                let log = self.ctl().exec("tail -n 30 /var/log/slurm/slurmctld.log");
                panic!(
                    "Slurm nodes {:?}, want {want:?}\nslurmctld.log:\n{}",
                    self.sinfo(),
                    String::from_utf8_lossy(&log.stdout)
                );
            }
            sleep(Duration::from_millis(250));
        }
    }

    /// (sha256 of the munge key, its `stat` owner and mode) on a host.
    fn key(&self, host: &str) -> (String, String) {
        let h = self.lab.host(host);
        let sum = h.exec_ok(&format!("sha256sum {KEY} | cut -d' ' -f1")).trim().to_string();
        (sum, h.exec_ok(&format!("stat -c '%U:%G %a' {KEY}")).trim().to_string())
    }
}

fn assert_no_changes(run: &Run, nodes: &[&str]) {
    let changed = run.assert_clean(nodes);
    assert!(changed.iter().all(|&n| n == 0), "a re-run changes nothing:\n{run}");
}

#[test]
fn setup_brings_up_slurm_and_a_new_node_joins() {
    let s = SlurmHosts::new(&["ctl", "n1", "n2"], 124);
    let machine_key = machine_key_sum();
    let n1_before = s.key("n1").0;

    // 0. Check mode on the stock hosts (n1 has no key of dffmpeg's yet):
    //    the controller would make its munge key; nothing is made.
    s.write_inventory(&["ctl", "n1"]);
    let dry = s.setup("--check --diff");
    assert!(dry.stdout.contains("changed: [ctl] munge key /etc/munge/munge.key (create"), "{dry}");
    s.ctl().exec_ok(&format!("test ! -e {KEY} && test ! -e {CONF}"));

    // 1. First bring-up of the controller and n1, the password asked once.
    let first = s.setup_ask_pass();
    let changed = first.assert_clean(&["ctl", "n1"]);
    assert!(changed.iter().all(|&n| n > 0), "{first}");
    assert!(first.stdout.contains("changed: [ctl] munge key /etc/munge/munge.key"), "{first}");
    s.wait_idle(&["n1"]);
    // One key, made on the controller: n1's own was replaced by it.
    let (ctl_key, ctl_attrs) = s.key("ctl");
    assert_eq!(s.key("n1"), (ctl_key.clone(), "munge:munge 400".to_string()));
    assert_eq!(ctl_attrs, "munge:munge 400");
    assert_ne!(ctl_key, n1_before);
    assert_ne!(Some(ctl_key.clone()), machine_key, "a key of its own, not the machine's");
    // slurm.conf: the same on both, n1 with its one CPU (its quota).
    let conf = s.ctl().exec_ok(&format!("cat {CONF}"));
    assert_eq!(s.lab.host("n1").exec_ok(&format!("cat {CONF}")), conf);
    let ctl_ip = &s.ctl().ip;
    assert!(conf.contains(&format!("SlurmctldHost=ctl({ctl_ip})\n")), "{conf}");
    let n1_ip = &s.lab.host("n1").ip;
    assert!(conf.contains(&format!("NodeName=n1 NodeAddr={n1_ip} CPUs=1 RealMemory=")), "{conf}");
    assert!(conf.contains("PartitionName=video Nodes=n1 "), "{conf}");

    // 2. A re-run changes nothing (the key kept, no daemon restarted).
    let pid = |h: &str, f: &str| s.lab.host(h).exec_ok(&format!("cat {f}")).trim().to_string();
    let pids = [pid("ctl", "/run/slurmctld.pid"), pid("n1", "/run/slurmd.pid")];
    let again = s.setup("");
    assert_no_changes(&again, &["ctl", "n1"]);
    assert!(again.stdout.contains("ok: [ctl] munge key /etc/munge/munge.key"), "{again}");
    assert_eq!([pid("ctl", "/run/slurmctld.pid"), pid("n1", "/run/slurmd.pid")], pids);
    assert_eq!(s.key("ctl").0, ctl_key);

    // --limit leaving the controller out: no facts of it, so n1's
    //    slurm.conf is refused, saying why, and nothing changes.
    let limited = s.setup("--limit n1");
    assert_eq!(limited.code, 1, "{limited}");
    assert!(limited.stdout.contains("failed: [n1] slurm.conf"), "{limited}");
    assert!(
        limited.stdout.contains("this run has no facts of ctl (unreachable, or left out by --limit)"),
        "{limited}"
    );
    assert_eq!(s.key("n1").0, ctl_key);

    // 3. Drift of n1's key: --check --diff says it would change, never shows it.
    let n1 = s.lab.host("n1");
    n1.exec_ok(&format!("printf 'DRIFTED-KEY-BYTES' > {KEY}"));
    let check = s.setup("--check --diff");
    assert_eq!(check.code, 0, "{check}");
    assert!(check.stdout.contains("update /etc/munge/munge.key (secret: not shown)"), "{check}");
    assert!(!check.stdout.contains("DRIFTED") && !check.stderr.contains("DRIFTED"), "{check}");
    assert_eq!(n1.exec_ok(&format!("cat {KEY}")), "DRIFTED-KEY-BYTES", "check mode changed nothing");
    let fix = s.setup("--diff");
    assert!(fix.changed("n1") > 0 && fix.changed("ctl") == 0, "{fix}");
    assert!(!fix.stdout.contains("DRIFTED"), "{fix}");
    assert_eq!(s.key("n1"), (ctl_key.clone(), "munge:munge 400".to_string()));
    s.wait_idle(&["n1"]);

    // 4. n2 joins: its NodeName line in slurm.conf on every host, the
    //    daemons restarted, both nodes idle; then a re-run changes nothing.
    s.write_inventory(&["ctl", "n1", "n2"]);
    let join = s.setup_ask_pass();
    let changed = join.assert_clean(&["ctl", "n1", "n2"]);
    assert!(changed.iter().all(|&n| n > 0), "slurm.conf changes everywhere:\n{join}");
    s.wait_idle(&["n1", "n2"]);
    let conf = s.ctl().exec_ok(&format!("cat {CONF}"));
    for h in ["n1", "n2"] {
        assert_eq!(s.lab.host(h).exec_ok(&format!("cat {CONF}")), conf, "{h}");
        assert_eq!(s.key(h).0, ctl_key, "{h}");
    }
    assert!(conf.contains("PartitionName=video Nodes=n1,n2 "), "{conf}");
    assert_no_changes(&s.setup(""), &["ctl", "n1", "n2"]);

    // 5. A transcode through the Slurm setup brought up: pi submits from
    //    the controller, the nodes read and write the shared directory.
    let media = workdir("slurm-setup-media");
    let input = sample(&media, "in.mp4", 8);
    std::fs::copy(&input, s.shared.join("in.mp4")).unwrap();
    s.ctl().exec_ok(&format!("chown {USER}: {SHARED}/in.mp4"));
    let bin = env!("CARGO_BIN_EXE_dffmpeg");
    let t = s.as_pi(&format!(
        "{} transcode -I {INVENTORY} --json --chunk 1 -o {SHARED}/out.mkv {SHARED}/in.mp4 -- \
         -c:v libx264 -preset veryfast -crf 26 -c:a aac",
        q(bin)
    ));
    assert_eq!(t.code, 0, "{t}");
    let ev: Vec<serde_json::Value> = t.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let cluster = ev[0]["cluster"].as_str().unwrap_or_default();
    assert!(cluster.contains("Slurm partition video: n1 (1 slot), n2 (1 slot)"), "{cluster}");
    let out = s.shared.join("out.mkv");
    assert_same_video(&out, &input);
    let done: Vec<&str> =
        ev.iter().filter(|e| e["event"] == "chunk_done").filter_map(|e| e["node"].as_str()).collect();
    assert!(done.contains(&"n1") && done.contains(&"n2"), "{done:?}");

    // 6. An inventory of the controller alone (a submit host of a Slurm
    //    cluster run by someone else): setup leaves Slurm alone.
    s.write_inventory(&["ctl"]);
    let submit = s.setup("");
    assert_no_changes(&submit, &["ctl"]);
    assert!(!submit.stdout.contains("slurm.conf") && !submit.stdout.contains("munge"), "{submit}");
    assert_eq!(s.ctl().exec_ok(&format!("cat {CONF}")), conf);
    let shared = s.shared.clone();
    drop(s);
    let _ = std::fs::remove_dir_all(&media);
    let _ = std::fs::remove_dir_all(&shared);
}

/// sha256 of this machine's munge key, if it has one.
fn machine_key_sum() -> Option<String> {
    let out = std::process::Command::new("sha256sum").arg(KEY).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| text.split_whitespace().next().unwrap_or_default().to_string())
}
