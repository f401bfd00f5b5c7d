//! `transcode --watch DIR... -O OUT`: the shared `upload/` tree as a
//! queue. Every few seconds the directories are walked; a video that is
//! complete (untouched for `--settle` seconds, see `inputs.rs`) and whose
//! output does not exist yet joins the running batch — same cluster
//! connection, same queue. A bad file is reported once and left alone; a
//! lost node leaves, the others go on. SIGTERM (or Ctrl-C) stops it
//! cleanly: attempts in flight are stopped and their jobs resume at the
//! next start.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::batch::FileOutcome;
use super::inputs::{self, FileSpec, Outputs};
use super::Work;

/// How often the directories are walked.
const SCAN_EVERY: Duration = Duration::from_secs(2);

pub async fn run(work: &Work<'_>, dirs: &[PathBuf]) -> Vec<FileOutcome> {
    let Some(out) = work.args.output_dir.clone() else { return Vec::new() };
    let ext = work.opts.user.format.as_deref().and_then(inputs::extension_for).map(str::to_string);
    let outputs = Outputs::Dir { dir: out, ext };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let scan_it = scan(dirs.to_vec(), outputs, work.settle, tx, work.stop.clone(), work.events.clone());
    let scanner = tokio::spawn(scan_it);
    // The batch starts with the first file (the cluster is connected then).
    let head = tokio::select! {
        f = rx.recv() => f,
        _ = stopped(work.stop.clone()) => None,
    };
    let outcomes = match head {
        Some(head) => work.run(head, rx, 0).await,
        None => Vec::new(),
    };
    scanner.abort();
    outcomes
}

async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    // A closed channel: nobody can stop us any more; wait forever.
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Send every new complete video of `dirs` once, until stopped.
async fn scan(
    dirs: Vec<PathBuf>,
    outputs: Outputs,
    settle: Duration,
    tx: mpsc::UnboundedSender<FileSpec>,
    stop: tokio::sync::watch::Receiver<bool>,
    events: super::progress::Sender,
) {
    let mut seen: HashSet<PathBuf> = HashSet::new();
    loop {
        if *stop.borrow() {
            return;
        }
        // A directory that cannot be read now may be back later.
        if let Ok(found) = inputs::expand(&dirs, &outputs, settle) {
            for link in found.outside {
                if seen.insert(link.clone()) {
                    // Said once; the reporter outlives the watch.
                    let _ =
                        events.send(super::progress::Event::Warning { message: super::outside_link(&link) });
                }
            }
            for f in found.files {
                if !seen.insert(f.input.clone()) {
                    continue;
                }
                let done = f.output.as_ref().is_some_and(|o| o.exists());
                if done || !inputs::is_video(&f.input).await {
                    continue;
                }
                if tx.send(f).is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SCAN_EVERY) => {}
            _ = stopped(stop.clone()) => return,
        }
    }
}
