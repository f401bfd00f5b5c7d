//! A segment: the task instances between two flushes, planned against the
//! node's state, applied as one batch script, then reported in task order.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use super::instances::{Inst, TaskError};
use super::{classify, NodeJob, PlayOutcome, RunError, Shared};
use crate::remote::Transport;
use crate::setup::diff::unified;
use crate::setup::modules::{Change, ModuleArgs, Plan};
use crate::setup::report::{Status, TaskEvent};
use crate::setup::script::{batch_script, nonce, parse_batch, run_script, BatchItem, ItemResult};
use crate::setup::state::NodeState;

/// A task instance's plan.
pub enum Planned {
    Ok,
    Skip(String),
    Fail(TaskError),
    Changes(Vec<Change>),
}

/// Plan one task and apply its predicted effects to `state`.
pub fn plan_one(args: &ModuleArgs, state: &mut NodeState) -> Planned {
    match args.plan(state) {
        Ok(Plan::Skip(why)) => Planned::Skip(why),
        Ok(Plan::Changes(c)) if c.is_empty() => Planned::Ok,
        Ok(Plan::Changes(c)) => {
            for e in c.iter().flat_map(|c| c.effects.iter()) {
                e.apply(state);
            }
            Planned::Changes(c)
        }
        Err(e) => Planned::Fail(e.into()),
    }
}

/// How a segment runs: as handlers or not, and whether changes are
/// refused because the storage node failed (`blocked`: why).
pub struct SegmentCtx<'a> {
    pub handler: bool,
    pub blocked: Option<&'a TaskError>,
}

/// Plan, apply (one script) and report a run of instances. Some: the
/// node's play stops here, and how it ended. With `blocked`, a task that would change
/// something fails with that reason instead.
pub async fn run<T: Transport + ?Sized>(
    t: &T,
    job: &NodeJob,
    sh: &Shared,
    state: &mut NodeState,
    insts: Vec<Inst>,
    how: SegmentCtx<'_>,
    notified: &mut Vec<String>,
) -> Option<PlayOutcome> {
    if insts.is_empty() {
        return None;
    }
    let planned = plan_all(insts, state, how.blocked);
    let started = std::time::Instant::now();
    let applied = if sh.check { Applied::default() } else { apply(t, job, &planned).await };
    batch_detail(sh, job, &planned, started);
    for (id, (inst, p)) in planned.into_iter().enumerate() {
        let Some(ev) = event(job, &inst, how.handler) else { continue };
        match outcome(sh, &inst, p, applied.results.get(&id), &applied) {
            Reported::Event(ev_fill, notify) => {
                let ev = ev_fill(ev);
                if ev.status == Status::Changed {
                    for n in notify {
                        if !notified.contains(&n) {
                            notified.push(n);
                        }
                    }
                }
                let failed = ev.status == Status::Failed;
                sh.reporter.task(ev);
                if failed {
                    return Some(PlayOutcome::Failed);
                }
            }
            Reported::Unreachable(m) => {
                sh.reporter.unreachable(&job.name, &m);
                return Some(PlayOutcome::Unreachable);
            }
        }
    }
    None
}

/// `-v`: how many tasks a change batch held, and how long it took.
fn batch_detail(sh: &Shared, job: &NodeJob, planned: &[(Inst, Planned)], started: std::time::Instant) {
    let n = planned.iter().filter(|(_, p)| matches!(p, Planned::Changes(_))).count();
    if n > 0 && !sh.check {
        let secs = started.elapsed().as_secs_f64();
        sh.reporter.detail(&job.name, &format!("change batch: {n} tasks in one script, {secs:.1} s"));
    }
}

/// Plan up to and including the first failure; each plan sees the effects
/// of the changes planned before it.
fn plan_all(insts: Vec<Inst>, state: &mut NodeState, blocked: Option<&TaskError>) -> Vec<(Inst, Planned)> {
    let mut planned = Vec::new();
    for inst in insts {
        let p = match &inst {
            Inst::Flush | Inst::Wait => continue,
            Inst::Skip { reason, .. } => Planned::Skip(reason.clone()),
            Inst::Fail { error, .. } => Planned::Fail(error.clone()),
            Inst::Run { args, .. } => match (plan_one(args, state), blocked) {
                (Planned::Changes(_), Some(why)) => Planned::Fail(why.clone()),
                (p, _) => p,
            },
        };
        let stop = matches!(p, Planned::Fail(_));
        planned.push((inst, p));
        if stop {
            break;
        }
    }
    planned
}

/// What the batch script did.
#[derive(Default)]
struct Applied {
    results: BTreeMap<usize, ItemResult>,
    /// The script reached its end.
    ended: bool,
    error: Option<RunError>,
}

/// Every planned change, in one script.
async fn apply<T: Transport + ?Sized>(t: &T, job: &NodeJob, planned: &[(Inst, Planned)]) -> Applied {
    let items: Vec<BatchItem> = planned
        .iter()
        .enumerate()
        .filter_map(|(id, (_, p))| match p {
            Planned::Changes(c) => Some(BatchItem {
                id,
                script: c.iter().map(|c| c.script.as_str()).collect::<Vec<_>>().join(""),
            }),
            _ => None,
        })
        .collect();
    if items.is_empty() {
        return Applied { ended: true, ..Applied::default() };
    }
    // The batch may take as long as its tasks together.
    let limit: std::time::Duration = planned
        .iter()
        .filter_map(|(inst, p)| match (inst, p) {
            (Inst::Run { args, timeout, .. }, Planned::Changes(_)) => {
                Some(timeout.unwrap_or_else(|| args.default_timeout(job.timeout)))
            }
            _ => None,
        })
        .sum();
    let n = nonce();
    match run_script(t, job.become_root, &batch_script(&items, &n), limit).await {
        Ok(out) => {
            let (res, ended) = parse_batch(&out.stdout, &n);
            let error = (!ended).then(|| classify(&out));
            Applied { results: res.into_iter().map(|r| (r.id, r)).collect(), ended, error }
        }
        Err(e) => Applied {
            results: BTreeMap::new(),
            ended: false,
            error: Some(RunError::Unreachable(e.to_string())),
        },
    }
}

/// The event of an instance, before its outcome (None: not a task).
fn event(job: &NodeJob, inst: &Inst, handler: bool) -> Option<TaskEvent> {
    let (name, step) = match inst {
        Inst::Flush | Inst::Wait => return None,
        Inst::Skip { name, step, .. } | Inst::Fail { name, step, .. } | Inst::Run { name, step, .. } => {
            (name.clone(), step.clone())
        }
    };
    Some(TaskEvent {
        node: job.name.clone(),
        task: name,
        step,
        status: Status::Ok,
        handler,
        changes: Vec::new(),
        msg: None,
        diff: None,
    })
}

type Fill = Box<dyn FnOnce(TaskEvent) -> TaskEvent>;

enum Reported {
    /// Fill in the event; the handlers to notify if it changed something.
    Event(Fill, Vec<String>),
    /// The node stopped answering.
    Unreachable(String),
}

fn status(status: Status, msg: Option<String>) -> Fill {
    Box::new(move |ev| TaskEvent { status, msg, ..ev })
}

/// How an instance ended.
fn outcome(sh: &Shared, inst: &Inst, p: Planned, result: Option<&ItemResult>, applied: &Applied) -> Reported {
    let changes = match p {
        Planned::Ok => return Reported::Event(status(Status::Ok, None), vec![]),
        Planned::Skip(why) => return Reported::Event(status(Status::Skipped, Some(why)), vec![]),
        Planned::Fail(e) => return Reported::Event(status(Status::Failed, Some(e.to_string())), vec![]),
        Planned::Changes(c) => c,
    };
    let Inst::Run { args, ctx, notify, .. } = inst else {
        return Reported::Event(
            status(Status::Failed, Some("internal: changes without a task".into())),
            vec![],
        );
    };
    let changed_when = match args.as_ref() {
        ModuleArgs::Command(c) => c.changed_when.clone(),
        _ => None,
    };
    let st = if sh.check {
        Ok(if changed_when == Some(Json::Bool(false)) { Status::Ok } else { Status::Changed })
    } else {
        match ran(result, applied) {
            Ok(r) => changed_status(sh, changed_when, r, ctx).map_err(|e| e.to_string()),
            Err(Reported::Unreachable(m)) => return Reported::Unreachable(m),
            Err(Reported::Event(fill, _)) => return Reported::Event(fill, vec![]),
        }
    };
    let summaries: Vec<String> = changes.iter().map(|c| c.summary.clone()).collect();
    let diff: String = changes
        .iter()
        .filter_map(|c| c.diff.as_ref())
        .map(|d| unified(&d.path, d.before.as_deref(), &d.after))
        .collect();
    let fill: Fill = Box::new(move |ev| match st {
        Ok(Status::Changed) => TaskEvent {
            status: Status::Changed,
            changes: summaries,
            diff: (!diff.is_empty()).then_some(diff),
            ..ev
        },
        Ok(s) => TaskEvent { status: s, ..ev },
        Err(msg) => TaskEvent { status: Status::Failed, msg: Some(msg), ..ev },
    });
    Reported::Event(fill, notify.clone())
}

/// The batch item's result, or how its absence is reported.
fn ran<'a>(result: Option<&'a ItemResult>, applied: &Applied) -> Result<&'a ItemResult, Reported> {
    let r = match result {
        Some(r) => r,
        None => {
            let why = match &applied.error {
                Some(RunError::Unreachable(m)) => return Err(Reported::Unreachable(m.clone())),
                Some(RunError::Failed(m)) => m.clone(),
                None if !applied.ended => "the node stopped answering".into(),
                None => "did not run".into(),
            };
            return Err(Reported::Event(status(Status::Failed, Some(why)), vec![]));
        }
    };
    if r.rc != 0 {
        let out = super::tail(&r.output, 15);
        let msg = match out.is_empty() {
            true => format!("exit status {}", r.rc),
            false => format!("exit status {}: {out}", r.rc),
        };
        return Err(Reported::Event(status(Status::Failed, Some(msg)), vec![]));
    }
    Ok(r)
}

/// Changed or ok, by the task's `changed_when` (default: changed).
fn changed_status(
    sh: &Shared,
    changed_when: Option<Json>,
    r: &ItemResult,
    ctx: &Json,
) -> Result<Status, TaskError> {
    let changed = match changed_when {
        None => true,
        Some(Json::Bool(b)) => b,
        Some(Json::String(expr)) => {
            let mut c = ctx.clone();
            if let Json::Object(m) = &mut c {
                m.insert("rc".into(), json!(r.rc));
                m.insert("stdout".into(), json!(r.output));
            }
            sh.renderer.truth(&expr, &c).map_err(TaskError::ChangedWhen)?
        }
        Some(other) => return Err(TaskError::ChangedWhenType(other.to_string())),
    };
    Ok(if changed { Status::Changed } else { Status::Ok })
}
