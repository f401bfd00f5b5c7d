//! `--ask-pass`: the first bring-up of nodes that only accept a password
//! (stock Raspberry Pi OS). The password is read once — from the terminal
//! without echo, or as one line of stdin when stdin is not a terminal — and
//! handed to the system `ssh` through `SSH_ASKPASS`, whose program is
//! dffmpeg itself ([`askpass_main`]): it reads the password from its
//! standard input, a pipe that dffmpeg filled and closed (ssh runs the
//! askpass program with its own stdin, which it does not read before it has
//! logged in). Nothing is written to disk, no temporary program is made
//! (a `noexec` /tmp is fine), and the password is in no environment.
//! After the key is installed, every connection is key-only.

use std::io::{BufRead, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use crate::quote::join;
use crate::remote::ssh::config_value;

/// ssh options for a login by password only (asked through SSH_ASKPASS):
/// no key is tried, one prompt.
pub const PASSWORD_LOGIN: [&str; 6] = [
    "-o",
    "PubkeyAuthentication=no",
    "-o",
    "PreferredAuthentications=password,keyboard-interactive",
    "-o",
    "NumberOfPasswordPrompts=1",
];

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot read the password: {0}")]
    Read(std::io::Error),
    #[error("no password given")]
    Empty,
    #[error("cannot hand the password to ssh: {0}")]
    Pipe(std::io::Error),
    #[error("cannot find dffmpeg's own program to answer ssh's password prompt: {0}")]
    SelfPath(std::io::Error),
    #[error("cannot run ssh: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Path(#[from] crate::remote::SshError),
    #[error("{0}: no answer within {1} s")]
    Timeout(String, u64),
    #[error("{0}")]
    Refused(String),
    /// ssh did not get as far as authentication (no route, refused, timed
    /// out, host key): no password was tried.
    #[error("{0}")]
    Unreachable(String),
}

/// Whether stdin is a terminal (questions and the password are asked
/// there; otherwise the password is one line of stdin).
pub fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}

/// Ask a yes/no question on the terminal (stdin); only `y` or `yes` is yes.
pub fn confirm(question: &str) -> Result<bool, PasswordError> {
    eprint!("{question} [y/N] ");
    // A failed flush only risks an unseen prompt; the answer is still read.
    let _ = std::io::stderr().flush();
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s).map_err(PasswordError::Read)?;
    Ok(matches!(s.trim().to_lowercase().as_str(), "y" | "yes"))
}

/// Read the password once: from the terminal (no echo) or one stdin line.
pub fn read_password(prompt: &str) -> Result<String, PasswordError> {
    let tty = stdin_is_terminal();
    let line = if tty {
        eprint!("{prompt}");
        // A failed flush only risks an unseen prompt.
        let _ = std::io::stderr().flush();
        let _echo_off = EchoOff::new(0);
        let mut s = String::new();
        let r = std::io::stdin().lock().read_line(&mut s);
        eprintln!();
        r.map_err(PasswordError::Read)?;
        s
    } else {
        let mut s = String::new();
        std::io::stdin().lock().read_line(&mut s).map_err(PasswordError::Read)?;
        s
    };
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw).to_string();
    if pw.is_empty() {
        return Err(PasswordError::Empty);
    }
    Ok(pw)
}

/// Terminal echo off until dropped.
struct EchoOff {
    fd: i32,
    saved: Option<libc::termios>,
}

/// The terminal's settings while echo is off, for [`restore_terminal`].
static SAVED_TERMINAL: Mutex<Option<(i32, libc::termios)>> = Mutex::new(None);

/// Turn echo back on if a password prompt is under way (dffmpeg stopping
/// on a signal while the prompt waits).
pub fn restore_terminal() {
    let saved = SAVED_TERMINAL.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((fd, t)) = saved {
        // SAFETY: restoring attributes tcgetattr gave us for this fd.
        unsafe {
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
        eprintln!();
    }
}

impl EchoOff {
    fn new(fd: i32) -> EchoOff {
        // SAFETY: termios calls on an fd that isatty() accepted; the struct
        // is plain data filled by tcgetattr.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                return EchoOff { fd, saved: None };
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            *SAVED_TERMINAL.lock().unwrap_or_else(|p| p.into_inner()) = Some((fd, saved));
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            EchoOff { fd, saved: Some(saved) }
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        SAVED_TERMINAL.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.saved {
            // SAFETY: restoring the attributes read in new().
            unsafe {
                libc::tcsetattr(self.fd, libc::TCSANOW, &t);
            }
        }
    }
}

/// Where and how `ssh` connects.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The known_hosts file to check (and, unless strict, add) the host
    /// key in.
    pub known_hosts: PathBuf,
    /// Refuse unknown host keys instead of trusting them on first use.
    pub strict_host_keys: bool,
    /// The key the probe tries (only that one).
    pub identity: PathBuf,
    /// The limit of each ssh run.
    pub timeout: Duration,
}

/// What the key probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProbe {
    /// The key already lets us in: nothing to do.
    Works,
    /// The node asks for a password.
    NeedsPassword,
}

/// The remote command: add `line` to ~/.ssh/authorized_keys unless a line
/// with its key is there, with ssh's permissions. Built with the one
/// quoting function.
pub fn install_command(line: &str) -> String {
    let line = line.trim();
    let blob = crate::setup::modules::authorized_key::key_id(line).map(|(_, b)| b).unwrap_or(line);
    join(&["sh", "-c", include_str!("install_key.sh"), "dffmpeg-install-key", line, blob])
}

fn base_args(t: &SshTarget) -> Result<Vec<std::ffi::OsString>, PasswordError> {
    let mut kh = std::ffi::OsString::from("UserKnownHostsFile=");
    kh.push(config_value(&t.known_hosts)?);
    let strict = if t.strict_host_keys { "yes" } else { "accept-new" };
    Ok([
        "-p".into(),
        t.port.to_string().into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-o".into(),
        "ServerAliveInterval=5".into(),
        "-o".into(),
        format!("StrictHostKeyChecking={strict}").into(),
        "-o".into(),
        kh,
        "-l".into(),
        t.user.clone().into(),
    ]
    .into())
}

async fn ssh_output(
    t: &SshTarget,
    cmd: &mut tokio::process::Command,
) -> Result<std::process::Output, PasswordError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    match tokio::time::timeout(t.timeout, cmd.output()).await {
        Ok(r) => r.map_err(PasswordError::Spawn),
        Err(_) => Err(PasswordError::Timeout(format!("{}@{}", t.user, t.host), t.timeout.as_secs())),
    }
}

fn last_line(stderr: &[u8]) -> String {
    let err = String::from_utf8_lossy(stderr);
    err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("ssh failed").to_string()
}

/// Does the key already let us in? Host keys are checked (and, unless
/// strict, learned) in `t.known_hosts`.
pub async fn probe_key(t: &SshTarget) -> Result<KeyProbe, PasswordError> {
    let mut probe = crate::process::command("ssh");
    probe
        .args(base_args(t)?)
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(&t.identity)
        .args(["--", &t.host, "true"])
        .stdin(Stdio::null());
    let out = match ssh_output(t, &mut probe).await {
        Err(PasswordError::Timeout(who, s)) => {
            return Err(PasswordError::Unreachable(format!("{who}: no answer within {s} s")))
        }
        other => other?,
    };
    if out.status.success() {
        return Ok(KeyProbe::Works);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.contains("Permission denied") && !err.contains("Too many authentication failures") {
        return Err(PasswordError::Unreachable(format!("{}@{}: {}", t.user, t.host, last_line(&out.stderr))));
    }
    Ok(KeyProbe::NeedsPassword)
}

/// A pipe holding `password` and a newline, its writing end closed: the
/// standard input of the ssh whose askpass program is dffmpeg.
fn password_pipe(password: &str) -> Result<OwnedFd, PasswordError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds on success; both are owned right away.
    let (read, write) = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(PasswordError::Pipe(std::io::Error::last_os_error()));
        }
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    let mut w = std::fs::File::from(write);
    // Far below a pipe's capacity: this never blocks.
    w.write_all(format!("{password}\n").as_bytes()).map_err(PasswordError::Pipe)?;
    drop(w);
    Ok(read)
}

/// Log in with `password` and add `line` to the user's authorized_keys.
/// The host key must already be in `t.known_hosts` (it is checked
/// strictly: the password goes only to the host the user confirmed).
pub async fn install_with_password(t: &SshTarget, password: &str, line: &str) -> Result<(), PasswordError> {
    let me = std::env::current_exe().map_err(PasswordError::SelfPath)?;
    let strict = SshTarget { strict_host_keys: true, ..t.clone() };
    let mut cmd = crate::process::command("ssh");
    cmd.args(base_args(&strict)?)
        .args(["-o", "BatchMode=no"])
        .args(PASSWORD_LOGIN)
        .args(["--", &t.host])
        .arg(install_command(line))
        .stdin(Stdio::from(password_pipe(password)?))
        .env("SSH_ASKPASS", &me)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env(ASKPASS_ENV, "1")
        .env("DISPLAY", std::env::var("DISPLAY").unwrap_or_else(|_| ":0".into()));
    // No controlling terminal: older ssh only uses SSH_ASKPASS then.
    // SAFETY: setsid() in the child before exec touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let out = ssh_output(t, &mut cmd).await?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(PasswordError::Refused(format!(
            "password login to {}@{} failed: {}",
            t.user,
            t.host,
            err.trim()
        )));
    }
    Ok(())
}

/// The environment variable that makes dffmpeg answer as ssh's askpass
/// program ([`askpass_main`]).
pub const ASKPASS_ENV: &str = "DFFMPEG_ASKPASS";

/// dffmpeg as ssh's askpass program: for a password prompt (argv[1]),
/// print the line on stdin (the pipe [`install_with_password`] filled);
/// any other question (a host key, a passphrase) gets no answer.
pub fn askpass_main() -> std::process::ExitCode {
    let prompt = std::env::args().nth(1).unwrap_or_default();
    if !prompt.to_lowercase().contains("password") {
        return std::process::ExitCode::from(1);
    }
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 => {
            let pw = line.strip_suffix('\n').unwrap_or(&line);
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{pw}").and_then(|()| out.flush()) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(_) => std::process::ExitCode::from(1),
            }
        }
        _ => std::process::ExitCode::from(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_command_is_idempotent_in_a_real_shell() {
        let home = tempfile::tempdir().unwrap();
        let key = "from=\"10.0.0.1\",restrict ssh-ed25519 AAAAC3Nza'quoted $(x) dffmpeg@ctl";
        let line = install_command(key);
        for _ in 0..2 {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&line)
                .env("HOME", home.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let ak = home.path().join(".ssh/authorized_keys");
        assert_eq!(std::fs::read_to_string(&ak).unwrap(), format!("{key}\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&ak).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn the_password_pipe_holds_one_line_and_ends() {
        use std::io::Read;
        let fd = password_pipe("pass word'$x").unwrap();
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        assert_eq!(s, "pass word'$x\n");
    }
}
