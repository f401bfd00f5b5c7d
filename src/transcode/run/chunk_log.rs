//! The log of a failed attempt: what its encoder wrote on stderr (ssh's
//! messages included), kept in the job directory as
//! `logs/chunk_00003.NODE.attempt-2.log` — the chunk's second failed
//! attempt logged there (on any node, in any run of the job). Only the end
//! of the stderr is kept ([`LIMIT`]), without the progress lines, and
//! without terminal escapes (it comes from the node).
//!
//! The controller writes it: `logs/` is its own directory (not
//! group-writable, refused if it is a link or someone else's), and each
//! log a new file (`O_EXCL`, never through a link). It goes with the job
//! directory: removed when the output is written unless `--keep`, kept
//! with a failed job.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;

use crate::safefs::{Dir, SafeFsError};

/// The most of an attempt's stderr a log keeps: its end.
pub const LIMIT: usize = 64 << 10;

/// The end of a stream of lines, at most [`LIMIT`] bytes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
    /// Lines dropped from the front.
    dropped: usize,
}

impl Tail {
    pub fn push(&mut self, line: &str) {
        let line = crate::text::printable(line);
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > LIMIT {
            let Some(first) = self.lines.pop_front() else { break };
            self.bytes -= first.len() + 1;
            self.dropped += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn text(&self) -> String {
        let mut t = String::with_capacity(self.bytes + 64);
        if self.dropped > 0 {
            t.push_str(&format!("[{} earlier lines left out]\n", self.dropped));
        }
        for l in &self.lines {
            t.push_str(l);
            t.push('\n');
        }
        t
    }
}

/// What the log says before the stderr.
pub struct Header<'a> {
    /// The input file, as events name it.
    pub file: &'a str,
    pub chunk: usize,
    pub frames: u64,
    pub node: &'a str,
    pub error: &'a str,
}

/// Write the log of a failed attempt into `logs/` of the job directory
/// `job`; its path, as the user sees it.
pub fn keep(job: &Dir, h: &Header, stderr: &Tail) -> Result<PathBuf, SafeFsError> {
    let logs = job.own_dir("logs", 0o755)?;
    let prefix = format!("chunk_{:05}.", h.chunk);
    let mut n = logs.names()?.iter().filter(|name| name.starts_with(&prefix)).count() + 1;
    loop {
        let name = format!("{prefix}{}.attempt-{n}.log", file_word(h.node));
        match logs.create_new(&name) {
            Ok(mut f) => {
                let text = content(h, n, stderr);
                f.write_all(text.as_bytes())
                    .map_err(|cause| SafeFsError::Io { path: logs.join(&name), cause })?;
                return Ok(logs.join(&name));
            }
            Err(SafeFsError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e),
        }
    }
}

fn content(h: &Header, n: usize, stderr: &Tail) -> String {
    let stamp = crate::log::timestamp(std::time::SystemTime::now());
    let out = if stderr.is_empty() { "(nothing)\n".to_string() } else { stderr.text() };
    format!(
        "{stamp} chunk {} ({} frames) of {}, node {}, attempt {n}\nfailed: {}\n\n\
         the encoder's stderr (progress lines left out; at most the last {} KiB):\n{out}",
        h.chunk,
        h.frames,
        h.file,
        h.node,
        h.error,
        LIMIT >> 10
    )
}

/// A node name as a word of a file name (inventory names are already
/// letters, digits, `-`, `_` and `.`).
fn file_word(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_bytes() {
        let mut t = Tail::default();
        let line = "x".repeat(1023);
        for _ in 0..100 {
            t.push(&line);
        }
        t.push("\x1b[31mthe end\x1b[0m");
        assert!(t.bytes <= LIMIT);
        let text = t.text();
        assert!(text.starts_with("[37 earlier lines left out]\n"), "{}", &text[..40]);
        assert!(text.ends_with("\nthe end\n"));
    }

    #[test]
    fn logs_are_numbered_per_chunk_and_never_replace_one() {
        let t = tempfile::tempdir().unwrap();
        let job = Dir::open(t.path()).unwrap();
        let mut tail = Tail::default();
        tail.push("[libx264 @ 0x1] broken");
        let h = |node| Header { file: "in.mp4", chunk: 3, frames: 50, node, error: "ffmpeg exited with 1" };
        let a = keep(&job, &h("pi4"), &tail).unwrap();
        let b = keep(&job, &h("pi/5"), &Tail::default()).unwrap();
        assert_eq!(a, t.path().join("logs/chunk_00003.pi4.attempt-1.log"));
        assert_eq!(b, t.path().join("logs/chunk_00003.pi_5.attempt-2.log"));
        let text = std::fs::read_to_string(&a).unwrap();
        assert!(text
            .contains("chunk 3 (50 frames) of in.mp4, node pi4, attempt 1\nfailed: ffmpeg exited with 1\n"));
        assert!(text.ends_with("[libx264 @ 0x1] broken\n"), "{text}");
        assert!(std::fs::read_to_string(&b).unwrap().ends_with("(nothing)\n"));
    }

    #[test]
    fn a_planted_logs_link_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), t.path().join("logs")).unwrap();
        let job = Dir::open(t.path()).unwrap();
        let h = Header { file: "in.mp4", chunk: 0, frames: 1, node: "n", error: "e" };
        assert!(matches!(keep(&job, &h, &Tail::default()), Err(SafeFsError::Symlink { .. })));
        assert_eq!(std::fs::read_dir(t.path().join("elsewhere")).unwrap().count(), 0);
    }
}
