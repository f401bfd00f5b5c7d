//! A node reached over SSH.
//!
//! One multiplexed master connection per node (the `openssh` crate,
//! process-mux: a background `ssh -M` whose control socket lives in a short
//! directory under /tmp). Each command is a plain `ssh -S <socket>` client
//! process riding on that master, so callers get an ordinary
//! [`tokio::process::Command`] whose stdin/stdout/stderr they wire up and
//! stream through like a local process.
//!
//! - Key-only: `BatchMode=yes` everywhere, stdin of the master is null; a
//!   node that wants a password fails at once instead of prompting. The key
//!   is dffmpeg's own ([`default_identity`], `~/.ssh/dffmpeg_ed25519`, which
//!   `setup` creates and installs), or the node's `identity_file`, and only
//!   that one is offered (`IdentitiesOnly=yes`): not the user's other keys
//!   or agent.
//! - Host keys: trust on first use into dffmpeg's own known_hosts file
//!   ([`known_hosts_path`]); `--strict-host-keys` refuses unknown keys; a
//!   changed key is always an error naming the node.
//! - A dead node is noticed in seconds: `ConnectTimeout` for the first
//!   connection, `ServerAliveInterval` on the master afterwards (when the
//!   master gives up, every command riding on it ends with status 255).
//! - A client never opens a connection of its own: `ControlMaster=no` and
//!   `ProxyCommand=false`, so if the master is gone the command fails
//!   instead of reconnecting (or prompting, or trusting a new key).
//! - No master outlives dffmpeg: a small watcher (`watch.sh`) waits on a
//!   pipe only dffmpeg holds and tells the master to exit when dffmpeg is
//!   gone, however it ended (even SIGKILL), sessions and all;
//!   [`close_all_masters`] closes them at once on Ctrl-C. Should the watcher
//!   be killed too, `ControlPersist=` [`MASTER_LINGER`] ends the master once
//!   its sessions are over (while dffmpeg runs, its connection to the
//!   control socket keeps an idle master up). Control directories left by
//!   a dffmpeg that was killed are removed by the next one.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};

use super::{Transport, KILL_SCRIPT, PID_PREFIX};
use crate::inventory;
use crate::quote;

/// How dffmpeg connects to nodes.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Refuse hosts whose key is not in `known_hosts` yet.
    pub strict_host_keys: bool,
    /// dffmpeg's own known_hosts file.
    pub known_hosts: PathBuf,
    /// Where master control sockets live (short: socket paths are limited
    /// to ~107 bytes).
    pub control_dir: PathBuf,
    /// TCP connect + SSH handshake limit for the first connection.
    pub connect_timeout: Duration,
    /// Keepalive on the master; the connection is declared dead after three
    /// unanswered probes.
    pub alive_interval: Duration,
    /// The key offered to nodes without an `identity_file`.
    pub identity: PathBuf,
}

impl ConnectOptions {
    /// Defaults: known_hosts from [`known_hosts_path`], control directory
    /// `/tmp/dffmpeg-UID`, 5 s connect timeout, 2 s keepalive (a dead node
    /// is noticed within about 6 s). Strict host keys only read the
    /// known_hosts file: its directory is not made (`transcode --dry-run`
    /// writes nothing).
    pub fn new(strict_host_keys: bool) -> Result<ConnectOptions, SshError> {
        Ok(ConnectOptions {
            strict_host_keys,
            known_hosts: if strict_host_keys { known_hosts_file()? } else { known_hosts_path()? },
            control_dir: default_control_dir(),
            connect_timeout: Duration::from_secs(5),
            alive_interval: Duration::from_secs(2),
            identity: default_identity()?,
        })
    }
}

/// Errors of the SSH layer. The `Display` text starts with the category
/// (`unreachable:`, `host key changed:` ...) and names the node.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("unreachable: node {node} ({host}): {detail}")]
    Unreachable { node: String, host: String, detail: String },
    #[error(
        "host key changed: node {node} ({host}) presents a different host key than the one \
         trusted in {known_hosts}; if the node was reinstalled, forget the old key with \
         `ssh-keygen -R {host_pattern} -f {known_hosts}` and connect again, otherwise someone \
         may be impersonating it"
    )]
    HostKeyChanged { node: String, host: String, host_pattern: String, known_hosts: String },
    #[error(
        "unknown host key: node {node} ({host}) is not in {known_hosts}, and new keys are refused \
         here (--strict-host-keys); run `dffmpeg facts \
         INVENTORY` once to see its fingerprint and trust it, or add its key to that file"
    )]
    HostKeyUnknown { node: String, host: String, known_hosts: String },
    #[error(
        "authentication failed: node {node} ({user_at_host}) does not accept the SSH key {key} \
         ({detail}); install dffmpeg's key with `dffmpeg setup INVENTORY --only ssh-keys --ask-pass` \
         or set identity_file in the inventory"
    )]
    Auth { node: String, user_at_host: String, key: String, detail: String },
    #[error(
        "host key not confirmed: node {node} ({host}) was never seen before and its host key \
         ({fingerprints}) was not confirmed, so no password was sent to it; check the fingerprint \
         and run again on a terminal, or with --accept-new-host-keys"
    )]
    HostKeyNotConfirmed { node: String, host: String, fingerprints: String },
    #[error("{what}: {cause}")]
    Local { what: String, cause: std::io::Error },
    /// A node the caller never connected (e.g. left out of the list).
    #[error("no connection was made to this node")]
    NotConnected,
}

impl SshError {
    /// Whether the node could not be reached at all (as opposed to a
    /// refusal: host key or authentication).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SshError::Unreachable { .. })
    }
}

/// dffmpeg's own SSH key: `~/.ssh/dffmpeg_ed25519` (created by `setup`).
/// A key of its own, offered to the cluster's nodes only, so that the
/// user's keys are not installed on them (nor the other way round).
pub fn default_identity() -> Result<PathBuf, SshError> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).ok_or_else(|| SshError::Local {
        what: "cannot place dffmpeg's SSH key".into(),
        cause: std::io::Error::other("HOME is not set"),
    })?;
    Ok(PathBuf::from(home).join(".ssh").join("dffmpeg_ed25519"))
}

/// A path as one value of an ssh option (`-o NAME=VALUE`), where ssh splits
/// on white space: quoted. ssh has no escape for a `"` inside quotes.
pub fn config_value(path: &Path) -> Result<OsString, SshError> {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.contains(&b'"') || bytes.contains(&b'\n') {
        return Err(SshError::Local {
            what: format!("{}", path.display()),
            cause: std::io::Error::other("ssh cannot use a path with a `\"` or a newline in it"),
        });
    }
    let mut v = OsString::from("\"");
    v.push(path.as_os_str());
    v.push("\"");
    Ok(v)
}

/// dffmpeg's known_hosts file: `$DFFMPEG_KNOWN_HOSTS`, else
/// `$XDG_STATE_HOME/dffmpeg/known_hosts`, else
/// `~/.local/state/dffmpeg/known_hosts`. Its directory is created (0700).
pub fn known_hosts_path() -> Result<PathBuf, SshError> {
    let path = known_hosts_file()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::state::create_private(dir)
            .map_err(|e| SshError::Local { what: format!("cannot create {}", dir.display()), cause: e })?;
    }
    Ok(path)
}

/// Where [`known_hosts_path`] is, without making its directory.
fn known_hosts_file() -> Result<PathBuf, SshError> {
    let path = match std::env::var_os("DFFMPEG_KNOWN_HOSTS").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => crate::state::dir()
            .ok_or_else(|| SshError::Local {
                what: "cannot place dffmpeg's known_hosts file".into(),
                cause: std::io::Error::other(
                    "neither XDG_STATE_HOME nor HOME is set (or set DFFMPEG_KNOWN_HOSTS)",
                ),
            })?
            .join("known_hosts"),
    };
    Ok(path)
}

fn default_control_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    PathBuf::from(format!("/tmp/dffmpeg-{uid}"))
}

/// The control directory, made private (for scratch files too).
pub fn private_dir(dir: &Path) -> Result<PathBuf, SshError> {
    prepare_control_dir(dir)?;
    Ok(dir.to_path_buf())
}

/// The control directory must be ours and private: anyone who can reach a
/// master's socket can run commands on the node.
fn prepare_control_dir(dir: &Path) -> Result<(), SshError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let fail = |e: std::io::Error| SshError::Local {
        what: format!("SSH control directory {}", dir.display()),
        cause: e,
    };
    crate::state::create_private(dir).map_err(fail)?;
    let meta = std::fs::symlink_metadata(dir).map_err(fail)?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(fail(std::io::Error::other("exists but is not a directory owned by this user")));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    static CLEANED: std::sync::Once = std::sync::Once::new();
    CLEANED.call_once(|| remove_dead_masters(dir, STALE_AFTER));
    Ok(())
}

/// How long a master outlives dffmpeg (its last client) at most.
pub const MASTER_LINGER: Duration = Duration::from_secs(10);

/// A connection directory younger than this may belong to a master that is
/// still being started by another dffmpeg (no socket yet): a connection
/// attempt gives up after at most 15 s (see [`Ssh::connect`]).
const STALE_AFTER: Duration = Duration::from_secs(30);

/// Remove the connection directories (`.ssh-connection*`, made by the
/// openssh crate) whose master is gone: no socket, or one nobody answers
/// on. Those of live masters (another dffmpeg running) stay.
pub fn remove_dead_masters(dir: &Path, older_than: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(".ssh-connection") || !path.is_dir() {
            continue;
        }
        let age = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if age.is_none_or(|a| a < older_than) {
            continue;
        }
        if UnixStream::connect(path.join("master")).is_err() {
            // Best effort: a directory that cannot be removed now is tried
            // again by the next dffmpeg.
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Control sockets of the masters this process has open.
static MASTERS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn masters() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    // A panic while holding the lock leaves a plain set: still usable.
    MASTERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Close every master this process has open, at once (`ssh -O exit`), and
/// remove their directories: for a clean stop on SIGINT/SIGTERM, while the
/// [`Ssh`] values may still be held by tasks being cancelled.
pub async fn close_all_masters() {
    let sockets: Vec<PathBuf> = std::mem::take(&mut *masters()).into_iter().collect();
    let exits = sockets.iter().map(|sock| {
        let mut cmd = crate::process::command("ssh");
        cmd.arg("-S")
            .arg(sock)
            .args(["-o", "BatchMode=yes", "-O", "exit", "none"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        async move {
            // A master that does not answer within the limit is left to its
            // watcher and ControlPersist limit (both act when we are gone).
            let _ = tokio::time::timeout(Duration::from_secs(5), cmd.status()).await;
            if let Some(dir) = sock.parent() {
                // The Session's own drop may have removed it already.
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    });
    for exit in exits.collect::<Vec<_>>() {
        exit.await;
    }
}

/// A node reached over SSH through one multiplexed master connection.
pub struct Ssh {
    name: String,
    host: String,
    session: Session,
    _master: MasterGuard,
}

/// A master this process uses: registered for [`close_all_masters`], kept
/// busy by our connection to its control socket (while it is open the
/// master never counts as idle), and watched (see [`watch_master`]).
struct MasterGuard {
    control: PathBuf,
    _keeper: UnixStream,
    /// The writing end of the watcher's pipe: closing it (our exit, or
    /// this guard's drop) makes the watcher close the master.
    _watch: Option<std::os::fd::OwnedFd>,
}

/// Closes a master when dffmpeg is gone (`watch.sh`).
const WATCH_SCRIPT: &str = include_str!("watch.sh");

/// Start the watcher of the master at `control`; the pipe end to hold.
/// The one local child that must outlive dffmpeg (for as long as `ssh -O
/// exit` takes), so it is not started through [`crate::process`]; it has
/// its own process group, away from the terminal's Ctrl-C.
fn watch_master(control: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds on success; both are owned right away.
    let (read, write) = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", WATCH_SCRIPT, "dffmpeg-watch"])
        .arg(control)
        .stdin(std::process::Stdio::from(read))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    // Not waited for: tokio reaps it once it has exited.
    drop(cmd.spawn()?);
    Ok(write)
}

impl Drop for MasterGuard {
    fn drop(&mut self) {
        masters().remove(&self.control);
    }
}

impl std::fmt::Debug for Ssh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ssh")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("control_socket", &self.session.control_socket())
            .finish()
    }
}

impl Ssh {
    /// Open the master connection to an inventory node (`host` must not be
    /// `local`).
    pub async fn connect(node: &inventory::Node, opts: &ConnectOptions) -> Result<Ssh, SshError> {
        let host = match &node.host {
            inventory::Host::Remote(h) => h.clone(),
            inventory::Host::Local => {
                return Err(SshError::Local {
                    what: format!("node {}", node.name),
                    cause: std::io::Error::other("`host: local` is not reached over SSH"),
                })
            }
        };
        prepare_control_dir(&opts.control_dir)?;
        let linger = std::num::NonZeroUsize::new(MASTER_LINGER.as_secs() as usize)
            .unwrap_or(std::num::NonZeroUsize::MIN);
        let key = node.identity_file.clone().unwrap_or_else(|| opts.identity.clone());
        let mut b = SessionBuilder::default();
        b.control_directory(&opts.control_dir)
            .control_persist(ControlPersist::IdleFor(linger))
            .known_hosts_check(if opts.strict_host_keys { KnownHosts::Strict } else { KnownHosts::Add })
            .user_known_hosts_file(config_value(&opts.known_hosts)?)
            .connect_timeout(opts.connect_timeout)
            .server_alive_interval(opts.alive_interval)
            // Only this key (the crate adds IdentitiesOnly=yes with it).
            .keyfile(&key)
            .port(node.port);
        if let Some(user) = &node.user {
            b.user(user.clone());
        }
        // ConnectTimeout bounds TCP and the handshake; this bounds anything
        // else (a server that accepts and then says nothing).
        let limit = opts.connect_timeout * 2 + Duration::from_secs(5);
        let result = tokio::time::timeout(limit, b.connect(&host)).await;
        let session = match result {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(classify(node, &host, opts, &key, &e)),
            Err(_) => {
                return Err(SshError::Unreachable {
                    node: node.name.clone(),
                    host,
                    detail: format!("no SSH handshake within {} s", limit.as_secs()),
                })
            }
        };
        let control = session.control_socket().to_path_buf();
        let keeper = match UnixStream::connect(&control) {
            Ok(k) => k,
            Err(e) => {
                // The master is unusable either way; this only tidies up.
                let _ = session.close().await;
                return Err(SshError::Unreachable {
                    node: node.name.clone(),
                    host,
                    detail: format!("the SSH master went away at once ({e})"),
                });
            }
        };
        // Without a watcher (no sh?), the master still ends MASTER_LINGER
        // after its last session once dffmpeg is gone.
        let watch = watch_master(&control).ok();
        masters().insert(control.clone());
        let guard = MasterGuard { control, _keeper: keeper, _watch: watch };
        Ok(Ssh { name: node.name.clone(), host, session, _master: guard })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The master's control socket.
    pub fn control_socket(&self) -> &Path {
        self.session.control_socket()
    }

    /// Whether the master connection is still up.
    pub async fn check(&self) -> bool {
        self.session.check().await.is_ok()
    }

    /// Close the master connection (also done, blocking, on drop).
    pub async fn close(self) {
        let Ssh { session, _master, .. } = self;
        // A master that is already gone (the node died) has nothing to close.
        let _ = session.close().await;
        drop(_master);
    }

    /// An `ssh` client riding on the master that runs `line` with the
    /// remote user's shell. `line` must come from [`quote::join`] (plus
    /// fixed text).
    fn client(&self, line: &str) -> tokio::process::Command {
        // Dies with dffmpeg, whatever ends it.
        let mut cmd = crate::process::command("ssh");
        cmd.arg("-S")
            .arg(self.session.control_socket())
            .args([
                "-T",
                "-o",
                "BatchMode=yes",
                "-o",
                "ControlMaster=no",
                "-o",
                "ProxyCommand=false",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(&self.host)
            .arg("--")
            .arg(line);
        // Own process group: a terminal Ctrl-C reaches dffmpeg only, which
        // then stops the remote processes itself.
        cmd.process_group(0);
        cmd
    }
}

/// Turn the master's log into a user-facing error.
fn classify(
    node: &inventory::Node,
    host: &str,
    opts: &ConnectOptions,
    key: &Path,
    e: &openssh::Error,
) -> SshError {
    let detail = error_text(e);
    let known_hosts = opts.known_hosts.display().to_string();
    let lower = detail.to_lowercase();
    if lower.contains("remote host identification has changed")
        || lower.contains("host key for") && lower.contains("has changed")
    {
        let host_pattern = if node.port == 22 { host.to_string() } else { format!("[{host}]:{}", node.port) };
        return SshError::HostKeyChanged {
            node: node.name.clone(),
            host: host.to_string(),
            host_pattern,
            known_hosts,
        };
    }
    if lower.contains("host key is known for") && lower.contains("strict checking")
        || lower.contains("host key verification failed")
    {
        return SshError::HostKeyUnknown { node: node.name.clone(), host: host.to_string(), known_hosts };
    }
    if lower.contains("permission denied") || lower.contains("too many authentication failures") {
        let user_at_host = match &node.user {
            Some(u) => format!("{u}@{host}"),
            None => host.to_string(),
        };
        return SshError::Auth {
            node: node.name.clone(),
            user_at_host,
            key: key.display().to_string(),
            detail: last_line(&detail),
        };
    }
    SshError::Unreachable { node: node.name.clone(), host: host.to_string(), detail: last_line(&detail) }
}

fn error_text(e: &openssh::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(s) => format!("{s}"),
        None => e.to_string(),
    }
}

/// The meaningful line of an ssh log (skipping banners and warnings).
fn last_line(log: &str) -> String {
    log.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Warning:") && !l.starts_with('@'))
        .unwrap_or("ssh failed without a message")
        .to_string()
}

impl Transport for Ssh {
    fn name(&self) -> &str {
        &self.name
    }

    fn command(&self, argv: &[String]) -> tokio::process::Command {
        // sshd makes the shell a session (and process group) leader; `exec`
        // keeps its pid, so the reported pid is also the group to kill.
        let line = format!("echo \"{}$$\" >&2; exec {}", PID_PREFIX, quote::join(argv));
        self.client(&line)
    }

    async fn kill(&self, pid: u32) {
        let argv = ["sh", "-c", KILL_SCRIPT, "dffmpeg-kill", &pid.to_string()];
        let mut cmd = self.client(&quote::join(&argv));
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        // Best effort: a node that does not answer within 10 s is being
        // dropped anyway, and its ssh client dies with the handle.
        let _ = tokio::time::timeout(Duration::from_secs(10), cmd.status()).await;
    }

    fn reports_pid(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_ssh_options_are_quoted() {
        assert_eq!(config_value(Path::new("/a b/known hosts")).unwrap(), "\"/a b/known hosts\"");
        assert!(config_value(Path::new("/a\"b")).is_err());
    }

    #[test]
    fn dead_masters_directories_go_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".ssh-connectionDEAD");
        let empty = dir.path().join(".ssh-connectionNOSOCK");
        let live = dir.path().join(".ssh-connectionLIVE");
        let other = dir.path().join("keep-me");
        for d in [&dead, &empty, &live, &other] {
            std::fs::create_dir(d).unwrap();
        }
        // A socket nobody listens on any more, and one that is served.
        drop(std::os::unix::net::UnixListener::bind(dead.join("master")).unwrap());
        let _served = std::os::unix::net::UnixListener::bind(live.join("master")).unwrap();
        remove_dead_masters(dir.path(), Duration::from_secs(3600));
        assert!(dead.exists() && empty.exists(), "too young to be judged");
        remove_dead_masters(dir.path(), Duration::ZERO);
        assert!(!dead.exists() && !empty.exists());
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn log_lines_skip_warnings() {
        let log = "Warning: Permanently added 'x' (ED25519) to the list of known hosts.\r\nssh: connect to host 1.2.3.4 port 22: No route to host\r\n";
        assert_eq!(last_line(log), "ssh: connect to host 1.2.3.4 port 22: No route to host");
    }

    #[test]
    fn control_socket_paths_stay_short() {
        // openssh adds `/.ssh-connectionXXXXXX/master`.
        let dir = default_control_dir();
        assert!(dir.as_os_str().len() + 30 < 100, "{}", dir.display());
    }
}
