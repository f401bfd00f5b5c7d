//! A node's facts: what it is and has — architecture, OS, cores and CPU
//! quota, ffmpeg and its encoders, free disk, the login user and init.
//! The one reader of a node, used by `dffmpeg facts`, `setup` and
//! `transcode`.
//!
//! Gathered in one round trip: a fixed shell script, [`SCRIPT`]
//! (`facts.sh`), prints `@@dffmpeg-facts NAME` sections (its only variable
//! part, the directory whose free space is measured, is passed as `$1`,
//! quoted by [`crate::quote::join`] in the transport), and [`parse`], a
//! pure function, reads them back. `setup` runs the same script as the
//! first part of its state probe.

pub mod command;
pub mod os_release;

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::remote::{self, Transport};
pub use command::run;
use os_release::OsRelease;

/// What a node is and has.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    /// `uname -m`: x86_64, aarch64, armv7l ...
    pub arch: String,
    /// `dpkg --print-architecture`: amd64, arm64, armhf ... (None without dpkg)
    pub dpkg_arch: Option<String>,
    /// os-release `ID`: debian, raspbian, ubuntu ...
    pub os_id: Option<String>,
    /// os-release codename: bookworm ... (see [`OsRelease::codename`])
    pub os_codename: Option<String>,
    /// os-release `VERSION_ID`: 12 ...
    pub os_version_id: Option<String>,
    /// os-release `PRETTY_NAME`
    pub os_pretty_name: Option<String>,
    /// `nproc`
    pub cores: u32,
    /// CPUs the node's cgroup allows (cgroup v2 `cpu.max`, v1
    /// `cpu.cfs_quota_us`, the tightest along the path), None when unlimited
    /// or not visible (a real Pi shows none: only measuring tells its speed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<f64>,
    /// Memory in MiB (`MemTotal` of /proc/meminfo), None when unreadable
    /// (Slurm's `RealMemory` of the node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_mb: Option<u64>,
    /// ffmpeg's version word (`5.1.6-0+deb12u1`), None when ffmpeg is missing.
    pub ffmpeg_version: Option<String>,
    /// Encoder names from `ffmpeg -encoders`.
    pub encoders: Vec<String>,
    /// Free space, in MiB, where `free_disk_path` lives.
    pub free_disk_mb: Option<u64>,
    /// The directory measured: the shared dir if it exists, else $HOME.
    pub free_disk_path: Option<String>,
    /// The login user (the one sudo was run by, when setup becomes root).
    pub user: String,
    /// That user's home directory.
    pub home: String,
    /// `uname -n`
    pub hostname: String,
    /// Whether systemd is the running init (`/run/systemd/system`).
    pub systemd: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FactsError {
    #[error("the facts script output is incomplete")]
    Incomplete,
    #[error("no `uname -m` output")]
    NoArch,
}

/// Why a node's facts could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("unreachable: node {node}: {detail}")]
    Unreachable { node: String, detail: String },
    #[error("node {node}: cannot run the facts script: {cause}")]
    Run { node: String, cause: std::io::Error },
    #[error("node {node}: cannot read facts ({cause}; exit {status}){stderr}")]
    Unreadable { node: String, cause: FactsError, status: std::process::ExitStatus, stderr: String },
}

impl Facts {
    pub fn has_encoder(&self, name: &str) -> bool {
        self.encoders.iter().any(|e| e == name)
    }

    /// Cores the node can keep busy: `nproc`, capped by the CPU quota
    /// (rounded up: a 0.5-CPU container still runs one encoder).
    pub fn usable_cores(&self) -> u32 {
        let cores = self.cores.max(1);
        match self.cpu_quota {
            Some(q) => cores.min(q.ceil().max(1.0) as u32),
            None => cores,
        }
    }

    /// CPUs of compute the node offers as far as it can tell: the quota,
    /// or its cores.
    pub fn capacity(&self) -> f64 {
        let cores = self.cores.max(1) as f64;
        self.cpu_quota.map_or(cores, |q| q.min(cores))
    }

    /// `debian/bookworm`, `raspbian/stretch`, `debian` ...
    pub fn os(&self) -> Option<String> {
        match (&self.os_id, &self.os_codename) {
            (Some(id), Some(c)) => Some(format!("{id}/{c}")),
            (Some(id), None) => Some(id.clone()),
            (None, _) => None,
        }
    }
}

/// The facts script.
pub const SCRIPT: &str = include_str!("facts.sh");

const MARK: &str = "@@dffmpeg-facts ";

/// The argv that gathers facts, measuring free space in `dir` (if it
/// exists on the node, else the login's home).
pub fn script_argv(dir: Option<&Path>) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        SCRIPT.into(),
        "dffmpeg-facts".into(),
        dir.map(|d| d.display().to_string()).unwrap_or_default(),
    ]
}

/// How long a node may take to answer the facts script (a first `ffmpeg
/// -encoders` on a Pi takes seconds).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Gather a node's facts, measuring free space in `dir` if it exists there.
pub async fn gather<T: Transport + ?Sized>(node: &T, dir: Option<&Path>) -> Result<Facts, GatherError> {
    let name = || node.name().to_string();
    let argv = script_argv(dir);
    let out = match tokio::time::timeout(TIMEOUT, remote::run(node, &argv)).await {
        Ok(Ok(out)) => out,
        Ok(Err(cause)) => return Err(GatherError::Run { node: name(), cause }),
        Err(_) => {
            let detail = format!("no answer within {} s", TIMEOUT.as_secs());
            return Err(GatherError::Unreachable { node: name(), detail });
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).map_err(|cause| {
        let stderr = out.stderr.trim();
        if out.status.code() == Some(255) && node.reports_pid() {
            let last = stderr.lines().last().unwrap_or("");
            let detail = format!("connection lost{}{last}", if last.is_empty() { "" } else { ": " });
            GatherError::Unreachable { node: name(), detail }
        } else {
            let stderr = if stderr.is_empty() { String::new() } else { format!(": {stderr}") };
            GatherError::Unreadable { node: name(), cause, status: out.status, stderr }
        }
    })
}

/// The sections of the script's output, in order: `(name, lines)`.
fn sections(text: &str) -> Vec<(&str, Vec<&str>)> {
    let mut sections: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix(MARK) {
            sections.push((name.trim(), Vec::new()));
        } else if let Some((_, lines)) = sections.last_mut() {
            lines.push(line);
        }
    }
    sections
}

/// Read the output of the facts script. Pure.
pub fn parse(text: &str) -> Result<Facts, FactsError> {
    let sections = sections(text);
    let section = |name: &str| -> &[&str] {
        sections.iter().find(|(n, _)| *n == name).map(|(_, l)| l.as_slice()).unwrap_or(&[])
    };
    if !sections.iter().any(|(n, _)| *n == "end") {
        return Err(FactsError::Incomplete);
    }
    let first = |name: &str| -> Option<String> {
        section(name).iter().map(|l| l.trim()).find(|l| !l.is_empty()).map(str::to_string)
    };
    let os = OsRelease::parse(&section("os_release").join("\n"));
    let disk = section("disk");
    Ok(Facts {
        arch: first("arch").ok_or(FactsError::NoArch)?,
        dpkg_arch: first("dpkg_arch"),
        os_id: os.id,
        os_codename: os.codename,
        os_version_id: os.version_id,
        os_pretty_name: os.pretty_name,
        cores: first("cores").and_then(|c| c.parse::<u32>().ok()).filter(|c| *c > 0).unwrap_or(1),
        cpu_quota: parse_cpu_quota(section("cpu_quota")),
        mem_mb: first("mem").and_then(|k| k.parse::<u64>().ok()).map(|kb| kb / 1024),
        ffmpeg_version: ffmpeg_version(section("encoders")),
        encoders: parse_encoders(section("encoders")),
        free_disk_path: disk.first().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()),
        free_disk_mb: disk.get(1).and_then(|l| parse_df_line(l)),
        user: first("user").unwrap_or_default(),
        home: first("home").unwrap_or_default(),
        hostname: first("hostname").unwrap_or_default(),
        systemd: first("systemd").as_deref() == Some("yes"),
    })
}

/// The version word of the banner `ffmpeg -encoders` prints first (on
/// stderr, which the script merges): `ffmpeg version 5.1.6-0+deb12u1 ...`.
fn ffmpeg_version(lines: &[&str]) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("ffmpeg version ")?.split_whitespace().next())
        .map(str::to_string)
}

/// Lines `QUOTA PERIOD` (cgroup v2 `cpu.max`: QUOTA may be `max`; v1:
/// `-1` is unlimited), one per cgroup level: the tightest limit, in CPUs.
fn parse_cpu_quota(lines: &[&str]) -> Option<f64> {
    lines
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let quota: f64 = w.next()?.parse().ok()?;
            let period: f64 = w.next()?.parse().ok()?;
            (quota > 0.0 && period > 0.0).then(|| quota / period)
        })
        .min_by(|a, b| a.total_cmp(b))
}

/// `ffmpeg -encoders`: a legend, a ` ------` line, then ` V....D name  description`.
fn parse_encoders(lines: &[&str]) -> Vec<String> {
    let start = lines.iter().position(|l| l.trim().starts_with("---")).map(|i| i + 1).unwrap_or(0);
    lines[start..]
        .iter()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let flags = words.next()?;
            let name = words.next()?;
            let is_flags = flags.len() == 6
                && flags.starts_with(['V', 'A', 'S', '.'])
                && flags.chars().all(|c| c.is_ascii_uppercase() || c == '.');
            is_flags.then(|| name.to_string())
        })
        .collect()
}

/// `df -Pk` data line: `fs blocks used available capacity% mountpoint`
/// (the file system name or the mount point may hold spaces).
fn parse_df_line(line: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let cap = words.iter().rposition(|w| w.ends_with('%') && w[..w.len() - 1].parse::<u32>().is_ok())?;
    let avail_kb: u64 = words.get(cap.checked_sub(1)?)?.parse().ok()?;
    Some(avail_kb / 1024)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const PI: &str = "\
@@dffmpeg-facts arch
armv7l
@@dffmpeg-facts dpkg_arch
armhf
@@dffmpeg-facts os_release
PRETTY_NAME=\"Raspbian GNU/Linux 9 (stretch)\"
NAME=\"Raspbian GNU/Linux\"
VERSION_ID=\"9\"
VERSION=\"9 (stretch)\"
ID=raspbian
ID_LIKE=debian
@@dffmpeg-facts cores
4
@@dffmpeg-facts mem
948304
@@dffmpeg-facts encoders
ffmpeg version 3.2.10-1~deb9u1+rpt1 Copyright (c) 2000-2018 the FFmpeg developers
  built with gcc 6.3.0 (Raspbian 6.3.0-18+rpi1) 20170516
  configuration: --prefix=/usr --extra-version='1~deb9u1+rpt1' --enable-libx264
  libavcodec     57. 64.101 / 57. 64.101
Encoders:
 V..... = Video
 A..... = Audio
 S..... = Subtitle
 .F.... = Frame-level multithreading
 ..S... = Slice-level multithreading
 ...X.. = Codec is experimental
 ....B. = Supports draw_horiz_band
 .....D = Supports direct rendering method 1
 ------
 V..... a64multi             Multicolor charset for Commodore 64 (codec a64_multi)
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V.S... mpeg4                MPEG-4 part 2
 A....D aac                  AAC (Advanced Audio Coding)
 S..... srt                  SubRip subtitle
@@dffmpeg-facts disk
/srv/dffmpeg
/dev/root 30000000 10000000 2048000 84% /
@@dffmpeg-facts end
";

    #[test]
    fn parses_a_raspbian_pi() {
        let f = parse(PI).unwrap();
        assert_eq!(f.arch, "armv7l");
        assert_eq!(f.dpkg_arch.as_deref(), Some("armhf"));
        assert_eq!(f.os_id.as_deref(), Some("raspbian"));
        assert_eq!(f.os_codename.as_deref(), Some("stretch"), "from VERSION");
        assert_eq!(f.os_version_id.as_deref(), Some("9"));
        assert_eq!(f.os().as_deref(), Some("raspbian/stretch"));
        assert_eq!(f.cores, 4);
        assert_eq!(f.mem_mb, Some(926));
        assert_eq!(f.ffmpeg_version.as_deref(), Some("3.2.10-1~deb9u1+rpt1"));
        assert_eq!(f.encoders, ["a64multi", "libx264", "mpeg4", "aac", "srt"]);
        assert!(f.has_encoder("libx264"));
        assert!(!f.has_encoder("libx265"));
        assert!(!f.has_encoder("Video"), "legend lines are not encoders");
        assert_eq!(f.free_disk_mb, Some(2000));
        assert_eq!(f.free_disk_path.as_deref(), Some("/srv/dffmpeg"));
    }

    #[test]
    fn parses_a_node_without_ffmpeg_or_dpkg() {
        let text = "\
@@dffmpeg-facts arch
x86_64
@@dffmpeg-facts dpkg_arch
@@dffmpeg-facts os_release
ID=\"debian\"
VERSION_CODENAME=bookworm
@@dffmpeg-facts cores
2
@@dffmpeg-facts encoders
sh: 1: ffmpeg: not found
@@dffmpeg-facts disk
/home/me
my disk 1000 10 5120 1% /mnt/with space
@@dffmpeg-facts end
";
        let f = parse(text).unwrap();
        assert_eq!(f.arch, "x86_64");
        assert_eq!(f.dpkg_arch, None);
        assert_eq!(f.os().as_deref(), Some("debian/bookworm"));
        assert_eq!(f.cores, 2);
        assert_eq!(f.ffmpeg_version, None);
        assert!(f.encoders.is_empty());
        assert_eq!(f.free_disk_mb, Some(5));
    }

    #[test]
    fn incomplete_output_is_an_error() {
        let cut = &PI[..PI.find("@@dffmpeg-facts disk").unwrap()];
        assert_eq!(parse(cut), Err(FactsError::Incomplete));
        assert!(parse("").is_err());
        assert_eq!(parse("@@dffmpeg-facts end\n"), Err(FactsError::NoArch));
    }

    #[tokio::test]
    async fn gathers_this_machine() {
        let node = remote::Node::Local(remote::Local::new("here"));
        let f = gather(&node, Some(Path::new("/nonexistent dir/$(x)"))).await.unwrap();
        assert!(!f.user.is_empty() && !f.hostname.is_empty() && !f.home.is_empty());
        assert_eq!(f.arch, std::env::consts::ARCH);
        assert!(f.cores >= 1);
        // Falls back to $HOME when the directory does not exist.
        assert_eq!(f.free_disk_path, std::env::var("HOME").ok().or(Some("/".into())));
        assert!(f.free_disk_mb.is_some());
        if f.ffmpeg_version.is_some() {
            assert!(f.has_encoder("mpeg4"), "{:?}", f.encoders);
        }
    }

    /// The script's `ffmpeg -encoders` cache: reused while the binary is
    /// unchanged, renewed when it changes (a fake ffmpeg that counts its runs).
    #[test]
    fn encoders_are_cached_until_ffmpeg_changes() {
        let base = std::env::temp_dir().join(format!("dffmpeg-facts-cache-{}", std::process::id()));
        let bin = base.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let fake = bin.join("ffmpeg");
        let write_fake = |encoder: &str| {
            use std::os::unix::fs::PermissionsExt;
            let body = format!(
                "#!/bin/sh\necho run >> '{}'\necho 'ffmpeg version 9.9 Copyright'\necho 'Encoders:'\necho ' ------'\necho ' V..... {encoder}  Test'\n",
                base.join("runs").display()
            );
            std::fs::write(&fake, body).unwrap();
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let gather = || {
            let argv = script_argv(None);
            let out = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .env("HOME", &base)
                .env_remove("XDG_CACHE_HOME")
                .output()
                .unwrap();
            parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
        };
        let runs = || std::fs::read_to_string(base.join("runs")).unwrap_or_default().lines().count();
        write_fake("mpeg4");
        assert_eq!(gather().encoders, ["mpeg4"]);
        assert_eq!(gather().encoders, ["mpeg4"]);
        assert_eq!(runs(), 1, "the second gather reads the cache");
        assert_eq!(gather().ffmpeg_version.as_deref(), Some("9.9"));
        write_fake("libx264rgb");
        assert_eq!(gather().encoders, ["libx264rgb"], "a changed ffmpeg renews the cache");
        assert_eq!(runs(), 2);
        // A leftover in the temp dir fails no test.
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn cpu_quota_is_the_tightest_limit_along_the_cgroup_path() {
        // v2: unlimited leaf, 1.5 CPUs above; v1: -1 is unlimited.
        assert_eq!(parse_cpu_quota(&["max 100000", "150000 100000", ""]), Some(1.5));
        assert_eq!(parse_cpu_quota(&["-1 100000", "25000 100000"]), Some(0.25));
        assert_eq!(parse_cpu_quota(&["max 100000", "-1 100000"]), None);
        assert_eq!(parse_cpu_quota(&[]), None);
        let mut f = parse(PI).unwrap();
        assert_eq!(f.cpu_quota, None);
        assert_eq!((f.usable_cores(), f.capacity()), (4, 4.0));
        f.cpu_quota = Some(0.5);
        assert_eq!((f.usable_cores(), f.capacity()), (1, 0.5), "half a core still runs one encoder");
        f.cpu_quota = Some(2.5);
        assert_eq!((f.usable_cores(), f.capacity()), (3, 2.5));
        f.cpu_quota = Some(16.0);
        assert_eq!((f.usable_cores(), f.capacity()), (4, 4.0), "a quota above the cores changes nothing");
    }

    #[test]
    fn the_script_reads_this_machines_cgroup() {
        let out = std::process::Command::new("sh").args(&script_argv(None)[1..]).output().unwrap();
        let f = parse(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert!(f.cores >= 1 && f.usable_cores() <= f.cores);
    }
}
