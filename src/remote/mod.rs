//! How a command reaches a node: one trait, a local and an SSH implementation.
//!
//! Everything above this layer builds argv vectors; a transport turns an argv
//! into a process whose stdin/stdout/stderr the caller wires up. Local runs the
//! argv directly; SSH joins it with [`crate::quote::join`] and runs it through
//! the node's multiplexed connection.

pub mod local;
pub mod ssh;

use std::process::Stdio;

use tokio::io::AsyncReadExt;

/// A way to run programs on one node.
pub trait Transport: Send + Sync {
    /// The node's name, for messages.
    fn name(&self) -> &str;

    /// A process running `argv` on the node. The caller sets up stdio.
    /// Remote processes report their pid as the first stderr line
    /// (`dffmpeg-pid N`), see [`PID_PREFIX`], so that [`Transport::kill`] can
    /// stop them even when the local ssh client is already gone.
    fn command(&self, argv: &[String]) -> tokio::process::Command;

    /// Stop a process started by `command` whose (remote) pid is known.
    fn kill(&self, pid: u32) -> impl std::future::Future<Output = ()> + Send;

    /// Whether stderr starts with a `dffmpeg-pid` line.
    fn reports_pid(&self) -> bool;
}

pub const PID_PREFIX: &str = "dffmpeg-pid ";

/// Output of a finished command.
#[derive(Debug)]
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Run a command to completion, stdin closed, capturing stdout and stderr
/// (without the pid line).
pub async fn run<T: Transport + ?Sized>(t: &T, argv: &[String]) -> std::io::Result<Output> {
    let mut cmd = t.command(argv);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
    let (a, b) = tokio::join!(so.read_to_end(&mut out), se.read_to_end(&mut err));
    a?;
    b?;
    let status = child.wait().await?;
    let mut stderr = String::from_utf8_lossy(&err).into_owned();
    if t.reports_pid() {
        stderr = strip_pid_line(&stderr).to_string();
    }
    Ok(Output {
        status,
        stdout: out,
        stderr,
    })
}

/// Remove the leading `dffmpeg-pid N` line of a remote stderr.
pub fn strip_pid_line(stderr: &str) -> &str {
    match stderr.strip_prefix(PID_PREFIX) {
        Some(rest) => rest.split_once('\n').map(|(_, r)| r).unwrap_or(""),
        None => stderr,
    }
}
