//! One attempt at one chunk on one node: split (on the controller, stream
//! copy), encode (on the node), then verify (on the controller, while the
//! node's slot goes on with its next chunk).
//!
//! Pipe mode: the split's stdout feeds the node's ffmpeg stdin and its
//! stdout is written to the job directory — over SSH this is the stream
//! transport, locally the same code without SSH. Shared mode: the split
//! writes a file in the shared job directory and the node reads and writes
//! files there. Shared-source mode: the source itself is in the shared
//! directory, so there is no split; the node reads its chunk from the
//! source.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::ffmpeg::{self, EncodeSpec};
use super::job::{AttemptFiles, JobDir};
use super::plan::{Chunk, Plan};
use super::verify::{self, ChunkFacts, CodecParams};
use crate::remote::{Transport, PID_PREFIX};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Io {
    /// Chunks stream through the node's stdin and stdout.
    Pipe,
    /// Chunks and parts are files in the shared job directory.
    Shared,
    /// Shared storage holding the source too: nodes read it in place.
    SharedSource,
}

impl Io {
    /// How a job's chunks travel: `shared` is the directory every node
    /// sees at the same path (shared storage), `source` the canonical input.
    pub fn choose(shared: Option<&Path>, source: &Path) -> Io {
        use std::os::unix::fs::PermissionsExt;
        // Nodes read as their own users: only a world-readable source is
        // surely readable to them (the split's files are made so).
        let world_readable = || std::fs::metadata(source).is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
        match shared {
            None => Io::Pipe,
            Some(dir) => match dir.canonicalize() {
                // Canonical on both sides: the node's path is the same only
                // when no symlink of this machine leads into the directory.
                Ok(canon) if canon == dir && source.starts_with(dir) && world_readable() => Io::SharedSource,
                _ => Io::Shared,
            },
        }
    }

    /// The input of one chunk's encoder.
    fn input(self, ctx: &JobContext, chunk: &Chunk, source_part: &Path) -> ffmpeg::Input {
        match self {
            Io::Pipe => ffmpeg::Input::Nut("pipe:0".into()),
            Io::Shared => ffmpeg::Input::Nut(path_str(source_part)),
            Io::SharedSource => ffmpeg::Input::source(&ctx.source, ctx.video_index, &ctx.plan, chunk),
        }
    }
}

/// What every attempt of a job shares.
pub struct JobContext {
    pub source: String,
    pub video_index: usize,
    pub plan: Plan,
    pub spec: EncodeSpec,
    pub io: Io,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailKind {
    /// ffmpeg on the node exited with an error (bad options, broken build).
    Encoder,
    /// The result did not pass verification.
    Verify,
    /// The node or the connection to it is gone.
    NodeLost,
    /// The controller's own split failed.
    Split,
    /// The chunk's codec parameters differ from the job's: this node's
    /// ffmpeg build makes a stream that cannot be joined with the others.
    Mismatch,
}

#[derive(Debug)]
pub enum Outcome {
    Done(Box<ChunkFacts>),
    Cancelled,
    Failed { kind: FailKind, error: String },
}

/// Ffmpeg's stderr, sorted: progress (`frame=N`) goes to the callback, the
/// remote pid is recorded, everything else is kept as the error text.
async fn read_stderr<R: tokio::io::AsyncRead + Unpin>(
    stderr: R,
    pid: Arc<AtomicU32>,
    on_frames: &(dyn Fn(u64) + Send + Sync),
) -> Vec<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut errors: Vec<String> = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(p) = line.strip_prefix(PID_PREFIX) {
            if let Ok(p) = p.trim().parse() {
                pid.store(p, Ordering::SeqCst);
            }
        } else if let Some(n) = line.strip_prefix("frame=") {
            if let Ok(n) = n.trim().parse() {
                on_frames(n);
            }
        } else if !is_progress_line(&line) && !line.trim().is_empty() {
            errors.push(line);
            if errors.len() > 20 {
                errors.remove(0);
            }
        }
    }
    errors
}

fn is_progress_line(line: &str) -> bool {
    // `-progress` lines are `key=value` with a plain key (values may be
    // padded: `speed=   0x`); log lines start with `[tag @ 0x..]` or text.
    line.split_once('=')
        .is_some_and(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

fn spawn_split(argv: &[String], stdout: Stdio) -> std::io::Result<Child> {
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Run one attempt's split and encode. None: the part file is written and
/// wants [`verify`]; else how the attempt ended. The part file is left for
/// the caller to rename (once verified) or remove.
#[allow(clippy::too_many_arguments)]
pub async fn encode<T: Transport>(
    node: &T,
    threads: Option<u32>,
    ctx: &JobContext,
    job: &JobDir,
    chunk: &Chunk,
    files: &AttemptFiles,
    mut cancel: watch::Receiver<bool>,
    on_frames: &(dyn Fn(u64) + Send + Sync),
) -> Option<Outcome> {
    let filter = ffmpeg::chunk_filter(&ctx.spec, chunk, ctx.plan.ts_shift());

    // Shared storage: the chunk's packets go to a file first (created
    // here, so the split's ffmpeg writes into it and no other file).
    if ctx.io == Io::Shared {
        let file = match job.create(&files.source_part) {
            Ok(f) => f,
            Err(e) => return Some(split_failed(&format!("{e:#}"))),
        };
        let dest = path_str(&crate::safefs::file_fd_path(&file));
        let argv = ffmpeg::split(&ctx.source, ctx.video_index, &ctx.plan, chunk, &dest);
        let out = match spawn_split(&argv, Stdio::null()) {
            Ok(c) => c.wait_with_output().await,
            Err(e) => Err(e),
        };
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Some(split_failed(&String::from_utf8_lossy(&o.stderr))),
            Err(e) => return Some(split_failed(&e.to_string())),
        }
    }
    let input = ctx.io.input(ctx, chunk, &job.path(&files.source_part));
    let output = match ctx.io {
        Io::Pipe => "pipe:1".to_string(),
        Io::Shared | Io::SharedSource => path_str(&job.path(&files.part)),
    };
    let enc_argv = ffmpeg::encode(&ctx.spec, &filter, threads, &input, &output);

    // Pipe mode: the split's stdout is the encoder's stdin and the encoder's
    // stdout is the part file — the kernel moves the data, dffmpeg copies
    // nothing (over SSH, the ssh client reads and writes them).
    let mut split = None;
    let mut part_file = None;
    let mut enc_cmd = node.command(&enc_argv);
    enc_cmd.stderr(Stdio::piped()).kill_on_drop(true);
    match ctx.io {
        Io::Pipe => {
            let argv = ffmpeg::split(&ctx.source, ctx.video_index, &ctx.plan, chunk, "pipe:1");
            let mut child = match spawn_split(&argv, Stdio::piped()) {
                Ok(c) => c,
                Err(e) => return Some(split_failed(&e.to_string())),
            };
            let feed = match stdout_as_stdin(&mut child) {
                Ok(f) => f,
                Err(e) => return Some(split_failed(&e)),
            };
            let file = match job.create(&files.part).and_then(|f| Ok((f.try_clone()?, f))) {
                Ok(f) => f,
                Err(e) => return Some(split_failed(&format!("{e:#}"))),
            };
            enc_cmd.stdin(feed).stdout(file.0);
            part_file = Some(file.1);
            split = Some(child);
        }
        Io::Shared | Io::SharedSource => {
            enc_cmd.stdin(Stdio::null()).stdout(Stdio::null());
        }
    }
    let mut enc = match enc_cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Some(Outcome::Failed {
                kind: FailKind::NodeLost,
                error: format!("cannot start ffmpeg: {e}"),
            })
        }
    };
    // The parent's copies of the pipe and file ends are in the command; drop
    // it so that only the children hold them (EOF and SIGPIPE work).
    drop(enc_cmd);
    let remote_pid = Arc::new(AtomicU32::new(0));
    let local_pid = enc.id();

    let work = async {
        let errors = match enc.stderr.take() {
            Some(e) => read_stderr(e, remote_pid.clone(), on_frames).await,
            None => Vec::new(),
        };
        let status = enc.wait().await;
        let written = match &part_file {
            Some(f) => f.sync_all(),
            None => Ok(()),
        };
        let split_result = match split.as_mut() {
            Some(s) => {
                let mut serr = String::new();
                if let Some(mut e) = s.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = e.read_to_string(&mut serr).await;
                }
                Some((s.wait().await, serr))
            }
            None => None,
        };
        (errors, status, written, split_result)
    };

    let finished = tokio::select! {
        r = work => Some(r),
        _ = async { let _ = cancel.wait_for(|c| *c).await; } => None,
    };
    let Some((errors, status, written, split_result)) = finished else {
        let pid = remote_pid.load(Ordering::SeqCst);
        if pid != 0 {
            node.kill(pid).await;
        } else if let (Some(p), false) = (local_pid, node.reports_pid()) {
            node.kill(p).await;
        }
        return Some(Outcome::Cancelled);
    };

    let error_text = errors.join("\n");
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            // ssh itself exits 255 when the connection or the node is gone.
            let lost = node.reports_pid() && s.code() == Some(255);
            let kind = if lost { FailKind::NodeLost } else { FailKind::Encoder };
            let error = if error_text.is_empty() { format!("ffmpeg exited with {s}") } else { error_text };
            return Some(Outcome::Failed { kind, error });
        }
        Err(e) => return Some(Outcome::Failed { kind: FailKind::NodeLost, error: e.to_string() }),
    }
    if let Err(e) = written {
        return Some(write_failed(&job.path(&files.part), &e));
    }
    if let Some((Ok(s), serr)) = &split_result {
        if !s.success() {
            return Some(split_failed(serr));
        }
    }
    if ctx.io == Io::Shared {
        job.discard(&files.source_part);
    }
    None
}

/// Check an encoded part file on the controller: the planned frames, start
/// and the job's codec parameters.
pub async fn verify(ctx: &JobContext, chunk: &Chunk, part: &Path) -> Outcome {
    let facts = match verify::inspect(part).await {
        Ok(f) => f,
        Err(e) => return Outcome::Failed { kind: FailKind::Verify, error: e },
    };
    match verify::check(&facts, chunk, &ctx.plan) {
        Ok(()) => Outcome::Done(Box::new(facts)),
        Err(e) => Outcome::Failed { kind: FailKind::Verify, error: e },
    }
}

fn write_failed(path: &Path, e: &std::io::Error) -> Outcome {
    Outcome::Failed { kind: FailKind::Split, error: format!("cannot write {}: {e}", path.display()) }
}

fn split_failed(stderr: &str) -> Outcome {
    Outcome::Failed { kind: FailKind::Split, error: format!("split failed: {}", stderr.trim()) }
}

/// A child's stdout, to be the next process's stdin.
fn stdout_as_stdin(child: &mut Child) -> Result<Stdio, String> {
    child
        .stdout
        .take()
        .and_then(|o| o.try_into().ok())
        .ok_or_else(|| "cannot run ffmpeg: no pipe".to_string())
}

/// Encode the first frame of the first chunk on the controller. Fails with
/// ffmpeg's own error when the options are wrong — before any node starts.
/// The encoder's output goes straight into ffprobe (both start at once).
pub async fn preflight(ctx: &JobContext) -> Result<ChunkFacts, String> {
    let chunk = &ctx.plan.chunks[0];
    let filter = ffmpeg::chunk_filter(&ctx.spec, chunk, ctx.plan.ts_shift());
    // The chunk reaches the encoder as it will on the nodes (the reference
    // codec parameters must be those of the real parts).
    let input = match ctx.io {
        Io::SharedSource => ffmpeg::Input::source(&ctx.source, ctx.video_index, &ctx.plan, chunk),
        Io::Pipe | Io::Shared => ffmpeg::Input::Nut("pipe:0".into()),
    };
    let enc_argv = ffmpeg::preflight(&ctx.spec, &filter, &input, "pipe:1");
    let mut split = None;
    let feed = match input {
        ffmpeg::Input::Source { .. } => Stdio::null(),
        ffmpeg::Input::Nut(_) => {
            let split_argv = ffmpeg::split(&ctx.source, ctx.video_index, &ctx.plan, chunk, "pipe:1");
            let mut child =
                spawn_split(&split_argv, Stdio::piped()).map_err(|e| format!("cannot run ffmpeg: {e}"))?;
            // The split's pipe is the encoder's stdin, as in an attempt.
            let feed = stdout_as_stdin(&mut child)?;
            split = Some(child);
            feed
        }
    };
    let mut enc = Command::new(&enc_argv[0])
        .args(&enc_argv[1..])
        .stdin(feed)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    let encoded = stdout_as_stdin(&mut enc)?;
    let encoding = async {
        let errors = match enc.stderr.take() {
            Some(e) => read_stderr(e, Arc::new(AtomicU32::new(0)), &|_| {}).await,
            None => Vec::new(),
        };
        (errors, enc.wait().await)
    };
    let ((errors, status), facts) =
        tokio::join!(encoding, verify::inspect_from(Path::new("pipe:0"), encoded));
    drop(split);
    let status = status.map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(if errors.is_empty() {
            format!("ffmpeg exited with {status}")
        } else {
            errors.join("\n")
        });
    }
    facts
}

/// Encode the source's first frame as one plain ffmpeg run with the user's
/// options would, into the output's format, and read what that gives the
/// output's video stream (what ffmpeg decides from the first frame — field
/// order, colour tags — and from the options). Fails with ffmpeg's error.
pub async fn plain_preflight(run: &ffmpeg::PlainRun<'_>) -> Result<CodecParams, String> {
    let argv = ffmpeg::plain_first_frame(run);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(if err.is_empty() { format!("ffmpeg exited with {}", out.status) } else { err });
    }
    let facts = verify::inspect(Path::new(run.dest)).await;
    facts.map(|f| f.params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_in_place_only_inside_a_canonical_shared_dir() {
        let base = std::env::temp_dir().join(format!("dffmpeg-io-{}", std::process::id()));
        let shared = base.join("shared");
        std::fs::create_dir_all(shared.join("media")).unwrap();
        let shared = shared.canonicalize().unwrap();
        let link = base.join("link");
        let _ = std::os::unix::fs::symlink(&shared, &link);
        let inside = shared.join("media/in.mp4");
        let private = shared.join("media/private.mp4");
        let outside = base.join("in.mp4");
        for f in [&inside, &private, &outside] {
            std::fs::write(f, b"x").unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(Io::choose(None, &inside), Io::Pipe);
        assert_eq!(Io::choose(Some(&shared), &inside), Io::SharedSource);
        assert_eq!(Io::choose(Some(&shared), &outside), Io::Shared);
        // Through a symlink the nodes' path may differ: split as before.
        assert_eq!(Io::choose(Some(&link), &inside), Io::Shared);
        // Not readable to every node user: split as before.
        assert_eq!(Io::choose(Some(&shared), &private), Io::Shared);
        let _ = std::fs::remove_dir_all(&base);
    }
}
