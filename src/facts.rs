//! `dffmpeg facts`: what each node is and has.
//!
//! Facts are gathered in one round trip per node: one fixed shell script
//! prints `@@dffmpeg-facts NAME` sections (the only variable part, the
//! directory whose free space is measured, is passed as `$1`, quoted by
//! [`crate::quote::join`] in the transport), and [`parse`], a pure function,
//! reads them back.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::cli::FactsArgs;
use crate::exit::{failed, usage, Failure, Outcome};
use crate::inventory::Inventory;
use crate::remote::{self, ConnectOptions, Transport};

/// What a node is and has.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    pub reachable: bool,
    /// `uname -m`: x86_64, aarch64, armv7l ...
    pub arch: String,
    /// `dpkg --print-architecture`: amd64, arm64, armhf ... (None without dpkg)
    pub dpkg_arch: Option<String>,
    /// `/etc/os-release` ID: debian, raspbian, ubuntu ...
    pub os_id: Option<String>,
    /// `/etc/os-release` VERSION_CODENAME (or the name in VERSION): bookworm ...
    pub os_codename: Option<String>,
    /// `/etc/os-release` VERSION_ID: 12 ...
    pub os_version_id: Option<String>,
    /// `nproc`
    pub cores: u32,
    /// CPUs the node's cgroup allows (cgroup v2 `cpu.max`, v1
    /// `cpu.cfs_quota_us`, the tightest along the path), None when unlimited:
    /// a container or a quota-limited host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<f64>,
    /// First line of `ffmpeg -version`, None when ffmpeg is missing.
    pub ffmpeg_version: Option<String>,
    /// Encoder names from `ffmpeg -encoders`.
    pub encoders: Vec<String>,
    /// Free space, in MiB, where `free_disk_path` lives.
    pub free_disk_mb: Option<u64>,
    /// The directory measured: the shared dir if it exists, else $HOME.
    pub free_disk_path: Option<String>,
}

impl Facts {
    pub fn has_encoder(&self, name: &str) -> bool {
        self.encoders.iter().any(|e| e == name)
    }

    /// The version word of `ffmpeg version 5.1.6-0+deb12u1 Copyright ...`.
    pub fn ffmpeg_short_version(&self) -> Option<&str> {
        let line = self.ffmpeg_version.as_deref()?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("ffmpeg"), Some("version"), Some(v)) => Some(v),
            _ => Some(line),
        }
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

    /// CPUs of compute the node offers: the quota, or its cores.
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

const MARK: &str = "@@dffmpeg-facts ";

/// The facts script. Fixed text; `$1` is the directory to measure.
const SCRIPT: &str = r#"m='@@dffmpeg-facts '
echo "${m}arch"; uname -m
echo "${m}dpkg_arch"; dpkg --print-architecture 2>/dev/null
echo "${m}os_release"; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
echo "${m}cores"; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null
echo "${m}cpu_quota"
while IFS=: read -r _ ctl path; do
  case ",$ctl," in
    ,,) d=/sys/fs/cgroup$path; v=2 ;;
    *,cpu,*) d=/sys/fs/cgroup/$ctl$path; [ -d "$d" ] || d=/sys/fs/cgroup/cpu$path; v=1 ;;
    *) continue ;;
  esac
  while [ -d "$d" ]; do
    if [ $v = 2 ]; then [ -r "$d/cpu.max" ] && echo "$(cat "$d/cpu.max")"
    else [ -r "$d/cpu.cfs_quota_us" ] && echo "$(cat "$d/cpu.cfs_quota_us") $(cat "$d/cpu.cfs_period_us")"; fi
    [ "$d" = /sys/fs/cgroup ] || [ "$d" = "/sys/fs/cgroup/$ctl" ] || [ "$d" = /sys/fs/cgroup/cpu ] && break
    d=${d%/*}
  done
done < /proc/self/cgroup 2>/dev/null
echo "${m}encoders"
# A cache of `ffmpeg -encoders` (an ffmpeg start costs a slow node most of
# this script), valid while the ffmpeg binary and the dpkg database are
# unchanged: any package install, upgrade or removal renews it.
f=$(command -v ffmpeg 2>/dev/null)
if [ -n "$f" ]; then
  key=$(stat -L -c '%n %Y %s %i' "$f" /var/lib/dpkg/status 2>/dev/null | tr '\n' ' ')
  c=${XDG_CACHE_HOME:-$HOME/.cache}/dffmpeg/ffmpeg-encoders
  if [ -n "$key" ] && [ -r "$c" ] && [ "$(head -n 1 "$c")" = "$key" ]; then
    tail -n +2 "$c"
  else
    out=$(ffmpeg -encoders 2>&1) && [ -n "$key" ] && mkdir -p "${c%/*}" 2>/dev/null &&
      printf '%s\n%s\n' "$key" "$out" >"$c.$$" 2>/dev/null && mv -f "$c.$$" "$c" 2>/dev/null
    rm -f "$c.$$" 2>/dev/null
    printf '%s\n' "$out"
  fi
else
  echo "ffmpeg: not found"
fi
echo "${m}disk"; d=$1; [ -n "$d" ] && [ -d "$d" ] || d=$HOME; [ -n "$d" ] && [ -d "$d" ] || d=/
echo "$d"; df -Pk "$d" 2>/dev/null | tail -n 1
echo "${m}end"
"#;

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

/// Gather a node's facts (free space of its home directory).
pub async fn gather(node: &remote::Node) -> Result<Facts, String> {
    gather_in(node, None).await
}

/// Gather a node's facts, measuring free space in `dir` if it exists there.
pub async fn gather_in(node: &remote::Node, dir: Option<&Path>) -> Result<Facts, String> {
    let argv = script_argv(dir);
    let out = match tokio::time::timeout(Duration::from_secs(60), remote::run(node, &argv)).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("node {}: cannot run ssh: {e}", node.name())),
        Err(_) => return Err(format!("unreachable: node {}: no answer within 60 s", node.name())),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match parse(&text) {
        Ok(f) => Ok(f),
        Err(e) => {
            let stderr = out.stderr.trim();
            if out.status.code() == Some(255) && !node.is_local() {
                Err(format!(
                    "unreachable: node {}: connection lost{}{}",
                    node.name(),
                    if stderr.is_empty() { "" } else { ": " },
                    stderr.lines().last().unwrap_or("")
                ))
            } else {
                Err(format!(
                    "node {}: cannot read facts ({e}; exit {}){}{}",
                    node.name(),
                    out.status,
                    if stderr.is_empty() { "" } else { ": " },
                    stderr
                ))
            }
        }
    }
}

/// Read the output of the facts script. Pure.
pub fn parse(text: &str) -> Result<Facts, String> {
    let mut sections: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix(MARK) {
            sections.push((name.trim(), Vec::new()));
        } else if let Some((_, lines)) = sections.last_mut() {
            lines.push(line);
        }
    }
    let section = |name: &str| -> &[&str] {
        sections.iter().find(|(n, _)| *n == name).map(|(_, l)| l.as_slice()).unwrap_or(&[])
    };
    if !sections.iter().any(|(n, _)| *n == "end") {
        return Err("the facts script output is incomplete".into());
    }
    let first = |name: &str| -> Option<String> {
        section(name).iter().map(|l| l.trim()).find(|l| !l.is_empty()).map(str::to_string)
    };
    let arch = first("arch").ok_or("no `uname -m` output")?;
    let os = parse_os_release(section("os_release"));
    let cores = first("cores").and_then(|c| c.parse::<u32>().ok()).filter(|c| *c > 0).unwrap_or(1);
    let cpu_quota = parse_cpu_quota(section("cpu_quota"));
    // One ffmpeg start (seconds on a slow node): `ffmpeg -encoders` prints
    // its banner, version first, on stderr, which the script merges.
    let ffmpeg_version = section("encoders")
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("ffmpeg version "))
        .map(str::to_string);
    let encoders = parse_encoders(section("encoders"));
    let disk = section("disk");
    let free_disk_path = disk.first().map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
    let free_disk_mb = disk.get(1).and_then(|l| parse_df_line(l));
    Ok(Facts {
        reachable: true,
        arch,
        dpkg_arch: first("dpkg_arch"),
        os_id: os.id,
        os_codename: os.codename,
        os_version_id: os.version_id,
        cores,
        cpu_quota,
        ffmpeg_version,
        encoders,
        free_disk_mb,
        free_disk_path,
    })
}

#[derive(Default)]
struct OsRelease {
    id: Option<String>,
    codename: Option<String>,
    version_id: Option<String>,
}

fn parse_os_release(lines: &[&str]) -> OsRelease {
    let mut vars: Vec<(&str, String)> = Vec::new();
    for line in lines {
        if let Some((k, v)) = line.trim().split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            vars.push((k.trim(), v.to_string()));
        }
    }
    let get = |k: &str| vars.iter().find(|(n, v)| *n == k && !v.is_empty()).map(|(_, v)| v.clone());
    // Old releases (Raspbian stretch) have no VERSION_CODENAME, only
    // VERSION="9 (stretch)".
    let codename = get("VERSION_CODENAME").or_else(|| {
        let v = get("VERSION")?;
        let (_, rest) = v.split_once('(')?;
        let name = rest.split(')').next()?.trim();
        let name = name.split(',').next()?.trim();
        (!name.is_empty()).then(|| name.to_lowercase())
    });
    OsRelease { id: get("ID"), codename, version_id: get("VERSION_ID") }
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

/// One node's line of `dffmpeg facts`.
#[derive(Debug, Serialize)]
struct Report {
    node: String,
    host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    facts: Facts,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_encoder: Option<bool>,
}

pub async fn run(args: FactsArgs) -> Outcome {
    let inventory = Inventory::load(&args.inventory).map_err(usage)?;
    let opts = ConnectOptions::from_args(&args.connect).map_err(failed)?;
    let reports = collect(&inventory, &opts, args.encoder.as_deref()).await;
    if args.json {
        for r in &reports {
            match serde_json::to_string(r) {
                Ok(line) => {
                    let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{line}\n").as_bytes());
                }
                Err(e) => return Err(failed(anyhow::anyhow!("cannot write JSON: {e}"))),
            }
        }
    } else {
        let _ = std::io::Write::write_all(
            &mut std::io::stdout(),
            table(&reports, args.encoder.as_deref()).as_bytes(),
        );
        for r in &reports {
            if let Some(e) = &r.error {
                eprintln!("dffmpeg: {e}");
            }
        }
    }
    if reports.iter().all(|r| r.facts.reachable) {
        Ok(())
    } else {
        Err(Failure::Reported)
    }
}

/// Connect to and gather every node, in parallel, in inventory order.
async fn collect(inventory: &Inventory, opts: &ConnectOptions, encoder: Option<&str>) -> Vec<Report> {
    let dir = Arc::new(inventory.cluster.shared_dir.clone());
    let tasks: Vec<_> = inventory
        .nodes
        .iter()
        .map(|n| {
            let (n, opts, dir) = (n.clone(), opts.clone(), dir.clone());
            tokio::spawn(async move {
                let node = remote::connect(&n, &opts).await.map_err(|e| e.to_string())?;
                let facts = gather_in(&node, Some(&dir)).await;
                node.close().await;
                facts
            })
        })
        .collect();
    let mut reports = Vec::new();
    for (n, task) in inventory.nodes.iter().zip(tasks) {
        let result = task.await.unwrap_or_else(|e| Err(format!("node {}: facts task failed: {e}", n.name)));
        let (facts, error) = match result {
            Ok(f) => (f, None),
            Err(e) => (Facts::default(), Some(e)),
        };
        let has_encoder = encoder.filter(|_| facts.reachable).map(|e| facts.has_encoder(e));
        reports.push(Report {
            node: n.name.clone(),
            host: n.host.to_string(),
            error,
            facts,
            encoder: encoder.map(str::to_string),
            has_encoder,
        });
    }
    reports
}

fn table(reports: &[Report], encoder: Option<&str>) -> String {
    let mut head = vec!["NODE", "HOST", "REACHABLE", "ARCH", "OS", "CORES", "FFMPEG"];
    let enc_head = encoder.map(|e| e.to_uppercase());
    if let Some(e) = &enc_head {
        head.push(e);
    }
    head.push("FREE DISK");
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let f = &r.facts;
            let mut row = vec![r.node.clone(), r.host.clone()];
            if f.reachable {
                row.extend([
                    "yes".into(),
                    f.arch.clone(),
                    f.os().unwrap_or_else(dash),
                    match f.cpu_quota {
                        Some(q) => format!("{} (quota {q:.2})", f.cores),
                        None => f.cores.to_string(),
                    },
                    f.ffmpeg_short_version().map(str::to_string).unwrap_or_else(|| "missing".into()),
                ]);
                if let Some(e) = encoder {
                    row.push(if f.has_encoder(e) { "yes" } else { "no" }.into());
                }
                row.push(
                    f.free_disk_mb.map(|mb| format!("{:.1} GiB", mb as f64 / 1024.0)).unwrap_or_else(dash),
                );
            } else {
                row.push("no".into());
                row.extend(std::iter::repeat_with(dash).take(head.len() - 3));
            }
            row
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter().map(|r| r[i].chars().count()).chain([head[i].chars().count()]).max().unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let mut s = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(head.clone());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI: &str = "\
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
        assert!(f.reachable);
        assert_eq!(f.arch, "armv7l");
        assert_eq!(f.dpkg_arch.as_deref(), Some("armhf"));
        assert_eq!(f.os_id.as_deref(), Some("raspbian"));
        assert_eq!(f.os_codename.as_deref(), Some("stretch"), "from VERSION");
        assert_eq!(f.os_version_id.as_deref(), Some("9"));
        assert_eq!(f.os().as_deref(), Some("raspbian/stretch"));
        assert_eq!(f.cores, 4);
        assert_eq!(f.ffmpeg_short_version(), Some("3.2.10-1~deb9u1+rpt1"));
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
        assert_eq!(f.ffmpeg_short_version(), None);
        assert!(f.encoders.is_empty());
        assert_eq!(f.free_disk_mb, Some(5));
    }

    #[test]
    fn incomplete_output_is_an_error() {
        let cut = &PI[..PI.find("@@dffmpeg-facts disk").unwrap()];
        assert!(parse(cut).unwrap_err().contains("incomplete"));
        assert!(parse("").is_err());
        assert!(parse("@@dffmpeg-facts end\n").unwrap_err().contains("uname"));
    }

    #[tokio::test]
    async fn gathers_this_machine() {
        let node = remote::Node::Local(remote::Local::new("here"));
        let f = gather_in(&node, Some(Path::new("/nonexistent dir/$(x)"))).await.unwrap();
        assert!(f.reachable);
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
        assert_eq!(gather().ffmpeg_version.as_deref(), Some("ffmpeg version 9.9 Copyright"));
        write_fake("libx264rgb");
        assert_eq!(gather().encoders, ["libx264rgb"], "a changed ffmpeg renews the cache");
        assert_eq!(runs(), 2);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn table_lists_every_node() {
        let pi = parse(PI).unwrap();
        let reports = vec![
            Report {
                node: "pi3".into(),
                host: "192.168.1.10".into(),
                error: None,
                facts: pi,
                encoder: Some("libx264".into()),
                has_encoder: Some(true),
            },
            Report {
                node: "pi2".into(),
                host: "192.168.1.11".into(),
                error: Some("unreachable: node pi2".into()),
                facts: Facts::default(),
                encoder: Some("libx264".into()),
                has_encoder: None,
            },
        ];
        let t = table(&reports, Some("libx264"));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("NODE  HOST"), "{t}");
        assert!(lines[0].contains("LIBX264"), "{t}");
        let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            words(lines[1]),
            [
                "pi3",
                "192.168.1.10",
                "yes",
                "armv7l",
                "raspbian/stretch",
                "4",
                "3.2.10-1~deb9u1+rpt1",
                "yes",
                "2.0",
                "GiB"
            ]
        );
        assert_eq!(words(lines[2]), ["pi2", "192.168.1.11", "no", "-", "-", "-", "-", "-", "-"]);
        let json = serde_json::to_string(&reports[1]).unwrap();
        assert!(json.contains("\"reachable\":false"), "{json}");
        assert!(json.contains("\"error\":\"unreachable: node pi2\""), "{json}");
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
