//! `--ask-pass`: the first bring-up of nodes that only accept a password
//! (stock Raspberry Pi OS). The password is read once — from the terminal
//! without echo, or as one line of stdin when stdin is not a terminal — and
//! handed to the system `ssh` through `SSH_ASKPASS`: a tiny helper script
//! (no secret in it) prints it from an environment variable of that one
//! ssh process. Nothing is written to disk; after the key is installed,
//! every connection is key-only.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::quote::join;

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
    #[error("cannot prepare the askpass helper: {0}")]
    Helper(std::io::Error),
    #[error("cannot run ssh: {0}")]
    Spawn(std::io::Error),
    #[error("{0}")]
    Refused(String),
    /// ssh did not get as far as authentication (no route, refused, timed
    /// out, host key): no password was tried.
    #[error("{0}")]
    Unreachable(String),
}

/// Read the password once: from the terminal (no echo) or one stdin line.
pub fn read_password(prompt: &str) -> Result<String, PasswordError> {
    // SAFETY: isatty on a constant fd.
    let tty = unsafe { libc::isatty(0) } == 1;
    let line = if tty {
        eprint!("{prompt}");
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
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            EchoOff { fd, saved: Some(saved) }
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restoring the attributes read in new().
            unsafe {
                libc::tcsetattr(self.fd, libc::TCSANOW, &t);
            }
        }
    }
}

/// Where and how `ssh` connects.
#[derive(Debug, Clone, Default)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// dffmpeg's own known_hosts file; `None` = ssh's default.
    pub known_hosts: Option<PathBuf>,
    /// Refuse unknown host keys instead of trusting them on first use.
    pub strict_host_keys: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyInstall {
    /// The key already let us in: nothing done.
    AlreadyWorks,
    /// Logged in with the password and added the key.
    Installed,
}

/// The remote command: add `pubkey` to ~/.ssh/authorized_keys unless there,
/// with ssh's permissions. Built with the one quoting function.
pub fn install_command(pubkey: &str) -> String {
    let key = pubkey.trim();
    let blob = key.split_whitespace().nth(1).unwrap_or(key);
    join(&["sh", "-c", include_str!("install_key.sh"), "dffmpeg-install-key", key, blob])
}

fn base_args(t: &SshTarget) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-p".into(),
        t.port.to_string(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-o".into(),
        format!("StrictHostKeyChecking={}", if t.strict_host_keys { "yes" } else { "accept-new" }),
    ];
    if let Some(k) = &t.known_hosts {
        a.extend(["-o".into(), format!("UserKnownHostsFile={}", k.display())]);
    }
    a
}

fn dest(t: &SshTarget) -> String {
    format!("{}@{}", t.user, t.host)
}

/// A private directory holding the askpass helper; removed on drop.
struct Helper {
    dir: PathBuf,
    script: PathBuf,
}

impl Helper {
    fn new() -> Result<Helper, PasswordError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let dir = base.join(format!("dffmpeg-askpass-{}-{}", std::process::id(), i));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let script = dir.join("askpass");
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o700)
                        .open(&script)
                        .map_err(PasswordError::Helper)?;
                    // Prints the password only for password prompts (not for
                    // host-key or passphrase questions).
                    f.write_all(
                        b"#!/bin/sh\ncase \"$1\" in *assword*) printf '%s\\n' \"$DFFMPEG_ASKPASS_PASSWORD\" ;; *) exit 1 ;; esac\n",
                    )
                    .map_err(PasswordError::Helper)?;
                    return Ok(Helper { dir, script });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(PasswordError::Helper(e)),
            }
        }
        Err(PasswordError::Helper(std::io::Error::other("no free temp name")))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn ssh_output(cmd: &mut tokio::process::Command) -> Result<std::process::Output, PasswordError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(PasswordError::Spawn)
}

/// Install `pubkey` for `user` on `host`, logging in with `password`,
/// unless the key already works.
pub async fn install_key_with_password(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    pubkey: &str,
) -> Result<KeyInstall, PasswordError> {
    let t =
        SshTarget { host: host.into(), port, user: user.into(), known_hosts: None, strict_host_keys: false };
    install_key_with_password_to(&t, password, pubkey, None).await
}

/// [`install_key_with_password`] with full options; `identity` is the
/// private key to try first.
pub async fn install_key_with_password_to(
    t: &SshTarget,
    password: &str,
    pubkey: &str,
    identity: Option<&Path>,
) -> Result<KeyInstall, PasswordError> {
    // 1. Does the key already let us in?
    let mut probe = tokio::process::Command::new("ssh");
    probe.args(base_args(t)).args(["-o", "BatchMode=yes"]);
    if let Some(i) = identity {
        probe.arg("-i").arg(i);
    }
    probe.arg(dest(t)).arg("true");
    let out = ssh_output(&mut probe).await?;
    if out.status.success() {
        return Ok(KeyInstall::AlreadyWorks);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.contains("Permission denied") && !err.contains("Too many authentication failures") {
        let why = err.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("ssh failed").to_string();
        return Err(PasswordError::Unreachable(format!("{}: {why}", dest(t))));
    }

    // 2. Password login through SSH_ASKPASS.
    let helper = Helper::new()?;
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(base_args(t))
        .args(["-o", "BatchMode=no"])
        .args(PASSWORD_LOGIN)
        .arg(dest(t))
        .arg(install_command(pubkey))
        .env("SSH_ASKPASS", &helper.script)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", std::env::var("DISPLAY").unwrap_or_else(|_| ":0".into()))
        .env("DFFMPEG_ASKPASS_PASSWORD", password);
    // No controlling terminal: older ssh only uses SSH_ASKPASS then.
    // SAFETY: setsid() in the child before exec touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let out = ssh_output(&mut cmd).await?;
    drop(helper);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(PasswordError::Refused(format!("password login to {} failed: {}", dest(t), err.trim())));
    }
    Ok(KeyInstall::Installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_command_is_idempotent_in_a_real_shell() {
        let home = tempfile::tempdir().unwrap();
        let key = "ssh-ed25519 AAAAC3Nza'quoted $(x) dffmpeg@ctl";
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
    fn the_helper_holds_no_secret_and_goes_away() {
        let h = Helper::new().unwrap();
        let text = std::fs::read_to_string(&h.script).unwrap();
        assert!(text.contains("$DFFMPEG_ASKPASS_PASSWORD"));
        let out = std::process::Command::new(&h.script)
            .arg("pi@host's password: ")
            .env("DFFMPEG_ASKPASS_PASSWORD", "raspberry")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"raspberry\n");
        let other = std::process::Command::new(&h.script)
            .arg("Are you sure you want to continue connecting?")
            .output()
            .unwrap();
        assert!(!other.status.success());
        let dir = h.dir.clone();
        drop(h);
        assert!(!dir.exists());
    }
}
