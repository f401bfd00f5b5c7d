//! `dffmpeg transcode`: probe → plan → split → dispatch → verify → merge.

pub mod args;
pub mod cluster;
pub mod dispatch;
pub mod ffmpeg;
pub mod job;
pub mod merge;
pub mod output;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod scheduler;
pub mod verify;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::watch;

use crate::cli::TranscodeArgs;
use crate::exit::{failed, usage, Failure, Outcome};
use crate::inventory::Inventory;
use dispatch::DispatchError;
use ffmpeg::EncodeSpec;
use job::{Found, JobDir, JobKey, JobRecord};
use progress::Event;
use worker::{Io, JobContext};

pub async fn run(args: TranscodeArgs) -> Outcome {
    let inventory = Inventory::resolve(args.inventory.as_deref()).map_err(usage)?;
    run_job(&args, &inventory).await
}

/// The ffmpeg and ffprobe this machine runs (the controller's own work:
/// probe, split, side streams, merge): found in PATH, not run (a start-up
/// of each costs more than the lookup).
fn check_tools() -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["ffmpeg", "ffprobe"] {
        let found = std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
        if !found {
            return Err(usage(anyhow!("{tool} is not installed (on Debian: apt-get install ffmpeg)")));
        }
    }
    Ok(())
}

fn check_input(input: &Path) -> Result<PathBuf, Failure> {
    let meta = std::fs::metadata(input).map_err(|e| usage(anyhow!("{}: {e}", input.display())))?;
    if meta.is_dir() {
        return Err(usage(anyhow!("{} is a directory, not a video", input.display())));
    }
    std::fs::File::open(input).map_err(|e| usage(anyhow!("{}: {e}", input.display())))?;
    input.canonicalize().map_err(|e| usage(anyhow!("{}: {e}", input.display())))
}

async fn run_job(args: &TranscodeArgs, inventory: &Inventory) -> Outcome {
    let started = Instant::now();
    let input = check_input(&args.input)?;
    let user = args::parse(&args.ffmpeg_args).map_err(usage)?;
    check_tools()?;
    let source = input
        .to_str()
        .ok_or_else(|| usage(anyhow!("{}: file names must be UTF-8", input.display())))?
        .to_string();
    let overwrite = args.overwrite || user.overwrite;
    let output = args.output.clone().unwrap_or_else(|| output::default_output(&input));
    let output = output::check_output(&input, &output, overwrite).map_err(usage)?;
    let format = output::format_for(&output, user.format.as_deref()).map_err(usage)?;

    if let Some(c) = args.chunk.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(usage(anyhow!("--chunk {c}: must be a positive number of seconds")));
    }
    let shared_dir = inventory.shared_dir();
    let job_dir = match &shared_dir {
        Some(shared) => shared.join("work").join(job_name(&output)),
        None => {
            let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            output.with_file_name(format!(".{name}.dffmpeg-job"))
        }
    };
    let key = JobKey::new(&input, &output, &args.ffmpeg_args, args.chunk).map_err(usage)?;
    let (job, found) = JobDir::open(&job_dir, &key, args.fresh, args.resume).map_err(usage)?;
    if shared_dir.is_some() {
        // Nodes write their chunks here as their own users (over NFS):
        // group-writable, and setgid so files keep the shared group.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&job.dir, std::fs::Permissions::from_mode(0o2775));
    }
    let io = Io::choose(shared_dir.as_deref(), &input);
    let resumed = match found {
        Found::Resumed(r) => Some(*r),
        _ => None,
    };
    let new = resumed.is_none();

    // Reading the input's packets and checking the options (preflight) on
    // this machine overlap with connecting to the nodes.
    let prepare = async {
        let probe = probe::probe(&input).await.map_err(|e| usage(anyhow!("{}: {e}", input.display())))?;
        let checked = match new {
            true => Some(preflight(&user, &probe, &format, &source, io, &job).await?),
            false => None,
        };
        Ok::<_, Failure>((probe, checked))
    };
    let (prepared, mut cluster) = tokio::join!(prepare, cluster::connect(inventory, &args.connect));
    let (probe, checked) = match prepared {
        Ok(p) => p,
        Err(e) => {
            if new {
                let _ = job.remove();
            }
            return Err(e);
        }
    };
    if cluster.nodes.is_empty() {
        for w in &cluster.warnings {
            eprintln!("warning: {w}");
        }
        if new {
            let _ = job.remove();
        }
        return Err(failed(anyhow!("no compute node of {} can be used", inventory.source)));
    }
    let record = match (resumed, checked) {
        (Some(r), _) => r,
        (None, Some((spec, encoder))) => {
            let sizing = match args.chunk {
                Some(c) => plan::Sizing::Fixed(c),
                None => plan::Sizing::Guided { slots: cluster.slots() },
            };
            let plan = plan::plan(&probe.packets, probe.video_time_base, sizing);
            let record = JobRecord { key, plan, encode: spec, format: format.clone(), encoder };
            if let Err(e) = job.save(&record) {
                let _ = job.remove();
                return Err(failed(e));
            }
            record
        }
        (None, None) => return Err(failed(anyhow!("internal error: a new job without a preflight"))),
    };
    if let Some(encoder) = &record.encoder {
        cluster.require_encoder(encoder);
    }
    if cluster.nodes.is_empty() {
        for w in &cluster.warnings {
            eprintln!("warning: {w}");
        }
        return Err(failed(anyhow!(
            "no compute node has the encoder {}",
            record.encoder.unwrap_or_default()
        )));
    }
    let plan = record.plan.clone();
    let side_streams = probe.side_streams().count();
    let side_start = probe
        .side_streams()
        .filter_map(|s| s.start_seconds())
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.min(s))));
    let side_ext = output.extension().and_then(|e| e.to_str()).unwrap_or("out").to_string();

    if io == Io::SharedSource {
        cluster.description.push_str(", the source read in place");
    }
    let (events, reporter) = progress::spawn(progress::Mode::choose(args.json));
    let resumed: Vec<_> = plan.chunks.iter().filter(|c| job.is_done(c.index)).collect();
    let _ = events.send(Event::JobStart {
        cluster: cluster.description.clone(),
        input: input.display().to_string(),
        output: output.display().to_string(),
        chunks: plan.chunks.len(),
        frames: plan.total_frames,
        slots: cluster.slots(),
        resumed_chunks: resumed.len(),
        resumed_frames: resumed.iter().map(|c| c.frames).sum(),
    });
    for message in std::mem::take(&mut cluster.warnings) {
        let _ = events.send(Event::Warning { message });
    }
    let nodes = std::mem::take(&mut cluster.nodes);
    // Each node's architecture, for the job's summary table.
    let arches: std::collections::HashMap<String, String> =
        nodes.iter().zip(&cluster.facts).map(|(n, f)| (n.name.clone(), f.arch.clone())).collect();

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signals = {
        let (stop_tx, interrupted) = (stop_tx.clone(), interrupted.clone());
        tokio::spawn(async move {
            wait_for_signal().await;
            interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = stop_tx.send(true);
        })
    };

    let job = Arc::new(job);
    let ctx = Arc::new(JobContext {
        source: source.clone(),
        video_index: probe.video,
        plan: plan.clone(),
        spec: record.encode.clone(),
        io,
    });
    let side_task = {
        let job = job.clone();
        let source = source.clone();
        let codec_args = user.codec.clone();
        let format = format.clone();
        let ext = side_ext.clone();
        let vi = probe.video;
        let events = events.clone();
        tokio::spawn(async move {
            if side_streams == 0 {
                return Ok(None);
            }
            let t = Instant::now();
            let r = merge::side_streams(&job, &source, vi, &codec_args, &format, &ext).await;
            if r.is_ok() {
                let _ = events
                    .send(Event::SideStreams { streams: side_streams, seconds: t.elapsed().as_secs_f64() });
            }
            r?;
            Ok(Some(merge::side_file(&job, &ext).await))
        })
    };

    // The side streams encode while the chunks do; if ffmpeg refuses the
    // user's audio or subtitle options, stop the chunks at once.
    let dispatching = dispatch::dispatch(nodes, ctx, job.clone(), events.clone(), stop_rx.clone());
    tokio::pin!(dispatching);
    tokio::pin!(side_task);
    let mut side_result: Option<SideResult> = None;
    let result = loop {
        tokio::select! {
            r = &mut dispatching => break r,
            r = &mut side_task, if side_result.is_none() => {
                let r = r.unwrap_or_else(|e| Err(anyhow!("side streams: {e}")));
                if r.is_err() {
                    let _ = stop_tx.send(true);
                }
                side_result = Some(r);
            }
        }
    };
    let side_result = match side_result {
        Some(r) => r,
        None if result.is_ok() => {
            let mut stop = stop_rx.clone();
            tokio::select! {
                r = &mut side_task => r.unwrap_or_else(|e| Err(anyhow!("side streams: {e}"))),
                _ = async { let _ = stop.wait_for(|s| *s).await; } => Err(anyhow!("interrupted")),
            }
        }
        None => {
            side_task.abort();
            let _ = side_task.await;
            Ok(None)
        }
    };

    let result = result.map(|mut d| {
        for s in &mut d.stats {
            s.arch = arches.get(&s.node).cloned().unwrap_or_default();
        }
        d
    });
    let outcome = finish(
        result,
        side_result,
        FinishCtx {
            job,
            plan: &plan,
            source: &source,
            video_index: probe.video,
            side_start: side_start.unwrap_or(0.0),
            muxer_args: &user.muxer,
            format: &format,
            output: &output,
            keep: args.keep,
            events: &events,
            started,
            interrupted: interrupted.load(std::sync::atomic::Ordering::SeqCst),
        },
    )
    .await;
    signals.abort();
    drop(events);
    let _ = reporter.await;
    outcome
}

/// The side streams' task: an error is ffmpeg refusing the options; the
/// inner result is reading the file written (None: no side streams).
type SideResult = anyhow::Result<Option<anyhow::Result<merge::SideFile>>>;

struct FinishCtx<'a> {
    job: Arc<JobDir>,
    plan: &'a plan::Plan,
    source: &'a str,
    video_index: usize,
    /// Where the source's side streams start, seconds.
    side_start: f64,
    muxer_args: &'a [String],
    format: &'a str,
    output: &'a Path,
    keep: bool,
    events: &'a progress::Sender,
    started: Instant,
    interrupted: bool,
}

async fn finish(
    result: Result<dispatch::Dispatched, DispatchError>,
    side: SideResult,
    f: FinishCtx<'_>,
) -> Outcome {
    // Attempts stopped because a duplicate won may still be on their way
    // out: the merge does not need them, removing the job directory and
    // exiting (no ffmpeg left behind) do.
    let (result, stopping) = match result {
        Ok(d) => (Ok(d.stats), d.stragglers),
        Err(e) => (Err(e), Vec::new()),
    };
    let outcome = finish_job(result, side, &f).await;
    dispatch::settle(stopping, Duration::from_secs(15)).await;
    if outcome.is_ok() && !f.keep {
        f.job.remove().map_err(failed)?;
    }
    outcome
}

async fn finish_job(
    result: Result<Vec<progress::NodeStats>, DispatchError>,
    side: SideResult,
    f: &FinishCtx<'_>,
) -> Outcome {
    let fail = |error: String, resumable: bool| {
        let _ = f.events.send(Event::JobFailed { error, resumable });
    };
    if let (Err(e), false) = (&side, f.interrupted) {
        fail(format!("{e:#}"), false);
        // Nothing to resume when the options themselves are wrong.
        let _ = f.job.remove();
        return Err(usage(anyhow!("ffmpeg refused the options for the audio/subtitle streams:\n{e:#}")));
    }
    let stats = match result {
        Ok(stats) => stats,
        Err(DispatchError::Interrupted) => {
            fail("interrupted".into(), true);
            return Err(failed(anyhow!(
                "interrupted; the finished chunks are kept in {}: run the same command again to resume",
                f.job.dir.display()
            )));
        }
        Err(DispatchError::Failed(why)) => {
            fail(why.clone(), true);
            return Err(failed(anyhow!(
                "{why}; the finished chunks are kept in {}: run the same command again to resume",
                f.job.dir.display()
            )));
        }
    };
    if f.interrupted {
        fail("interrupted".into(), true);
        return Err(failed(anyhow!("interrupted; run the same command again to resume")));
    }
    let side_file = match side {
        Ok(Some(Err(e))) => {
            fail(format!("{e:#}"), true);
            return Err(failed(e.context("the side streams' file cannot be read")));
        }
        Ok(Some(Ok(file))) => Some(file),
        _ => None,
    };
    let _ = f.events.send(Event::Merging { chunks: f.plan.chunks.len() });
    let merged = merge::merge(&merge::MergeRequest {
        job: &f.job,
        plan: f.plan,
        source: f.source,
        video_index: f.video_index,
        side: side_file.as_ref().map(|s| (s, f.side_start)),
        muxer_args: f.muxer_args,
        format: f.format,
        output: f.output,
    })
    .await;
    if let Err(e) = merged {
        fail(format!("{e:#}"), true);
        return Err(failed(e));
    }
    let seconds = f.started.elapsed().as_secs_f64();
    let frames = f.plan.total_frames;
    let _ = f.events.send(Event::JobDone {
        output: f.output.display().to_string(),
        frames,
        seconds,
        fps: frames as f64 / seconds.max(1e-9),
        nodes: stats,
    });
    Ok(())
}

/// Plan a new job and check the options on the controller (preflight),
/// which also fixes the job's reference codec parameters.
/// Check the options on this machine (the preflight encodes the first
/// frame) and fix the job's encode spec and reference codec parameters.
/// Returns the spec and the encoder's name.
async fn preflight(
    user: &args::UserArgs,
    probe: &probe::Probe,
    format: &str,
    source: &str,
    io: Io,
    job: &JobDir,
) -> Result<(EncodeSpec, Option<String>), Failure> {
    let mut codec_args = user.codec.clone();
    if user.video_codec.is_none() {
        // As a plain ffmpeg would: the output format's default codec (the
        // chunks themselves are NUT files).
        let codec = output::default_video_codec(format)
            .await
            .ok_or_else(|| usage(anyhow!("format {format} has no default video codec; pass -c:v")))?;
        codec_args.splice(0..0, ["-c:v".to_string(), codec]);
    }
    let mut spec = EncodeSpec {
        codec_args,
        rotate_filter: ffmpeg::rotate_filter(probe.video_stream().rotation()),
        user_filter: user.video_filter.clone(),
        vfr_time_base: is_vfr(&probe.packets).then_some(probe.video_time_base),
        in_band_headers: false,
    };
    // The first chunk of any plan starts at the first keyframe: a short one
    // serves (the cluster's size, which the real plan needs, may not be
    // known yet).
    let plan =
        plan::plan(&probe.packets, probe.video_time_base, plan::Sizing::Fixed(plan::MIN_CHUNK_SECONDS));
    let ctx =
        JobContext { source: source.to_string(), video_index: probe.video, plan, spec: spec.clone(), io };
    let reference =
        worker::preflight(&ctx).await.map_err(|e| usage(anyhow!("ffmpeg refused the options:\n{e}")))?;
    spec.in_band_headers = ffmpeg::headers_can_go_in_band(&reference.params.codec);
    job.save_reference(&reference.params).map_err(failed)?;
    Ok((spec, reference.encoder))
}

/// A stable name for the job of an output (shared-storage job directories).
fn job_name(output: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    output.hash(&mut h);
    let stem: String = output
        .file_stem()
        .map(|s| s.to_string_lossy().chars().filter(|c| c.is_ascii_alphanumeric()).take(24).collect())
        .unwrap_or_default();
    format!("{stem}-{:016x}", h.finish())
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
