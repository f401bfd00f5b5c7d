//! Side streams (audio, subtitles: encoded once, from the source) and the
//! final merge: chunks by the concat demuxer, stream copy, into a temporary
//! file renamed into place only when complete.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{anyhow, bail, Context, Result};

use super::ffmpeg;
use super::job::JobDir;
use super::plan::Plan;
use crate::safefs::{file_fd_path, Dir};

async fn run_ffmpeg(argv: &[String]) -> Result<()> {
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run ffmpeg")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim();
        bail!("{}", if err.is_empty() { "ffmpeg failed" } else { err });
    }
    Ok(())
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
pub async fn side_streams(
    job: &JobDir,
    source: &str,
    video_index: usize,
    codec_args: &[String],
    format: &str,
    ext: &str,
) -> Result<()> {
    let done = JobDir::side_name(ext);
    if job.has(&done) {
        return Ok(());
    }
    // ffmpeg writes into a file created here, through its descriptor.
    let (file, part) = job.create_temp(&format!("side.part.{ext}"))?;
    let argv = ffmpeg::side(source, video_index, codec_args, format, &file_fd_path(&file).to_string_lossy());
    if let Err(e) = run_ffmpeg(&argv).await {
        job.discard(&part);
        return Err(e);
    }
    file.sync_all().with_context(|| format!("cannot write {}", job.path(&part).display()))?;
    job.rename(&part, &done)
}

/// What the merge needs of the side file, read as soon as it is written
/// (while the chunks still encode).
pub async fn side_file(job: &JobDir, ext: &str) -> Result<SideFile> {
    let path = job.local_path(&JobDir::side_name(ext));
    let (start, streams) = start_and_streams(&path).await?;
    Ok(SideFile { path, start, streams })
}

/// Start time and stream count of a file, from ffprobe.
async fn start_and_streams(path: &Path) -> Result<(f64, usize)> {
    let out =
        super::probe::ffprobe(&["-show_entries", "format=start_time:stream=index", "-of", "json"], path)
            .await
            .with_context(|| format!("{}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&out).context("ffprobe output")?;
    let start = v["format"]["start_time"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let streams = v["streams"].as_array().map(|a| a.len()).unwrap_or(0);
    Ok((start, streams))
}

/// The concat list: each chunk with its exact planned duration, so the
/// chunks follow each other on the source's own timeline.
pub fn concat_list(plan: &Plan) -> String {
    let mut list = String::from("ffconcat version 1.0\n");
    for c in &plan.chunks {
        list.push_str(&format!("file chunk_{:05}.nut\n", c.index));
        if let Some(end) = c.end {
            list.push_str(&format!("duration {:.6}\n", plan.time_base.seconds(end - c.start)));
        }
    }
    list
}

pub struct MergeRequest<'a> {
    pub job: &'a JobDir,
    pub plan: &'a Plan,
    pub source: &'a str,
    pub video_index: usize,
    /// What one plain ffmpeg run gives the video stream.
    pub plain: Option<&'a super::verify::CodecParams>,
    /// The side streams' file and where they start in the source, in
    /// seconds (None: no side streams).
    pub side: Option<(&'a SideFile, f64)>,
    pub muxer_args: &'a [String],
    pub format: &'a str,
    pub output: &'a Path,
}

pub async fn merge(m: &MergeRequest<'_>) -> Result<()> {
    m.job.write(JobDir::CONCAT_LIST, concat_list(m.plan).as_bytes())?;
    let list = m.job.local_path(JobDir::CONCAT_LIST);
    let first = m.plan.time_base.seconds(m.plan.first_pts());
    let side = m
        .side
        .filter(|(f, _)| f.streams > 0)
        .map(|(f, src_start)| (&f.path, (src_start - first) - f.start, f.streams));
    let name = m.output.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("bad output name"))?;
    let dir = Dir::open(m.output.parent().ok_or_else(|| anyhow!("bad output name"))?)?;
    // The output's folder may be writable by others (the shared output/):
    // ffmpeg writes into a new file created here, through its descriptor,
    // which is then renamed into place (replacing, never following, a link).
    let (file, tmp_name) = dir.create_temp(&format!(".{name}.dffmpeg-part"))?;
    let tmp = file_fd_path(&file);
    let side_str = side.as_ref().map(|(p, o, n)| (p.to_string_lossy().into_owned(), *o, *n));
    let argv = ffmpeg::merge(&ffmpeg::MergeInputs {
        concat_list: &list.to_string_lossy(),
        side: side_str.as_ref().map(|(p, o, n)| (p.as_str(), *o, *n)),
        source: m.source,
        source_offset: first,
        video_index: m.video_index,
        plain: m.plain,
        muxer_args: m.muxer_args,
        format: m.format,
        dest: &tmp.to_string_lossy(),
    });
    if let Err(e) = run_ffmpeg(&argv).await {
        dir.remove_quietly(&tmp_name);
        return Err(e.context("merge failed"));
    }
    let placed = file.sync_all().map_err(anyhow::Error::from).and_then(|()| {
        dir.rename(&tmp_name, &dir, name)?;
        Ok(dir.sync()?)
    });
    if let Err(e) = placed {
        dir.remove_quietly(&tmp_name);
        return Err(e.context(format!("cannot write {}", m.output.display())));
    }
    // Renamed by name: make sure the name now holds the file written.
    use std::os::unix::fs::MetadataExt;
    let (ours, there) = (file.metadata()?, std::fs::symlink_metadata(m.output)?);
    if (ours.dev(), ours.ino()) != (there.dev(), there.ino()) {
        bail!("{} was replaced while it was written (by another user of its folder?)", m.output.display());
    }
    Ok(())
}
