//! Stock machines for `dffmpeg setup`, on test hosts ([`super::lab`]): the
//! blog's Raspberry Pis (Raspbian bookworm) and an x86 box (Debian trixie),
//! each with a user `pi` whose password is `raspberry` (passwordless sudo,
//! no SSH key), no NFS packages, and apt sources that lead nowhere until
//! setup writes the cluster mirror's ([`super::aptmirror`]).
//!
//! NFS without kernel NFS (this kernel has neither client nor server):
//!
//! * The storage host's shared directory (`/srv/dffmpeg`) is a bind of one
//!   machine directory, [`PiCluster::shared`]; its `/var/lib/nfs` (where
//!   `exportfs` writes the export table, etab) is a bind of another,
//!   a machine directory (`nfs-state` in the lab's dir). `exportfs -ra` runs for real.
//! * Each other host binds both at `/mnt/nfs-backing` and
//!   `/mnt/nfs-server-state`, and gets a stand-in `/sbin/mount.nfs`
//!   ([`MOUNT_NFS_STANDIN`]; the real one is diverted first, so installing
//!   nfs-common does not put it back). Like an NFS server, the stand-in
//!   refuses a client that the storage host's etab does not list for that
//!   path and mounts read-only what is exported read-only; the mount itself is
//!   a bind of the backing directory. mount(8), /etc/fstab, umount and the
//!   data path (uids and gids compared by number, as with NFS) are real.

use super::aptmirror::{AptMirror, KEY_NAME};
use super::lab::{q, Host, HostOpts, Lab};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

pub const USER: &str = "pi";
pub const PASSWORD: &str = "raspberry";
pub const SHARED_DIR: &str = "/srv/dffmpeg";
/// Where a host's inventory lives (written through its root(), owned by pi).
pub const INVENTORY: &str = "/home/pi/cluster.yaml";
/// dffmpeg's known_hosts for pi on the controller (`DFFMPEG_KNOWN_HOSTS`).
pub const KNOWN_HOSTS: &str = "/home/pi/.config/dffmpeg-known_hosts";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    RaspbianBookworm,
    /// Debian 12, which 64-bit Raspberry Pi OS also calls itself.
    DebianBookworm,
    DebianTrixie,
}

/// A host's NFS packages before setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NfsPackages {
    /// Removed: setup installs them from the test mirror, which holds amd64
    /// packages only.
    Purged,
    /// Left installed, for hosts of another architecture (the ARM roots of
    /// `tests/arm/armroot.sh`): setup then finds them, and the inventory
    /// needs no apt_mirror.
    Kept,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Controller + compute + storage: dffmpeg runs here, as pi.
    Controller,
    /// Compute only: mounts the shared directory over (stand-in) NFS.
    Compute,
}

/// /etc/os-release of each OS (what the real ones say, trimmed).
fn os_release(os: Os) -> &'static str {
    match os {
        Os::RaspbianBookworm => {
            "PRETTY_NAME=\"Raspbian GNU/Linux 12 (bookworm)\"\nNAME=\"Raspbian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=raspbian\nID_LIKE=debian\nHOME_URL=\"http://www.raspbian.org/\"\n"
        }
        Os::DebianBookworm => {
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n"
        }
        Os::DebianTrixie => {
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\nVERSION=\"13 (trixie)\"\nVERSION_CODENAME=trixie\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n"
        }
    }
}

/// The test stand-in for mount.nfs: `mount.nfs SERVER:/srv/dffmpeg/SUB DIR
/// [-o OPTS]` binds /mnt/nfs-backing/SUB (the storage host's shared
/// directory) at DIR, if the server's export table allows this client.
pub const MOUNT_NFS_STANDIN: &str = r#"#!/bin/sh
# dffmpeg test stand-in for mount.nfs (the real one is diverted to
# mount.nfs.distrib): this kernel has no NFS client.
spec=$1; dir=$2; shift 2
opts=
while [ $# -gt 0 ]; do
  case $1 in -o) opts=$2; shift 2 ;; -o*) opts=${1#-o}; shift ;; *) shift ;; esac
done
log() { echo "$(date +%s.%N) $*" >> /var/log/mount.nfs-standin.log; }
log "mount.nfs $spec $dir -o $opts"
path=${spec#*:}
case $path in
  /srv/dffmpeg/*) sub=${path#/srv/dffmpeg/} ;;
  *) echo "mount.nfs: mounting $spec failed, reason given by server: No such file or directory" >&2; exit 32 ;;
esac
# This client's address, and its line in the server's export table.
me=$(ip -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]; exit}')
export=$(awk -v p="$path" -v c="$me(" '$1 == p && index($2, c) == 1 { print $2 }' /mnt/nfs-server-state/etab 2>/dev/null)
if [ -z "$export" ]; then
  log "refused: $path not exported to $me"
  echo "mount.nfs: access denied by server while mounting $spec" >&2
  exit 32
fi
[ -d "/mnt/nfs-backing/$sub" ] || { echo "mount.nfs: mounting $spec failed, reason given by server: No such file or directory" >&2; exit 32; }
ro=
case ",$opts," in *,ro,*) ro=1 ;; esac
case $export in *"(ro,"*) ro=1 ;; esac
# The flags the real mount.nfs gives the mount (MS_NOSUID, MS_NODEV).
flags=${ro:+,ro}
case ",$opts," in *,nosuid,*) flags=$flags,nosuid ;; esac
case ",$opts," in *,nodev,*) flags=$flags,nodev ;; esac
mount --bind "/mnt/nfs-backing/$sub" "$dir" || exit 32
if [ -n "$flags" ]; then
  mount -o "remount,bind$flags" "$dir" || { umount "$dir"; exit 32; }
fi
log "mounted $spec on $dir${ro:+ read-only}"
"#;

/// Prepares `host` as a stock machine of `spec.os` for the cluster: see the
/// module doc. `mirror_key`: the test mirror's public key (trusted the way a
/// real machine trusts its distribution's archive keys).
pub fn prepare(
    host: &Host,
    spec: &Spec,
    nfs: NfsPackages,
    mirror_key: &Path,
    shared: &Path,
    nfs_state: &Path,
) {
    let Spec { os, kind, uid_offset, .. } = *spec;
    let root = host.root();
    // The OS: its os-release (a real file, not Debian's symlink).
    let _ = fs::remove_file(root.join("etc/os-release"));
    fs::write(root.join("etc/os-release"), os_release(os)).unwrap();

    // The machine has the NFS packages: remove them from the host, so that
    // setup has to install them from the mirror. No init system runs in test
    // hosts; tell maintainer scripts not to start services, like in a
    // container image (policy-rc.d, exit 101).
    let policy =
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d";
    match nfs {
        NfsPackages::Purged => host.exec_ok(&format!(
            "{policy}\nDEBIAN_FRONTEND=noninteractive apt-get purge -y -q nfs-kernel-server nfs-common >/var/log/dffmpeg-test-purge.log 2>&1\n\
             ! dpkg -s nfs-common 2>/dev/null | grep -q 'ok installed'"
        )),
        NfsPackages::Kept => host.exec_ok(&format!(
            "{policy}\ndpkg -s nfs-common nfs-kernel-server 2>/dev/null | grep -c 'ok installed' | grep -qx 2"
        )),
    };

    // apt: the stock sources of each OS, which lead nowhere from a test host
    // (no route out), and no package lists. Setup replaces them with the
    // cluster mirror's. The mirror's signing key is trusted beforehand: a real
    // machine trusts its distribution's archive keys, and a real mirror
    // serves archives signed with them.
    let apt = root.join("etc/apt");
    let parts = apt.join("sources.list.d");
    for e in fs::read_dir(&parts).unwrap().flatten() {
        fs::remove_file(e.path()).unwrap();
    }
    let _ = fs::remove_file(apt.join("sources.list"));
    match os {
        Os::RaspbianBookworm => fs::write(
            apt.join("sources.list"),
            "deb http://raspbian.raspberrypi.com/raspbian/ bookworm main contrib non-free rpi\n",
        )
        .unwrap(),
        Os::DebianBookworm => fs::write(
            parts.join("debian.sources"),
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main non-free-firmware\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\nComponents: main non-free-firmware\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .unwrap(),
        // Debian 13 installs keep them in a deb822 file (setup sets it aside).
        Os::DebianTrixie => fs::write(
            parts.join("debian.sources"),
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie trixie-updates\nComponents: main non-free-firmware\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://security.debian.org/debian-security\nSuites: trixie-security\nComponents: main non-free-firmware\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .unwrap(),
    }
    fs::copy(mirror_key, apt.join("trusted.gpg.d").join(KEY_NAME)).unwrap();
    host.exec_ok("find /var/lib/apt/lists -maxdepth 1 -type f -name '*_dists_*' -delete");

    // The user of a stock Raspberry Pi: pi / raspberry, sudo without a
    // password, no SSH key. `uid_offset` other users first: the same name
    // with another uid, as on a box whose first user is its owner.
    for i in 0..uid_offset {
        host.exec_ok(&format!("useradd -M -s /usr/sbin/nologin owner{i}"));
    }
    host.add_user(USER, PASSWORD);

    match kind {
        Kind::Controller => {
            host.share(shared, SHARED_DIR);
            host.share(nfs_state, "/var/lib/nfs");
        }
        Kind::Compute => {
            host.exec_ok(&format!(
                "dpkg-divert --local --rename --add /sbin/mount.nfs >/dev/null\ncat > /sbin/mount.nfs <<'EOF'\n{MOUNT_NFS_STANDIN}EOF\nchmod 755 /sbin/mount.nfs"
            ));
            host.share(shared, "/mnt/nfs-backing");
            host.share(nfs_state, "/mnt/nfs-server-state");
        }
    }
}

/// A run of dffmpeg on the controller host.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub secs: f64,
}

impl Run {
    /// What a command started at `started` ended with.
    pub fn ended(out: &Output, started: Instant) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            secs: started.elapsed().as_secs_f64(),
        }
    }

    /// Asserts exit 0, one recap line per node (in order, nothing else) with
    /// no failure, and returns the changed counts.
    pub fn assert_clean(&self, nodes: &[&str]) -> Vec<u32> {
        assert_eq!(self.code, 0, "{self}");
        let recap = self.recap();
        let names: Vec<&str> = recap.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, nodes, "one recap line per node:\n{self}");
        for (n, v) in &recap {
            let line = format!("{n} : ok={} changed={} unreachable=0 failed=0 skipped={}", v[0], v[1], v[4]);
            assert!(self.stdout.lines().any(|l| l == line), "{line} in:\n{self}");
        }
        recap.iter().map(|(_, v)| v[1]).collect()
    }

    /// `NODE : ok=N changed=N unreachable=N failed=N skipped=N` lines, by node.
    pub fn recap(&self) -> Vec<(String, [u32; 5])> {
        let mut out = Vec::new();
        for l in self.stdout.lines() {
            let Some((node, rest)) = l.split_once(" : ") else { continue };
            let mut v = [0u32; 5];
            let mut ok = true;
            let keys = ["ok", "changed", "unreachable", "failed", "skipped"];
            let parts: Vec<&str> = rest.split_whitespace().collect();
            if parts.len() != 5 || node.contains(' ') {
                continue;
            }
            for (i, (p, k)) in parts.iter().zip(keys).enumerate() {
                match p.strip_prefix(k).and_then(|r| r.strip_prefix('=')).and_then(|n| n.parse().ok()) {
                    Some(n) => v[i] = n,
                    None => ok = false,
                }
            }
            if ok {
                out.push((node.to_string(), v));
            }
        }
        out
    }

    /// The recap counts of `node`.
    pub fn counts(&self, node: &str) -> [u32; 5] {
        self.recap()
            .into_iter()
            .find(|(n, _)| n == node)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no recap line for {node}:\n{self}"))
    }

    pub fn changed(&self, node: &str) -> u32 {
        self.counts(node)[1]
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} in {:.2} s\n--- stdout:\n{}--- stderr:\n{}",
            self.code, self.secs, self.stdout, self.stderr
        )
    }
}

/// A cluster of test hosts and the apt mirror, dffmpeg running as pi on the
/// first host (the controller).
pub struct PiCluster {
    pub lab: Lab,
    pub mirror: AptMirror,
    /// Machine directory behind the storage host's shared directory.
    pub shared: PathBuf,
    /// Print every dffmpeg run on stderr (default; the bench turns it off).
    pub log_runs: bool,
    /// The dffmpeg binary run on the controller, a path inside it (default:
    /// this build's, visible in x86 hosts through their overlay of `/`).
    pub bin: String,
    /// Dropped after the lab (fields drop in order): the hosts first.
    _dir: RemoveDir,
}

/// One host of a [`PiCluster`].
#[derive(Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub os: Os,
    pub kind: Kind,
    /// Users made before pi (a different uid for pi).
    pub uid_offset: u32,
}

impl PiCluster {
    /// Starts the hosts (the first one is the controller) and prepares them
    /// in parallel; serves the mirror on the lab's gateway address.
    pub fn new(tag: &str, net: u8, specs: &[Spec]) -> PiCluster {
        let opts = vec![HostOpts::default(); specs.len()];
        Self::with_opts(tag, net, specs, &opts, NfsPackages::Purged)
    }

    /// [`PiCluster::new`] with each host's [`HostOpts`] (a CPU quota, an ARM
    /// root) and what becomes of the NFS packages.
    pub fn with_opts(tag: &str, net: u8, specs: &[Spec], opts: &[HostOpts], nfs: NfsPackages) -> PiCluster {
        assert_eq!(specs.len(), opts.len(), "one HostOpts per host");
        let t = Instant::now();
        let mut lab = Lab::new(tag, net);
        let dir = PathBuf::from(format!("/var/tmp/dffmpeg-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let shared = dir.join("shared");
        let nfs_state = dir.join("nfs-state");
        for d in [&shared, &nfs_state] {
            fs::create_dir_all(d).unwrap();
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let mirror = AptMirror::serve(&lab.gateway_ip(), 8080);
        let hosts: Vec<(Host, &Spec)> =
            specs.iter().zip(opts).map(|(s, o)| (lab.add_host(s.name, o.clone()), s)).collect();
        std::thread::scope(|scope| {
            for (h, s) in &hosts {
                let (key, shared, nfs_state) = (&mirror.key, &shared, &nfs_state);
                scope.spawn(move || prepare(h, s, nfs, key, shared, nfs_state));
            }
        });
        eprintln!("pi cluster {tag}: {} hosts ready in {:.1} s", specs.len(), t.elapsed().as_secs_f64());
        PiCluster {
            lab,
            mirror,
            shared,
            log_runs: true,
            bin: env!("CARGO_BIN_EXE_dffmpeg").to_string(),
            _dir: RemoveDir(dir),
        }
    }

    pub fn host(&self, name: &str) -> &Host {
        self.lab.host(name)
    }

    /// The controller (the first host).
    pub fn controller(&self) -> &Host {
        &self.lab.hosts()[0]
    }

    /// The blog's cluster as an inventory (storage nfs, the test mirror, pi
    /// becoming root): the controller (the first host) is `host: local`,
    /// controller + compute + storage; every other node a compute node, at
    /// its host's address unless its `more` keys (`host: X, ...`) say.
    pub fn inventory(&self, nodes: &[(&str, &str)]) -> String {
        let mut y = format!(
            "# The blog's cluster.\ncluster:\n  shared_dir: {SHARED_DIR}\n  storage: nfs\n  apt_mirror: {}\n\
             defaults: {{ user: pi, become: true }}\nnodes:\n",
            self.mirror.url
        );
        let controller = &self.controller().name;
        for (name, more) in nodes {
            let sep = if more.is_empty() { "" } else { ", " };
            let line = match (name == controller, more.contains("host:")) {
                (true, _) => format!("host: local, roles: [controller, compute, storage]{sep}{more}"),
                (false, true) => format!("roles: [compute]{sep}{more}"),
                (false, false) => format!("host: {}, roles: [compute]{sep}{more}", self.host(name).ip),
            };
            y.push_str(&format!("  {name}: {{ {line} }}\n"));
        }
        y
    }

    /// Writes the controller's inventory ([`INVENTORY`], owned by pi).
    pub fn write_inventory(&self, yaml: &str) {
        let c = self.controller();
        let p = c.root().join(INVENTORY.trim_start_matches('/'));
        fs::write(&p, yaml).unwrap();
        c.exec_ok(&format!("chown {USER}: {}", q(INVENTORY)));
    }

    /// Runs `dffmpeg ARGS` as pi on the controller, in a login shell (`su -
    /// pi`), with `stdin` (e.g. the password) on its standard input.
    pub fn dffmpeg(&self, args: &str, stdin: Option<&str>) -> Run {
        let bin = &self.bin;
        let feed = match stdin {
            Some(s) => format!("printf '%s\\n' {} | ", q(s)),
            None => String::new(),
        };
        let cmd = format!("{feed}DFFMPEG_KNOWN_HOSTS={KNOWN_HOSTS} {} {args}", q(bin));
        let t = Instant::now();
        let out: Output = self.controller().exec(&format!("su - {USER} -c {}", q(&cmd)));
        let run = Run::ended(&out, t);
        // Shown with the test's output (on failure, or with --nocapture).
        if self.log_runs {
            eprintln!("=== dffmpeg {args}\n{run}");
        }
        run
    }

    /// `dffmpeg setup INVENTORY EXTRA`.
    pub fn setup(&self, extra: &str) -> Run {
        self.dffmpeg(&format!("setup {INVENTORY} {extra}"), None)
    }

    /// `dffmpeg setup INVENTORY --ask-pass EXTRA`, the password on stdin.
    pub fn setup_ask_pass(&self, extra: &str) -> Run {
        self.dffmpeg(&format!("setup {INVENTORY} --ask-pass {extra}"), Some(PASSWORD))
    }

    /// A file of a host, read inside it (mounts and binds included).
    pub fn cat(&self, host: &str, path: &str) -> String {
        self.host(host).exec_ok(&format!("cat {}", q(path)))
    }

    /// Runs `script` as pi on `host` (login shell).
    pub fn as_pi(&self, host: &str, script: &str) -> Output {
        self.host(host).exec(&format!("su - {USER} -c {}", q(script)))
    }
}

/// Removes a directory on drop.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One client of one path in `exportfs -v`.
pub struct Export {
    pub path: String,
    pub client: String,
    pub opts: Vec<String>,
}

impl Export {
    /// `rw` or `ro`.
    pub fn mode(&self) -> &str {
        if self.opts.iter().any(|o| o == "rw") {
            "rw"
        } else {
            "ro"
        }
    }
}

/// The entries of `exportfs -v`: `PATH CLIENT(OPTS)`, or PATH alone and the
/// client on the next line.
pub fn exportfs_entries(v: &str) -> Vec<Export> {
    let mut seen = Vec::new();
    let mut path = String::new();
    for l in v.lines() {
        let mut words = l.split_whitespace();
        if !l.starts_with(char::is_whitespace) {
            path = words.next().unwrap_or("").to_string();
        }
        for client in words {
            let (who, opts) = client.trim_end_matches(')').split_once('(').expect("CLIENT(OPTS)");
            let opts = opts.split(',').map(String::from).collect();
            seen.push(Export { path: path.clone(), client: who.to_string(), opts });
        }
    }
    seen
}
