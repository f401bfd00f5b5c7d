//! Side streams: every stream but the chunked video (audio, subtitles) is
//! encoded once, from the source, while the chunks encode — into
//! `side.EXT` in the job directory, kept for a resume.
//!
//! Where the nodes read the source in place (a source in the shared
//! directory), a compute node encodes them into the shared work directory:
//! the controller only coordinates. It then opens what the node wrote (a
//! regular file, never a link, within a size bound), copies it into its
//! private job directory and probes that copy: nothing the merge reads is
//! where a node can still write. A node lost meanwhile: the controller
//! encodes them itself. Otherwise (the chunks travel over SSH) the
//! controller encodes them, as the source is only here.

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
        let on_node = match node.filter(|_| self.in_place && !job.has(&JobDir::side_name(&self.ext))) {
            Some(node) => encode_on(job, self, node).await,
            None => Err(OnNode::Lost),
        };
        let by = match on_node {
            Ok(()) => node.map(|n| n.name().to_string()),
            Err(OnNode::Refused(e)) => return Err(SideError::Refused(e)),
            Err(OnNode::Lost) => {
                encode(job, self).await.map_err(SideError::Refused)?;
                None
            }
        };
        let mut file = side_file(job, &self.ext).await.map_err(SideError::Unreadable)?;
        file.node = by;
        Ok(file)
    }
}

/// How the encode on a node went wrong.
enum OnNode {
    /// ffmpeg refused the options (the same anywhere).
    Refused(anyhow::Error),
    /// The node, its link or its file failed: the controller does it.
    Lost,
}

/// Encode the side streams on `node` into the shared work directory, then
/// take a checked copy into the private job directory.
async fn encode_on(job: &JobDir, s: &SideJob, node: &Node) -> Result<(), OnNode> {
    let part = format!("side.node.{}", s.ext);
    job.discard(&part);
    // Created here: the name is this job's, the node writes into it.
    drop(job.create(&part).map_err(|_| OnNode::Lost)?);
    let dest = job.path(&part).to_string_lossy().into_owned();
    let argv = ffmpeg::side(&s.source, s.video_index, &s.codec_args, &s.format, &dest);
    let label =
        format!("dffmpeg-{}-side", job.dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
    let mut cmd = node.command_for(&node.under_shell(argv), &label);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    let ran = async {
        let mut child = cmd.spawn().ok()?;
        let errors = match child.stderr.take() {
            Some(e) => crate::transcode::encode::read_errors(e, Arc::new(AtomicU32::new(0))).await,
            None => Vec::new(),
        };
        Some((child.wait().await.ok()?, errors))
    };
    let result = match ran.await {
        Some((status, errors)) if !status.success() => match node.lost(&status, &errors) {
            true => Err(OnNode::Lost),
            false => Err(OnNode::Refused(anyhow::anyhow!("{}", errors.join("\n")))),
        },
        Some(_) => take_copy(job, &part, s.source_bytes).map_err(|_| OnNode::Lost),
        None => Err(OnNode::Lost),
    };
    job.discard(&part);
    result
}

/// Copy the node's side file into the private directory as `side.EXT`:
/// opened without following links, a regular file, at most twice the
/// source's size plus 64 MiB.
fn take_copy(job: &JobDir, part: &str, source_bytes: u64) -> Result<()> {
    let mut from = job.open_part(part)?;
    let size = from.metadata()?.len();
    let cap = source_bytes.saturating_mul(2).saturating_add(64 << 20);
    anyhow::ensure!(size <= cap, "the node's side file is {size} bytes, more than {cap}");
    let ext = part.rsplit('.').next().unwrap_or_default();
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
