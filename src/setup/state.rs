//! The node's current state, read in one round trip.
//!
//! [`probe_script`] generates one POSIX shell script that prints the facts
//! and everything the tasks compare against: stat and content of each
//! target file, each user's entry and authorized_keys, the dpkg status of
//! every package, /proc/mounts, /etc/group and service states.
//! Every variable field is base64, so [`parse_probe_output`] never has to
//! guess at quoting; the script ends with an `END` line so a cut-off run is
//! recognised.

use std::collections::{BTreeMap, BTreeSet};

use crate::facts::Facts;
use crate::quote::quote;

use super::b64;

/// Something a task needs to know about before it can plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Probe {
    /// stat + content (up to [`MAX_CONTENT`]) of a path.
    File(String),
    /// passwd entry, plus `~/.ssh` and `~/.ssh/authorized_keys` of the user.
    User(String),
    /// `systemctl is-active` / `is-enabled` (only when systemd runs).
    Service(String),
    /// Whether the pid in this pidfile is a live process (for daemons
    /// started without systemd).
    Daemon(String),
}

/// Files larger than this are compared by size only (and rewritten).
pub const MAX_CONTENT: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`stat %a`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub owner: String,
    pub group: String,
    pub size: u64,
    /// `None` when not a regular file, unreadable or too large.
    pub content: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceState {
    pub active: bool,
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Path → stat (`None`: does not exist).
    pub files: BTreeMap<String, Option<FileStat>>,
    /// User name → entry (`None`: no such user).
    pub users: BTreeMap<String, Option<UserEntry>>,
    pub services: BTreeMap<String, ServiceState>,
    /// Pidfile → whether its process lives.
    pub daemons: BTreeMap<String, bool>,
    /// Installed packages (`None`: no dpkg on the node).
    pub packages: Option<BTreeSet<String>>,
    pub mounts: Vec<MountEntry>,
    pub groups: Vec<GroupEntry>,
    pub systemd: bool,
}

impl NodeState {
    /// Whether `probe` was answered (a file or user, present or not).
    pub fn has(&self, probe: &Probe) -> bool {
        match probe {
            Probe::File(p) => self.files.contains_key(p),
            Probe::User(u) => self.users.contains_key(u),
            Probe::Service(s) => !self.systemd || self.services.contains_key(s),
            Probe::Daemon(p) => self.daemons.contains_key(p),
        }
    }

    /// The stat of `path`: `None` when missing or not probed.
    pub fn file(&self, path: &str) -> Option<&FileStat> {
        self.files.get(path).and_then(Option::as_ref)
    }

    pub fn user(&self, name: &str) -> Option<&UserEntry> {
        self.users.get(name).and_then(Option::as_ref)
    }

    pub fn group(&self, name: &str) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Add the answers of a later probe round.
    pub fn merge(&mut self, other: NodeState) {
        self.files.extend(other.files);
        self.users.extend(other.users);
        self.services.extend(other.services);
        self.daemons.extend(other.daemons);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("the state probe was cut off (no END line)")]
    Truncated,
    #[error("bad probe output line {line}: {why}")]
    Bad { line: usize, why: String },
    #[error("facts: {0}")]
    Facts(crate::facts::FactsError),
}

// By hand, not `#[from]`: the message names the cause, which must not also
// be its `source()` (printed twice in a chain).
impl From<crate::facts::FactsError> for StateError {
    fn from(e: crate::facts::FactsError) -> Self {
        StateError::Facts(e)
    }
}

/// The probe's shell functions (`pf`, `pu`, `psv`, `tables`).
const FUNCTIONS: &str = include_str!("state.sh");

/// The line between the facts and the state records.
const STATE_MARK: &str = "@@dffmpeg-state";

/// The probe script: the node's facts (the one facts script,
/// [`crate::facts::SCRIPT`]) and node-wide tables when `with_facts`, then
/// one record per probe. Its stdin is /dev/null (the script itself arrives
/// on stdin, and the braces make the shell read all of it first). Paths
/// are passed base64-encoded and quoted (`pf B64 PATH`).
pub fn probe_script(probes: &[Probe], with_facts: bool) -> String {
    let mut s = String::from("{\n");
    s.push_str(&format!("max={MAX_CONTENT}\n"));
    s.push_str(FUNCTIONS);
    if with_facts {
        s.push_str(&crate::quote::join(&crate::facts::script_argv(None)));
        s.push('\n');
    }
    s.push_str(&format!("echo '{STATE_MARK}'\n"));
    if with_facts {
        s.push_str("tables\n");
    }
    for p in probes {
        let (f, arg) = match p {
            Probe::File(path) => ("pf", path),
            Probe::User(u) => ("pu", u),
            Probe::Service(name) => ("psv", name),
            Probe::Daemon(pidfile) => ("pdm", pidfile),
        };
        s.push_str(f);
        s.push(' ');
        s.push_str(&quote(&b64::encode(arg.as_bytes())));
        s.push(' ');
        s.push_str(&quote(arg));
        s.push('\n');
    }
    s.push_str("echo END\n} </dev/null\n");
    s
}

fn b64_text(field: &str, line: usize) -> Result<String, StateError> {
    let bytes = b64::decode(field).map_err(|_| StateError::Bad { line, why: "bad base64".into() })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Facts (when the probe gathered them) and state from the probe's stdout.
pub fn parse_probe_output(out: &str) -> Result<(Option<Facts>, NodeState), StateError> {
    let (head, records) = match out.split_once(&format!("{STATE_MARK}\n")) {
        Some((h, r)) => (Some(h), r),
        None => return Err(StateError::Truncated),
    };
    let facts = match head.filter(|h| h.contains("@@dffmpeg-facts ")) {
        Some(h) => Some(crate::facts::parse(h)?),
        None => None,
    };
    // Cut off before its end: nothing in it is worth reading.
    if !records.lines().any(|l| l == "END") {
        return Err(StateError::Truncated);
    }
    let mut st = NodeState::default();
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut ended = false;
    for (i, line) in records.lines().enumerate() {
        let n = i + 1;
        let f: Vec<&str> = line.split('\t').collect();
        let bad = |why: &str| StateError::Bad { line: n, why: why.to_string() };
        match f.as_slice() {
            ["END"] => ended = true,
            ["S", p, stat] => {
                let path = b64_text(p, n)?;
                st.files.insert(path, Some(parse_stat(stat).ok_or_else(|| bad("bad stat"))?));
            }
            ["C", p, c] => {
                let path = b64_text(p, n)?;
                let bytes = b64::decode(c).map_err(|_| bad("bad base64"))?;
                contents.insert(path, bytes);
            }
            ["M", p] => {
                st.files.insert(b64_text(p, n)?, None);
            }
            ["U", u, entry] => {
                let name = b64_text(u, n)?;
                let entry = if entry.is_empty() {
                    None
                } else {
                    Some(parse_passwd(&b64_text(entry, n)?).ok_or_else(|| bad("bad passwd"))?)
                };
                st.users.insert(name, entry);
            }
            ["V", s, active, enabled] => {
                st.services.insert(
                    b64_text(s, n)?,
                    ServiceState { active: *active == "active", enabled: *enabled == "enabled" },
                );
            }
            ["L", p, alive] => {
                st.daemons.insert(b64_text(p, n)?, *alive == "1");
            }
            ["P", v] => st.packages = Some(parse_dpkg(&b64_text(v, n)?)),
            ["K", v] => st.mounts = parse_mounts(&b64_text(v, n)?),
            ["G", v] => st.groups = parse_groups(&b64_text(v, n)?),
            _ => {} // unknown lines (e.g. a login banner) are ignored
        }
    }
    if !ended {
        return Err(StateError::Truncated);
    }
    for (path, bytes) in contents {
        if let Some(Some(stat)) = st.files.get_mut(&path) {
            stat.content = Some(bytes);
        }
    }
    st.systemd = facts.as_ref().is_some_and(|f| f.systemd);
    Ok((facts, st))
}

/// `%a %u %g %U %G %s %F`
fn parse_stat(s: &str) -> Option<FileStat> {
    let mut it = s.splitn(7, ' ');
    let mode = u32::from_str_radix(it.next()?, 8).ok()?;
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let owner = it.next()?.to_string();
    let group = it.next()?.to_string();
    let size = it.next()?.parse().ok()?;
    let kind = match it.next()? {
        "regular file" | "regular empty file" => FileKind::File,
        "directory" => FileKind::Dir,
        other => FileKind::Other(other.to_string()),
    };
    Some(FileStat { kind, mode, uid, gid, owner, group, size, content: None })
}

fn parse_passwd(line: &str) -> Option<UserEntry> {
    let f: Vec<&str> = line.trim_end().split(':').collect();
    if f.len() < 7 {
        return None;
    }
    Some(UserEntry {
        name: f[0].to_string(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f[5].to_string(),
    })
}

/// `ii  name` lines of `dpkg-query -f '${db:Status-Abbrev} ${Package}'`:
/// the second letter `i` = installed.
pub fn parse_dpkg(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let (abbrev, name) = l.split_at_checked(3)?;
            (abbrev.as_bytes().get(1) == Some(&b'i')).then(|| name.trim().to_string())
        })
        .filter(|n| !n.is_empty())
        .collect()
}

pub fn parse_groups(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect(),
            })
        })
        .collect()
}

/// /proc/mounts (and fstab) fields escape space, tab, newline and backslash
/// as `\040`, `\011`, `\012`, `\134`.
pub fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn escape_mount_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

pub fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[0].starts_with('#') {
                return None;
            }
            Some(MountEntry {
                source: unescape_mount_field(f[0]),
                target: unescape_mount_field(f[1]),
                fstype: f[2].to_string(),
                options: f[3].to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_record_kind() {
        let e = b64::encode;
        let out = format!(
            "banner\n@@dffmpeg-facts arch\narmv7l\n@@dffmpeg-facts cores\n4\n@@dffmpeg-facts end\n@@dffmpeg-state\nS\t{}\t2775 0 2775 root dffmpeg 4096 directory\nS\t{}\t644 0 0 root root 3 regular file\nC\t{}\t{}\nM\t{}\nU\t{}\t{}\nU\t{}\t\nV\t{}\tactive\tdisabled\nP\t{}\nK\t{}\nG\t{}\nEND\n",
            e(b"/srv/dffmpeg"),
            e(b"/etc/x"),
            e(b"/etc/x"),
            e(b"hi\n"),
            e(b"/etc/missing"),
            e(b"pi"),
            e(b"pi:x:1000:1000:,,,:/home/pi:/bin/bash"),
            e(b"nobody2"),
            e(b"nfs-server"),
            e(b"ii  ffmpeg\nrc  old\nhi  held\n"),
            e(b"a:/x /mnt/a\\040b nfs4 rw 0 0\n"),
            e(b"dffmpeg:x:2775:pi,bob\nusers:x:100:\n"),
        );
        let (facts, st) = parse_probe_output(&out).unwrap();
        assert_eq!(facts.map(|f| (f.arch, f.cores)), Some(("armv7l".to_string(), 4)));
        let d = st.file("/srv/dffmpeg").unwrap();
        assert_eq!((d.kind.clone(), d.mode, d.group.as_str()), (FileKind::Dir, 0o2775, "dffmpeg"));
        assert_eq!(st.file("/etc/x").unwrap().content.as_deref(), Some(&b"hi\n"[..]));
        assert!(st.files.contains_key("/etc/missing") && st.file("/etc/missing").is_none());
        assert_eq!(st.user("pi").unwrap().home, "/home/pi");
        assert!(st.users.contains_key("nobody2") && st.user("nobody2").is_none());
        assert_eq!(st.services["nfs-server"], ServiceState { active: true, enabled: false });
        let pk = st.packages.as_ref().unwrap();
        assert!(pk.contains("ffmpeg") && pk.contains("held") && !pk.contains("old"));
        assert_eq!(st.mounts[0].target, "/mnt/a b");
        assert_eq!(st.group("dffmpeg").unwrap().members, vec!["pi", "bob"]);
        assert!(st.group("users").unwrap().members.is_empty());
    }

    #[test]
    fn cut_off_output_is_an_error() {
        assert_eq!(parse_probe_output("@@dffmpeg-state\nM\tx\n"), Err(StateError::Truncated));
        assert_eq!(parse_probe_output("M\tx\nEND\n"), Err(StateError::Truncated));
    }

    #[test]
    fn mount_field_escapes_round_trip() {
        let s = "/srv/a b\\c\td";
        assert_eq!(escape_mount_field(s), "/srv/a\\040b\\134c\\011d");
        assert_eq!(unescape_mount_field(&escape_mount_field(s)), s);
        assert_eq!(unescape_mount_field("\\04"), "\\04");
    }

    #[test]
    fn probe_script_runs_in_a_real_shell() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("it's here");
        std::fs::write(&f, b"content\n").unwrap();
        let missing = dir.path().join("nope");
        // Pidfiles: this very process (alive), a dead pid, garbage.
        let (alive, dead, junk) =
            (dir.path().join("a.pid"), dir.path().join("d.pid"), dir.path().join("j.pid"));
        std::fs::write(&alive, format!("{}\n", std::process::id())).unwrap();
        std::fs::write(&dead, "2147483646\n").unwrap();
        std::fs::write(&junk, "1; echo pwned\n").unwrap();
        let pidfiles: Vec<String> =
            [&alive, &dead, &junk, &missing].iter().map(|p| p.display().to_string()).collect();
        let mut probes = vec![
            Probe::File(f.display().to_string()),
            Probe::File(missing.display().to_string()),
            Probe::File(dir.path().display().to_string()),
            Probe::User("root".into()),
        ];
        probes.extend(pidfiles.iter().map(|p| Probe::Daemon(p.clone())));
        let script = probe_script(&probes, true);
        let mut child = std::process::Command::new("sh")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let (facts, st) = parse_probe_output(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let facts = facts.unwrap();
        assert!(!facts.arch.is_empty());
        assert!(facts.os_id.is_some());
        let stat = st.file(&f.display().to_string()).unwrap();
        assert_eq!(stat.content.as_deref(), Some(&b"content\n"[..]));
        assert_eq!(stat.kind, FileKind::File);
        assert!(st.files.contains_key(&missing.display().to_string()));
        assert!(st.file(&missing.display().to_string()).is_none());
        assert_eq!(st.file(&dir.path().display().to_string()).unwrap().kind, FileKind::Dir);
        assert_eq!(st.user("root").unwrap().uid, 0);
        assert!(!st.groups.is_empty());
        assert!(!st.mounts.is_empty());
        let running: Vec<bool> = pidfiles.iter().map(|p| st.daemons[p]).collect();
        assert_eq!(running, [true, false, false, false]);
    }
}
