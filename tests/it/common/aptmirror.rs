//! A small signed apt mirror for test hosts, laid out like the public ones and holding the
//! NFS packages (libnfsidmap1 rpcbind keyutils nfs-common nfs-kernel-server) plus whatever
//! of their dependencies this machine lacks.
//!
//! Layout under [`AptMirror::url`] (all the same archive, signed with a test GPG key):
//! `debian/`, `debian-security/`, `ubuntu/`, `raspbian/raspbian/`, each with `dists/S` for
//! S in bookworm, trixie, jammy, noble and their -updates, -security and -backports; the
//! packages are in `main/binary-amd64` (other components and arm64/armhf/i386 are empty).
//!
//! Needs (Debian packages): dpkg-dev, apt-utils, gnupg, python3; and apt lists for the
//! machine's own sources (the build runs `apt-get update` if `apt-get download` fails).

use super::lab::{must, q, Host};
use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Where the mirror is built once and kept between test runs.
pub const MIRROR_DIR: &str = "/var/tmp/dffmpeg-aptmirror";
/// Name of the key file to put in /etc/apt/trusted.gpg.d/.
pub const KEY_NAME: &str = "dffmpeg-test-mirror.gpg";

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// A served mirror; the HTTP server stops on drop.
pub struct AptMirror {
    /// `http://IP:PORT`: add `/debian`, `/debian-security`, `/ubuntu` or `/raspbian/raspbian`.
    pub url: String,
    /// Public key (binary keyring) to put in a host's /etc/apt/trusted.gpg.d/.
    pub key: PathBuf,
    child: Child,
    log: tempfile::NamedTempFile,
}

const BUILD_SCRIPT: &str = r#"
set -euo pipefail
OUT=$1
PKGS="libnfsidmap1 rpcbind keyutils nfs-common nfs-kernel-server"
mkdir -p "$OUT/www/archive/pool" "$OUT/gnupg"
chmod 700 "$OUT/gnupg"
download() {
  # The named packages, plus whatever of their dependencies this machine lacks.
  local missing
  missing=$(apt-get -s install $PKGS | awk '/^Inst /{print $2}')
  (cd "$OUT/www/archive/pool" && apt-get download -q -o APT::Sandbox::User=root $PKGS $missing)
}
if ! download >"$OUT/download.log" 2>&1; then
  apt-get update -q >>"$OUT/download.log" 2>&1 || true
  download >>"$OUT/download.log" 2>&1 || { cat "$OUT/download.log" >&2; exit 1; }
fi

export GNUPGHOME=$OUT/gnupg
gpg --batch --quiet --passphrase '' --quick-gen-key "dffmpeg test mirror <mirror@test.invalid>" ed25519 sign never
gpg --batch --export > "$OUT/mirror.gpg"

A=$OUT/www/archive
(cd "$A" && dpkg-scanpackages -m pool /dev/null 2>/dev/null) > "$OUT/Packages"
grep -q '^Package: nfs-common$' "$OUT/Packages" || { echo "nfs-common missing from the mirror" >&2; exit 1; }
COMPS="main contrib non-free non-free-firmware rpi restricted universe multiverse"
ARCHS="amd64 arm64 armhf i386"
for base in bookworm trixie jammy noble; do
  for suite in $base $base-updates $base-security $base-backports; do
    d=$A/dists/$suite
    for comp in $COMPS; do
      for arch in $ARCHS; do
        mkdir -p "$d/$comp/binary-$arch"
        if [ "$comp" = main ] && [ "$arch" = amd64 ]; then
          cp "$OUT/Packages" "$d/$comp/binary-$arch/Packages"
        else
          : > "$d/$comp/binary-$arch/Packages"
        fi
        gzip -9nkf "$d/$comp/binary-$arch/Packages"
      done
    done
    apt-ftparchive \
      -o APT::FTPArchive::Release::Origin="dffmpeg-test" \
      -o APT::FTPArchive::Release::Label="dffmpeg-test" \
      -o APT::FTPArchive::Release::Suite="$suite" \
      -o APT::FTPArchive::Release::Codename="$base" \
      -o APT::FTPArchive::Release::Architectures="$ARCHS" \
      -o APT::FTPArchive::Release::Components="$COMPS" \
      release "$d" > "$OUT/Release"
    mv "$OUT/Release" "$d/Release"
    gpg --batch --yes --clearsign -o "$d/InRelease" "$d/Release"
    gpg --batch --yes -abs -o "$d/Release.gpg" "$d/Release"
  done
done
gpgconf --kill gpg-agent || true
rm -rf "$OUT/gnupg" "$OUT/Packages"
cd "$OUT/www"
ln -s archive debian
ln -s archive debian-security
ln -s archive ubuntu
mkdir raspbian
ln -s ../archive raspbian/raspbian
touch "$OUT/.done"
"#;

impl AptMirror {
    /// Builds the mirror once (kept in /var/tmp/dffmpeg-aptmirror; safe to call from
    /// parallel tests and processes) and returns its dir: `www/` is what is served,
    /// `mirror.gpg` the public key.
    pub fn build() -> PathBuf {
        let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = PathBuf::from(MIRROR_DIR);
        if dir.join(".done").exists() {
            return dir;
        }
        // Between processes too.
        let lock_path = format!("{MIRROR_DIR}.lock");
        let lock = fs::File::create(&lock_path)
            .unwrap_or_else(|e| panic!("apt mirror: cannot create {lock_path}: {e}"));
        // SAFETY: flock on an open fd; released when `lock` is closed.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "apt mirror: flock {lock_path}: {}", std::io::Error::last_os_error());
        if dir.join(".done").exists() {
            return dir;
        }
        let tmp = PathBuf::from(format!("{MIRROR_DIR}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)
            .unwrap_or_else(|e| panic!("apt mirror: cannot create {}: {e}", tmp.display()));
        let t = Instant::now();
        let out = Command::new("bash")
            .arg("-c")
            .arg(BUILD_SCRIPT)
            .arg("build-apt-mirror")
            .arg(&tmp)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("apt mirror: cannot run bash: {e}"));
        if !out.status.success() {
            let _ = fs::remove_dir_all(&tmp);
            panic!(
                "apt mirror: building it failed ({}); needs dpkg-dev, apt-utils, gnupg and a working apt:\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let _ = fs::remove_dir_all(&dir); // an incomplete one
        fs::rename(&tmp, &dir).unwrap_or_else(|e| {
            panic!("apt mirror: cannot rename {} to {}: {e}", tmp.display(), dir.display())
        });
        eprintln!("apt mirror: built {} in {:?}", dir.display(), t.elapsed());
        dir
    }

    /// Serves the mirror (building it first if needed) over HTTP on ip:port; returns once
    /// it accepts connections. `ip` is normally the lab's gateway address.
    pub fn serve(ip: &str, port: u16) -> AptMirror {
        let dir = Self::build();
        let log = tempfile::NamedTempFile::new().expect("apt mirror: temp log file");
        let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
        let port_s = port.to_string();
        let args = ["-m", "http.server", "--bind", ip, &port_s, "--directory"];
        let www = dir.join("www");
        // A server of a test that was killed would still hold the address.
        kill_leftover_servers(&format!("{} {}", args.join(" "), www.display()));
        let mut child = Command::new(python)
            .args(args)
            .arg(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("apt mirror: reopen log"))
            .spawn()
            .unwrap_or_else(|e| panic!("apt mirror: cannot run {python} -m http.server: {e}"));
        let addr: SocketAddr = format!("{ip}:{port}")
            .parse()
            .unwrap_or_else(|e| panic!("apt mirror: bad address {ip}:{port}: {e}"));
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut text = String::new();
                let _ = log.reopen().and_then(|mut f| f.read_to_string(&mut text));
                panic!("apt mirror: http server on {addr} exited ({status}):\n{text}");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("apt mirror: http server did not listen on {addr} within 10 s");
            }
            sleep(Duration::from_millis(20));
        }
        AptMirror { url: format!("http://{ip}:{port}"), key: dir.join("mirror.gpg"), child, log }
    }

    /// What the HTTP server logged (one line per request).
    pub fn requests(&self) -> String {
        let mut text = String::new();
        let _ = self.log.reopen().and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    /// Makes `host` use only this mirror: trusts the key and replaces its apt sources with
    /// `deb URL/debian CODENAME main` (CODENAME from the host's /etc/os-release).
    pub fn use_on(&self, host: &Host) {
        let root = host.root();
        let codename = fs::read_to_string(root.join("etc/os-release"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_else(|| "bookworm".to_string());
        let trusted = root.join("etc/apt/trusted.gpg.d");
        fs::create_dir_all(&trusted).expect("create trusted.gpg.d");
        fs::copy(&self.key, trusted.join(KEY_NAME))
            .unwrap_or_else(|e| panic!("apt mirror: cannot copy key into {}: {e}", host.name));
        let _ = fs::remove_file(root.join("etc/apt/sources.list"));
        let parts = root.join("etc/apt/sources.list.d");
        if let Ok(rd) = fs::read_dir(&parts) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        fs::create_dir_all(&parts).expect("create sources.list.d");
        fs::write(
            parts.join("dffmpeg-test-mirror.list"),
            format!("deb {}/debian {codename} main\n", self.url),
        )
        .expect("write sources");
        // Lists of the machine's sources would only make apt look for them.
        let _ = must(Command::new("sh").arg("-c").arg(format!(
            "find {} -maxdepth 1 -type f -name '*_dists_*' -delete",
            q(&root.join("var/lib/apt/lists").display().to_string())
        )));
    }
}

/// Kills earlier mirror servers (of killed tests) whose command line ends with `ours`.
fn kill_leftover_servers(ours: &str) {
    let Ok(rd) = fs::read_dir("/proc") else {
        return;
    };
    for pid in rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).trim_end_matches('\0').replace('\0', " ");
        if cmd.contains("python") && cmd.ends_with(ours) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for AptMirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
