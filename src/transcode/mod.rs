//! `dffmpeg transcode`: for each input file, probe → plan → split →
//! dispatch → verify → merge, with every file of a batch in one queue.
//!
//! The stages, by file: `inputs` (what to transcode, where the outputs go),
//! `prepare` (probe, preflight, plan, the job directory in `job`),
//! `dispatch` (the broker: `scheduler` decides, `encode` runs an attempt
//! on a node, including the split), `verify`, `side` (audio, subtitles) and
//! `merge`; `batch` runs them over many files; `report` shows it all (the
//! events every stage sends, one sink per output mode).

pub mod batch;
pub mod ffmpeg;
pub mod finish;
pub mod input;
pub mod prep;
pub mod report;
pub mod run;

// The stages' modules by their own names, for paths that cross stages.
pub use finish::{merge, side};
pub use input::{args, inputs, output, probe, watch};
pub use prep::{dry_run, encoders, job, plan, preflight, prepare};
pub use report::{events, progress};
pub use run::{chunk_log, cluster, context, dispatch, encode, failure, scheduler, speeds, verify};

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::watch as signal_watch;

use crate::cli::TranscodeArgs;
use crate::exit::{failed, usage, Failure, Outcome};
use crate::inventory::Inventory;
use crate::remote::ConnectOptions;
use batch::{FileEnd, FileOutcome};
use events::{Event, NodeInfo, Sender};
use inputs::{FileSpec, Outputs};
use prepare::PrepareError;

pub async fn run(args: TranscodeArgs) -> Outcome {
    let started = Instant::now();
    args.log.open()?;
    let inventory = Inventory::resolve(args.inventory.as_deref()).map_err(usage)?;
    let (inputs, ffmpeg_args) = args.split_words();
    let user = Arc::new(args::parse(&ffmpeg_args).map_err(usage)?);
    check_options(&args)?;
    check_tools()?;
    let outputs = match (&args.output, &args.output_dir) {
        (Some(o), _) => Outputs::File(o.clone()),
        (None, Some(d)) => {
            let ext = user.format.as_deref().and_then(inputs::extension_for).map(str::to_string);
            Outputs::Dir { dir: d.clone(), ext }
        }
        (None, None) => Outputs::NextToInput,
    };
    let settle = Duration::from_secs_f64(args.settle);
    let found = match args.watch {
        true => inputs::expand(&inputs, &outputs, settle).map_err(usage)?,
        false => settled(&inputs, &outputs, settle).await?,
    };
    let files = found.files;
    let single = files.len() == 1 && !files[0].found && !args.watch;
    // A watch probes a file itself, and only when its output is missing
    // (not every finished file at each start); it names links too.
    let files = match single || args.watch {
        true => files,
        false => keep_videos(files).await,
    };
    let outside = if args.watch { &[][..] } else { &found.outside[..] };
    let skipped: Vec<String> = outside.iter().map(|p| outside_link(p)).collect();
    if files.is_empty() && !args.watch {
        let names = inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        let why = skipped.iter().map(|s| format!("; {s}")).collect::<String>();
        return Err(usage(anyhow!("nothing to transcode: no video file found in {names}{why}")));
    }
    let opts = prepare::Options {
        user: user.clone(),
        raw_args: Arc::new(ffmpeg_args),
        chunk: args.chunk,
        fresh: args.fresh,
        must_resume: args.resume,
        overwrite: args.overwrite || user.overwrite,
        skip_existing: !single,
        shared_dir: inventory.shared_dir(),
        // The embedded local cluster reads the source in place (no split,
        // no pipe); an inventory's `storage` is followed as it says.
        all_local: inventory.source == Inventory::local_default().source,
        preflights: Default::default(),
    };
    if args.dry_run {
        // A dry run trusts no new host key (it writes nothing).
        let connect = ConnectOptions::new(true).map_err(failed)?;
        let given = dry_run::Given { inventory: &inventory, opts: &opts, json: args.json, connect: &connect };
        return dry_run::run(&given, files).await;
    }
    let connect = args.connect.options().map_err(failed)?;
    let (stop_tx, stop) = signal_watch::channel(false);
    let signals = tokio::spawn(async move {
        crate::signals::wait().await;
        // Nobody listens any more: the work is over anyway.
        let _ = stop_tx.send(true);
    });
    let page = status_page(&args, &inventory).await?;
    let view = progress::View {
        mode: progress::Mode::choose(args.json),
        verbose: args.log.verbose,
        watch: args.watch,
    };
    let (events, reporter) = progress::spawn(view, started);
    let meta = status_meta(&args, &inventory, &inputs, page.as_ref().map(|p| p.1));
    let (events, status) = crate::status::sink::spawn(events, meta, None);
    let server = page.map(|(listener, _, state)| {
        crate::status::http::serve(listener, crate::status::http::Source { state, inventory: None })
    });
    for message in skipped {
        // The reporter runs until every sender is gone.
        let _ = events.send(Event::Warning { message });
    }
    let work = Work {
        args: &args,
        inventory: &inventory,
        connect,
        opts,
        events: events.clone(),
        stop,
        started,
        settle,
    };
    let outcomes = match args.watch {
        true => watch::run(&work, &inputs).await,
        false => work.batch(files).await,
    };
    signals.abort();
    if let Some(s) = server {
        s.abort();
    }
    drop(work);
    drop(events);
    // The status sink ends when every sender is gone (removing the status
    // file), then the reporter; a crash of either only loses the display.
    let _ = status.await;
    let _ = reporter.await;
    conclude(outcomes, single, args.watch)
}

/// The watch service's status page, when the inventory asks for it
/// (`cluster.watch.http`): listening before any work starts, so that a
/// taken port stops the service with a clear message.
async fn status_page(
    args: &TranscodeArgs,
    inventory: &Inventory,
) -> Result<Option<(tokio::net::TcpListener, std::net::SocketAddr, std::path::PathBuf)>, Failure> {
    let Some(addr) = inventory.cluster.watch.as_ref().and_then(|w| w.http).filter(|_| args.watch) else {
        return Ok(None);
    };
    let why = |e: &dyn std::fmt::Display| {
        failed(anyhow!("cannot serve the status page on {addr} (cluster.watch.http): {e}"))
    };
    let state = crate::status::store::state_dir().map_err(|e| why(&e))?;
    let listener = crate::status::http::bind(addr).await.map_err(|e| why(&e))?;
    let bound = listener.local_addr().map_err(|e| why(&e))?;
    Ok(Some((listener, bound, state)))
}

/// What the status file says of this process.
fn status_meta(
    args: &TranscodeArgs,
    inventory: &Inventory,
    inputs: &[std::path::PathBuf],
    page: Option<std::net::SocketAddr>,
) -> crate::status::model::Meta {
    let abs = |p: &std::path::Path| {
        std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
    };
    crate::status::model::Meta {
        pid: std::process::id(),
        mode: if args.watch { "watch" } else { "batch" }.into(),
        inventory: crate::status::inventory_key(inventory),
        watching: if args.watch { inputs.iter().map(|p| abs(p)).collect() } else { Vec::new() },
        output_dir: args.output_dir.as_deref().map(abs),
        page: page.map(crate::status::http::url),
    }
}

fn check_options(args: &TranscodeArgs) -> Result<(), Failure> {
    if let Some(c) = args.chunk.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(usage(anyhow!("--chunk {c}: must be a positive number of seconds")));
    }
    if !(args.settle.is_finite() && args.settle >= 0.0) {
        return Err(usage(anyhow!("--settle {}: must be a number of seconds", args.settle)));
    }
    Ok(())
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

/// The inputs of a one-shot run, once every file found is complete: a file
/// written just now (a copy under way) is waited for, saying so, instead
/// of being left out without a word.
async fn settled(
    inputs: &[std::path::PathBuf],
    outputs: &Outputs,
    settle: Duration,
) -> Result<inputs::Expanded, Failure> {
    let mut said = Vec::new();
    loop {
        let found = inputs::expand(inputs, outputs, settle).map_err(usage)?;
        if found.unsettled.is_empty() {
            return Ok(found);
        }
        if found.unsettled != said {
            let names: Vec<String> = found.unsettled.iter().map(|p| p.display().to_string()).collect();
            eprintln!(
                "waiting for {} file(s) still being written (complete once untouched for {} s, --settle): {}",
                names.len(),
                settle.as_secs_f64(),
                crate::text::printable(&names.join(", "))
            );
            said = found.unsettled;
        }
        tokio::time::sleep(settle.clamp(Duration::from_millis(200), Duration::from_secs(2))).await;
    }
}

/// Why a symbolic link found in a folder is not an input.
pub fn outside_link(p: &std::path::Path) -> String {
    format!("skipped {}: a symbolic link to a file outside its folder", p.display())
}

/// Files found in directories that ffprobe does not see as video are no
/// inputs (the rule in `inputs.rs`); named files are kept (a bad one fails
/// with its reason).
async fn keep_videos(files: Vec<FileSpec>) -> Vec<FileSpec> {
    let mut kept = Vec::with_capacity(files.len());
    for f in files {
        if !f.found {
            kept.push(f);
        } else if let Some(f) = inputs::if_video(f).await {
            kept.push(f);
        }
    }
    kept
}

/// One command's work on one cluster.
pub struct Work<'a> {
    pub args: &'a TranscodeArgs,
    pub inventory: &'a Inventory,
    /// How to reach the nodes (from `--strict-host-keys`).
    pub connect: ConnectOptions,
    pub opts: prepare::Options,
    pub events: Sender,
    pub stop: signal_watch::Receiver<bool>,
    pub started: Instant,
    pub settle: Duration,
}

impl Work<'_> {
    /// Connect (while the first file is checked), then run the files.
    pub async fn batch(&self, files: Vec<FileSpec>) -> Vec<FileOutcome> {
        let Some(head) = files.first().cloned() else { return Vec::new() };
        let count = files.len();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for f in files.into_iter().skip(1) {
            // The receiver is ours until `run` takes it.
            let _ = tx.send(f);
        }
        drop(tx);
        self.run(head, rx, count).await
    }

    /// Connect while `head` is checked, then run it and the files from
    /// `rest` (until that channel closes) on the cluster.
    pub async fn run(
        &self,
        head: FileSpec,
        rest: tokio::sync::mpsc::UnboundedReceiver<FileSpec>,
        count: usize,
    ) -> Vec<FileOutcome> {
        let first = prepare::check(&head, &self.opts);
        let (first, mut cluster) =
            tokio::join!(first, cluster::connect_to_run(self.inventory, &self.connect));
        let send = |ev| {
            // The reporter outlives the work.
            let _ = self.events.send(ev);
        };
        let nodes = cluster.nodes.iter().zip(cluster.facts.iter()).map(|(n, f)| NodeInfo {
            name: n.name.clone(),
            arch: f.arch.clone(),
            slots: n.slots,
        });
        send(Event::BatchStart {
            cluster: cluster.description.clone(),
            files: count,
            slots: cluster.slots(),
            nodes: nodes.collect(),
        });
        send(Event::Queued { input: head.input.display().to_string() });
        let warnings = std::mem::take(&mut cluster.warnings);
        for message in &warnings {
            send(Event::Warning { message: message.clone() });
        }
        if cluster.nodes.is_empty() {
            if let Ok(c) = first {
                // Not started: nothing to keep.
                let _ = c.job.remove();
            }
            let why =
                anyhow!("no compute node of {} can be used: {}", self.inventory.source, warnings.join("; "));
            return no_cluster(head, rest, why).await;
        }
        let settings = batch::Settings {
            prepare: self.opts.clone(),
            keep: self.args.keep,
            events: self.events.clone(),
            stop: self.stop.clone(),
            started: self.started,
        };
        batch::run(rest, Some((head, first)), cluster, settings).await.0
    }
}

/// Every file fails the same way: no cluster to run on.
async fn no_cluster(
    head: FileSpec,
    mut rest: tokio::sync::mpsc::UnboundedReceiver<FileSpec>,
    why: anyhow::Error,
) -> Vec<FileOutcome> {
    let mut files = vec![head];
    rest.close();
    while let Some(f) = rest.recv().await {
        files.push(f);
    }
    files
        .into_iter()
        .map(|f| FileOutcome {
            input: f.input,
            output: f.output,
            end: FileEnd::NoCluster(anyhow!("{why:#}")),
        })
        .collect()
}

/// The exit status: one file alone keeps the single-file contract (exit 2
/// for what the user must fix, 1 for a failed or interrupted job); a batch
/// exits 1 if any file failed or was interrupted (its summary names them);
/// a watch stopped by a signal exits 0 unless a file failed (what it was
/// doing resumes at the next start).
fn conclude(outcomes: Vec<FileOutcome>, single: bool, watch: bool) -> Outcome {
    if single {
        return match outcomes.into_iter().next().map(|o| o.end) {
            Some(FileEnd::Done) | None => Ok(()),
            Some(FileEnd::Skipped(why)) => Err(usage(anyhow!(why))),
            Some(FileEnd::Refused(e)) => Err(usage(e)),
            Some(FileEnd::Failed(e) | FileEnd::NoCluster(e) | FileEnd::Interrupted(e)) => Err(failed(e)),
        };
    }
    let count = |f: fn(&FileEnd) -> bool| outcomes.iter().filter(|o| f(&o.end)).count();
    let bad = count(|e| matches!(e, FileEnd::Refused(_) | FileEnd::Failed(_) | FileEnd::NoCluster(_)));
    let stopped = count(|e| matches!(e, FileEnd::Interrupted(_)));
    match (bad, stopped) {
        (0, 0) => Ok(()),
        (0, _) if watch => Ok(()),
        (0, n) => {
            Err(failed(anyhow!("interrupted with {n} files to go; run the same command again to resume")))
        }
        (n, _) => Err(failed(anyhow!("{n} of {} files failed", outcomes.len()))),
    }
}

impl From<PrepareError> for FileEnd {
    fn from(e: PrepareError) -> FileEnd {
        match e {
            PrepareError::Refused(e) => FileEnd::Refused(e),
            PrepareError::Skipped(why) => FileEnd::Skipped(why),
            PrepareError::Failed(e) => FileEnd::Failed(e),
        }
    }
}
