//! Test hosts on this machine, no VMs: each host is
//!
//! * a network namespace `dl-<tag>-<host>` with a veth (`eth0`) on the lab's private
//!   bridge `dl-<tag>` (198.18.<net>.0/24; the bridge holds 198.18.<net>.1 and is
//!   never routed anywhere),
//! * a private mount namespace whose root is an overlay of `/` (upper/work dirs under
//!   `/var/tmp/dlab-<tag>/<host>/`), with its own proc, sys, /dev (bind of the machine's),
//!   and tmpfs /run and /tmp; or of another userland ([`HostOpts::lower`]: an ARM Debian
//!   run through qemu-user, whose own sshd, shell and tools the host then runs),
//! * fresh ssh host keys and its own `sshd -D` listening on the host's address only,
//! * optionally a CPU quota (cgroup v1, `/sys/fs/cgroup/cpu/dl-<tag>-<host>`), visible inside
//!   the host as in a container (the machine's `/sys/fs/cgroup` is bound in).
//!
//! The overlay is mounted in the machine's mount namespace too, so [`Host::root`] reads
//! and writes the host's files from the test (even after the host was killed).
//!
//! Everything is keyed by the lab's tag: [`Lab::new`] first removes the leftovers of an
//! earlier lab with the same tag, and dropping the [`Lab`] removes everything it made.
//! Nothing is global, so tests running in parallel threads just use distinct tags and nets.

use std::ffi::CString;
use std::fs;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// PATH for everything run on the machine or in a host.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CGROUP_CPU: &str = "/sys/fs/cgroup/cpu";
const CFS_PERIOD_US: u64 = 100_000;
/// How long a host's sshd may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// First host gets 198.18.<net>.10, the next .11, ...
const FIRST_HOST: usize = 10;

/// One private bridge and subnet with its hosts. Drop removes everything it created.
pub struct Lab {
    tag: String,
    net: u8,
    dir: PathBuf,
    bridge: String,
    key: PathBuf,
    hosts: Vec<Host>,
}

#[derive(Default, Clone, Debug)]
pub struct HostOpts {
    /// CPU quota in CPUs (0.5 = half a core), via cgroup v1 `/sys/fs/cgroup/cpu`.
    pub cpus: Option<f64>,
    /// Another userland as the overlay's lower layer instead of the machine's `/`: e.g. a
    /// Debian arm64 or armhf root (`tests/arm/armroot.sh`), whose binaries run through
    /// qemu-user and binfmt_misc. The host then runs that root's own sshd, shell and tools.
    pub lower: Option<PathBuf>,
}

/// A test host. Cheap to clone: clones share the same host.
#[derive(Clone)]
pub struct Host {
    pub name: String,
    pub ip: String,
    inner: Arc<HostInner>,
}

struct HostInner {
    netns: String,
    /// (dev, ino) of the network namespace: identifies the host's processes.
    netns_id: (u64, u64),
    dir: PathBuf,
    root: PathBuf,
    cgroup: Option<PathBuf>,
    /// The running sshd (spawned directly: sh, ip netns exec, unshare and chroot all exec).
    sshd: Mutex<Option<Child>>,
}

impl Lab {
    /// `tag`: short unique name (1-6 of `[a-z0-9]`) used for the bridge `dl-<tag>`, the
    /// netns `dl-<tag>-<host>` and the dir `/var/tmp/dlab-<tag>`; `net`: third octet, the
    /// lab uses 198.18.<net>.0/24 and the bridge has 198.18.<net>.1.
    /// First removes the leftovers of an earlier (crashed) lab with the same tag.
    pub fn new(tag: &str, net: u8) -> Lab {
        assert!(
            !tag.is_empty()
                && tag.len() <= 6
                && tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "lab tag {tag:?} must be 1-6 characters of [a-z0-9]"
        );
        let dir = lab_dir(tag);
        for problem in cleanup(tag) {
            eprintln!("lab {tag}: cleaning leftovers: {problem}");
        }
        let bridge = format!("dl-{tag}");
        let subnet = format!("198.18.{net}.0/24");
        let taken = must(Command::new("ip").args(["-o", "-4", "addr", "show", "to", &subnet]));
        assert!(
            taken.trim().is_empty(),
            "lab {tag}: subnet {subnet} is already in use on this machine (another lab with the same net?): {}",
            taken.trim()
        );
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("lab {tag}: cannot create {}: {e}", dir.display()));
        let lab =
            Lab { tag: tag.to_string(), net, key: dir.join("client_key"), dir, bridge, hosts: Vec::new() };
        // From here on, a panic drops `lab`, which cleans up.
        must(Command::new("ip").args(["link", "add", &lab.bridge, "type", "bridge"]));
        must(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/24", lab.gateway_ip()),
            "dev",
            &lab.bridge,
        ]));
        must(Command::new("ip").args(["link", "set", &lab.bridge, "up"]));
        must(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("dlab-{tag}"))
                .arg("-f")
                .arg(&lab.key),
        );
        lab
    }

    /// The lab's directory, /var/tmp/dlab-<tag> (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// 198.18.<net>.1: this machine as seen from the hosts.
    pub fn gateway_ip(&self) -> String {
        format!("198.18.{}.1", self.net)
    }

    /// Private ed25519 key authorized for root on every host of this lab.
    pub fn client_key(&self) -> &Path {
        &self.key
    }

    /// Public half of [`Lab::client_key`].
    pub fn client_pubkey(&self) -> String {
        let p = self.key.with_extension("pub");
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("lab {}: cannot read {}: {e}", self.tag, p.display()))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("lab {}: no host named {name:?}", self.tag))
    }

    /// Starts a host; returns once its sshd accepts connections (it has sent its banner).
    /// Host names: 1-30 characters of `[a-z0-9-]`.
    pub fn add_host(&mut self, name: &str, opts: HostOpts) -> Host {
        let tag = self.tag.clone();
        assert!(
            !name.is_empty()
                && name.len() <= 30
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "lab {tag}: host name {name:?} must be 1-30 characters of [a-z0-9-]"
        );
        assert!(
            self.hosts.iter().all(|h| h.name != name),
            "lab {tag}: there is already a host named {name:?}"
        );
        let idx = self.hosts.len();
        assert!(FIRST_HOST + idx < 255, "lab {tag}: too many hosts");
        let ip = format!("198.18.{}.{}", self.net, FIRST_HOST + idx);
        let netns = format!("dl-{tag}-{name}");
        let veth = format!("dl-{tag}-v{idx}");
        let dir = self.dir.join(name);
        let root = dir.join("root");
        for d in ["upper", "work", "root"] {
            let p = dir.join(d);
            fs::create_dir_all(&p)
                .unwrap_or_else(|e| panic!("lab {tag}: cannot create {}: {e}", p.display()));
        }

        // Network: netns + veth pair, eth0 inside, the other end on the bridge.
        must(Command::new("ip").args(["netns", "add", &netns]));
        let meta = fs::metadata(format!("/run/netns/{netns}"))
            .unwrap_or_else(|e| panic!("lab {tag}: /run/netns/{netns} missing after ip netns add: {e}"));
        let netns_id = (meta.dev(), meta.ino());
        let cgroup = opts.cpus.map(|_| PathBuf::from(CGROUP_CPU).join(&netns));
        let host = Host {
            name: name.to_string(),
            ip: ip.clone(),
            inner: Arc::new(HostInner {
                netns: netns.clone(),
                netns_id,
                dir: dir.clone(),
                root: root.clone(),
                cgroup: cgroup.clone(),
                sshd: Mutex::new(None),
            }),
        };
        // Registered now, so that a panic below still gets it cleaned up by Drop.
        self.hosts.push(host.clone());
        must(
            Command::new("ip")
                .args(["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns]),
        );
        must(Command::new("ip").args(["link", "set", &veth, "master", &self.bridge, "up"]));
        must(Command::new("ip").args(["-n", &netns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]));
        must(Command::new("ip").args(["-n", &netns, "link", "set", "eth0", "up"]));
        must(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]));

        // CPU quota.
        if let (Some(cpus), Some(cg)) = (opts.cpus, &cgroup) {
            assert!(cpus > 0.0, "lab {tag}: host {name}: cpus must be > 0, got {cpus}");
            assert!(
                Path::new(CGROUP_CPU).join("cpu.cfs_quota_us").exists(),
                "lab {tag}: host {name}: a CPU quota needs cgroup v1 at {CGROUP_CPU}"
            );
            fs::create_dir_all(cg)
                .unwrap_or_else(|e| panic!("lab {tag}: cannot create cgroup {}: {e}", cg.display()));
            write(&cg.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string());
            write(&cg.join("cpu.cfs_quota_us"), &quota_us(cpus).to_string());
        }

        // Root filesystem: overlay of /, mounted in the machine's namespace (so root() works
        // from the test); the host's mount namespace gets a copy when it starts.
        // Root's home starts fresh (an opaque dir in the upper layer): the machine's /root has
        // shell start-up files (pyenv, cargo) that would slow down every ssh command.
        let lower = opts.lower.clone().unwrap_or_else(|| PathBuf::from("/"));
        assert!(
            lower.join("usr/sbin/sshd").exists(),
            "lab {tag}: host {name}: {} has no usr/sbin/sshd to run",
            lower.display()
        );
        let upper_root = dir.join("upper/root");
        fs::create_dir_all(&upper_root).expect("create upper/root");
        fs::set_permissions(&upper_root, fs::Permissions::from_mode(0o700)).expect("chmod upper/root");
        set_opaque(&upper_root);
        must(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.display(),
                    dir.join("upper").display(),
                    dir.join("work").display()
                ))
                .arg(&root),
        );
        write(&root.join("etc/hostname"), &format!("{name}\n"));
        for f in [".bashrc", ".profile"] {
            let skel = lower.join("etc/skel").join(f);
            if skel.exists() {
                fs::copy(&skel, root.join("root").join(f))
                    .unwrap_or_else(|e| panic!("lab {tag}: cannot copy {}: {e}", skel.display()));
            }
        }
        let ssh_dir = root.join("root/.ssh");
        fs::create_dir_all(&ssh_dir)
            .unwrap_or_else(|e| panic!("lab {tag}: cannot create {}: {e}", ssh_dir.display()));
        fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o700)).expect("chmod root/.ssh");
        let keys = ssh_dir.join("authorized_keys");
        write(&keys, &self.client_pubkey());
        fs::set_permissions(&keys, fs::Permissions::from_mode(0o600)).expect("chmod authorized_keys");
        // Fresh host keys. Only ed25519 and ecdsa: an RSA key takes 0.3-0.8 s to make.
        let etc_ssh = root.join("etc/ssh");
        for entry in fs::read_dir(&etc_ssh)
            .unwrap_or_else(|e| panic!("lab {tag}: cannot list {}: {e}", etc_ssh.display()))
        {
            let entry = entry.expect("read_dir etc/ssh");
            if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
                fs::remove_file(entry.path())
                    .unwrap_or_else(|e| panic!("lab {tag}: cannot remove {}: {e}", entry.path().display()));
            }
        }
        for t in ["ed25519", "ecdsa"] {
            must(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", t, "-N", "", "-C"])
                    .arg(format!("root@{name}"))
                    .arg("-f")
                    .arg(etc_ssh.join(format!("ssh_host_{t}_key"))),
            );
        }
        self.hosts_changed();

        host.start();
        host
    }

    /// Rewrites every host's /etc/hosts so that all hosts of the lab resolve each other.
    fn hosts_changed(&self) {
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        text += &format!("{}\tdlab-gateway\n", self.gateway_ip());
        for h in &self.hosts {
            text += &format!("{}\t{}\n", h.ip, h.name);
        }
        for h in &self.hosts {
            if h.root().join("etc").is_dir() {
                write(&h.root().join("etc/hosts"), &text);
            }
        }
    }

    /// `ssh` to `user@host` with the lab's client key, no host key checks, batch mode.
    /// Add the remote command with `.arg(...)`.
    pub fn ssh(&self, user: &str, host: &Host) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-i")
            .arg(&self.key)
            .args(SSH_OPTS)
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .arg(format!("{user}@{}", host.ip))
            .stdin(Stdio::null());
        c
    }

    /// `ssh` to `user@host` logging in with a password (through SSH_ASKPASS, no key).
    pub fn ssh_password(&self, user: &str, password: &str, host: &Host) -> Command {
        let askpass = self.dir.join("askpass");
        if !askpass.exists() {
            write(&askpass, "#!/bin/sh\nprintf '%s\\n' \"$DLAB_PASSWORD\"\n");
            fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700)).expect("chmod askpass");
        }
        let mut c = Command::new("ssh");
        c.args(SSH_OPTS)
            .args(super::PASSWORD_LOGIN)
            .arg(format!("{user}@{}", host.ip))
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DLAB_PASSWORD", password)
            .stdin(Stdio::null());
        c
    }
}

const SSH_OPTS: [&str; 8] = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=5",
];

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            h.stop();
        }
        for problem in cleanup(&self.tag) {
            eprintln!("lab {}: cleanup: {problem}", self.tag);
        }
    }
}

impl Host {
    fn start(&self) {
        let i = &self.inner;
        let root = i.root.display().to_string();
        // The cpu cgroup hierarchy, mounted in the host as in a container (`ip netns exec`
        // remounts /sys, which hides the machine's /sys/fs/cgroup).
        let cgroup = match cpu_cgroup_options() {
            Some(opts) => format!(
                "mount -t tmpfs -o mode=755 tmpfs $R/sys/fs/cgroup && mkdir $R/sys/fs/cgroup/cpu && \\
 mount -t cgroup -o {opts} cgroup $R/sys/fs/cgroup/cpu || true\n"
            ),
            None => String::new(),
        };
        // Hosts get their own /tmp; a checkout under /tmp keeps its binary
        // (only it: the test binaries hold test secrets) visible to them, as
        // tests run dffmpeg inside hosts by its path.
        let bin = Path::new(env!("CARGO_BIN_EXE_dffmpeg"));
        let bin_bind = match bin.parent() {
            Some(dir) if bin.starts_with("/tmp/") => format!(
                "mkdir -p $R{d} && touch $R{b} && mount --bind {b} $R{b}\n",
                d = q(&dir.display().to_string()),
                b = q(&bin.display().to_string())
            ),
            _ => String::new(),
        };
        let inner = format!(
            "set -e; R={r}
mount -t proc proc $R/proc
mount --rbind /dev $R/dev
mount -t sysfs sysfs $R/sys 2>/dev/null || true
{cgroup}mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
{bin_bind}mkdir -p $R/run/sshd $R/run/lock
hostname {name}
exec chroot $R /usr/sbin/sshd -D -E /var/log/sshd.log -o ListenAddress={ip} \
 -o HostKey=/etc/ssh/ssh_host_ed25519_key -o HostKey=/etc/ssh/ssh_host_ecdsa_key \
 -o PermitRootLogin=prohibit-password -o PasswordAuthentication=yes \
 -o MaxStartups=100 -o MaxSessions=100",
            r = q(&root),
            name = self.name,
            ip = self.ip,
        );
        let outer = format!(
            "{}exec ip netns exec {} unshare --mount --uts --propagation private sh -c {}",
            self.cgroup_enter(),
            q(&i.netns),
            q(&inner)
        );
        let log_path = i.dir.join("console.log");
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(outer)
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("host {}: cannot spawn sh: {e}", self.name));
        *i.sshd.lock().unwrap() = Some(child);

        let addr: SocketAddr = format!("{}:22", self.ip).parse().expect("host address");
        let start = Instant::now();
        loop {
            if let Some(status) = i.sshd.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("host {}: sshd exited ({status}) while starting\n{}", self.name, self.logs());
            }
            if banner(&addr) {
                return;
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "host {}: sshd did not answer on {addr} within {START_TIMEOUT:?}\n{}",
                    self.name,
                    self.logs()
                );
            }
            sleep(Duration::from_millis(5));
        }
    }

    /// The start-up output and sshd's log, for error messages.
    pub fn logs(&self) -> String {
        let console = fs::read_to_string(self.inner.dir.join("console.log")).unwrap_or_default();
        let sshd = fs::read_to_string(self.inner.root.join("var/log/sshd.log")).unwrap_or_default();
        format!("--- start-up output:\n{console}--- /var/log/sshd.log:\n{sshd}")
    }

    /// `echo $$ > cgroup.procs; ` when the host has a CPU quota.
    fn cgroup_enter(&self) -> String {
        match &self.inner.cgroup {
            Some(cg) => format!("echo $$ > {}; ", q(&cg.join("cgroup.procs").display().to_string())),
            None => String::new(),
        }
    }

    /// The sshd's pid, if it runs and really is this host's.
    fn sshd_pid(&self) -> Option<u32> {
        let mut guard = self.inner.sshd.lock().unwrap();
        let child = guard.as_mut()?;
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        let pid = child.id();
        (proc_netns(pid) == Some(self.inner.netns_id)).then_some(pid)
    }

    pub fn is_running(&self) -> bool {
        self.sshd_pid().is_some()
    }

    /// `sh -c script` inside the host (its mount, UTS and net namespaces, chrooted to its
    /// root, in its cgroup), as root with a clean environment and no stdin. If the host is
    /// down, a failed Output (exit 255) saying so. Like with ssh, this waits until stdout
    /// and stderr are closed: redirect what the script leaves running in the background
    /// (`cmd >/dev/null 2>&1 &`).
    pub fn exec(&self, script: &str) -> Output {
        let Some(pid) = self.sshd_pid() else {
            return Output {
                status: ExitStatus::from_raw(255 << 8),
                stdout: Vec::new(),
                stderr: format!("lab: host {} is not running\n", self.name).into_bytes(),
            };
        };
        let wrapper = format!(
            "{}exec nsenter -t {pid} -m -u -n chroot {} /bin/sh -c \"$1\"",
            self.cgroup_enter(),
            q(&self.inner.root.display().to_string())
        );
        Command::new("/bin/sh")
            .arg("-c")
            .arg(wrapper)
            .arg("sh")
            .arg(script)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("USER", "root")
            .env("LOGNAME", "root")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("host {}: cannot run sh: {e}", self.name))
    }

    /// Like [`Host::exec`] but panics (with the script, status, stderr and stdout) unless
    /// it succeeds; returns stdout.
    pub fn exec_ok(&self, script: &str) -> String {
        let out = self.exec(script);
        if !out.status.success() {
            panic!(
                "host {}: `{script}` failed ({})\n--- stderr:\n{}--- stdout:\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host's root (its overlay) as seen from this machine. Note: mounts made inside
    /// the host (tmpfs /tmp and /run, [`Host::share`]) are not seen here.
    pub fn root(&self) -> PathBuf {
        self.inner.root.clone()
    }

    /// The host's cgroup dir when it has a CPU quota.
    pub fn cgroup(&self) -> Option<PathBuf> {
        self.inner.cgroup.clone()
    }

    /// The network namespace's name (`ip netns exec NAME ...`).
    pub fn netns(&self) -> &str {
        &self.inner.netns
    }

    /// Kills its sshd and every process in the host (a node dying). Its files stay
    /// (root() still works); [`Host::restart`] brings it back.
    pub fn kill(&self) {
        let problems = self.stop();
        assert!(problems.is_empty(), "host {}: kill: {}", self.name, problems.join("; "));
    }

    /// Kills what runs in the host and reaps the sshd. Never panics: returns problems.
    fn stop(&self) -> Vec<String> {
        let id = self.inner.netns_id;
        let root = self.inner.root.clone();
        let problems =
            kill_matching(|p| p.netns == Some(id) || p.root.as_deref().is_some_and(|r| r.starts_with(&root)));
        if let Ok(mut guard) = self.inner.sshd.lock() {
            if let Some(mut child) = guard.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        problems
    }

    /// Kills the host if it runs, then starts it again (same address, files and host keys).
    pub fn restart(&self) {
        self.kill();
        self.start();
    }

    /// Binds the machine directory `host_dir` (created if missing) at `path_in_host` inside
    /// the host (an NFS stand-in). Share the same machine directory into several hosts to
    /// give them common storage; `host_dir` must not be inside a lab host's root().
    pub fn share(&self, host_dir: &Path, path_in_host: &str) {
        assert!(path_in_host.starts_with('/'), "host {}: share: {path_in_host:?} is not absolute", self.name);
        fs::create_dir_all(host_dir).unwrap_or_else(|e| {
            panic!("host {}: share: cannot create {}: {e}", self.name, host_dir.display())
        });
        let src = host_dir.canonicalize().expect("canonicalize share dir");
        assert!(
            !src.starts_with("/var/tmp") || !src.to_string_lossy().contains("/dlab-"),
            "host {}: share: {} is inside a lab dir; share a plain machine directory instead",
            self.name,
            src.display()
        );
        // Resolve the path inside the host (its symlinks are relative to its root).
        let real = self.exec_ok(&format!("mkdir -p {p} && realpath {p}", p = q(path_in_host)));
        let target = format!("{}{}", self.inner.root.display(), real.trim());
        let pid = self.sshd_pid().unwrap_or_else(|| panic!("host {}: share: host is not running", self.name));
        must(
            Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-m", "mount", "--bind"])
                .arg(&src)
                .arg(&target),
        );
    }

    /// A normal user with that password (ssh password login works), a home and a shell,
    /// in group sudo with passwordless sudo; no SSH key.
    pub fn add_user(&self, user: &str, password: &str) {
        assert!(
            !user.is_empty()
                && user
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
            "host {}: add_user: bad user name {user:?}",
            self.name
        );
        self.exec_ok(&format!(
            "useradd -m -s /bin/bash -G sudo {u}
printf '%s:%s\\n' {u} {p} | chpasswd
printf '%s ALL=(ALL) NOPASSWD: ALL\\n' {u} > /etc/sudoers.d/010_{u}-nopasswd
chmod 440 /etc/sudoers.d/010_{u}-nopasswd",
            u = user,
            p = q(password)
        ));
    }

    /// Pids of this host's processes whose command line (args joined by spaces) contains
    /// `pattern`.
    pub fn pids_matching(&self, pattern: &str) -> Vec<u32> {
        let id = self.inner.netns_id;
        let root = self.inner.root.clone();
        procs()
            .into_iter()
            .filter(|p| p.netns == Some(id) || p.root.as_deref().is_some_and(|r| r.starts_with(&root)))
            .filter(|p| cmdline(p.pid).is_some_and(|c| c.contains(pattern)))
            .map(|p| p.pid)
            .collect()
    }

    /// Stops every process of the host with SIGSTOP (those [`Host::kill`] would kill): a
    /// node that hangs with its TCP connections still open (the kernel answers, nothing
    /// else does). Returns once all of them are stopped. [`Host::thaw`] undoes it.
    pub fn freeze(&self) {
        let (id, root) = (self.inner.netns_id, self.inner.root.clone());
        let start = Instant::now();
        loop {
            let running: Vec<u32> = procs()
                .into_iter()
                .filter(|p| p.netns == Some(id) || p.root.as_deref().is_some_and(|r| r.starts_with(&root)))
                .map(|p| p.pid)
                .filter(|pid| proc_state(*pid).is_some_and(|s| s != 'T' && s != 'Z'))
                .collect();
            if running.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "host {}: cannot freeze {running:?}",
                self.name
            );
            for pid in running {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGSTOP);
                }
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Lets every process of the host run again (SIGCONT) after [`Host::freeze`].
    pub fn thaw(&self) {
        let (id, root) = (self.inner.netns_id, self.inner.root.clone());
        for p in procs() {
            if p.netns == Some(id) || p.root.as_deref().is_some_and(|r| r.starts_with(&root)) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(p.pid as libc::pid_t, libc::SIGCONT);
                }
            }
        }
    }
}

/// The state letter of /proc/PID/stat (R, S, D, T, Z ...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Reads the SSH banner from addr: true once sshd serves.
fn banner(addr: &SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

/// Marks an overlay upper dir opaque: the lower layers' entries are hidden.
fn set_opaque(dir: &Path) {
    let path = CString::new(dir.as_os_str().as_encoded_bytes()).expect("path without NUL");
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid NUL-terminated strings and a 1-byte value buffer.
    let rc = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    assert_eq!(
        rc,
        0,
        "lab: setxattr trusted.overlay.opaque on {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
}

/// The controllers of the machine's cgroup v1 hierarchy at [`CGROUP_CPU`] (`cpu` or
/// `cpu,cpuacct`), from /proc/self/mountinfo.
fn cpu_cgroup_options() -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (left.split(' ').nth(4)? == CGROUP_CPU).then_some(())?;
        let mut f = right.split(' ');
        (f.next()? == "cgroup").then_some(())?;
        let opts: Vec<&str> =
            f.nth(1)?.split(',').filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('=')).collect();
        Some(opts.join(","))
    })
}

fn quota_us(cpus: f64) -> u64 {
    ((cpus * CFS_PERIOD_US as f64).round() as u64).max(1000)
}

pub fn lab_dir(tag: &str) -> PathBuf {
    PathBuf::from(format!("/var/tmp/dlab-{tag}"))
}

/// Single-quotes for sh.
pub fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("lab: cannot write {}: {e}", path.display()));
}

/// Runs a machine command; panics with its stderr unless it succeeds; returns stdout.
pub fn must(cmd: &mut Command) -> String {
    let desc = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("lab: cannot run {desc}: {e}"));
    if !out.status.success() {
        panic!(
            "lab: {desc} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a machine command for cleanup: never panics, returns a problem if it failed.
fn quiet(prog: &str, args: &[&str]) -> Option<String> {
    match Command::new(prog).args(args).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => {
            Some(format!("{prog} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
        Err(e) => Some(format!("{prog}: {e}")),
    }
}

struct Proc {
    pid: u32,
    netns: Option<(u64, u64)>,
    root: Option<PathBuf>,
}

fn proc_netns(pid: u32) -> Option<(u64, u64)> {
    fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| (m.dev(), m.ino()))
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let s = String::from_utf8_lossy(&raw);
    Some(s.trim_end_matches('\0').replace('\0', " "))
}

/// Every process but this one, with its network namespace and root (None for zombies).
fn procs() -> Vec<Proc> {
    let me = std::process::id();
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .map(|pid| Proc {
            pid,
            netns: proc_netns(pid),
            root: fs::read_link(format!("/proc/{pid}/root")).ok(),
        })
        .collect()
}

/// SIGKILLs every process matching `pred` until none is left (up to 5 s).
fn kill_matching(pred: impl Fn(&Proc) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let pids: Vec<u32> = procs().into_iter().filter(|p| pred(p)).map(|p| p.pid).collect();
        if pids.is_empty() {
            return Vec::new();
        }
        if start.elapsed() > Duration::from_secs(5) {
            return vec![format!("processes still alive after SIGKILL: {pids:?}")];
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        sleep(Duration::from_millis(10));
    }
}

/// Mount points of this mount namespace under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v.dedup();
    v
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn umount_lazy(p: &Path) -> Option<String> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: c is a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    (rc != 0).then(|| format!("umount -l {}: {}", p.display(), std::io::Error::last_os_error()))
}

fn list_dir(dir: &str) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Removes everything a lab with this tag may have made: processes, mounts, netns, links,
/// cgroups, its dir. Never panics; returns what went wrong.
pub fn cleanup(tag: &str) -> Vec<String> {
    let dir = lab_dir(tag);
    let prefix = format!("dl-{tag}-");
    let mut problems = Vec::new();

    let netns: Vec<String> = list_dir("/run/netns").into_iter().filter(|n| n.starts_with(&prefix)).collect();
    let ids: Vec<(u64, u64)> = netns
        .iter()
        .filter_map(|n| fs::metadata(format!("/run/netns/{n}")).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    problems.extend(kill_matching(|p| {
        p.netns.is_some_and(|id| ids.contains(&id)) || p.root.as_deref().is_some_and(|r| r.starts_with(&dir))
    }));

    // Mounts, several times in case of stacked ones.
    for _ in 0..5 {
        let m = mounts_under(&dir);
        if m.is_empty() {
            break;
        }
        for p in m {
            problems.extend(umount_lazy(&p));
        }
    }
    problems.extend(mounts_under(&dir).iter().map(|p| format!("still mounted: {}", p.display())));

    for n in &netns {
        problems.extend(quiet("ip", &["netns", "del", n]));
    }
    let bridge = format!("dl-{tag}");
    for l in list_dir("/sys/class/net") {
        if l.starts_with(&prefix) {
            // Usually gone with its netns already.
            if Path::new("/sys/class/net").join(&l).exists() {
                let _ = quiet("ip", &["link", "del", &l]);
            }
        }
    }
    if Path::new("/sys/class/net").join(&bridge).exists() {
        problems.extend(quiet("ip", &["link", "del", &bridge]));
    }
    for cg in list_dir(CGROUP_CPU).into_iter().filter(|n| n.starts_with(&prefix)) {
        let p = Path::new(CGROUP_CPU).join(&cg);
        let mut last = None;
        for _ in 0..100 {
            match fs::remove_dir(&p) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            sleep(Duration::from_millis(10));
        }
        if let Some(e) = last {
            problems.push(format!("rmdir {}: {e}", p.display()));
        }
    }
    if dir.exists() {
        if mounts_under(&dir).is_empty() {
            problems.extend(quiet("rm", &["-rf", "--one-file-system", &dir.display().to_string()]));
        } else {
            problems.push(format!("not removing {}: mounts remain", dir.display()));
        }
    }
    problems
}
