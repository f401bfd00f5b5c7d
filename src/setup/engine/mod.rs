//! One node's play.
//!
//! 1. One round trip: facts + the state of every task's target (targets
//!    are rendered before facts are known; a task whose target needs facts
//!    is probed in a second, rare, round trip).
//! 2. Every task instance (after `when` and `loop`: [`instances`]) is
//!    planned against that state by its module: no changes = `ok`.
//! 3. The changes of all tasks up to the next `meta: flush_handlers` go to
//!    the node as one script ([`segment`]: one more round trip, only when
//!    something changes); then the notified handlers, once each, as another.
//!
//! The first failure ends the node's play, like Ansible; other nodes go on.

pub mod instances;
pub mod preview;
pub mod segment;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use crate::facts::Facts;
use crate::remote::Transport;

use super::context::with_facts;
use super::playbook::Task;
use super::render::Renderer;
use super::report::{Reporter, Status, TaskEvent};
use super::script::{run_script, ScriptOutput};
use super::state::{parse_probe_output, probe_script, NodeState, Probe};
use instances::{early_probes, instances, Inst, TaskError};
use segment::SegmentCtx;

pub use preview::{preview, Preview};

/// What every node's play shares.
pub struct Shared {
    pub renderer: Renderer,
    /// templates/ as raw text (for `copy: {src: ...}`).
    pub raw_templates: BTreeMap<String, String>,
    pub check: bool,
    pub diff: bool,
    pub reporter: Reporter,
    /// The storage node of this run and how its play ended (for
    /// `meta: wait_for_storage`); `None` when it is not part of the run.
    pub storage: Option<StorageGate>,
}

/// How a node's play ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayOutcome {
    /// Every task ran (ok, changed or skipped).
    Done,
    /// A task failed: the play stopped there.
    Failed,
    /// The node did not answer.
    Unreachable,
}

/// The storage node's play, as the others see it.
pub struct StorageGate {
    pub node: String,
    /// Becomes `Some` when its play has ended, however it ended.
    pub done: tokio::sync::watch::Receiver<Option<PlayOutcome>>,
}

impl Shared {
    /// Wait until the storage node's play has ended (not on itself). When
    /// it failed or was unreachable, why the changes that follow must not
    /// be made (an NFS mount of a missing export is refused, or hangs for
    /// minutes): they fail at once instead; what is already right stays ok.
    async fn wait_for_storage(&self, node: &str) -> Option<TaskError> {
        let g = self.storage.as_ref().filter(|g| g.node != node)?;
        let mut rx = g.done.clone();
        // An error means the storage play is gone without an outcome (it
        // crashed): go on, as if it had worked.
        let outcome = rx.wait_for(Option::is_some).await.ok().and_then(|o| *o);
        matches!(outcome, Some(PlayOutcome::Failed | PlayOutcome::Unreachable))
            .then(|| TaskError::StorageFailed(g.node.clone()))
    }
}

/// One node's work.
pub struct NodeJob {
    pub name: String,
    /// The limit of each remote step (a task may allow itself more).
    pub timeout: std::time::Duration,
    pub become_root: bool,
    /// The context before facts (see [`super::context::base`]).
    pub ctx: Json,
    /// The node's tasks, already filtered by `--only`.
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
}

/// Failure of a probe or batch run: unreachable (no answer at all) or a
/// failed task (the node answered with an error, e.g. sudo refusing).
pub enum RunError {
    Unreachable(String),
    Failed(String),
}

fn classify(out: &ScriptOutput) -> RunError {
    let msg = if out.stderr.trim().is_empty() {
        format!("exit status {:?}", out.code)
    } else {
        tail(&out.stderr, 10)
    };
    if out.code == Some(255) || out.code.is_none() {
        RunError::Unreachable(msg)
    } else {
        RunError::Failed(msg)
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn probe<T: Transport + ?Sized>(
    t: &T,
    job: &NodeJob,
    probes: &[Probe],
    with_facts: bool,
) -> Result<(Option<Facts>, NodeState), RunError> {
    let out = run_script(t, job.become_root, &probe_script(probes, with_facts), job.timeout)
        .await
        .map_err(|e| RunError::Unreachable(e.to_string()))?;
    match parse_probe_output(&out.stdout) {
        Ok(r) => Ok(r),
        Err(e) => match classify(&out) {
            RunError::Failed(m) if out.code == Some(0) => Err(RunError::Failed(format!("{e}: {m}"))),
            other => Err(other),
        },
    }
}

impl NodeJob {
    fn event(&self, task: &str, status: Status, msg: Option<String>) -> TaskEvent {
        TaskEvent {
            node: self.name.clone(),
            task: task.into(),
            step: None,
            status,
            handler: false,
            changes: Vec::new(),
            msg,
            diff: None,
        }
    }
}

/// Report a failure of the play's own steps (facts, state).
fn fail(sh: &Shared, job: &NodeJob, task: &str, msg: String) -> PlayOutcome {
    sh.reporter.task(job.event(task, Status::Failed, Some(msg)));
    PlayOutcome::Failed
}

fn unreachable(sh: &Shared, job: &NodeJob, msg: &str) -> PlayOutcome {
    sh.reporter.unreachable(&job.name, msg);
    PlayOutcome::Unreachable
}

/// Facts and the state of every target, in one or two round trips.
async fn gather<T: Transport + ?Sized>(
    t: &T,
    job: &NodeJob,
    sh: &Shared,
) -> Result<(Facts, Json, Vec<Inst>, NodeState), PlayOutcome> {
    let all: Vec<&Task> = job.tasks.iter().chain(job.handlers.iter()).collect();
    let early: Vec<Probe> = early_probes(&sh.renderer, &all, &job.ctx).into_iter().collect();
    let (facts, mut state) = match probe(t, job, &early, true).await {
        Ok((Some(facts), state)) => (facts, state),
        Ok((None, _)) => return Err(fail(sh, job, "gather facts", "the probe printed no facts".into())),
        Err(RunError::Unreachable(m)) => return Err(unreachable(sh, job, &m)),
        Err(RunError::Failed(m)) => return Err(fail(sh, job, "gather facts", m)),
    };
    sh.reporter.task(job.event("gather facts", Status::Ok, None));
    sh.reporter.detail(&job.name, &facts_line(&facts));
    let ctx = with_facts(job.ctx.clone(), &facts);
    let insts: Vec<Inst> = job.tasks.iter().flat_map(|task| instances(sh, task, &ctx)).collect();
    // Targets only known once facts are: one more round trip.
    let mut late: BTreeSet<Probe> = BTreeSet::new();
    for i in &insts {
        if let Inst::Run { args, .. } = i {
            late.extend(args.probes().into_iter().filter(|p| !state.has(p)));
        }
    }
    if !late.is_empty() {
        let late: Vec<Probe> = late.into_iter().collect();
        match probe(t, job, &late, false).await {
            Ok((_, more)) => state.merge(more),
            Err(RunError::Unreachable(m)) => return Err(unreachable(sh, job, &m)),
            Err(RunError::Failed(m)) => return Err(fail(sh, job, "gather state", m)),
        }
    }
    Ok((facts, ctx, insts, state))
}

/// `facts: Debian GNU/Linux 12 (bookworm), aarch64, 4 cores, ffmpeg 5.1.6, user pi`
fn facts_line(f: &Facts) -> String {
    format!(
        "facts: {}, {}, {} cores, ffmpeg {}, user {}",
        f.os().unwrap_or_else(|| "unknown OS".into()),
        f.arch,
        f.cores,
        f.ffmpeg_version.as_deref().unwrap_or("missing"),
        f.user
    )
}

/// Run one node's play; how it ended.
pub async fn play<T: Transport + ?Sized>(t: &T, job: &NodeJob, sh: &Shared) -> PlayOutcome {
    let (_, ctx, insts, mut state) = match gather(t, job, sh).await {
        Ok(g) => g,
        Err(outcome) => return outcome,
    };
    let mut run = Run { t, job, sh, ctx: &ctx, notified: Vec::new(), blocked: None };
    let mut segment: Vec<Inst> = Vec::new();
    for inst in insts {
        if !matches!(inst, Inst::Flush | Inst::Wait) {
            segment.push(inst);
            continue;
        }
        if let Some(o) = run.segment_and_handlers(&mut state, std::mem::take(&mut segment)).await {
            return o;
        }
        if matches!(inst, Inst::Wait) && run.blocked.is_none() {
            run.blocked = sh.wait_for_storage(&job.name).await;
        }
    }
    run.segment_and_handlers(&mut state, segment).await.unwrap_or(PlayOutcome::Done)
}

/// A play under way.
struct Run<'a, T: ?Sized> {
    t: &'a T,
    job: &'a NodeJob,
    sh: &'a Shared,
    ctx: &'a Json,
    notified: Vec<String>,
    /// Set when the storage node failed: changes after the wait fail.
    blocked: Option<TaskError>,
}

impl<T: Transport + ?Sized> Run<'_, T> {
    /// A segment, then the handlers it notified. Some: the play ended.
    async fn segment_and_handlers(&mut self, state: &mut NodeState, insts: Vec<Inst>) -> Option<PlayOutcome> {
        let how = SegmentCtx { handler: false, blocked: self.blocked.as_ref() };
        if let Some(end) =
            segment::run(self.t, self.job, self.sh, state, insts, how, &mut self.notified).await
        {
            return Some(end);
        }
        if self.notified.is_empty() {
            return None;
        }
        let names = std::mem::take(&mut self.notified);
        let handlers: Vec<Inst> = self
            .job
            .handlers
            .iter()
            .filter(|h| names.contains(&h.name))
            .flat_map(|h| instances(self.sh, h, self.ctx))
            .collect();
        let how = SegmentCtx { handler: true, blocked: self.blocked.as_ref() };
        segment::run(self.t, self.job, self.sh, state, handlers, how, &mut self.notified).await
    }
}
