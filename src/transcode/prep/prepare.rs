//! Prepare one file's job: check the input and the output, open (or
//! resume) the job directory, probe the input, run the preflight — then,
//! once the cluster's size is known, plan its chunks. The first part
//! overlaps connecting to the nodes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;

use crate::safefs::Dir;
use crate::transcode::args::UserArgs;
use crate::transcode::context::{Io, JobContext};
use crate::transcode::encoders;
use crate::transcode::ffmpeg::{self, EncodeSpec};
use crate::transcode::inputs::FileSpec;
use crate::transcode::job::{self, Found, JobDir, JobKey, JobRecord};
use crate::transcode::plan;
use crate::transcode::preflight;
use crate::transcode::prep::alike::{self, Preflighted, Preflights};
use crate::transcode::probe::{self, Probe};
use crate::transcode::verify::ChunkFacts;
use crate::transcode::{output, side};

/// Why a file cannot be transcoded.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Bad input, output or options: the user's to fix (exit 2 alone).
    #[error("{0:#}")]
    Refused(anyhow::Error),
    /// Left alone on purpose (its output exists).
    #[error("{0}")]
    Skipped(String),
    /// Something failed on this machine.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

fn refused(e: impl Into<anyhow::Error>) -> PrepareError {
    PrepareError::Refused(e.into())
}

/// What every file of the batch shares.
#[derive(Clone)]
pub struct Options {
    pub user: Arc<UserArgs>,
    /// The ffmpeg arguments as given (part of the job's key).
    pub raw_args: Arc<Vec<String>>,
    pub chunk: Option<f64>,
    pub fresh: bool,
    pub must_resume: bool,
    pub overwrite: bool,
    /// An existing output is skipped (a batch) instead of refused.
    pub skip_existing: bool,
    pub shared_dir: Option<PathBuf>,
    /// The embedded local cluster (every node is this machine): the source
    /// is read in place, no split.
    pub all_local: bool,
    /// The batch's preflights, by alike input (see `alike.rs`).
    pub preflights: Preflights,
}

/// A file checked and probed, its job directory open.
pub struct Checked {
    pub input: PathBuf,
    pub output: PathBuf,
    /// The output's folder, opened without following links.
    pub out_dir: Arc<Dir>,
    pub source: String,
    pub format: String,
    pub ext: String,
    pub io: Io,
    pub job: Arc<JobDir>,
    pub key: JobKey,
    pub probe: Probe,
    /// A resumed job's record, or a new job's spec and encoder.
    pub start: Start,
}

pub enum Start {
    Resumed(Box<JobRecord>),
    New { spec: Box<EncodeSpec>, encoder: Option<String> },
}

/// A file ready to encode.
pub struct Prepared {
    pub checked: Checked,
    pub record: JobRecord,
}

impl Prepared {
    pub fn ctx(&self) -> JobContext {
        let c = &self.checked;
        JobContext {
            source: c.source.clone(),
            video_index: c.probe.video,
            plan: self.record.plan.clone(),
            spec: self.record.encode.clone(),
            io: c.io,
        }
    }

    /// The work of one frame: megapixels (the scheduler's unit, so that
    /// files of other sizes share one speed measure).
    pub fn weight(&self) -> f64 {
        weight(&self.checked.probe)
    }

    /// What the side streams' encode needs, if the input has any.
    pub fn side(&self, user: &UserArgs) -> Option<side::SideJob> {
        let c = &self.checked;
        // What the side encode keeps (`-an` drops the audio: with nothing
        // left there is nothing to encode, and ffmpeg would refuse).
        let dropped = |kind: &str| match kind {
            "audio" => user.codec.iter().any(|a| a == "-an"),
            "subtitle" => user.codec.iter().any(|a| a == "-sn"),
            "data" | "attachment" => true,
            _ => false,
        };
        let streams = c.probe.side_streams().filter(|s| !dropped(&s.codec_type)).count();
        (streams > 0).then(|| side::SideJob {
            source: c.source.clone(),
            video_index: c.probe.video,
            codec_args: user.codec.clone(),
            format: c.format.clone(),
            ext: c.ext.clone(),
            streams,
            in_place: c.io == crate::transcode::context::Io::SharedSource,
            source_bytes: std::fs::metadata(&c.input).map(|m| m.len()).unwrap_or(0),
        })
    }
}

/// The work of one frame of a probed input: megapixels.
pub fn weight(probe: &Probe) -> f64 {
    let v = probe.video_stream();
    (f64::from(v.width.unwrap_or(0)) * f64::from(v.height.unwrap_or(0)) / 1e6).max(0.01)
}

/// The input, canonical and UTF-8 (paths go to nodes as text).
fn check_input(input: &Path) -> Result<(PathBuf, String), PrepareError> {
    let meta = std::fs::metadata(input).map_err(|e| refused(anyhow!("{}: {e}", input.display())))?;
    if meta.is_dir() {
        return Err(refused(anyhow!("{} is a directory, not a video", input.display())));
    }
    std::fs::File::open(input).map_err(|e| refused(anyhow!("{}: {e}", input.display())))?;
    let canon = input.canonicalize().map_err(|e| refused(anyhow!("{}: {e}", input.display())))?;
    let source = canon
        .to_str()
        .ok_or_else(|| refused(anyhow!("{}: file names must be UTF-8", input.display())))?
        .to_string();
    Ok((canon, source))
}

/// Everything before the plan. A new job's directory is removed again if
/// the file turns out unusable.
pub async fn check(file: &FileSpec, o: &Options) -> Result<Checked, PrepareError> {
    let (input, source) = check_input(&file.input)?;
    let wanted = file.output.clone().unwrap_or_else(|| output::default_output(&input));
    let out_dir = output::open_dir(file.out_root.as_deref(), &wanted).map_err(refused)?;
    let output = match output::check_output(&input, &wanted, &out_dir, o.overwrite) {
        Ok(out) => out,
        Err(output::OutputError::Exists(p)) if o.skip_existing => {
            return Err(PrepareError::Skipped(format!("{} exists (use -y to overwrite)", p.display())))
        }
        Err(e) => return Err(refused(e)),
    };
    let out_dir = Arc::new(out_dir);
    let format = output::format_for(&output, o.user.format.as_deref()).map_err(refused)?;
    let ext = output.extension().and_then(|e| e.to_str()).unwrap_or("out").to_string();
    let key = JobKey::new(&input, &output, &o.raw_args, o.chunk).map_err(refused)?;
    let at = job::location(&output, o.shared_dir.as_deref()).map_err(PrepareError::Failed)?;
    let (job, found) = JobDir::open(&at, &key, o.fresh, o.must_resume).map_err(refused)?;
    let job = Arc::new(job);
    let io = Io::choose(o.shared_dir.as_deref(), &input, o.all_local);
    for dir in [job.dir.as_path(), out_dir.path()] {
        if let Err(e) = check_space(dir, &input) {
            if resumed_is_none(&found) {
                // Nothing in it yet: it goes with the file.
                let _ = job.remove();
            }
            return Err(e);
        }
    }
    let resumed = match found {
        Found::Resumed(r) => Some(r),
        _ => None,
    };
    if let Some(r) = &resumed {
        if let Err(e) = same_options(r, &o.user) {
            return Err(refused(anyhow!(
                "{e}; the job in {} cannot resume: use --fresh to start over",
                job.dir.display()
            )));
        }
    }
    let new = resumed.is_none();
    let named = Named {
        input: &input,
        source: &source,
        format: &format,
        ext: &ext,
        io,
        job: &job,
        one_build: o.all_local,
    };
    match probe_and_preflight(&named, &o.user, resumed.is_none(), &o.preflights, file.probed.clone()).await {
        Ok((probe, spec)) => {
            let start = match (resumed, spec) {
                (Some(r), _) => Start::Resumed(r),
                (None, Some((spec, encoder))) => Start::New { spec: Box::new(spec), encoder },
                (None, None) => {
                    return Err(PrepareError::Failed(anyhow!("internal: a new job without a preflight")))
                }
            };
            Ok(Checked { input, output, out_dir, source, format, ext, io, job, key, probe, start })
        }
        Err(e) => {
            if new {
                // Nothing in it yet: it goes with the file.
                let _ = job.remove();
            }
            Err(e)
        }
    }
}

/// A resumed job runs the encoder options of this command line, never
/// others: its record must say what this command line says (it is the
/// controller's own file, so a difference means damage or another version).
fn same_options(r: &JobRecord, user: &UserArgs) -> Result<(), &'static str> {
    let args = &r.encode.codec_args;
    let same = match user.video_codec {
        Some(_) => *args == user.codec,
        // The output format's default codec was put first.
        None => args.len() == user.codec.len() + 2 && args[0] == "-c:v" && args[2..] == user.codec[..],
    };
    if !same {
        return Err("its recorded encoder options differ from this command line's");
    }
    if r.encode.user_filter != user.video_filter {
        return Err("its recorded video filter differs from this command line's");
    }
    Ok(())
}

/// The names of a file under way.
struct Named<'a> {
    input: &'a Path,
    source: &'a str,
    format: &'a str,
    ext: &'a str,
    io: Io,
    job: &'a JobDir,
    /// Every node is this machine: one ffmpeg build, no reference encode
    /// needed (the first verified chunk is the reference).
    one_build: bool,
}

/// The probe and, for a new job, the preflight; the plain run of the first
/// frame needs no probe: both start at once. In a batch under way the
/// probe comes first: an alike input's preflight may serve.
async fn probe_and_preflight(
    n: &Named<'_>,
    user: &UserArgs,
    new: bool,
    preflights: &Preflights,
    streams: Option<Arc<Vec<u8>>>,
) -> Result<(Probe, Option<(EncodeSpec, Option<String>)>), PrepareError> {
    let probed =
        |r: Result<Probe, probe::ProbeError>| r.map_err(|e| refused(anyhow!("{}: {e}", n.input.display())));
    let (probe, plain) = if new && !preflights.is_empty() {
        (probed(probe::probe_with(n.input, streams).await)?, None)
    } else {
        let plain = async {
            match new {
                true => Some(plain_run(user, n).await),
                false => None,
            }
        };
        let (probe, plain) = tokio::join!(probe::probe_with(n.input, streams), plain);
        (probed(probe)?, plain)
    };
    encoders::check_target(&user.codec, frame_rate(&probe)).map_err(refused)?;
    if !new {
        return Ok((probe, None));
    }
    let key = alike::key(&probe, vfr_time_base(&probe), n.format, n.io);
    let done = match preflights.get(&key) {
        Some(p) => {
            if let Some(r) = &p.reference {
                n.job.save_reference(r).map_err(PrepareError::Failed)?;
            }
            p
        }
        None => {
            let plain = match plain {
                Some(plain) => plain?,
                None => plain_run(user, n).await?,
            };
            let p = preflight(user, &probe, n, plain).await?;
            preflights.put(key, p.clone());
            p
        }
    };
    Ok((probe, Some((done.spec, done.encoder))))
}

/// The source's time base when its frame rate is variable (the chunks
/// keep its timestamps).
fn vfr_time_base(probe: &Probe) -> Option<probe::Rational> {
    is_vfr(&probe.packets).then_some(probe.video_time_base)
}

fn options_refused(e: crate::transcode::preflight::PreflightError) -> PrepareError {
    refused(anyhow!("ffmpeg refused the options:\n{e}"))
}

/// One plain ffmpeg run of the source's first frame with the user's options,
/// in the output's format: it fails as ffmpeg itself would, and tells what
/// the output's video stream must carry. Returns the video encoder's
/// options (the format's default codec added when the user names none) too.
async fn plain_run(user: &UserArgs, n: &Named<'_>) -> Result<(Vec<String>, ChunkFacts), PrepareError> {
    let mut codec_args = user.codec.clone();
    if user.video_codec.is_none() {
        // As a plain ffmpeg would: the output format's default codec (the
        // chunks themselves are NUT files).
        let codec = output::default_video_codec(n.format)
            .await
            .ok_or_else(|| refused(anyhow!("format {} has no default video codec; pass -c:v", n.format)))?;
        codec_args.splice(0..0, ["-c:v".to_string(), codec]);
    }
    // Written into a file created here (the job directory may be shared).
    let (file, name) = n.job.create_temp(&format!("plain.{}", n.ext)).map_err(PrepareError::Failed)?;
    let dest = crate::safefs::file_fd_path(&file);
    let run = ffmpeg::PlainRun {
        source: n.source,
        codec_args: &codec_args,
        user_filter: user.video_filter.as_deref(),
        muxer_args: &user.muxer,
        format: n.format,
        dest: &dest.to_string_lossy(),
    };
    let plain = preflight::plain(&run).await;
    n.job.discard_private(&name);
    let plain = plain.map_err(|e| match e {
        preflight::PreflightError::Unchunkable(u) => refused(u),
        e => options_refused(e),
    })?;
    Ok((codec_args, plain))
}

/// Fix the job's encode spec (the plain run's decisions included) and its
/// reference codec parameters: the first frame of the first chunk, encoded
/// as the nodes will, is what every chunk is compared with (saved in the
/// job directory). Returns them with the spec and the encoder's name.
async fn preflight(
    user: &UserArgs,
    probe: &Probe,
    n: &Named<'_>,
    (codec_args, plain): (Vec<String>, ChunkFacts),
) -> Result<Preflighted, PrepareError> {
    let vfr_time_base = vfr_time_base(probe);
    let mut decided = plain.params.clone();
    if vfr_time_base.is_some_and(|src| !ffmpeg::holds_every_tick(&decided.time_base, src)) {
        // The chunks keep the source's irregular timestamps, which the plain
        // run's muxer time base would round: ffmpeg chooses one for them.
        decided.time_base.clear();
    }
    let mut spec = EncodeSpec {
        codec_args,
        rotate_filter: ffmpeg::rotate_filter(probe.video_stream().rotation()),
        user_filter: user.video_filter.clone(),
        vfr_time_base,
        in_band_headers: ffmpeg::headers_can_go_in_band(&plain.params.codec),
        plain: Some(decided),
    };
    if n.one_build {
        // This machine's ffmpeg alone: the plain run has checked the
        // options, and the first verified chunk becomes the reference.
        let encoder = plain.encoder.or_else(|| ffmpeg::encoder_arg(&spec.codec_args));
        return Ok(Preflighted { spec, encoder, reference: None });
    }
    // The first chunk of any plan starts at the first keyframe: a short one
    // serves (the cluster's size, which the real plan needs, may not be
    // known yet).
    let plan =
        plan::plan(&probe.packets, probe.video_time_base, plan::Sizing::Fixed(plan::MIN_CHUNK_SECONDS));
    let ctx = JobContext {
        source: n.source.to_string(),
        video_index: probe.video,
        plan,
        spec: spec.clone(),
        io: n.io,
    };
    let reference = preflight::reference(&ctx).await.map_err(options_refused)?;
    spec.in_band_headers = ffmpeg::headers_can_go_in_band(&reference.params.codec);
    n.job.save_reference(&reference.params).map_err(PrepareError::Failed)?;
    Ok(Preflighted { spec, encoder: reference.encoder, reference: Some(reference.params) })
}

/// The input's frame rate: one over its median frame duration (0 when it
/// has a single frame).
fn frame_rate(probe: &Probe) -> f64 {
    let mut pts: Vec<i64> = probe.packets.iter().map(|p| p.pts).collect();
    pts.sort_unstable();
    let mut deltas: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0).collect();
    deltas.sort_unstable();
    match deltas.get(deltas.len() / 2) {
        Some(&d) => 1.0 / probe.video_time_base.seconds(d),
        None => 0.0,
    }
}

/// Irregular frame durations: keep the source's time base in the encoder.
fn is_vfr(packets: &[probe::Packet]) -> bool {
    let mut pts: Vec<i64> = packets.iter().map(|p| p.pts).collect();
    pts.sort_unstable();
    let mut deltas = pts.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0);
    match deltas.next() {
        Some(first) => deltas.any(|d| d != first),
        None => false,
    }
}

/// What a new job's chunks are planned for.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    /// The cluster's slots.
    pub slots: usize,
    /// The cluster is one machine, whose slots are all alike: one chunk per
    /// slot (at most [`plan::MAX_CHUNK_SECONDS`]) costs the fewest
    /// start-ups, and there is no slower node to even out at the end.
    pub even: bool,
    /// Bytes of the files queued behind this one in a batch.
    pub behind_bytes: u64,
}

impl Share {
    /// Seconds of video behind this file, estimated from its own bytes per
    /// second (0 when nothing is queued or the size is unknown).
    fn behind_seconds(&self, input: &Path, video_seconds: f64) -> f64 {
        let size = std::fs::metadata(input).map(|m| m.len()).unwrap_or(0);
        if self.behind_bytes == 0 || size == 0 {
            return 0.0;
        }
        self.behind_bytes as f64 * video_seconds / size as f64
    }

    /// How a new job of `input` (`probe`) is cut: `--chunk` as asked, else
    /// for the slots (and the files queued behind it).
    pub fn sizing(&self, chunk: Option<f64>, input: &Path, probe: &Probe) -> plan::Sizing {
        let after = self.behind_seconds(input, probe.video_seconds());
        let slots = self.slots.max(1) as f64;
        match (chunk, self.even) {
            (Some(s), _) => plan::Sizing::Fixed(s),
            (None, true) => plan::Sizing::Fixed(
                ((probe.video_seconds() + after) / slots)
                    .clamp(plan::MIN_CHUNK_SECONDS, plan::MAX_CHUNK_SECONDS),
            ),
            (None, false) => plan::Sizing::Guided { slots: self.slots, after },
        }
    }
}

/// The plan (a new job's, for `share`; a resumed job keeps its own), saved
/// in the job directory.
pub fn plan(c: Checked, share: Share, chunk: Option<f64>) -> Result<Prepared, PrepareError> {
    let record = match &c.start {
        Start::Resumed(r) => (**r).clone(),
        Start::New { spec, encoder } => {
            let sizing = share.sizing(chunk, &c.input, &c.probe);
            let plan = plan::plan(&c.probe.packets, c.probe.video_time_base, sizing);
            let record = JobRecord {
                key: c.key.clone(),
                plan,
                encode: (**spec).clone(),
                format: c.format.clone(),
                encoder: encoder.clone(),
            };
            if let Err(e) = c.job.save(&record) {
                // Nothing worth keeping in it yet.
                let _ = c.job.remove();
                return Err(PrepareError::Failed(e.context("cannot save the job's plan")));
            }
            record
        }
    };
    Ok(Prepared { checked: c, record })
}

/// Free space where the controller writes a job's chunks (`storage: ssh`:
/// the encoded chunks come back to its disk) must hold about the source
/// again: checked up front, so that a full disk is named as such instead
/// of failing chunks and dropping healthy nodes.
pub fn check_space(dir: &Path, input: &Path) -> Result<(), PrepareError> {
    let need = std::fs::metadata(input).map(|m| m.len()).unwrap_or(0) + (64 << 20);
    match crate::safefs::free_bytes(dir) {
        Some(free) if free < need => Err(PrepareError::Failed(anyhow!(
            "not enough free space on this machine in {}: {} MiB free, about {} MiB needed for the encoded chunks",
            dir.display(),
            free >> 20,
            need >> 20
        ))),
        _ => Ok(()),
    }
}

fn resumed_is_none(found: &Found) -> bool {
    !matches!(found, Found::Resumed(_))
}
