//! Where the status lives: in dffmpeg's state directory
//! (`$XDG_STATE_HOME/dffmpeg/`, beside `speeds.json`), `status/PID.json`
//! for each running transcode (rewritten whole by a rename, removed when
//! it exits) and `failed.json`, the files given up on (the last
//! [`KEEP_FAILURES`], each until it succeeds), which outlives restarts.
//!
//! Everything is written through [`crate::safefs::Dir`] (no link is
//! followed) and read back with a size cap, regular files only: a damaged
//! or planted file is named as a problem, never trusted, never a panic.

use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{FailOp, FailedFile, StatusFile};
use crate::safefs::{Dir, SafeFsError};

/// Failures kept in `failed.json`.
pub const KEEP_FAILURES: usize = 200;
/// The largest status file read (its lists are bounded far below this).
const MAX_STATUS_BYTES: u64 = 4 << 20;
const STATUS: &str = "status";
const FAILED: &str = "failed.json";
const FAILED_LOCK: &str = "failed.lock";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no state directory: neither $XDG_STATE_HOME nor $HOME is an absolute path")]
    NoStateDir,
    #[error(transparent)]
    Fs(#[from] SafeFsError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is larger than {max} bytes")]
    TooBig { path: PathBuf, max: u64 },
    #[error("{path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
}

/// dffmpeg's state directory (where `speeds.json` is).
pub fn state_dir() -> Result<PathBuf, StoreError> {
    crate::state::dir().ok_or(StoreError::NoStateDir)
}

/// `failed.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Failures {
    version: u32,
    /// Oldest first.
    files: Vec<FailedFile>,
}

/// One process's writer: its status file and its share of `failed.json`.
pub struct Writer {
    state: Dir,
    status: Dir,
    name: String,
}

impl Writer {
    /// The state directory (created, mode 0700) and its `status/`.
    pub fn open(state: &Path, pid: u32) -> Result<Writer, StoreError> {
        let io = |source| StoreError::Io { path: state.to_path_buf(), source };
        crate::state::create_private(state).map_err(io)?;
        let state = Dir::open(state)?;
        let status = state.own_dir(STATUS, 0o700)?;
        Ok(Writer { state, status, name: format!("{pid}.json") })
    }

    pub fn path(&self) -> PathBuf {
        self.status.join(&self.name)
    }

    /// Replace the status file whole (a new file renamed over it). Not
    /// synced: it says what runs now, and a crash makes it stale anyway.
    pub fn write(&self, file: &StatusFile) -> Result<(), StoreError> {
        let data =
            serde_json::to_vec(file).map_err(|source| StoreError::Json { path: self.path(), source })?;
        let (mut f, tmp) = self.status.create_temp(&self.name)?;
        if let Err(source) = f.write_all(&data) {
            self.status.remove_quietly(&tmp);
            return Err(StoreError::Io { path: self.status.join(&tmp), source });
        }
        if let Err(e) = self.status.rename(&tmp, &self.status, &self.name) {
            self.status.remove_quietly(&tmp);
            return Err(e.into());
        }
        Ok(())
    }

    /// The process ends: its status file goes.
    pub fn remove(&self) {
        self.status.remove_quietly(&self.name);
    }

    /// Record failures and successes in `failed.json`, under a lock (other
    /// transcodes of this user may record theirs at the same time).
    pub fn record(&self, ops: &[FailOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let lock = self.state.open_own_file(FAILED_LOCK)?;
        // SAFETY: flock on a descriptor we own; released when `lock` closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let source = std::io::Error::last_os_error();
            return Err(StoreError::Io { path: self.state.join(FAILED_LOCK), source });
        }
        let mut failures = match read_json::<Failures>(&self.state, FAILED) {
            Ok(f) => f,
            Err(e) if missing(&e) => Failures::default(),
            // A damaged file is replaced: it lists failures, not results.
            Err(_) => Failures::default(),
        };
        if !apply(&mut failures.files, ops) {
            return Ok(());
        }
        failures.version = 1;
        let data = serde_json::to_vec_pretty(&failures)
            .map_err(|source| StoreError::Json { path: self.state.join(FAILED), source })?;
        self.state.write_atomic(FAILED, &data)?;
        Ok(())
    }
}

/// The file is not there (yet).
fn missing(e: &StoreError) -> bool {
    match e {
        StoreError::Fs(SafeFsError::Io { cause, .. }) => cause.kind() == std::io::ErrorKind::NotFound,
        StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// A file's key: its canonical path when it still exists.
fn canonical(input: &str) -> String {
    std::fs::canonicalize(input).map_or_else(|_| input.to_string(), |p| p.display().to_string())
}

/// Apply `ops`; whether anything changed.
fn apply(files: &mut Vec<FailedFile>, ops: &[FailOp]) -> bool {
    let mut changed = false;
    for op in ops {
        let before = files.len();
        match op {
            FailOp::Failed(f) => {
                let f = FailedFile { input: canonical(&f.input), ..f.clone() };
                files.retain(|x| x.input != f.input);
                files.push(f);
                changed = true;
            }
            FailOp::Succeeded { input } => {
                let input = canonical(input);
                files.retain(|x| x.input != input);
                changed |= files.len() != before;
            }
        }
    }
    let extra = files.len().saturating_sub(KEEP_FAILURES);
    files.drain(..extra);
    changed
}

/// What `dffmpeg status` shows: every running transcode and the failures.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// This machine's name.
    pub host: String,
    pub state_dir: String,
    pub generated_at: f64,
    pub transcodes: Vec<StatusFile>,
    /// Files given up on, newest first, until they succeed.
    pub failed: Vec<FailedFile>,
    /// Files in the state directory that could not be read.
    pub problems: Vec<String>,
}

/// Read the state directory. `inventory`: only the transcodes on it (its
/// canonical path). Status files of processes that are gone are removed.
pub fn collect(state: &Path, inventory: Option<&str>, now: f64) -> Report {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let mut report =
        Report { host, state_dir: state.display().to_string(), generated_at: now, ..Report::default() };
    let Ok(dir) = Dir::open(state) else { return report };
    match read_json::<Failures>(&dir, FAILED) {
        Ok(f) => report.failed = f.files.into_iter().rev().collect(),
        Err(e) if missing(&e) => {}
        Err(e) => report.problems.push(e.to_string()),
    }
    let status = match dir.open_dir(STATUS) {
        Ok(d) => d,
        Err(SafeFsError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => return report,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    let mut names = status.names().unwrap_or_default();
    names.sort();
    for name in names {
        match read_status(&status, &name) {
            Some(Ok(s)) if inventory.is_none_or(|i| s.meta.inventory == i) => report.transcodes.push(s),
            Some(Ok(_)) | None => {}
            Some(Err(e)) => report.problems.push(e.to_string()),
        }
    }
    report.transcodes.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
    report
}

/// The status file `name` of a live process; None for other names and
/// for processes that are gone (their leftovers are removed).
fn read_status(dir: &Dir, name: &str) -> Option<Result<StatusFile, StoreError>> {
    let pid = status_pid(name)?;
    if !alive(pid) {
        dir.remove_quietly(name);
        return None;
    }
    if name.ends_with(".tmp") {
        return None;
    }
    Some(read_json::<StatusFile>(dir, name).and_then(|s| match s.meta.pid == pid {
        true => Ok(s),
        false => Err(StoreError::Json {
            path: dir.join(name),
            source: serde::de::Error::custom(format!("it names pid {}", s.meta.pid)),
        }),
    }))
}

/// `PID.json` (and its temporary files, `PID.json.*.tmp`): the pid.
fn status_pid(name: &str) -> Option<u32> {
    let (pid, rest) = name.split_once(".json")?;
    if !(rest.is_empty() || (rest.starts_with('.') && rest.ends_with(".tmp"))) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0 && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `pid` is a running dffmpeg (a reused pid is not).
pub fn alive(pid: u32) -> bool {
    let Ok(id) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(id, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => exists && comm.starts_with("dffmpeg"),
        Err(_) => exists,
    }
}

/// A JSON file of `dir`: a regular file (no link followed, a FIFO not
/// waited on) of at most [`MAX_STATUS_BYTES`].
fn read_json<T: serde::de::DeserializeOwned>(dir: &Dir, name: &str) -> Result<T, StoreError> {
    let path = dir.join(name);
    let data = read_capped(dir, name, MAX_STATUS_BYTES)?;
    serde_json::from_slice(&data).map_err(|source| StoreError::Json { path, source })
}

fn read_capped(dir: &Dir, name: &str, max: u64) -> Result<Vec<u8>, StoreError> {
    let path = dir.join(name);
    let f = dir.open_regular(name)?;
    let io = |source| StoreError::Io { path: path.clone(), source };
    if f.metadata().map_err(io)?.len() > max {
        return Err(StoreError::TooBig { path, max });
    }
    let mut data = Vec::new();
    f.take(max + 1).read_to_end(&mut data).map_err(io)?;
    if data.len() as u64 > max {
        return Err(StoreError::TooBig { path, max });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::model::Meta;

    fn status(pid: u32, inventory: &str) -> StatusFile {
        let meta = Meta { pid, mode: "watch".into(), inventory: inventory.into(), ..Meta::default() };
        StatusFile { version: 1, meta, started_at: 1.0, ..StatusFile::default() }
    }

    fn failed(input: &str, at: f64) -> FailOp {
        FailOp::Failed(FailedFile {
            input: input.into(),
            reason: "broken".into(),
            at,
            ..FailedFile::default()
        })
    }

    /// A pid that was a process and is no more.
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn status_files_are_written_read_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state/dffmpeg");
        let me = std::process::id();
        let w = Writer::open(&state, me).unwrap();
        w.write(&status(me, "/inv.yaml")).unwrap();
        w.write(&status(me, "/inv.yaml")).unwrap();
        let r = collect(&state, None, 5.0);
        assert_eq!(r.transcodes, [status(me, "/inv.yaml")], "{:?}", r.problems);
        assert!(collect(&state, Some("/other.yaml"), 5.0).transcodes.is_empty());
        assert_eq!(collect(&state, Some("/inv.yaml"), 5.0).transcodes.len(), 1);
        // Only the file itself is left (no temporary file).
        assert_eq!(std::fs::read_dir(state.join("status")).unwrap().count(), 1);
        w.remove();
        assert!(collect(&state, None, 5.0).transcodes.is_empty());
    }

    #[test]
    fn a_dead_process_leaves_nothing_and_garbage_is_named_not_trusted() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("dffmpeg");
        let me = std::process::id();
        let w = Writer::open(&state, me).unwrap();
        let dir = state.join("status");
        let dead = dead_pid();
        std::fs::write(dir.join(format!("{dead}.json")), serde_json::to_vec(&status(dead, "x")).unwrap())
            .unwrap();
        std::fs::write(dir.join(format!("{dead}.json.{dead}-0-1.tmp")), b"{").unwrap();
        std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
        let r = collect(&state, None, 5.0);
        assert!(r.transcodes.is_empty() && r.problems.is_empty(), "{r:?}");
        assert!(!dir.join(format!("{dead}.json")).exists());
        assert!(!dir.join(format!("{dead}.json.{dead}-0-1.tmp")).exists());
        // Garbage, a link, a FIFO, a huge file, someone else's pid inside.
        let name = format!("{me}.json");
        type Make = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Make)> = vec![
            ("garbage", Box::new(|p| std::fs::write(p, b"\x00\xffnot json").unwrap())),
            ("link", Box::new(|p| std::os::unix::fs::symlink("/etc/passwd", p).unwrap())),
            ("fifo", Box::new(mkfifo)),
            ("directory", Box::new(|p| std::fs::create_dir(p).unwrap())),
            ("huge", Box::new(|p| std::fs::File::create(p).unwrap().set_len(MAX_STATUS_BYTES + 1).unwrap())),
            (
                "other pid",
                Box::new(|p| std::fs::write(p, serde_json::to_vec(&status(1, "x")).unwrap()).unwrap()),
            ),
        ];
        for (what, make) in cases {
            let p = dir.join(&name);
            let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir(&p));
            make(&p);
            let r = collect(&state, None, 5.0);
            assert!(r.transcodes.is_empty(), "{what}");
            assert_eq!(r.problems.len(), 1, "{what}: {:?}", r.problems);
            assert!(r.problems[0].contains(&name), "{what}: {:?}", r.problems);
        }
        drop(w);
    }

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn failures_outlive_the_process_until_the_file_succeeds() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("dffmpeg");
        let w = Writer::open(&state, std::process::id()).unwrap();
        w.record(&[failed("/up/a.mp4", 1.0), failed("/up/b.mp4", 2.0)]).unwrap();
        drop(w);
        // Another process (a restart) records more.
        let w = Writer::open(&state, 1).unwrap();
        w.record(&[FailOp::Succeeded { input: "/up/a.mp4".into() }, failed("/up/b.mp4", 3.0)]).unwrap();
        let r = collect(&state, None, 5.0);
        let inputs: Vec<(&str, f64)> = r.failed.iter().map(|f| (f.input.as_str(), f.at)).collect();
        assert_eq!(inputs, [("/up/b.mp4", 3.0)]);
        // Bounded: the oldest go.
        let many: Vec<FailOp> =
            (0..KEEP_FAILURES + 5).map(|i| failed(&format!("/up/{i}.mp4"), i as f64)).collect();
        w.record(&many).unwrap();
        let r = collect(&state, None, 5.0);
        assert_eq!(r.failed.len(), KEEP_FAILURES);
        assert_eq!(r.failed[0].input, format!("/up/{}.mp4", KEEP_FAILURES + 4), "newest first");
        // A damaged file is named, and replaced by the next record.
        std::fs::write(state.join(FAILED), b"[oops").unwrap();
        assert_eq!(collect(&state, None, 5.0).problems.len(), 1);
        w.record(&[failed("/up/c.mp4", 9.0)]).unwrap();
        assert_eq!(collect(&state, None, 5.0).failed.len(), 1);
    }

    #[test]
    fn status_names() {
        assert_eq!(status_pid("123.json"), Some(123));
        assert_eq!(status_pid("123.json.123-4-ff.tmp"), Some(123));
        assert_eq!(status_pid("+12.json"), None);
        assert_eq!(status_pid("0.json"), None);
        assert_eq!(status_pid("12.jsonx"), None);
        assert_eq!(status_pid("failed.json"), None);
        assert!(alive(std::process::id()));
        assert!(!alive(dead_pid()));
    }
}
