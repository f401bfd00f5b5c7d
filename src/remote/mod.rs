//! How a command reaches a node: one trait, with a local, an SSH and a
//! Slurm implementation.
//!
//! Everything above this layer builds argv vectors; a transport turns an argv
//! into a process whose stdin/stdout/stderr the caller wires up. Local runs the
//! argv directly; SSH joins it with [`crate::quote::join`] and runs it through
//! the node's multiplexed connection; Slurm hands it to `srun` as it is, a
//! job of its own pinned to the node.

pub mod hostkeys;
pub mod local;
pub mod slurm;
pub mod ssh;

use std::process::Stdio;
use std::sync::Arc;

pub use local::Local;
pub use slurm::Slurm;
pub use ssh::{ConnectOptions, Ssh, SshError};

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

    /// `argv` made to die with the shell that starts it (a program run
    /// under `encode.sh`). Over SSH the node's session ends it; locally the
    /// shell dies with dffmpeg (`PR_SET_PDEATHSIG`), and the program with
    /// the shell (`setpriv --pdeathsig`).
    fn under_shell(&self, argv: Vec<String>) -> Vec<String> {
        argv
    }

    /// [`Transport::command`] for one attempt at a chunk, `label` naming it
    /// (`dffmpeg-JOB-cCHUNK-aATTEMPT`): a scheduler's transport (Slurm)
    /// names its job so; the others ignore it.
    fn command_for(&self, argv: &[String], label: &str) -> tokio::process::Command {
        let _ = label;
        self.command(argv)
    }

    /// Whether an attempt that ended with `status` and these last stderr
    /// lines lost its node (rather than failed on it). Over SSH the client
    /// exits 255 when the connection or the node is gone; `srun` says
    /// "Node failure" (and may exit 0 even so).
    fn lost(&self, status: &std::process::ExitStatus, errors: &[String]) -> bool {
        let _ = errors;
        self.reports_pid() && status.code() == Some(255)
    }

    /// Whether the node takes work now, checked before each attempt; why
    /// not. A node its scheduler marks down or drained (Slurm) is lost.
    fn ready(&self) -> impl std::future::Future<Output = Result<(), NotReady>> + Send {
        async { Ok(()) }
    }
}

/// Why a node takes no work now (see [`Transport::ready`]): it is lost.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NotReady {
    #[error("Slurm reports node {node} as {state}: it takes no more work")]
    Drained { node: String, state: String },
    #[error("node {node} is no longer in Slurm partition {partition}")]
    Gone { node: String, partition: String },
}

pub const PID_PREFIX: &str = "dffmpeg-pid ";

/// The most of a command's output [`run`] keeps.
pub const MAX_STDOUT: usize = 8 << 20;
pub const MAX_STDERR: usize = 1 << 20;

/// Stops a remote process and its group; run as `sh -c KILL_SCRIPT
/// dffmpeg-kill PID` (the pid is `$1`, never pasted into the script).
pub const KILL_SCRIPT: &str = include_str!("kill.sh");

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
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let (Some(so), Some(se)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("no pipes to the command"));
    };
    // What a node prints is bounded: a command's output beyond the caps is
    // read and dropped (facts, setup's scripts and state are far smaller).
    let (a, b) =
        tokio::join!(crate::text::read_capped(so, MAX_STDOUT), crate::text::read_capped(se, MAX_STDERR));
    let (out, _) = a?;
    let (err, _) = b?;
    let status = child.wait().await?;
    let mut stderr = String::from_utf8_lossy(&err).into_owned();
    if t.reports_pid() {
        stderr = strip_pid_line(&stderr).to_string();
    }
    Ok(Output { status, stdout: out, stderr })
}

/// Remove the leading `dffmpeg-pid N` line of a remote stderr.
pub fn strip_pid_line(stderr: &str) -> &str {
    match stderr.strip_prefix(PID_PREFIX) {
        Some(rest) => rest.split_once('\n').map(|(_, r)| r).unwrap_or(""),
        None => stderr,
    }
}

/// A node of the cluster, however it is reached. [`Transport::kill`] returns
/// `impl Future`, so the trait is not object-safe: code that handles nodes of
/// both kinds uses this enum (usually as `Arc<Node>`).
#[derive(Debug)]
pub enum Node {
    Local(Local),
    Ssh(Ssh),
    Slurm(Slurm),
}

impl Node {
    pub fn is_local(&self) -> bool {
        matches!(self, Node::Local(_))
    }

    /// Whether the connection is still up (always true for a local node).
    pub async fn check(&self) -> bool {
        match self {
            Node::Local(_) | Node::Slurm(_) => true,
            Node::Ssh(s) => s.check().await,
        }
    }

    /// Close the SSH master connection, if any (also done on drop).
    pub async fn close(self) {
        if let Node::Ssh(s) = self {
            s.close().await;
        }
    }
}

impl Transport for Node {
    fn name(&self) -> &str {
        match self {
            Node::Local(l) => l.name(),
            Node::Ssh(s) => s.name(),
            Node::Slurm(s) => s.name(),
        }
    }

    fn command(&self, argv: &[String]) -> tokio::process::Command {
        match self {
            Node::Local(l) => l.command(argv),
            Node::Ssh(s) => s.command(argv),
            Node::Slurm(s) => s.command(argv),
        }
    }

    async fn kill(&self, pid: u32) {
        match self {
            Node::Local(l) => l.kill(pid).await,
            Node::Ssh(s) => s.kill(pid).await,
            Node::Slurm(s) => s.kill(pid).await,
        }
    }

    fn reports_pid(&self) -> bool {
        match self {
            Node::Local(l) => l.reports_pid(),
            Node::Ssh(s) => s.reports_pid(),
            Node::Slurm(s) => s.reports_pid(),
        }
    }

    fn under_shell(&self, argv: Vec<String>) -> Vec<String> {
        match self {
            Node::Local(l) => l.under_shell(argv),
            Node::Ssh(s) => s.under_shell(argv),
            Node::Slurm(s) => s.under_shell(argv),
        }
    }

    fn command_for(&self, argv: &[String], label: &str) -> tokio::process::Command {
        match self {
            Node::Slurm(s) => s.command_for(argv, label),
            _ => self.command(argv),
        }
    }

    fn lost(&self, status: &std::process::ExitStatus, errors: &[String]) -> bool {
        match self {
            Node::Slurm(s) => s.lost(status, errors),
            _ => self.reports_pid() && status.code() == Some(255),
        }
    }

    async fn ready(&self) -> Result<(), NotReady> {
        match self {
            Node::Slurm(s) => s.ready().await,
            _ => Ok(()),
        }
    }
}

/// Reach one inventory node: `host: local` is this machine, anything else
/// gets an SSH master connection.
pub async fn connect(node: &crate::inventory::Node, opts: &ConnectOptions) -> Result<Node, SshError> {
    match node.host {
        crate::inventory::Host::Local => Ok(Node::Local(Local::new(node.name.clone()))),
        crate::inventory::Host::Remote(_) => Ok(Node::Ssh(Ssh::connect(node, opts).await?)),
    }
}

/// Connect to every node in parallel, in their order. Each result is the
/// node or why not; the error's text starts with its category
/// (`unreachable: ...`, `host key changed: ...`, `authentication failed:
/// ...`) and names the node. Never panics or hangs: each connection is
/// bounded by the connect timeout.
pub async fn connect_all(
    nodes: &[crate::inventory::Node],
    opts: &ConnectOptions,
) -> Vec<(String, Result<Arc<Node>, SshError>)> {
    let tasks: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (n, opts) = (n.clone(), opts.clone());
            tokio::spawn(async move { connect(&n, &opts).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (node, task) in nodes.iter().zip(tasks) {
        let result = match task.await {
            Ok(Ok(n)) => Ok(Arc::new(n)),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(SshError::Unreachable {
                node: node.name.clone(),
                host: node.host.to_string(),
                detail: format!("connection task failed: {e}"),
            }),
        };
        out.push((node.name.clone(), result));
    }
    out
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn command(&self, argv: &[String]) -> tokio::process::Command {
        (**self).command(argv)
    }

    fn kill(&self, pid: u32) -> impl std::future::Future<Output = ()> + Send {
        (**self).kill(pid)
    }

    fn reports_pid(&self) -> bool {
        (**self).reports_pid()
    }

    fn under_shell(&self, argv: Vec<String>) -> Vec<String> {
        (**self).under_shell(argv)
    }

    fn command_for(&self, argv: &[String], label: &str) -> tokio::process::Command {
        (**self).command_for(argv, label)
    }

    fn lost(&self, status: &std::process::ExitStatus, errors: &[String]) -> bool {
        (**self).lost(status, errors)
    }

    fn ready(&self) -> impl std::future::Future<Output = Result<(), NotReady>> + Send {
        (**self).ready()
    }
}
