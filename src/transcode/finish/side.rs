//! Side streams: every stream but the chunked video (audio, subtitles) is
//! encoded once, from the source, on the controller, while the chunks
//! encode — into `side.EXT` in the job directory, kept for a resume.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::process::run_ffmpeg;
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
}

impl SideJob {
    /// Encode them, unless a resumed job has them already, and read what
    /// the merge needs. `Err(Refused)`: ffmpeg refused the options.
    pub async fn run(&self, job: &JobDir) -> Result<SideFile, SideError> {
        encode(job, self).await.map_err(SideError::Refused)?;
        side_file(job, &self.ext).await.map_err(SideError::Unreadable)
    }
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
    Ok(SideFile { path, start, streams })
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
