//! Merge: the verified chunks by the concat demuxer (stream copy), the side
//! streams and the source's metadata into a new file of the output's
//! folder, renamed into place only when complete.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::safefs::{file_fd_path, Dir};
use crate::transcode::ffmpeg;
use crate::transcode::job::JobDir;
use crate::transcode::plan::Plan;
use crate::transcode::side::SideFile;

/// The concat list: each chunk (as `paths` name it: the `/proc` paths of
/// the verified files, held open) with its exact planned duration, so the
/// chunks follow each other on the source's own timeline, and its first
/// frame's time in its file (`starts`, as verified; else where it was
/// planned) as its in point: the concat demuxer puts that time at the
/// chunk's place. (Left out, it is the start time libavformat reads from
/// the chunk, which it leaves unknown for MPEG-1/2 and MPEG-4 Part 2 in
/// NUT: their first packet has no decode time. The chunk would then keep
/// its own timestamps on top of its place.)
pub fn concat_list(plan: &Plan, paths: &[String], starts: &[Option<f64>]) -> String {
    let mut list = String::from("ffconcat version 1.0\n");
    for ((c, path), start) in plan.chunks.iter().zip(paths).zip(starts) {
        list.push_str(&format!("file '{}'\n", path.replace('\'', "'\\''")));
        let inpoint = match start {
            // Rounded up to the microsecond: the demuxer seeks to the
            // keyframe at or before it, the chunk's first packet.
            Some(t) => format!("{:.6}", (t * 1e6).ceil() / 1e6),
            None => ffmpeg::chunk_inpoint(plan, c),
        };
        list.push_str(&format!("inpoint {inpoint}\n"));
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
    pub plain: Option<&'a crate::transcode::verify::CodecParams>,
    /// The side streams' file and where they start in the source, in
    /// seconds (None: no side streams).
    pub side: Option<(&'a SideFile, f64)>,
    pub muxer_args: &'a [String],
    pub format: &'a str,
    pub output: &'a Path,
    /// The output's folder (see `output::open_dir`).
    pub out_dir: &'a Dir,
    /// `-y`: an output that appeared meanwhile may be replaced.
    pub overwrite: bool,
}

/// A temporary file of the merge, removed unless it was renamed into
/// place (also when the merge is abandoned midway: Ctrl-C).
struct Temp<'a> {
    dir: &'a Dir,
    name: String,
    placed: bool,
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if !self.placed {
            self.dir.remove_quietly(&self.name);
        }
    }
}

pub async fn merge(m: &MergeRequest<'_>) -> Result<()> {
    // The verified files themselves, not whatever their names hold now.
    let chunks = m.job.open_chunks(m.plan.chunks.iter().map(|c| c.index))?;
    let paths: Vec<String> =
        chunks.iter().map(|(f, _)| file_fd_path(f).to_string_lossy().into_owned()).collect();
    let starts: Vec<Option<f64>> = chunks.iter().map(|(_, start)| *start).collect();
    m.job.write(JobDir::CONCAT_LIST, concat_list(m.plan, &paths, &starts).as_bytes())?;
    let list = m.job.private_path(JobDir::CONCAT_LIST);
    let first = m.plan.time_base.seconds(m.plan.first_pts());
    let side = m
        .side
        .filter(|(f, _)| f.streams > 0)
        .map(|(f, src_start)| (&f.path, (src_start - first) - f.start, f.streams));
    let name = m.output.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("bad output name"))?;
    let dir = m.out_dir;
    // The output's folder may be writable by others (the shared output/):
    // ffmpeg writes into a new file created here, through its descriptor,
    // which is then renamed into place (replacing, never following, a link).
    let (file, tmp_name) = dir.create_temp(&format!(".{name}.dffmpeg-part"))?;
    let mut temp = Temp { dir, name: tmp_name.clone(), placed: false };
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
    crate::process::run_ffmpeg(&argv).await.context("merge failed")?;
    drop(chunks);
    // ffmpeg's concat exits 0 when a part cannot be read: the output is
    // checked before it replaces anything.
    let streams = 1 + side.map(|(_, _, n)| n).unwrap_or(0);
    crate::transcode::verify::output(&tmp, m.plan.total_frames, streams).await.with_context(|| {
        format!("the merged output is not complete; the job directory {} is kept", m.job.dir.display())
    })?;
    // Durable before the job directory (the only other copy) goes: the
    // file, then its name.
    let cannot = || format!("cannot write {}", m.output.display());
    file.sync_all().with_context(cannot)?;
    match m.overwrite {
        true => dir.rename(&tmp_name, dir, name).with_context(cannot)?,
        false => {
            if !dir.rename_noreplace(&tmp_name, dir, name).with_context(cannot)? {
                bail!("{} appeared while it was being made (use -y to overwrite)", m.output.display());
            }
        }
    }
    temp.placed = true;
    dir.sync().with_context(cannot)?;
    // Renamed by name: make sure the name now holds the file written.
    use std::os::unix::fs::MetadataExt;
    let (ours, there) = (file.metadata()?, std::fs::symlink_metadata(m.output)?);
    if (ours.dev(), ours.ino()) != (there.dev(), there.ino()) {
        bail!("{} was replaced while it was written (by another user of its folder?)", m.output.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::plan::Chunk;
    use crate::transcode::probe::Rational;

    #[test]
    fn each_chunk_is_placed_by_its_first_frame() {
        let chunk = |index, start, end| Chunk {
            index,
            start,
            end,
            frames: 25,
            first_packet: 0,
            packets: 25,
            seek_pts: start,
            trim_start: None,
            trim_end: None,
        };
        let plan = Plan {
            time_base: Rational { num: 1, den: 1000 },
            chunks: vec![chunk(0, 3, Some(1003)), chunk(1, 1003, None)],
            total_frames: 50,
            frame_seconds: 0.04,
            skipped_leading: 0,
        };
        // Chunk 0 as verified (its encoder put the first frame on its own
        // grid), chunk 1 of an older job: where it was planned.
        let list = concat_list(&plan, &["/proc/1/fd/3".into(), "/proc/1/fd/4".into()], &[Some(10.0), None]);
        assert_eq!(
            list,
            "ffconcat version 1.0\nfile '/proc/1/fd/3'\ninpoint 10.000000\nduration 1.000000\n\
             file '/proc/1/fd/4'\ninpoint 11.003000\n"
        );
    }
}
