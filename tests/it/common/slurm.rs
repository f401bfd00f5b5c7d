//! A real Slurm cluster on test hosts (Debian's slurmctld, slurmd and
//! munge; see /work/shared/tools/slurm-lab.md): `slurmctld` on this machine,
//! listening on the lab's bridge, and `slurmd` in each host of a [`Lab`].
//!
//! Everything of one Slurm lab is keyed by its tag and lives in
//! `/var/tmp/dslurm-<tag>/` (slurm.conf, state, logs, its own munged with
//! its own key and socket), which is bound into every host at the same
//! path: the nodes read the same slurm.conf and reach the same munged
//! through its socket (a socket file is not a network namespace's), so no
//! munged runs in the hosts. Ports are the lab's own (`SlurmctldPort`
//! 17000 + 2 × net, `SlurmdPort` the next): labs run side by side.
//! Client commands need `SLURM_CONF` ([`SlurmLab::env`]).
//!
//! Dropping the [`SlurmLab`] kills slurmctld and munged, then the hosts
//! (their slurmd with them), and removes the directory; [`SlurmLab::new`]
//! first removes what a crashed test of the same tag left.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::lab::{must, HostOpts, Lab};

/// How long daemons and nodes may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A Slurm cluster: the controller here, one node per lab host, one
/// partition `video` holding them all.
pub struct SlurmLab {
    /// The hosts; dropped last (see `Drop`).
    pub lab: Option<Lab>,
    pub dir: PathBuf,
    pub conf: PathBuf,
    daemons: Vec<Child>,
}

/// A job as the jobcomp file records it (`Name`, `JobState`, `NodeList`,
/// `StartTime`, `EndTime` ...).
pub type JobRecord = BTreeMap<String, String>;

pub const PARTITION: &str = "video";

impl SlurmLab {
    /// A lab `tag` on 198.18.`net`.0/24 with nodes `(name, cpus)`: each a
    /// host with that CPU quota, declared to Slurm with as many CPUs.
    /// Returns once every node is idle.
    pub fn new(tag: &str, net: u8, nodes: &[(&str, u32)]) -> SlurmLab {
        let dir = PathBuf::from(format!("/var/tmp/dslurm-{tag}"));
        kill_daemons_of(&dir);
        let _ = fs::remove_dir_all(&dir);
        let mut lab = Lab::new(tag, net);
        let mut s = SlurmLab { lab: None, conf: dir.join("slurm.conf"), dir, daemons: Vec::new() };
        for d in ["state", "log"] {
            fs::create_dir_all(s.dir.join(d)).expect("slurm lab dirs");
        }
        let hosts: Vec<(String, String, u32)> = nodes
            .iter()
            .map(|(name, cpus)| {
                let h = lab.add_host(name, HostOpts { cpus: Some(f64::from(*cpus)), ..Default::default() });
                (h.name.clone(), h.ip.clone(), *cpus)
            })
            .collect();
        let gateway = lab.gateway_ip();
        s.lab = Some(lab);
        s.start_munge();
        fs::write(&s.conf, s.slurm_conf(net, &gateway, &hosts)).expect("write slurm.conf");
        s.start_slurmctld();
        for (name, _, _) in &hosts {
            s.start_slurmd(name);
        }
        s.wait_idle(hosts.len());
        s
    }

    pub fn lab(&self) -> &Lab {
        self.lab.as_ref().expect("the lab lives as long as the Slurm lab")
    }

    /// Set `SLURM_CONF` for a Slurm client (srun, squeue ... or dffmpeg).
    pub fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("SLURM_CONF", &self.conf)
    }

    /// A Slurm client command.
    pub fn client(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        self.env(&mut c).stdin(Stdio::null());
        c
    }

    /// Bind `dir` into every host at the same path (the cluster's shared
    /// filesystem).
    pub fn share(&self, dir: &Path) {
        for h in self.lab().hosts() {
            h.share(dir, dir.to_str().expect("UTF-8 path"));
        }
    }

    /// (id, name, state) of every job Slurm still knows.
    pub fn squeue(&self) -> Vec<(u32, String, String)> {
        let out = must(self.client("squeue").args(["--noheader", "--format=%i|%j|%T"]));
        out.lines()
            .filter_map(|l| {
                let mut f = l.split('|');
                Some((f.next()?.trim().parse().ok()?, f.next()?.to_string(), f.next()?.to_string()))
            })
            .collect()
    }

    /// A node's state as `sinfo` shows it (`idle`, `down*` ...).
    pub fn node_state(&self, node: &str) -> String {
        let out =
            self.client("sinfo").args(["--noheader", "--Node", "--nodes", node, "--format=%t"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    }

    /// Every finished job, from the jobcomp file.
    pub fn finished_jobs(&self) -> Vec<JobRecord> {
        let text = fs::read_to_string(self.dir.join("log/jobcomp.txt")).unwrap_or_default();
        text.lines()
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|w| w.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    /// slurmctld's log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log/slurmctld.log")).unwrap_or_default()
    }

    fn slurm_conf(&self, net: u8, gateway: &str, hosts: &[(String, String, u32)]) -> String {
        let d = self.dir.display();
        let port = 17000 + 2 * u32::from(net);
        let mut c = format!(
            "ClusterName=dslurm{net}
SlurmctldHost={host}({gateway})
SlurmctldPort={port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10,socket={d}/munge/socket
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir=/tmp/slurmd
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile=/tmp/slurmd/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile=/tmp/slurmd/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
SlurmdTimeout=10
MpiDefault=none
MailProg=/bin/true
",
            host = short_hostname(),
            slurmd_port = port + 1,
        );
        for (name, ip, cpus) in hosts {
            c += &format!("NodeName={name} NodeAddr={ip} CPUs={cpus} State=UNKNOWN\n");
        }
        let names: Vec<&str> = hosts.iter().map(|h| h.0.as_str()).collect();
        c += &format!(
            "PartitionName={PARTITION} Nodes={} Default=YES MaxTime=INFINITE State=UP\n",
            names.join(",")
        );
        c
    }

    /// This lab's munged: its own key and socket (the socket's directory
    /// must be searchable by all, the rest is munge's only).
    fn start_munge(&mut self) {
        let (uid, gid) = (id("-u"), id("-g"));
        let private = self.dir.join("munge-private");
        let public = self.dir.join("munge");
        for (d, mode) in [(&private, 0o700), (&public, 0o755)] {
            fs::create_dir_all(d).expect("munge dir");
            std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown munge dir");
            fs::set_permissions(d, fs::Permissions::from_mode(mode)).expect("chmod munge dir");
        }
        let key = private.join("munge.key");
        let mut bytes = vec![0u8; 1024];
        let mut urandom = fs::File::open("/dev/urandom").expect("urandom");
        std::io::Read::read_exact(&mut urandom, &mut bytes).expect("random key");
        fs::write(&key, &bytes).expect("munge key");
        std::os::unix::fs::chown(&key, Some(uid), Some(gid)).expect("chown key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).expect("chmod key");
        let p = |name: &str| format!("{}", private.join(name).display());
        let mut cmd = Command::new("/usr/sbin/munged");
        cmd.arg("--foreground")
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--socket={}", public.join("socket").display()))
            .arg(format!("--pid-file={}", p("pid")))
            .arg(format!("--log-file={}", p("log")))
            .arg(format!("--seed-file={}", p("seed")))
            .uid(uid)
            .gid(gid);
        self.spawn(cmd, "munged");
        let socket = public.join("socket");
        wait_for(&format!("munged's socket {}", socket.display()), || socket.exists());
    }

    fn start_slurmctld(&mut self) {
        let mut cmd = Command::new("/usr/sbin/slurmctld");
        cmd.arg("-D").arg("-f").arg(&self.conf);
        self.spawn(cmd, "slurmctld");
        wait_for("slurmctld", || {
            let out = self.client("scontrol").arg("ping").output();
            out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("is UP"))
        });
    }

    /// slurmd in host `name`: the cgroup mount it insists on (a named
    /// hierarchy, no controller), then the daemon in the host's CPU quota.
    fn start_slurmd(&self, name: &str) {
        let host = self.lab().host(name);
        host.share(&self.dir, self.dir.to_str().expect("UTF-8 path"));
        host.exec_ok(&format!(
            "mkdir -p /sys/fs/cgroup/systemd /tmp/slurmd
mountpoint -q /sys/fs/cgroup/systemd || mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
slurmd -D -f {conf} -N {name} >/tmp/slurmd/console.log 2>&1 &",
            conf = self.conf.display()
        ));
    }

    /// Start a daemon of this machine, its output in the lab's log dir.
    fn spawn(&mut self, mut cmd: Command, what: &str) {
        let log = fs::File::create(self.dir.join(format!("log/{what}.console"))).expect("console log");
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("dup log")).stderr(log).process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        self.daemons.push(child);
    }

    fn wait_idle(&self, count: usize) {
        wait_for("every Slurm node idle", || {
            let out = self.client("sinfo").args(["--noheader", "--Node", "--format=%N %t"]).output();
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            text.lines().filter(|l| l.ends_with(" idle")).count() == count
        });
    }
}

impl Drop for SlurmLab {
    fn drop(&mut self) {
        for c in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The hosts, their slurmd and everything they ran.
        drop(self.lab.take());
        kill_daemons_of(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILL every process of this machine whose command line names `dir`
/// (the daemons of a lab that crashed).
fn kill_daemons_of(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(rd) = fs::read_dir("/proc") else { return };
    for pid in rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if pid as u32 != std::process::id() && String::from_utf8_lossy(&cmdline).contains(&needle) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn id(flag: &str) -> u32 {
    must(Command::new("id").args([flag, "munge"])).trim().parse().expect("munge's id (apt-get install munge)")
}

fn short_hostname() -> String {
    let h = fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    h.trim().split('.').next().unwrap_or("localhost").to_string()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < START_TIMEOUT, "{what} did not come up within {START_TIMEOUT:?}");
        sleep(Duration::from_millis(100));
    }
}
