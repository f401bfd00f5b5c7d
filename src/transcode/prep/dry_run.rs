//! `transcode --dry-run`: what a run would do, doing none of it. Every
//! input is probed and planned as the run would (the same chunk sizing,
//! for the same slots; a job directory that the run would resume gives its
//! own plan and finished chunks), the scheduler is asked which chunks each
//! node's slots would start with, and the speeds remembered from earlier
//! jobs (`speeds.json`) give an estimate.
//!
//! It writes nothing: no job directory, no output, no output folder, no
//! speeds. The nodes of an inventory are connected to read their facts,
//! with strict host keys (a host never seen is named, not trusted: no
//! known_hosts entry is written). ffmpeg's options are checked by
//! dffmpeg's rules only; the trial encode of a real run is left out.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use serde::Serialize;

use crate::exit::{failed, usage, Outcome};
use crate::inventory::Inventory;
use crate::transcode::cluster::{self, Cluster};
use crate::transcode::context::Io;
use crate::transcode::inputs::FileSpec;
use crate::transcode::job::{self, JobKey};
use crate::transcode::output::{self, OutputError};
use crate::transcode::plan::{self, Plan};
use crate::transcode::prepare::{self, Share};
use crate::transcode::probe::{self, Probe};
use crate::transcode::scheduler::{NodeSpec, Scheduler};
use crate::transcode::{batch, speeds};

/// The plan of a run, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct DryRun {
    pub cluster: String,
    pub nodes: Vec<NodePlan>,
    pub files: Vec<FilePlan>,
    /// The chunks each node's slots would start with.
    pub first: Vec<FirstChunk>,
    /// Seconds of encoding on the cluster, from remembered speeds (None:
    /// no node has one for these encoder settings).
    pub estimate_seconds: Option<f64>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct NodePlan {
    pub name: String,
    pub slots: usize,
    /// Attempts at once an earlier job found it sustains.
    pub remembered_slots: Option<usize>,
    /// Work per second of one slot (megapixels of frames) an earlier job
    /// measured with these encoder settings.
    pub remembered_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct FilePlan {
    pub input: String,
    pub output: String,
    /// `new`, `resume`, `skip` or `refused`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the nodes get the input: `in place` (they read it), `shared`
    /// (each chunk split into the shared directory) or `streamed` (each
    /// chunk sent through its node's SSH connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_read: Option<&'static str>,
    pub frames: u64,
    pub seconds: f64,
    pub width: u32,
    pub height: u32,
    pub chunks: Vec<ChunkPlan>,
    #[serde(skip)]
    weight: f64,
}

#[derive(Debug, Serialize)]
pub struct ChunkPlan {
    pub index: usize,
    /// Seconds on the input's timeline.
    pub start: f64,
    pub end: f64,
    pub frames: u64,
    /// Verified already (a job that would be resumed).
    pub done: bool,
}

#[derive(Debug, Serialize)]
pub struct FirstChunk {
    pub node: String,
    /// The file's place in `files`.
    pub file: usize,
    pub chunk: usize,
    pub frames: u64,
}

/// A file looked at: what the run would do with it, and its probe.
struct Looked {
    plan: FilePlan,
    ready: Option<Ready>,
    bytes: u64,
}

struct Ready {
    input: PathBuf,
    probe: Probe,
    /// The plan and finished chunks of a job the run would resume.
    earlier: Option<(Plan, Vec<bool>)>,
}

/// What the run would be given.
pub struct Given<'a> {
    pub inventory: &'a Inventory,
    pub opts: &'a prepare::Options,
    pub json: bool,
    /// How to reach the nodes (strict host keys: a dry run trusts nothing
    /// new).
    pub connect: &'a crate::remote::ConnectOptions,
}

/// Probe and plan every file, print the plan. Exit 2 when a file would be
/// refused, 1 when no node can be used.
pub async fn run(given: &Given<'_>, files: Vec<FileSpec>) -> Outcome {
    let (mut cluster, looked) =
        tokio::join!(cluster::connect(given.inventory, given.connect), look_all(&files, given.opts));
    let settings = speeds::settings_key(&given.opts.user.codec);
    let slots = batch::remember(&mut cluster, &settings);
    let unable = unable_nodes(&mut cluster, given.opts.user.video_codec.as_deref());
    let share = |behind_bytes| Share { slots, even: cluster.nodes.len() == 1, behind_bytes };
    let behind: Vec<u64> = (0..looked.len()).map(|i| looked[i + 1..].iter().map(|l| l.bytes).sum()).collect();
    let plans: Vec<FilePlan> =
        looked.into_iter().zip(behind).map(|(l, b)| finish_plan(l, share(b), given.opts)).collect();
    let dry = DryRun {
        cluster: cluster.description.clone(),
        nodes: node_plans(&cluster),
        first: first_chunks(&cluster, &plans, &unable),
        estimate_seconds: estimate(&cluster, &plans),
        files: plans,
        warnings: std::mem::take(&mut cluster.warnings),
    };
    show(&dry, given.json);
    conclude(&dry, given.inventory)
}

fn conclude(dry: &DryRun, inventory: &Inventory) -> Outcome {
    let refused = dry.files.iter().filter(|f| f.status == "refused").count();
    if refused > 0 {
        return Err(usage(anyhow!("dry run: {refused} of {} files would be refused", dry.files.len())));
    }
    if dry.nodes.is_empty() {
        let why = dry.warnings.join("; ");
        return Err(failed(anyhow!("no compute node of {} can be used: {why}", inventory.source)));
    }
    Ok(())
}

async fn look_all(files: &[FileSpec], o: &prepare::Options) -> Vec<Looked> {
    let mut looked = Vec::with_capacity(files.len());
    for f in files {
        looked.push(look(f, o).await);
    }
    looked
}

/// What the run would do with one file, and its probe when it would run.
async fn look(f: &FileSpec, o: &prepare::Options) -> Looked {
    let named = f.output.clone().unwrap_or_else(|| output::default_output(&f.input));
    let bytes = std::fs::metadata(&f.input).map_or(0, |m| m.len());
    let mut plan = FilePlan::new(&f.input, &named);
    let checked = check_paths(&f.input, &named, o).and_then(|(input, out)| {
        plan.output = out.display().to_string();
        let earlier = earlier_job(&input, &out, o)?;
        Ok((input, earlier))
    });
    let (input, earlier) = match checked {
        Ok(c) => c,
        Err((status, reason)) => return Looked { plan: plan.with(status, reason), ready: None, bytes },
    };
    match probe::probe(&input).await {
        Ok(probe) => Looked { plan, ready: Some(Ready { input, probe, earlier }), bytes },
        Err(e) => {
            Looked { plan: plan.with("refused", format!("{}: {e}", input.display())), ready: None, bytes }
        }
    }
}

impl FilePlan {
    fn new(input: &Path, output: &Path) -> FilePlan {
        FilePlan {
            input: input.display().to_string(),
            output: output.display().to_string(),
            status: "new",
            reason: None,
            input_read: None,
            frames: 0,
            seconds: 0.0,
            width: 0,
            height: 0,
            chunks: Vec::new(),
            weight: 0.0,
        }
    }

    fn with(mut self, status: &'static str, reason: String) -> FilePlan {
        self.status = status;
        self.reason = Some(reason);
        self
    }
}

type Verdict = (&'static str, String);

/// The input (canonical) and the output (in its canonical folder) as the
/// run would check them, touching nothing: refused or skipped, and why.
fn check_paths(input: &Path, named: &Path, o: &prepare::Options) -> Result<(PathBuf, PathBuf), Verdict> {
    let refuse = |why: String| ("refused", why);
    let canon = input.canonicalize().map_err(|e| refuse(format!("{}: {e}", input.display())))?;
    if canon.is_dir() {
        return Err(refuse(format!("{} is a directory, not a video", input.display())));
    }
    let name = named.file_name().ok_or_else(|| refuse(OutputError::NotAFile(named.into()).to_string()))?;
    let parent = named.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // A folder that does not exist yet would be made by the run.
    let folder =
        parent.canonicalize().or_else(|_| std::path::absolute(parent)).unwrap_or_else(|_| parent.into());
    let out = folder.join(name);
    let same = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
    };
    if same(&canon, &out) {
        return Err(refuse(OutputError::IsInput(named.into()).to_string()));
    }
    if out.is_dir() {
        return Err(refuse(OutputError::IsDir(named.into()).to_string()));
    }
    if out.exists() && !o.overwrite {
        return Err(match o.skip_existing {
            true => ("skip", format!("{} exists (use -y to overwrite)", out.display())),
            false => refuse(OutputError::Exists(named.into()).to_string()),
        });
    }
    output::format_for(&out, o.user.format.as_deref()).map_err(|e| refuse(format!("{e:#}")))?;
    Ok((canon, out))
}

/// A job the run would resume: its plan and which chunks are verified. Read
/// only, never through a link; a damaged one is refused as the run would.
fn earlier_job(
    input: &Path,
    output: &Path,
    o: &prepare::Options,
) -> Result<Option<(Plan, Vec<bool>)>, Verdict> {
    let at = job::location(output, o.shared_dir.as_deref()).map_err(|e| ("refused", format!("{e:#}")))?;
    let found = match o.fresh {
        true => None,
        false => job::peek(&at).map_err(|e| ("refused", format!("{e:#}")))?,
    };
    let Some((record, done)) = found else {
        return match o.must_resume {
            true => Err(("refused", format!("nothing to resume: no job in {}", at.path().display()))),
            false => Ok(None),
        };
    };
    let key = JobKey::new(input, output, &o.raw_args, o.chunk).map_err(|e| ("refused", format!("{e:#}")))?;
    if record.key != key && o.must_resume {
        let why = format!(
            "the job in {} was for another input or other options; use --fresh to start over",
            at.path().display()
        );
        return Err(("refused", why));
    }
    if record.key != key {
        // The run replaces a job of other input or options.
        return Ok(None);
    }
    Ok(Some((record.plan, done)))
}

/// The chunks of a file that would run, planned for the cluster's slots
/// (or the resumed job's own), and how its input reaches the nodes.
fn finish_plan(l: Looked, share: Share, o: &prepare::Options) -> FilePlan {
    let mut p = l.plan;
    let Some(r) = l.ready else { return p };
    let (plan, done) = match r.earlier {
        Some((plan, done)) => {
            p.status = "resume";
            (plan, done)
        }
        None => {
            let plan = plan::plan(
                &r.probe.packets,
                r.probe.video_time_base,
                share.sizing(o.chunk, &r.input, &r.probe),
            );
            let done = vec![false; plan.chunks.len()];
            (plan, done)
        }
    };
    p.input_read = Some(match Io::choose(o.shared_dir.as_deref(), &r.input, o.all_local) {
        Io::SharedSource => "in place",
        Io::Shared => "shared",
        Io::Pipe => "streamed",
    });
    let v = r.probe.video_stream();
    (p.width, p.height) = (v.width.unwrap_or(0), v.height.unwrap_or(0));
    p.weight = prepare::weight(&r.probe);
    p.frames = plan.total_frames;
    p.chunks = chunk_plans(&plan, &r.probe, &done);
    p.seconds = p.chunks.last().map_or(0.0, |c| c.end) - p.chunks.first().map_or(0.0, |c| c.start);
    p
}

/// Each chunk's span on the input's timeline (the last one up to the end
/// of its last frame).
fn chunk_plans(plan: &Plan, probe: &Probe, done: &[bool]) -> Vec<ChunkPlan> {
    let tb = plan.time_base;
    let last_pts = probe.packets.iter().map(|p| p.pts).max().unwrap_or(0);
    let round = |s: f64| (s * 1000.0).round() / 1000.0;
    plan.chunks
        .iter()
        .map(|c| ChunkPlan {
            index: c.index,
            start: round(tb.seconds(c.start)),
            end: round(c.end.map_or(tb.seconds(last_pts) + plan.frame_seconds, |e| tb.seconds(e))),
            frames: c.frames,
            done: done.get(c.index).copied().unwrap_or(false),
        })
        .collect()
}

/// Nodes without the video encoder the options name: left out, as the run
/// leaves them (it also names them in a warning).
fn unable_nodes(cluster: &mut Cluster, encoder: Option<&str>) -> Vec<usize> {
    let Some(encoder) = encoder else { return Vec::new() };
    let unable: Vec<usize> =
        (0..cluster.facts.len()).filter(|&i| !cluster.facts[i].has_encoder(encoder)).collect();
    for &i in &unable {
        let name = &cluster.nodes[i].name;
        cluster.warnings.push(format!("node {name} has no encoder {encoder}: left out"));
    }
    unable
}

fn node_plans(cluster: &Cluster) -> Vec<NodePlan> {
    cluster
        .nodes
        .iter()
        .map(|n| NodePlan {
            name: n.name.clone(),
            slots: n.slots,
            remembered_slots: n.known.map(|k| k.slots.clamp(1, n.slots)),
            remembered_rate: n.known.and_then(|k| k.slot_rate),
        })
        .collect()
}

/// Ask the scheduler, as the run's broker would, what each slot starts
/// with (slots ask in node order, as they are started).
fn first_chunks(cluster: &Cluster, files: &[FilePlan], unable: &[usize]) -> Vec<FirstChunk> {
    let specs: Vec<NodeSpec> = cluster
        .nodes
        .iter()
        .map(|n| NodeSpec { slots: n.slots, capacity: n.capacity, known: n.known })
        .collect();
    let mut sched = Scheduler::new(&specs);
    let mut jobs = Vec::new();
    for (i, f) in files.iter().enumerate().filter(|(_, f)| !f.chunks.is_empty()) {
        let frames: Vec<u64> = f.chunks.iter().map(|c| c.frames).collect();
        let done: Vec<bool> = f.chunks.iter().map(|c| c.done).collect();
        sched.add_job(&frames, &done, f.weight, unable);
        jobs.push(i);
    }
    sched.close();
    let now = std::time::Instant::now();
    let mut first = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for _ in 0..node.slots {
            if let crate::transcode::scheduler::Next::Run(a) = sched.next(n, now) {
                let file = jobs[a.job];
                let frames = files[file].chunks[a.chunk].frames;
                first.push(FirstChunk { node: node.name.clone(), file, chunk: a.chunk, frames });
            }
        }
    }
    first
}

/// Seconds of encoding: the work left over what the nodes' slots do per
/// second, as remembered (a node remembered only relative to the others
/// is counted at its share of one that has a rate; nodes with neither are
/// not counted). None when no node has a rate for these settings.
fn estimate(cluster: &Cluster, files: &[FilePlan]) -> Option<f64> {
    let known: Vec<_> = cluster.nodes.iter().filter_map(|n| n.known.map(|k| (k, n.slots))).collect();
    let (reference, rel) = known.iter().find_map(|(k, _)| Some((k.slot_rate?, k.relative)))?;
    let per_relative = if rel > 0.0 { reference / rel } else { 0.0 };
    let rate: f64 = known
        .iter()
        .map(|(k, slots)| k.slot_rate.unwrap_or(k.relative * per_relative) * k.slots.clamp(1, *slots) as f64)
        .sum();
    let work: f64 = files
        .iter()
        .map(|f| f.chunks.iter().filter(|c| !c.done).map(|c| c.frames as f64).sum::<f64>() * f.weight)
        .sum();
    (rate > 0.0).then(|| (work / rate * 10.0).round() / 10.0)
}

fn show(dry: &DryRun, json: bool) {
    use std::io::Write;
    let text = match json {
        true => serde_json::to_string(dry).unwrap_or_default() + "\n",
        false => text(dry),
    };
    crate::log::line(&text);
    // A closed stdout: the exit status still tells.
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// The plan for a reader.
pub fn text(dry: &DryRun) -> String {
    let mut t = format!("dry run: nothing is written\ncluster: {}\n", dry.cluster);
    for w in &dry.warnings {
        t.push_str(&format!("warning: {w}\n"));
    }
    for n in &dry.nodes {
        let rate = match (n.remembered_rate, n.remembered_slots) {
            (Some(r), Some(k)) => format!("remembered: {r:.2} Mpx/s per slot, {k} at once"),
            (None, Some(k)) => format!("remembered: {k} at once, no speed for these settings"),
            _ => "nothing remembered".into(),
        };
        t.push_str(&format!(
            "node {}: {} slot{}; {rate}\n",
            n.name,
            n.slots,
            if n.slots == 1 { "" } else { "s" }
        ));
    }
    let many = dry.files.len() > 1;
    for (i, f) in dry.files.iter().enumerate() {
        t.push_str(&file_text(
            f,
            if many { format!("[{}/{}] ", i + 1, dry.files.len()) } else { String::new() },
        ));
    }
    if !dry.first.is_empty() {
        t.push_str("first chunks:\n");
    }
    for c in &dry.first {
        let file = if many { format!("[{}/{}] ", c.file + 1, dry.files.len()) } else { String::new() };
        t.push_str(&format!("  {}: {file}chunk {} ({} frames)\n", c.node, c.chunk, c.frames));
    }
    t.push_str(&match dry.estimate_seconds {
        Some(s) => format!(
            "estimate: about {} of encoding (remembered speeds; side streams and merging not counted)\n",
            hms(s)
        ),
        None => {
            "estimate: none (no speed remembered for these encoder settings: one run measures them)\n".into()
        }
    });
    t
}

fn file_text(f: &FilePlan, tag: String) -> String {
    let mut t = format!("{tag}{} -> {}: ", f.input, f.output);
    if let Some(why) = &f.reason {
        return t + &format!("{}: {why}\n", if f.status == "skip" { "skipped" } else { "refused" });
    }
    let read = match f.input_read {
        Some("in place") => "the nodes read the input in place",
        Some("shared") => "each chunk is split into the shared directory",
        _ => "each chunk is streamed to its node",
    };
    let done = f.chunks.iter().filter(|c| c.done).count();
    let resume =
        if f.status == "resume" { format!(", resumes a job with {done} chunks done") } else { String::new() };
    t.push_str(&format!(
        "{} frames, {:.1} s, {}x{}, {} chunk{}{resume}; {read}\n  chunk      start        end   frames\n",
        f.frames,
        f.seconds,
        f.width,
        f.height,
        f.chunks.len(),
        if f.chunks.len() == 1 { "" } else { "s" }
    ));
    for c in &f.chunks {
        let done = if c.done { "  done" } else { "" };
        t.push_str(&format!("  {:>5} {:>10.3} {:>10.3} {:>8}{done}\n", c.index, c.start, c.end, c.frames));
    }
    t
}

/// `42.5 s`, or `1:02:03` from a minute on.
fn hms(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
