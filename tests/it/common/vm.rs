//! Real VMs for the tests that need real kernels (kernel NFS server and client, reboots):
//! a thin wrapper over `tests/vm/vmlab.sh` (see `tests/vm/README.md`).
//!
//! * [`VmLab::up`] boots Debian bookworm VMs (QEMU, TCG on this machine: slow) on the private
//!   bridge `dffvm-br`, 198.18.60.0/24: the machine is [`GATEWAY`] (198.18.60.1), the VMs
//!   get .11, .12, ... in the order of `names`. No NAT, no route out: the VMs reach each
//!   other and the gateway only, so serve the test apt mirror on [`GATEWAY`]
//!   (`AptMirror::serve(vm::GATEWAY, port)` after `up`).
//! * Each VM has user `pi` / `raspberry` (uid 1000, passwordless sudo, no SSH key), ffmpeg,
//!   no NFS packages (their dependencies are there), apt sources on the public mirror
//!   (unreachable: `apt-get update` warns and exits 0). Root logs in with the harness's key.
//! * The base image is built once (about 4 min) and cached in /var/tmp/dffmpeg-vm; it is
//!   rebuilt only when the script's image recipe changes.
//! * Every step prints its duration on stderr, even when the test harness captures output.
//! * One `VmLab` at a time on a machine: `up` first removes whatever an earlier (crashed)
//!   run left; dropping it stops the VMs and removes taps, bridge and disks.
//!
//! Needs root, debootstrap, qemu-utils (qemu-img) and a reachable Debian mirror for the
//! first image build; the script installs what is missing (see the README).

use std::fmt::Display;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The machine's address on the VMs' bridge.
pub const GATEWAY: &str = "198.18.60.1";
/// The VMs' unprivileged user (as on Raspberry Pi OS) and its password.
pub const USER: &str = "pi";
pub const PASSWORD: &str = "raspberry";
/// Where the harness keeps its image, key, state and logs.
pub const DIR: &str = "/var/tmp/dffmpeg-vm";
/// Set to 1 to run the VM tests (they need root and take minutes).
pub const ENABLE_VAR: &str = "DFFMPEG_VM_TESTS";

/// The harness script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/vmlab.sh")
}

/// Whether VM tests are enabled (`DFFMPEG_VM_TESTS=1`); prints why not when they are not.
/// Enabled but not root: panics (asked for, cannot run).
pub fn enabled(test: &str) -> bool {
    if std::env::var(ENABLE_VAR).as_deref() != Ok("1") {
        log(format_args!("{test}: skipped (VM test: set {ENABLE_VAR}=1, as root; takes minutes)"));
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "{test}: {ENABLE_VAR}=1 but not root: the VM harness needs root (bridge, taps)"
    );
    true
}

/// Writes one line on stderr, bypassing the test harness's output capture (so CI logs
/// show it even for passing tests).
pub fn log(args: std::fmt::Arguments) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{args}");
    let _ = e.flush();
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Runs `f` as a named step: prints `[vm] STEP ...` and then `[vm] STEP: done in N.Ns`.
pub fn step<T>(what: impl Display, f: impl FnOnce() -> T) -> T {
    log(format_args!("[vm] {what} ..."));
    let t = Instant::now();
    let r = f();
    log(format_args!("[vm] {what}: done in {}", secs(t.elapsed())));
    r
}

static ONE_LAB: Mutex<()> = Mutex::new(());

/// Running VMs. Drop stops them and removes everything but the cached image.
pub struct VmLab {
    names: Vec<String>,
    ips: Vec<String>,
    key: PathBuf,
    askpass: PathBuf,
    started: Instant,
    _one: MutexGuard<'static, ()>,
}

const SSH_OPTS: [&str; 14] = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=10",
    "-o",
    "ServerAliveCountMax=6",
    "-o",
    "IdentitiesOnly=yes",
];

/// Runs the harness script; stderr (its progress lines) goes straight to ours; panics
/// unless it succeeds; returns stdout.
fn vmlab(args: &[&str]) -> String {
    let out = Command::new(script())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("vm: cannot run {}: {e}", script().display()));
    assert!(
        out.status.success(),
        "vm: vmlab.sh {} failed ({}); see the lines above",
        args.join(" "),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl VmLab {
    /// Builds the image if needed (cached), removes leftovers of an earlier run, and boots
    /// one VM per name (1-10 of `[a-z0-9]`, a letter first), waiting until each has
    /// finished booting. Prints each step with its time.
    pub fn up(names: &[&str]) -> VmLab {
        assert!(!names.is_empty(), "vm: no VM names");
        let one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        step("down (leftovers of an earlier run)", || vmlab(&["down"]));
        step("image (cached unless its recipe changed)", || vmlab(&["image"]));
        let mut args = vec!["up"];
        args.extend_from_slice(names);
        let out = step(format!("boot {}", names.join(" ")), || vmlab(&args));
        let mut ips = Vec::new();
        for name in names {
            let ip = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("vm: `vmlab.sh up` did not print {name}'s address"));
            ips.push(ip.trim().to_string());
        }
        let key = PathBuf::from(vmlab(&["key"]).trim());
        let askpass = PathBuf::from(DIR).join("askpass");
        fs::write(&askpass, "#!/bin/sh\nprintf '%s\\n' \"$DFFMPEG_VM_PASSWORD\"\n")
            .expect("vm: write askpass");
        fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700)).expect("vm: chmod askpass");
        VmLab { names: names.iter().map(|s| s.to_string()).collect(), ips, key, askpass, started, _one: one }
    }

    /// A VM's address (198.18.60.11, ...).
    pub fn ip(&self, name: &str) -> &str {
        let i = self.names.iter().position(|n| n == name).unwrap_or_else(|| panic!("vm: no VM named {name}"));
        &self.ips[i]
    }

    /// `ssh root@VM` with the harness's key, stdin null; add the remote command (one
    /// shell string) with `.arg(..)`.
    pub fn ssh_root_command(&self, name: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-i")
            .arg(&self.key)
            .args(SSH_OPTS)
            .args(["-o", "BatchMode=yes"])
            .arg(format!("root@{}", self.ip(name)))
            .stdin(Stdio::null());
        c
    }

    /// `ssh USER@VM` logging in with a password through SSH_ASKPASS (no key offered);
    /// add the remote command with `.arg(..)`.
    pub fn ssh_password(&self, name: &str, user: &str, password: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(SSH_OPTS)
            .args(super::PASSWORD_LOGIN)
            .arg(format!("{user}@{}", self.ip(name)))
            .env("SSH_ASKPASS", &self.askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DFFMPEG_VM_PASSWORD", password)
            .stdin(Stdio::null());
        c
    }

    /// Runs `cmd` (a shell command line) as root in the VM.
    pub fn ssh_root(&self, name: &str, cmd: &str) -> Output {
        self.ssh_root_command(name).arg(cmd).output().unwrap_or_else(|e| panic!("vm: cannot run ssh: {e}"))
    }

    /// [`VmLab::ssh_root`] that panics unless `cmd` succeeds; returns its stdout.
    pub fn ssh_root_ok(&self, name: &str, cmd: &str) -> String {
        ok(self.ssh_root(name, cmd), &format!("{name}: {cmd}"))
    }

    /// Runs `cmd` as root in the VM with `input` on its stdin.
    pub fn ssh_root_input(&self, name: &str, cmd: &str, input: &[u8]) -> Output {
        let mut child = self
            .ssh_root_command(name)
            .arg(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("vm: cannot run ssh: {e}"));
        let mut stdin = child.stdin.take().expect("ssh stdin");
        let input = input.to_vec();
        // A writer thread: the remote side may answer before it has read everything.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("vm: ssh: {e}"));
        let _ = writer.join();
        out
    }

    /// Runs `cmd` in the VM as `user` (a login shell: HOME, cwd = home), through root's
    /// key and `runuser`, with `input` on its stdin (e.g. the password line for
    /// `dffmpeg setup --ask-pass`, which reads one line from a non-terminal stdin).
    pub fn ssh_as(&self, name: &str, user: &str, cmd: &str, input: &[u8]) -> Output {
        self.ssh_root_input(name, &format!("exec runuser -l {} -c {}", q(user), q(cmd)), input)
    }

    /// Copies a local file to `remote_path` in the VM (owner root, the local file's
    /// mode), written to a temporary name first and renamed into place. Timed.
    pub fn copy_to(&self, name: &str, local_path: impl AsRef<Path>, remote_path: &str) {
        let local_path = local_path.as_ref();
        step(format!("copy {} to {name}:{remote_path}", local_path.display()), || {
            let data = fs::read(local_path)
                .unwrap_or_else(|e| panic!("vm: cannot read {}: {e}", local_path.display()));
            let mode = fs::metadata(local_path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
            let tmp = format!("{remote_path}.dffvm-tmp");
            let cmd = format!(
                "set -e; cat > {t}; chmod {mode:o} {t}; mv -f {t} {r}",
                t = q(&tmp),
                r = q(remote_path)
            );
            ok(self.ssh_root_input(name, &cmd, &data), &format!("{name}: copy to {remote_path}"));
        });
    }

    /// Reboots the VM from inside (`systemctl reboot`) and waits until it has booted again
    /// (new boot id, sshd up, systemd done with the boot: fstab mounts included). Timed.
    pub fn reboot(&self, name: &str) {
        step(format!("reboot {name}"), || vmlab(&["reboot", name]));
    }

    /// Trusts the test apt mirror's key (a binary keyring, `AptMirror::key`) in the VM.
    pub fn trust_apt_key(&self, name: &str, key: &Path) {
        self.copy_to(name, key, "/etc/apt/trusted.gpg.d/dffmpeg-test-mirror.gpg");
        self.ssh_root_ok(name, "chmod 644 /etc/apt/trusted.gpg.d/dffmpeg-test-mirror.gpg");
    }

    /// Points the VM's apt at the test mirror only: trusts `key` and replaces all sources
    /// with `deb URL/debian bookworm main` (`url` as `AptMirror::url`, on [`GATEWAY`]).
    /// (`dffmpeg setup` with `cluster.apt_mirror` does this itself; it needs only the key.)
    pub fn use_apt_mirror(&self, name: &str, url: &str, key: &Path) {
        self.trust_apt_key(name, key);
        self.ssh_root_ok(
            name,
            &format!(
                "rm -f /etc/apt/sources.list.d/*; echo {} > /etc/apt/sources.list; \
                 find /var/lib/apt/lists -maxdepth 1 -type f -name '*_dists_*' -delete",
                q(&format!("deb {url}/debian bookworm main"))
            ),
        );
    }

    /// The VM's serial console so far (kernel and boot messages).
    pub fn console_log(&self, name: &str) -> String {
        fs::read_to_string(Path::new(DIR).join("vms").join(name).join("console.log")).unwrap_or_default()
    }
}

impl Drop for VmLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in &self.names {
                let log = self.console_log(name);
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                log_lines(name, tail.into_iter().rev());
            }
        }
        let t = Instant::now();
        let out = Command::new(script()).arg("down").stdin(Stdio::null()).stderr(Stdio::inherit()).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => log(format_args!("[vm] down failed ({})", o.status)),
            Err(e) => log(format_args!("[vm] cannot run vmlab.sh down: {e}")),
        }
        log(format_args!(
            "[vm] down: done in {}; VMs were up for {}",
            secs(t.elapsed()),
            secs(self.started.elapsed())
        ));
    }
}

fn log_lines<'a>(name: &str, lines: impl Iterator<Item = &'a str>) {
    log(format_args!("[vm] {name}: end of its console log:"));
    for l in lines {
        log(format_args!("[vm] {name}|{l}"));
    }
}

/// Panics with `what`, the status and both outputs unless `out` succeeded; returns stdout.
pub fn ok(out: Output, what: &str) -> String {
    super::run::ok(out, &format!("vm: {what}"))
}

/// Single-quotes `s` for a POSIX shell.
pub use super::lab::q;
