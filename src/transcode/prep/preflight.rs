//! Preflight: before any node starts, this machine runs the user's options
//! on the source's first frame twice — once as one plain ffmpeg run would
//! (it fails with ffmpeg's own error, and tells what the output's video
//! stream must carry: field order, colour tags ...), once as a chunk is
//! encoded on the nodes (the job's reference codec parameters, which every
//! chunk must match).

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use crate::transcode::context::{Io, JobContext};
use crate::transcode::encode::{read_errors, spawn_split, stdout_as_stdin};
use crate::transcode::encoders::Unchunkable;
use crate::transcode::ffmpeg;
use crate::transcode::verify::{self, ChunkFacts, VerifyError};

/// Why the options cannot run: ffmpeg's own error, or what it made does not
/// read back.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("cannot run ffmpeg: {0}")]
    Spawn(std::io::Error),
    #[error("cannot run ffmpeg: no pipe")]
    NoPipe,
    /// ffmpeg's error lines (or its exit status when it printed none).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The options work, but not chunk by chunk.
    #[error(transparent)]
    Unchunkable(#[from] Unchunkable),
}

// By hand, not `#[from]`: the message already names the cause, which
// must not also be its `source()` (printed twice in a chain).
impl From<std::io::Error> for PreflightError {
    fn from(e: std::io::Error) -> Self {
        PreflightError::Spawn(e)
    }
}

/// ffmpeg's error lines, or its exit status when it printed none.
fn refused(errors: &[String], status: std::process::ExitStatus) -> PreflightError {
    PreflightError::Refused(if errors.is_empty() {
        format!("ffmpeg exited with {status}")
    } else {
        errors.join("\n")
    })
}

/// Encode the first frame of the first chunk on the controller. Fails with
/// ffmpeg's own error when the options are wrong — before any node starts.
/// The encoder's output goes straight into ffprobe (both start at once).
pub async fn reference(ctx: &JobContext) -> Result<ChunkFacts, PreflightError> {
    let chunk = &ctx.plan.chunks[0];
    let video = ffmpeg::ChunkVideo::new(&ctx.spec, &ctx.plan, chunk);
    // The chunk reaches the encoder as it will on the nodes (the reference
    // codec parameters must be those of the real parts).
    let input = match ctx.io {
        Io::SharedSource => ffmpeg::Input::source(&ctx.source, ctx.video_index, &ctx.plan, chunk),
        Io::Pipe | Io::Shared => ffmpeg::Input::Nut("pipe:0".into()),
    };
    let enc_argv = ffmpeg::preflight(&ctx.spec, &video, &input, "pipe:1");
    let mut split = None;
    let feed = match input {
        ffmpeg::Input::Source { .. } => Stdio::null(),
        ffmpeg::Input::Nut(_) => {
            let split_argv = ffmpeg::split(&ctx.source, ctx.video_index, &ctx.plan, chunk, "pipe:1");
            let mut child = spawn_split(&split_argv, Stdio::piped())?;
            // The split's pipe is the encoder's stdin, as in an attempt.
            let feed = stdout_as_stdin(&mut child).ok_or(PreflightError::NoPipe)?;
            split = Some(child);
            feed
        }
    };
    let mut enc = crate::process::command(&enc_argv[0])
        .args(&enc_argv[1..])
        .stdin(feed)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let encoded = stdout_as_stdin(&mut enc).ok_or(PreflightError::NoPipe)?;
    let encoding = async {
        let errors = match enc.stderr.take() {
            Some(e) => read_errors(e, Arc::new(AtomicU32::new(0))).await,
            None => Vec::new(),
        };
        (errors, enc.wait().await)
    };
    let ((errors, status), facts) =
        tokio::join!(encoding, verify::inspect_from(Path::new("pipe:0"), encoded));
    drop(split);
    let status = status?;
    if !status.success() {
        return Err(refused(&errors, status));
    }
    Ok(facts?)
}

/// Encode the source's first frame as one plain ffmpeg run with the user's
/// options would, into the output's format, and read what that gives the
/// output's video stream (what ffmpeg decides from the first frame — field
/// order, colour tags — and from the options). Fails with ffmpeg's error.
pub async fn plain(run: &ffmpeg::PlainRun<'_>) -> Result<ChunkFacts, PreflightError> {
    let argv = ffmpeg::plain_first_frame(run);
    let (status, err) = crate::process::run_quiet(&argv).await?;
    if !status.success() {
        if err.contains("No codec tag defined") {
            let encoder = ffmpeg::encoder_arg(run.codec_args).unwrap_or_else(|| "this encoder".into());
            return Err(Unchunkable::NotInNut { encoder }.into());
        }
        let lines: Vec<String> = if err.is_empty() { Vec::new() } else { vec![err] };
        return Err(refused(&lines, status));
    }
    Ok(verify::inspect(Path::new(run.dest)).await?)
}
