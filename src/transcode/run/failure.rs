//! Why a job of the batch cannot finish, typed: what the broker and the
//! batch pass each other (`Order::Abandon`, `JobEnd::Failed`); the text
//! (Display) is what the user reads.

use std::path::PathBuf;

use super::encode::AttemptError;
use super::scheduler::GiveUp;
use crate::transcode::side::SideError;

#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    /// The scheduler gave up on it after a failed attempt (named).
    #[error("{why}; last failure: {last}")]
    Attempts { why: GiveUp, last: LastFailure },
    /// A chunk verified but not kept in the job directory.
    #[error("cannot keep chunk {chunk}: {error:#}")]
    KeepChunk { chunk: usize, error: anyhow::Error },
    /// This machine's disk is full (not a node's fault).
    #[error("no space left on this machine in {} ({} KiB free)", dir.display(), free >> 10)]
    DiskFull { dir: PathBuf, free: u64 },
    /// Its audio and subtitle streams failed.
    #[error(transparent)]
    Side(#[from] SideError),
}

/// A job's last failed attempt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("node {node}, chunk {chunk}: {}{}", error_text(error, node), log_text(log))]
pub struct LastFailure {
    pub node: String,
    pub chunk: usize,
    pub error: AttemptError,
    /// Its log in the job directory.
    pub log: Option<String>,
}

/// An attempt's error as the user reads it: a build that does not fit
/// names its node.
pub fn error_text(error: &AttemptError, node: &str) -> String {
    match error {
        AttemptError::Mismatch(_) => format!("{error} (node {node})"),
        _ => error.to_string(),
    }
}

fn log_text(log: &Option<String>) -> String {
    log.as_ref().map(|l| format!(" (log: {l})")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_what_the_user_read_before() {
        let last = LastFailure {
            node: "pi".into(),
            chunk: 3,
            error: AttemptError::Mismatch("profile".into()),
            log: Some("/j/logs/x.log".into()),
        };
        let f = JobFailure::Attempts { why: GiveUp::Attempts { chunk: 3, times: 3 }, last };
        let want = "chunk 3 failed 3 times; last failure: node pi, chunk 3: chunk rejected: profile \
                    (the node runs a different ffmpeg build?) (node pi) (log: /j/logs/x.log)";
        assert_eq!(f.to_string(), want);
        let f = JobFailure::DiskFull { dir: "/out".into(), free: 5 << 10 };
        assert_eq!(f.to_string(), "no space left on this machine in /out (5 KiB free)");
        let f = JobFailure::KeepChunk { chunk: 2, error: anyhow::anyhow!("disk").context("rename") };
        assert_eq!(f.to_string(), "cannot keep chunk 2: rename: disk");
    }
}
