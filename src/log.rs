//! The log file of `transcode` and `setup` (`--log-file FILE`): every line
//! they report, each stamped with the local time, appended to the file;
//! the final error and the exit status too. One per process, opened once
//! at the start; a line that cannot be written is lost, never fatal.
//!
//! The file is opened through [`crate::safefs`]: a symlink in its place is
//! refused, never followed (the directories on the way are the user's
//! choice, like an output's folder).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::safefs::{Dir, SafeFsError};

static LOG: OnceLock<Mutex<File>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("--log-file {0}: not a file name")]
    NoName(PathBuf),
    #[error("--log-file: {0}")]
    Open(SafeFsError),
}

/// Open (append to, create) the log file and write the command line into it.
pub fn open(path: &Path) -> Result<(), LogError> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| LogError::NoName(path.into()))?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file = Dir::open(parent).and_then(|d| d.open_append(name)).map_err(LogError::Open)?;
    // A second open in one process (tests) keeps the first file.
    let _ = LOG.set(Mutex::new(file));
    let args: Vec<String> = std::env::args().collect();
    line(&format!("dffmpeg {} (pid {}): {}", env!("CARGO_PKG_VERSION"), std::process::id(), args.join(" ")));
    Ok(())
}

/// Append `text` to the log file, if there is one: each of its lines after
/// a time stamp, without terminal escapes (blank lines left out).
pub fn line(text: &str) {
    let Some(log) = LOG.get() else { return };
    let stamp = timestamp(SystemTime::now());
    let mut buf = String::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        buf.push_str(&stamp);
        buf.push(' ');
        buf.push_str(&crate::text::printable(l));
        buf.push('\n');
    }
    if let Ok(mut f) = log.lock() {
        // A full disk loses log lines, not the work.
        let _ = f.write_all(buf.as_bytes());
    }
}

/// `2026-12-07T22:47:01.250+01:00`: local time, with its offset.
pub fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value; localtime_r only writes
    // into the one we own and returns NULL on failure.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return format!("@{}", since.as_secs());
    }
    let off = tm.tm_gmtoff;
    let sign = if off < 0 { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{sign}{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        since.subsec_millis(),
        off.abs() / 3600,
        off.abs() % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_stamp_is_iso_8601_with_its_offset() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_796_683_621_250);
        let s = timestamp(t);
        assert_eq!(s.len(), "2026-12-07T22:47:01.250+01:00".len(), "{s}");
        assert_eq!(&s[4..5], "-");
        assert_eq!(&s[10..11], "T");
        assert_eq!(&s[19..23], ".250");
        assert!(s[23..24] == *"+" || s[23..24] == *"-", "{s}");
    }
}
