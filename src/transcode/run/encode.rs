//! Encode: one attempt at one chunk on one node — the split on the
//! controller when the chunk must travel (stream copy), the encoder on the
//! node. The part file it writes is verified afterwards (see `verify.rs`),
//! while the node's slot goes on with its next chunk.
//!
//! Pipe mode: the split's stdout feeds the node's ffmpeg stdin and its
//! stdout is the part file — over SSH this is the stream transport, locally
//! the same code without SSH. Shared mode: the split writes a file in the
//! shared job directory and the node reads and writes files there.
//! Shared-source mode: the node reads its chunk from the source itself.
//!
//! The encoder runs under `encode.sh`, which reports the CPU time it used:
//! with the wall time, it tells how much of a CPU the node's slot really
//! had (slots follow measurement, see the scheduler).

use std::fs::File;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::BufReader;
use tokio::process::Child;
use tokio::sync::watch;

use crate::remote::{Transport, PID_PREFIX};
use crate::transcode::chunk_log::Tail;
use crate::transcode::context::{Io, JobContext};
use crate::transcode::ffmpeg;
use crate::transcode::job::{AttemptFiles, JobDir};
use crate::transcode::plan::Chunk;
use crate::transcode::scheduler::Usage;

/// Why an attempt failed. The text is what the user sees (node names are
/// added by the caller).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AttemptError {
    /// ffmpeg on the node exited with an error (its build, its disk, its
    /// permissions: the options were checked by the preflight).
    #[error("{0}")]
    Encoder(String),
    /// The node or the connection to it is gone.
    #[error("{0}")]
    NodeLost(String),
    /// The controller's own split failed.
    #[error("split failed: {0}")]
    Split(String),
    #[error("cannot write {path}: {detail}")]
    Write { path: String, detail: String },
    /// The result did not pass verification.
    #[error(transparent)]
    Verify(#[from] crate::transcode::verify::VerifyError),
    /// The chunk's codec parameters differ from the job's: this node's
    /// ffmpeg build makes a stream that cannot be joined with the others.
    #[error("chunk rejected: {0} (the node runs a different ffmpeg build?)")]
    Mismatch(String),
}

/// How an attempt's encode ended; with its encoder's stderr (for the log
/// of a failed attempt).
#[derive(Debug)]
pub enum Encoded {
    /// The part file is written and wants verifying; the encoder's CPU and
    /// wall time when the node reported them.
    Written {
        usage: Option<Usage>,
        stderr: Tail,
        /// The node's record of the part (`encode.sh`'s `dffmpeg-facts`).
        record: Option<String>,
    },
    Cancelled,
    Failed(AttemptError, Tail),
}

/// One attempt: where, what and into which files.
pub struct Attempt<'a, T> {
    pub node: &'a T,
    /// Threads per encode (None: leave it to ffmpeg or the user's -threads).
    pub threads: Option<u32>,
    pub ctx: &'a JobContext,
    pub job: &'a JobDir,
    pub chunk: &'a Chunk,
    pub files: &'a AttemptFiles,
    /// The most its part file may take (see `verify::chunk_cap`).
    pub size_cap: u64,
    /// The scheduler's number of this attempt (names a Slurm job).
    pub attempt: u64,
}

const ENCODE_SH: &str = include_str!("encode.sh");
const TIMES_MARK: &str = "dffmpeg-times";
const FACTS_MARK: &str = "dffmpeg-facts";

/// The encoder's argv under `encode.sh`, which also checks the part it
/// writes into `chunk` (a path, or `-`: stdout).
fn measured(chunk: &str, argv: Vec<String>) -> Vec<String> {
    let mut a = vec!["sh".to_string(), "-c".into(), ENCODE_SH.into(), "dffmpeg-encode".into()];
    a.extend([chunk.to_string(), crate::transcode::verify::FIELDS.to_string()]);
    a.extend(argv);
    a
}

/// The processes of a running attempt.
struct Started {
    enc: Child,
    split: Option<Child>,
    /// The part file (pipe mode), synced once the encoder is done.
    part: Option<File>,
    at: Instant,
}

impl<T: Transport> Attempt<'_, T> {
    /// Run the attempt until its part file is written, it fails, or
    /// `cancel` turns true. `on_frames` gets the encoder's progress.
    pub async fn run(
        &self,
        mut cancel: watch::Receiver<bool>,
        on_frames: &(dyn Fn(u64) + Send + Sync),
    ) -> Encoded {
        if let Err(why) = self.node.ready().await {
            return Encoded::Failed(AttemptError::NodeLost(why.to_string()), Tail::default());
        }
        if self.ctx.io == Io::Shared {
            if let Err(e) = self.split_to_file().await {
                return Encoded::Failed(e, Tail::default());
            }
        }
        let mut started = match self.start() {
            Ok(s) => s,
            Err(e) => return Encoded::Failed(e, Tail::default()),
        };
        let remote_pid = Arc::new(AtomicU32::new(0));
        let work = watch_encoder(&mut started, remote_pid.clone(), on_frames);
        let finished = tokio::select! {
            r = work => Some(r),
            // The sender gone (batch over) counts as cancelled too.
            _ = async { let _ = cancel.wait_for(|c| *c).await; } => None,
        };
        match finished {
            Some(end) => self.conclude(end),
            None => {
                self.stop(&started, remote_pid.load(Ordering::SeqCst)).await;
                Encoded::Cancelled
            }
        }
    }

    /// Shared storage: the chunk's packets go to a file first (created
    /// here, so the split's ffmpeg writes into it and no other file).
    async fn split_to_file(&self) -> Result<(), AttemptError> {
        let file =
            self.job.create(&self.files.source_part).map_err(|e| AttemptError::Split(format!("{e:#}")))?;
        let dest = crate::safefs::file_fd_path(&file).to_string_lossy().into_owned();
        let argv = ffmpeg::split(&self.ctx.source, self.ctx.video_index, &self.ctx.plan, self.chunk, &dest);
        let out = spawn_split(&argv, Stdio::null())
            .map_err(|e| AttemptError::Split(e.to_string()))?
            .wait_with_output()
            .await
            .map_err(|e| AttemptError::Split(e.to_string()))?;
        if !out.status.success() {
            return Err(AttemptError::Split(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(())
    }

    /// Start the encoder (and in pipe mode the split feeding it).
    fn start(&self) -> Result<Started, AttemptError> {
        let (ctx, chunk, job) = (self.ctx, self.chunk, self.job);
        let video = ffmpeg::ChunkVideo::new(&ctx.spec, &ctx.plan, chunk);
        let input = ctx.io.input(ctx, chunk, &job.path(&self.files.source_part));
        let output = match ctx.io {
            Io::Pipe => "pipe:1".to_string(),
            Io::Shared | Io::SharedSource => job.path(&self.files.part).to_string_lossy().into_owned(),
        };
        let encoder = ffmpeg::encode(&ctx.spec, &video, self.threads, &input, &output);
        let chunk_file = if ctx.io == Io::Pipe { "-" } else { output.as_str() };
        let argv = measured(chunk_file, self.node.under_shell(encoder));
        let mut cmd = self.node.command_for(&argv, &self.label());
        cmd.stderr(Stdio::piped()).kill_on_drop(true);
        crate::process::limit_file_size(cmd.as_std_mut(), self.size_cap);
        let (mut split, mut part) = (None, None);
        match ctx.io {
            Io::Pipe => {
                let argv = ffmpeg::split(&ctx.source, ctx.video_index, &ctx.plan, chunk, "pipe:1");
                let mut child =
                    spawn_split(&argv, Stdio::piped()).map_err(|e| AttemptError::Split(e.to_string()))?;
                let feed =
                    stdout_as_stdin(&mut child).ok_or_else(|| AttemptError::Split("no pipe".into()))?;
                let write_err = |e: anyhow::Error| AttemptError::Write {
                    path: job.path(&self.files.part).display().to_string(),
                    detail: format!("{e:#}"),
                };
                let file = job.create(&self.files.part).map_err(write_err)?;
                let out = file.try_clone().map_err(|e| write_err(e.into()))?;
                cmd.stdin(feed).stdout(out);
                part = Some(file);
                split = Some(child);
            }
            Io::Shared | Io::SharedSource => {
                cmd.stdin(Stdio::null()).stdout(Stdio::null());
            }
        }
        let enc = cmd.spawn().map_err(|e| AttemptError::NodeLost(format!("cannot start ffmpeg: {e}")))?;
        // The parent's copies of the pipe and file ends are in the command;
        // drop it so that only the children hold them (EOF and SIGPIPE work).
        drop(cmd);
        Ok(Started { enc, split, part, at: Instant::now() })
    }

    /// `dffmpeg-JOB-cCHUNK-aATTEMPT`: what a scheduler's job is called.
    fn label(&self) -> String {
        let job = self.job.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        format!("dffmpeg-{job}-c{}-a{}", self.chunk.index, self.attempt)
    }

    /// Stop a cancelled attempt's encoder on its node.
    async fn stop(&self, started: &Started, remote_pid: u32) {
        if remote_pid > 1 {
            self.node.kill(remote_pid).await;
        } else if let (Some(p), false) = (started.enc.id(), self.node.reports_pid()) {
            self.node.kill(p).await;
        }
    }

    fn conclude(&self, end: Ended) -> Encoded {
        let error_text = end.errors.join("\n");
        match end.status {
            // srun may exit 0 when the node failed under the job.
            Ok(s) if s.success() && !self.node.lost(&s, &end.errors) => {}
            Ok(s) => {
                let lost = self.node.lost(&s, &end.errors);
                let text = if error_text.is_empty() { format!("ffmpeg exited with {s}") } else { error_text };
                return Encoded::Failed(
                    if lost { AttemptError::NodeLost(text) } else { AttemptError::Encoder(text) },
                    end.log,
                );
            }
            Err(e) => return Encoded::Failed(AttemptError::NodeLost(e.to_string()), end.log),
        }
        if let Err(e) = end.written {
            let path = self.job.path(&self.files.part).display().to_string();
            return Encoded::Failed(AttemptError::Write { path, detail: e.to_string() }, end.log);
        }
        if let Some((status, stderr)) = end.split {
            if !status.is_ok_and(|s| s.success()) {
                return Encoded::Failed(AttemptError::Split(stderr.trim().to_string()), end.log);
            }
        }
        if self.ctx.io == Io::Shared {
            self.job.discard(&self.files.source_part);
        }
        let usage = end.cpu_seconds.map(|cpu_seconds| Usage { cpu_seconds, wall_seconds: end.wall_seconds });
        Encoded::Written { usage, stderr: end.log, record: end.record }
    }
}

/// What the encoder's end looked like.
struct Ended {
    errors: Vec<String>,
    /// The end of the stderr, progress left out.
    log: Tail,
    status: std::io::Result<std::process::ExitStatus>,
    written: std::io::Result<()>,
    split: Option<(std::io::Result<std::process::ExitStatus>, String)>,
    cpu_seconds: Option<f64>,
    wall_seconds: f64,
    record: Option<String>,
}

/// Read the encoder's stderr to its end, then collect every exit.
async fn watch_encoder(
    s: &mut Started,
    pid: Arc<AtomicU32>,
    on_frames: &(dyn Fn(u64) + Send + Sync),
) -> Ended {
    let report = match s.enc.stderr.take() {
        Some(e) => read_stderr(e, pid, on_frames).await,
        None => Report::default(),
    };
    let status = s.enc.wait().await;
    let wall_seconds = s.at.elapsed().as_secs_f64();
    let written = match &s.part {
        Some(f) => f.sync_all(),
        None => Ok(()),
    };
    let split = match s.split.as_mut() {
        Some(child) => {
            let mut err = String::new();
            if let Some(e) = child.stderr.take() {
                // The split's message, if any, is all we want of it.
                if let Ok((text, _)) = crate::text::read_capped(e, MAX_ERROR_LINE * 20).await {
                    err = String::from_utf8_lossy(&text).into_owned();
                }
            }
            Some((child.wait().await, err))
        }
        None => None,
    };
    Ended {
        errors: report.errors,
        log: report.log,
        status,
        written,
        split,
        cpu_seconds: report.cpu_seconds,
        wall_seconds,
        record: report.record,
    }
}

/// The most of one error line kept for messages (the log keeps more).
const MAX_ERROR_LINE: usize = 2048;

/// What the encoder's stderr said besides its progress.
#[derive(Default)]
struct Report {
    /// The last lines of error text.
    errors: Vec<String>,
    /// Every line but progress and dffmpeg's own, up to the log's limit.
    log: Tail,
    /// User + system CPU seconds of the encoder, from `encode.sh`.
    cpu_seconds: Option<f64>,
    /// The node's record of the part it made, from `encode.sh`.
    record: Option<String>,
}

/// Where `encode.sh`'s own lines are going.
enum Section {
    Encoder,
    /// The two lines of `times`.
    Times,
    Facts(String),
}

/// The most of a node's record kept (a record is ~25 short lines).
const MAX_RECORD: usize = 8192;

/// Ffmpeg's stderr, sorted: progress (`frame=N`) goes to the callback, the
/// remote pid is recorded (the first line only, and never a pid ≤ 1),
/// `encode.sh`'s times are read, everything else is kept as error text.
async fn read_stderr<R: tokio::io::AsyncRead + Unpin>(
    stderr: R,
    pid: Arc<AtomicU32>,
    on_frames: &(dyn Fn(u64) + Send + Sync),
) -> Report {
    let mut lines = crate::text::BoundedLines::new(BufReader::new(stderr));
    let mut report = Report::default();
    let mut first = true;
    let mut section = Section::Encoder;
    let mut times = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let is_first = std::mem::replace(&mut first, false);
        match (&mut section, line.as_str()) {
            (_, TIMES_MARK) => {
                times.clear();
                section = Section::Times;
            }
            (_, FACTS_MARK) => section = Section::Facts(String::new()),
            (Section::Times, _) => {
                times.push(line);
                if times.len() == 2 {
                    section = Section::Encoder;
                }
            }
            (Section::Facts(f), _) => {
                if f.len() + line.len() < MAX_RECORD {
                    f.push_str(&line);
                    f.push('\n');
                }
            }
            (Section::Encoder, _) => encoder_line(&mut report, &line, is_first, &pid, on_frames),
        }
    }
    if let Section::Facts(f) = section {
        report.record = Some(f);
    }
    report.cpu_seconds = children_cpu(&times);
    report
}

/// One line of the encoder's own stderr.
fn encoder_line(
    report: &mut Report,
    line: &str,
    is_first: bool,
    pid: &AtomicU32,
    on_frames: &(dyn Fn(u64) + Send + Sync),
) {
    if is_first {
        if let Some(p) = line.strip_prefix(PID_PREFIX).and_then(|p| p.trim().parse::<u32>().ok()) {
            if p > 1 {
                pid.store(p, Ordering::SeqCst);
            }
            return;
        }
    }
    if let Some(n) = line.strip_prefix("frame=") {
        if let Ok(n) = n.trim().parse() {
            on_frames(n);
        }
    } else if !is_progress_line(line) && !line.trim().is_empty() {
        report.log.push(line);
        report.errors.push(crate::text::printable(crate::text::cut(line, MAX_ERROR_LINE)));
        if report.errors.len() > 20 {
            report.errors.remove(0);
        }
    }
}

/// An ffmpeg's error lines (its progress and pid lines left out).
pub async fn read_errors<R: tokio::io::AsyncRead + Unpin>(stderr: R, pid: Arc<AtomicU32>) -> Vec<String> {
    read_stderr(stderr, pid, &|_| {}).await.errors
}

/// The children's line of the shell's `times`: `0m1.230000s 0m0.120000s`.
fn children_cpu(lines: &[String]) -> Option<f64> {
    let line = lines.get(1)?;
    let mut total = 0.0;
    for word in line.split_whitespace().take(2) {
        let (m, s) = word.strip_suffix('s')?.split_once('m')?;
        let (m, s) = (m.parse::<u32>().ok()?, s.parse::<f64>().ok()?);
        if !(s.is_finite() && (0.0..60.0).contains(&s)) {
            return None;
        }
        total += f64::from(m) * 60.0 + s;
    }
    Some(total)
}

fn is_progress_line(line: &str) -> bool {
    // `-progress` lines are `key=value` with a plain key (values may be
    // padded: `speed=   0x`); log lines start with `[tag @ 0x..]` or text.
    line.split_once('=')
        .is_some_and(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

pub fn spawn_split(argv: &[String], stdout: Stdio) -> std::io::Result<Child> {
    crate::process::command(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
}

/// A child's stdout, to be the next process's stdin.
pub fn stdout_as_stdin(child: &mut Child) -> Option<Stdio> {
    child.stdout.take().and_then(|o| o.try_into().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_the_children_are_read() {
        let lines = vec!["0m0.004000s 0m0.001000s".to_string(), "1m2.500000s 0m0.250000s".to_string()];
        assert_eq!(children_cpu(&lines), Some(62.75));
        assert_eq!(children_cpu(&lines[..1]), None);
        assert_eq!(children_cpu(&["a".into(), "b c".into()]), None);
        // A node's word is checked: no infinities, no NaN, no negatives.
        for bad in ["0minfs 0m0s", "0mNaNs 0m0s", "0m-1.0s 0m0s", "-1m0s 0m0s", "0m1e308s 0m0s"] {
            assert_eq!(children_cpu(&["x".into(), bad.into()]), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn stderr_is_sorted_and_only_a_first_pid_line_counts() {
        let text = "dffmpeg-pid 4242\nframe=10\nspeed=   1x\n[x @ 0x1] oops \x1b[31mred\x1b[0m\ndffmpeg-pid 1\nframe=20\ndffmpeg-times\n0m0.01s 0m0.00s\n0m3.00s 0m0.50s\n";
        let pid = Arc::new(AtomicU32::new(0));
        let seen = std::sync::Mutex::new(Vec::new());
        let report = read_stderr(text.as_bytes(), pid.clone(), &|n| seen.lock().unwrap().push(n)).await;
        assert_eq!(pid.load(Ordering::SeqCst), 4242);
        assert_eq!(*seen.lock().unwrap(), [10, 20]);
        assert_eq!(report.errors, ["[x @ 0x1] oops red", "dffmpeg-pid 1"]);
        assert_eq!(report.cpu_seconds, Some(3.5));
        // A pid line that is not the first, or a pid of 0 or 1, is no pid.
        let pid = Arc::new(AtomicU32::new(0));
        read_stderr("dffmpeg-pid 1\n".as_bytes(), pid.clone(), &|_| {}).await;
        assert_eq!(pid.load(Ordering::SeqCst), 0);
    }
}
