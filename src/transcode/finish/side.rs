//! Side streams: every stream but the chunked video (audio, subtitles) is
//! encoded once, from the source, while the chunks encode — into
//! `side.EXT` in the job directory, kept for a resume.
//!
//! A compute node encodes them: the controller only coordinates (issue 21).
//! - Where the nodes read the source in place (a source in the shared
//!   directory), the node writes into the shared work directory; the
//!   controller then opens what it wrote (a regular file, never a link,
//!   within a size bound) and copies it into its private job directory.
//! - Where only the controller has the source (chunks travel over SSH), it
//!   decodes the audio into PCM (a decode costs a fraction of an encode)
//!   and sends it with the subtitles into the node's stdin
//!   (`ffmpeg::side_feed`); the node encodes them into a temporary file of
//!   its own (`side.sh`) and sends it back, straight into the private job
//!   directory. PCM is 0.4 MB/s for 48 kHz stereo (1.2 MB/s for 5.1): on a
//!   LAN, less than the chunks' own traffic. Options that copy a stream
//!   leave the work here: a copy costs nothing worth sending.
//!
//! Either way nothing the merge reads is where a node can still write, and
//! the controller probes it. Should the node fail for any reason, the
//! controller encodes them itself, from the source: its own error is the
//! one the user sees.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use std::process::Stdio;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use crate::process::run_ffmpeg;
use crate::remote::{Node, Transport};
use crate::safefs::file_fd_path;
use crate::transcode::ffmpeg;
use crate::transcode::job::JobDir;

/// A job's side streams to encode.
#[derive(Debug, Clone)]
pub struct SideJob {
    pub source: String,
    pub video_index: usize,
    /// The user's encoder options (ffmpeg applies each to its streams).
    pub codec_args: Vec<String>,
    /// The output's muxer: ffmpeg's defaults for it apply, as in a plain run.
    pub format: String,
    pub ext: String,
    pub streams: usize,
    /// The nodes read `source` in place (it is in the shared directory).
    pub in_place: bool,
    /// The source's size: bounds what a node's side file may take.
    pub source_bytes: u64,
}

impl SideJob {
    /// Encode them (on `node` where it can read the source), unless a
    /// resumed job has them already, and read what the merge needs.
    /// `Err(Refused)`: ffmpeg refused the options.
    pub async fn run(&self, job: &JobDir, node: Option<&Node>) -> Result<SideFile, SideError> {
        let on_node = match node.filter(|_| !job.has(&JobDir::side_name(&self.ext))) {
            Some(node) if self.in_place => encode_on(job, self, node).await,
            // A stream copied is no work worth sending.
            Some(node @ Node::Ssh(_)) if !self.codec_args.iter().any(|a| a == "copy") => {
                encode_fed(job, self, node).await
            }
            _ => Err(OffNode),
        };
        let by = match on_node {
            Ok(()) => node.map(|n| n.name().to_string()),
            Err(OffNode) => {
                encode(job, self).await.map_err(SideError::Refused)?;
                None
            }
        };
        let mut file = side_file(job, &self.ext).await.map_err(SideError::Unreadable)?;
        file.node = by;
        Ok(file)
    }
}

/// The encode on a node did not give a side file (the node, its link, its
/// ffmpeg or its file): the controller does it.
struct OffNode;

const SIDE_SH: &str = include_str!("side.sh");

/// Encode the side streams on `node` into the shared work directory, then
/// take a checked copy into the private job directory.
async fn encode_on(job: &JobDir, s: &SideJob, node: &Node) -> Result<(), OffNode> {
    let part = format!("side.node.{}", s.ext);
    job.discard(&part);
    // Created here: the name is this job's, the node writes into it.
    drop(job.create(&part).map_err(|_| OffNode)?);
    let dest = job.path(&part).to_string_lossy().into_owned();
    let argv = ffmpeg::side(&s.source, s.video_index, &s.codec_args, &s.format, &dest);
    let mut cmd = node.command_for(&node.under_shell(argv), &label(job));
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    let result = match finish(cmd).await {
        true => take_copy(job, &part, &s.ext, s.source_bytes).map_err(|_| OffNode),
        false => Err(OffNode),
    };
    job.discard(&part);
    result
}

/// Encode the side streams on `node` from their packets, sent from here;
/// the node's file comes back into the private directory.
async fn encode_fed(job: &JobDir, s: &SideJob, node: &Node) -> Result<(), OffNode> {
    let (file, temp) = job.create_temp(&format!("side.part.{}", s.ext)).map_err(|_| OffNode)?;
    let result = fed(s, node, &file, &label(job)).await.and_then(|()| file.sync_all().map_err(|_| OffNode));
    let kept = result.and_then(|()| job.rename(&temp, &JobDir::side_name(&s.ext)).map_err(|_| OffNode));
    if kept.is_err() {
        job.discard_private(&temp);
    }
    kept
}

async fn fed(s: &SideJob, node: &Node, out: &std::fs::File, label: &str) -> Result<(), OffNode> {
    let feed_argv = ffmpeg::side_feed(&s.source, s.video_index);
    let mut feed = crate::transcode::encode::spawn_split(&feed_argv, Stdio::piped()).map_err(|_| OffNode)?;
    let stdin = crate::transcode::encode::stdout_as_stdin(&mut feed).ok_or(OffNode)?;
    let mut argv = vec!["sh".to_string(), "-c".into(), SIDE_SH.into(), "dffmpeg-side".into()];
    argv.extend(ffmpeg::side_from_feed(&s.codec_args, &s.format));
    let mut cmd = node.command_for(&argv, label);
    cmd.stdin(stdin).stdout(out.try_clone().map_err(|_| OffNode)?).stderr(Stdio::piped()).kill_on_drop(true);
    crate::process::limit_file_size(cmd.as_std_mut(), side_cap(s.source_bytes));
    let encoded = finish(cmd).await;
    let fed = feed.wait().await.is_ok_and(|st| st.success());
    match encoded && fed {
        true => Ok(()),
        false => Err(OffNode),
    }
}

/// Run a node's command to its end: whether it succeeded (its error text
/// is not needed: the controller's own run has the last word).
async fn finish(mut cmd: tokio::process::Command) -> bool {
    let Ok(mut child) = cmd.spawn() else { return false };
    // Only the child holds the pipe and file ends now (EOF, SIGPIPE).
    drop(cmd);
    if let Some(e) = child.stderr.take() {
        crate::transcode::encode::read_errors(e, Arc::new(AtomicU32::new(0))).await;
    }
    child.wait().await.is_ok_and(|s| s.success())
}

/// `dffmpeg-JOB-side`: what a scheduler's job for them is called.
fn label(job: &JobDir) -> String {
    format!("dffmpeg-{}-side", job.dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

/// The most a node's side file may take: twice the source plus 64 MiB.
fn side_cap(source_bytes: u64) -> u64 {
    source_bytes.saturating_mul(2).saturating_add(64 << 20)
}

/// Copy the node's side file into the private directory as `side.EXT`:
/// opened without following links, a regular file, at most twice the
/// source's size plus 64 MiB.
fn take_copy(job: &JobDir, part: &str, ext: &str, source_bytes: u64) -> Result<()> {
    let mut from = job.open_part(part)?;
    let size = from.metadata()?.len();
    let cap = side_cap(source_bytes);
    anyhow::ensure!(size <= cap, "the node's side file is {size} bytes, more than {cap}");
    let (mut file, temp) = job.create_temp(&format!("side.part.{ext}"))?;
    let copied = std::io::copy(&mut std::io::Read::take(&mut from, cap), &mut file)
        .and_then(|_| file.sync_all())
        .map_err(anyhow::Error::from)
        .and_then(|()| job.rename(&temp, &JobDir::side_name(ext)));
    if copied.is_err() {
        job.discard_private(&temp);
    }
    copied
}

#[derive(Debug, thiserror::Error)]
pub enum SideError {
    #[error("ffmpeg refused the options for the audio/subtitle streams:\n{0:#}")]
    Refused(anyhow::Error),
    #[error("the side streams' file cannot be read: {0:#}")]
    Unreadable(anyhow::Error),
}

/// The side streams' file, ready for the merge.
#[derive(Debug, Clone)]
pub struct SideFile {
    pub path: PathBuf,
    /// Its start time, seconds.
    pub start: f64,
    pub streams: usize,
    /// The node that encoded it (none: this machine, or a resumed job).
    pub node: Option<String>,
}

/// Encode the side streams into `side.EXT` in the job directory, unless a
/// resumed job already has it. An error here is ffmpeg refusing the options.
async fn encode(job: &JobDir, s: &SideJob) -> Result<()> {
    let (source, video_index, codec_args, format, ext) =
        (&s.source, s.video_index, &s.codec_args, &s.format, &s.ext);
    let done = JobDir::side_name(ext);
    if job.has(&done) {
        return Ok(());
    }
    // ffmpeg writes into a file created here, through its descriptor.
    let (file, part) = job.create_temp(&format!("side.part.{ext}"))?;
    let argv = ffmpeg::side(source, video_index, codec_args, format, &file_fd_path(&file).to_string_lossy());
    if let Err(e) = run_ffmpeg(&argv).await {
        job.discard_private(&part);
        return Err(e);
    }
    file.sync_all().with_context(|| format!("cannot write {}", job.path(&part).display()))?;
    job.rename(&part, &done)
}

/// What the merge needs of the side file, read as soon as it is written
/// (while the chunks still encode).
async fn side_file(job: &JobDir, ext: &str) -> Result<SideFile> {
    let path = job.private_path(&JobDir::side_name(ext));
    let (start, streams) = start_and_streams(&path).await?;
    Ok(SideFile { path, start, streams, node: None })
}

/// Start time and stream count of a file, from ffprobe.
async fn start_and_streams(path: &Path) -> Result<(f64, usize)> {
    let out = crate::transcode::probe::ffprobe(
        &["-show_entries", "format=start_time:stream=index", "-of", "json"],
        path,
    )
    .await
    .with_context(|| format!("{}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&out).context("ffprobe output")?;
    let start = v["format"]["start_time"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let streams = v["streams"].as_array().map(|a| a.len()).unwrap_or(0);
    Ok((start, streams))
}
