//! A node of a Slurm cluster: every command dffmpeg runs there is a Slurm
//! job of its own, submitted from this machine (a Slurm submit host) with
//! `srun`, pinned to that node (`--nodelist`): Slurm queues, accounts and
//! fences it; dffmpeg's scheduler, which measures each node's speed,
//! chooses the node (see the README, "On a Slurm cluster").
//!
//! - `srun` takes the argv as it is (no shell, nothing to quote); a fixed
//!   wrapper prints the job's id as the first stderr line (`dffmpeg-pid
//!   ID`, see [`super::PID_PREFIX`]), so that [`Transport::kill`] cancels
//!   exactly that job (`scancel --user=ME ID`) and no other. `srun` dies
//!   with dffmpeg ([`crate::process`]), and Slurm cancels a job whose
//!   `srun` is gone.
//! - Every job carries its submitter in `--comment` ([`Owner`]): a later
//!   dffmpeg on this machine finds the jobs a killed one left behind and
//!   cancels them before it submits anything (see [`query::cancel_orphans`]).
//! - `srun` may exit 0 when the node failed under the job ("Node failure"):
//!   [`Slurm::lost`] reads its message, so the chunk goes to another node.
//!   Before each attempt, [`Slurm::ready`] asks Slurm whether the node is
//!   down or drained.

pub mod query;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{NotReady, Transport};
use crate::inventory::SlurmSpec;

pub use query::SlurmError;

/// Runs on the node as `sh -c WRAPPER dffmpeg-slurm ARGV...`: reports the
/// job id, runs the command, kills its process group at once on SIGTERM
/// (see `wrapper.sh`).
pub const WRAPPER: &str = include_str!("wrapper.sh");

/// The name of a job that is no chunk's attempt.
const PLAIN_JOB_NAME: &str = "dffmpeg-command";

/// One Slurm node, reached through `srun`.
#[derive(Debug)]
pub struct Slurm {
    node: String,
    spec: Arc<SlurmSpec>,
    /// `--cpus-per-task` of its jobs.
    cpus: u32,
}

impl Slurm {
    pub fn new(node: impl Into<String>, spec: Arc<SlurmSpec>, cpus: u32) -> Slurm {
        Slurm { node: node.into(), spec, cpus: cpus.max(1) }
    }

    /// The `srun` command line that runs `argv` on this node as the job
    /// `job_name`.
    pub fn srun_argv(&self, argv: &[String], job_name: &str) -> Vec<String> {
        let mut a = vec!["srun".to_string(), format!("--partition={}", self.spec.partition)];
        if let Some(account) = &self.spec.account {
            a.push(format!("--account={account}"));
        }
        if let Some(qos) = &self.spec.qos {
            a.push(format!("--qos={qos}"));
        }
        a.extend([
            format!("--nodelist={}", self.node),
            "--nodes=1".into(),
            "--ntasks=1".into(),
            format!("--cpus-per-task={}", self.cpus),
            format!("--job-name={job_name}"),
            format!("--comment={}", Owner::me().comment()),
            "--kill-on-bad-exit=1".into(),
            "--quiet".into(),
            // The controller's working directory need not exist on the node.
            "--chdir=/".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            WRAPPER.into(),
            "dffmpeg-slurm".into(),
        ]);
        a.extend(argv.iter().cloned());
        a
    }
}

impl Transport for Slurm {
    fn name(&self) -> &str {
        &self.node
    }

    fn command(&self, argv: &[String]) -> tokio::process::Command {
        self.command_for(argv, PLAIN_JOB_NAME)
    }

    fn command_for(&self, argv: &[String], label: &str) -> tokio::process::Command {
        let srun = self.srun_argv(argv, label);
        // Dies with dffmpeg, whatever ends it (and its job with it).
        let mut cmd = crate::process::command(&srun[0]);
        cmd.args(&srun[1..]);
        // Own process group: a terminal Ctrl-C reaches dffmpeg only, which
        // then cancels its jobs itself.
        cmd.process_group(0);
        cmd
    }

    async fn kill(&self, job: u32) {
        // Best effort, as over SSH (kill.sh waits 2 s): a job Slurm still
        // lists after the limit (its node does not answer) is cancelled all
        // the same, and its srun goes with the attempt.
        let _ = query::cancel_and_wait(job, KILL_WAIT).await;
    }

    fn reports_pid(&self) -> bool {
        true
    }

    fn lost(&self, _status: &std::process::ExitStatus, errors: &[String]) -> bool {
        errors.iter().any(|l| node_failed(l))
    }

    async fn ready(&self) -> Result<(), NotReady> {
        match query::node_state(&self.spec, &self.node).await {
            Ok(Some(state)) if !query::usable(&state) => {
                Err(NotReady::Drained { node: self.node.clone(), state: state.to_string() })
            }
            Ok(None) => {
                Err(NotReady::Gone { node: self.node.clone(), partition: self.spec.partition.clone() })
            }
            // Slurm itself not answering is no verdict on the node: srun
            // will say what is wrong.
            Ok(Some(_)) | Err(_) => Ok(()),
        }
    }
}

/// An `srun` or `slurmstepd` line saying the job's node failed, or that
/// its slurmd could not be reached to start the task.
fn node_failed(line: &str) -> bool {
    let launch = line.contains("Task launch for") && line.contains("failed on node");
    launch || ["Node failure", "DUE TO NODE FAILURE", "NODE_FAIL"].iter().any(|m| line.contains(m))
}

/// The dffmpeg that submitted a job: its machine, pid and the pid's start
/// time (a pid alone may be reused), carried in the job's `--comment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    pub start: u64,
}

const OWNER_PREFIX: &str = "dffmpeg controller=";

impl Owner {
    /// This process.
    pub fn me() -> &'static Owner {
        static ME: OnceLock<Owner> = OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id();
            Owner { host: hostname(), pid, start: process_start(pid).unwrap_or(0) }
        })
    }

    pub fn comment(&self) -> String {
        format!("{OWNER_PREFIX}{} pid={} start={}", self.host, self.pid, self.start)
    }

    /// The owner a comment names, if it is one of dffmpeg's.
    pub fn parse(comment: &str) -> Option<Owner> {
        let rest = comment.trim().strip_prefix(OWNER_PREFIX)?;
        let mut words = rest.split(' ');
        let host = words.next().filter(|h| !h.is_empty())?.to_string();
        let pid = words.next()?.strip_prefix("pid=")?.parse().ok()?;
        let start = words.next()?.strip_prefix("start=")?.parse().ok()?;
        Some(Owner { host, pid, start })
    }

    /// A dffmpeg of this machine that is gone: its jobs are nobody's. (One
    /// of another machine cannot be judged from here.)
    pub fn is_gone(&self) -> bool {
        self.host == Owner::me().host && process_start(self.pid) != Some(self.start)
    }
}

/// This machine's name (`uname -n`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// When a process started (clock ticks since boot, `/proc/PID/stat`), if
/// it runs.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // the last `)`; starttime is field 22, the 20th after it.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// How long stopping an attempt waits for its job to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long dffmpeg waits for the jobs it cancelled to be gone.
pub const ORPHAN_WAIT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(account: Option<&str>) -> Arc<SlurmSpec> {
        Arc::new(SlurmSpec { partition: "video".into(), account: account.map(str::to_string), qos: None })
    }

    #[test]
    fn srun_takes_the_argv_as_it_is() {
        let s = Slurm::new("n1", spec(Some("lab")), 2);
        let argv: Vec<String> = ["ffmpeg", "-i", "/s/a b'$(x).mp4"].iter().map(|s| s.to_string()).collect();
        let a = s.srun_argv(&argv, "dffmpeg-in-00ff-c3-a7");
        assert_eq!(&a[..3], ["srun", "--partition=video", "--account=lab"]);
        for opt in
            ["--nodelist=n1", "--cpus-per-task=2", "--job-name=dffmpeg-in-00ff-c3-a7", "--kill-on-bad-exit=1"]
        {
            assert!(a.contains(&opt.to_string()), "{opt} in {a:?}");
        }
        let dash = a.iter().position(|w| w == "--").unwrap();
        assert_eq!(&a[dash + 1..dash + 3], ["sh", "-c"]);
        assert_eq!(&a[a.len() - 3..], argv.as_slice(), "the words go through untouched");
        let comment = a.iter().find_map(|w| w.strip_prefix("--comment=")).unwrap();
        assert_eq!(Owner::parse(comment).as_ref(), Some(Owner::me()));
    }

    #[test]
    fn the_wrapper_reports_the_job_and_runs_the_words() {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                WRAPPER,
                "dffmpeg-slurm",
                "sh",
                "-c",
                "printf '%s|' \"$@\"; cat; exit 3",
                "-",
                "a b",
                "$(id)",
            ])
            .env("SLURM_JOB_ID", "4242")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"in").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stderr), "dffmpeg-pid 4242\n");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|$(id)|in", "words and stdin go through");
        assert_eq!(out.status.code(), Some(3), "the command's status");
    }

    #[test]
    fn the_wrapper_kills_its_group_on_sigterm() {
        use std::os::unix::process::CommandExt;
        // An encoder that would take its time on SIGTERM.
        let mut child = std::process::Command::new("sh")
            .args(["-c", WRAPPER, "dffmpeg-slurm", "sh", "-c", "trap '' TERM; echo started; sleep 30"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "started\n");
        let t0 = std::time::Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(t0.elapsed().as_secs() < 5, "{:?}", t0.elapsed());
        // Its pipe closes: the sleeper is gone too.
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    }

    #[test]
    fn owners_alive_and_gone() {
        let me = Owner::me();
        assert!(me.start > 0);
        assert!(!me.is_gone());
        let reused = Owner { start: me.start + 1, ..me.clone() };
        assert!(reused.is_gone(), "same pid, other start: another process");
        let elsewhere = Owner { host: format!("{}-other", me.host), pid: 1 << 30, start: 1 };
        assert!(!elsewhere.is_gone(), "another machine's dffmpeg is not judged");
        assert_eq!(
            Owner::parse("dffmpeg controller=vm pid=12 start=34"),
            Some(Owner { host: "vm".into(), pid: 12, start: 34 })
        );
        for bad in
            ["", "someone else's", "dffmpeg controller= pid=1 start=2", "dffmpeg controller=vm pid=x start=2"]
        {
            assert_eq!(Owner::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn node_failure_is_read_from_srun() {
        // As srun 22.05 prints it (and exits 0).
        assert!(node_failed("srun: error: Node failure on a"));
        assert!(node_failed(
            "slurmstepd: error: *** JOB 12 ON a CANCELLED AT 2026-12-07T23:16:56 DUE TO NODE FAILURE ***"
        ));
        assert!(node_failed(
            "srun: error: Task launch for StepId=4.0 failed on node a: Zero Bytes were transmitted or received"
        ));
        assert!(!node_failed("srun: error: a: task 0: Exited with exit code 1"));
        let s = Slurm::new("a", spec(None), 1);
        use std::os::unix::process::ExitStatusExt;
        let ok = std::process::ExitStatus::from_raw(0);
        assert!(s.lost(&ok, &["srun: error: Node failure on a".into()]));
        assert!(!s.lost(&std::process::ExitStatus::from_raw(255 << 8), &["x".into()]));
    }
}
