//! One node's play.
//!
//! 1. One round trip: facts + the state of every task's target (targets
//!    are rendered before facts are known; a task whose target needs facts
//!    is probed in a second, rare, round trip).
//! 2. Every task instance (after `when` and `loop`) is planned against that
//!    state by its module: no changes = `ok`.
//! 3. The changes of all tasks up to the next `meta: flush_handlers` go to
//!    the node as one script (one more round trip, only when something
//!    changes); then the notified handlers, once each, as another script.
//!
//! The first failure ends the node's play, like Ansible; other nodes go on.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value as Json};

use crate::remote::Transport;

use super::context::{with_facts, with_item};
use super::diff::unified;
use super::modules::files::ContentArgs;
use super::modules::{Change, ModuleArgs, Plan};
use super::playbook::{Action, Task};
use super::render::Renderer;
use super::report::{Reporter, Status, TaskEvent};
use super::script::{batch_script, nonce, parse_batch, run_script, BatchItem, ScriptOutput};
use super::state::{parse_probe_output, probe_script, NodeState, Probe};
use crate::facts::Facts;

/// What every node's play shares.
pub struct Shared {
    pub renderer: Renderer,
    /// templates/ as raw text (for `copy: {src: ...}`).
    pub raw_templates: BTreeMap<String, String>,
    pub check: bool,
    pub diff: bool,
    pub reporter: Reporter,
    /// The storage node of this run and whether its play has ended (for
    /// `meta: wait_for_storage`); `None` when it is not part of the run.
    pub storage: Option<StorageGate>,
}

/// The storage node's play, as the others see it.
pub struct StorageGate {
    pub node: String,
    /// Becomes `true` when its play has ended, however it ended.
    pub done: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    /// Wait until the storage node's play has ended (not on itself). When
    /// it failed or was unreachable, why the changes that follow must not
    /// be made (an NFS mount of a missing export is refused, or hangs for
    /// minutes): they fail at once instead; what is already right stays ok.
    async fn wait_for_storage(&self, node: &str) -> Option<String> {
        let g = self.storage.as_ref().filter(|g| g.node != node)?;
        let mut rx = g.done.clone();
        // An error means the storage play is gone (it crashed): go on.
        let _ = rx.wait_for(|done| *done).await;
        let r = self.reporter.recaps().get(&g.node).cloned().unwrap_or_default();
        (r.failed > 0 || r.unreachable > 0)
            .then(|| format!("not done: the storage node {} failed in this run", g.node))
    }
}

/// One node's work.
pub struct NodeJob {
    pub name: String,
    pub become_root: bool,
    /// The context before facts (see [`super::context::base`]).
    pub ctx: Json,
    /// The node's tasks, already filtered by `--only`.
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
}

/// A task after `loop` and `when`, with its arguments rendered.
enum Inst {
    Flush,
    /// Flush, then wait for the storage node.
    Wait,
    Skip {
        name: String,
        step: Option<String>,
        reason: String,
    },
    Fail {
        name: String,
        step: Option<String>,
        msg: String,
    },
    Run {
        name: String,
        step: Option<String>,
        notify: Vec<String>,
        args: Box<ModuleArgs>,
        ctx: Json,
    },
}

/// Plan one task and apply its predicted effects to `state`.
fn plan_one(args: &ModuleArgs, state: &mut NodeState) -> Planned {
    match args.plan(state) {
        Ok(Plan::Skip(why)) => Planned::Skip(why),
        Ok(Plan::Changes(c)) if c.is_empty() => Planned::Ok,
        Ok(Plan::Changes(c)) => {
            for e in c.iter().flat_map(|c| c.effects.iter()) {
                e.apply(state);
            }
            Planned::Changes(c)
        }
        Err(e) => Planned::Fail(e),
    }
}

enum Planned {
    Ok,
    Skip(String),
    Fail(String),
    Changes(Vec<Change>),
}

fn item_label(item: &Json) -> String {
    match item {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `(name, context)` per loop item (one without a loop).
fn expand(r: &Renderer, task: &Task, ctx: &Json) -> Result<Vec<(String, Json)>, String> {
    let items = match &task.loop_items {
        None => {
            return Ok(vec![(r.string(&task.name, ctx).unwrap_or_else(|_| task.name.clone()), ctx.clone())])
        }
        Some(v) => match r.value(v, ctx).map_err(|e| format!("loop: {e}"))? {
            Json::Array(a) => a,
            other => return Err(format!("loop must give a list, got {other}")),
        },
    };
    Ok(items
        .into_iter()
        .map(|item| {
            let ictx = with_item(ctx, &item);
            let name = if task.name.contains("{{") {
                r.string(&task.name, &ictx).unwrap_or_else(|_| task.name.clone())
            } else {
                format!("{} ({})", task.name, item_label(&item))
            };
            (name, ictx)
        })
        .collect())
}

fn parse_args(r: &Renderer, module: &str, args: &Json, ctx: &Json) -> Result<ModuleArgs, String> {
    let rendered = r.value(args, ctx).map_err(|e| e.to_string())?;
    ModuleArgs::parse(module, rendered)
}

/// `template` and `copy` become the content they want at `dest`.
fn resolve(sh: &Shared, a: ModuleArgs, ctx: &Json) -> Result<ModuleArgs, String> {
    Ok(match a {
        ModuleArgs::Template(t) => ModuleArgs::Content(ContentArgs {
            content: sh.renderer.template(&t.src, ctx).map_err(|e| e.to_string())?.into_bytes(),
            dest: t.dest,
            owner: t.owner,
            group: t.group,
            mode: t.mode,
        }),
        ModuleArgs::Copy(c) => {
            let content = match (c.content, &c.src) {
                (Some(text), None) => text,
                (None, Some(src)) => sh
                    .raw_templates
                    .get(src)
                    .cloned()
                    .ok_or_else(|| format!("copy: no file {src} in templates/"))?,
                _ => return Err("copy needs exactly one of `content` or `src`".into()),
            };
            ModuleArgs::Content(ContentArgs {
                dest: c.dest,
                content: content.into_bytes(),
                owner: c.owner,
                group: c.group,
                mode: c.mode,
            })
        }
        other => other,
    })
}

/// What can be probed before facts are known.
fn early_probes(r: &Renderer, tasks: &[&Task], ctx: &Json) -> BTreeSet<Probe> {
    let mut probes = BTreeSet::new();
    for task in tasks {
        let Action::Module { name, args } = &task.action else {
            continue;
        };
        let Ok(items) = expand(r, task, ctx) else {
            continue;
        };
        for (_, ictx) in items {
            if let Ok(a) = parse_args(r, name, args, &ictx) {
                probes.extend(a.probes());
            }
        }
    }
    probes
}

fn instances(sh: &Shared, task: &Task, ctx: &Json) -> Vec<Inst> {
    let r = &sh.renderer;
    let (module, args) = match &task.action {
        Action::FlushHandlers => return vec![Inst::Flush],
        Action::WaitForStorage => return vec![Inst::Wait],
        Action::Module { name, args } => (name, args),
    };
    let step = task.step.clone();
    let items = match expand(r, task, ctx) {
        Ok(i) => i,
        Err(msg) => return vec![Inst::Fail { name: task.name.clone(), step, msg }],
    };
    items
        .into_iter()
        .map(|(name, ictx)| {
            if let Some(w) = &task.when {
                match r.truth(w, &ictx) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Inst::Skip { name, step: step.clone(), reason: format!("when: {w}") }
                    }
                    Err(e) => return Inst::Fail { name, step: step.clone(), msg: e.to_string() },
                }
            }
            match parse_args(r, module, args, &ictx).and_then(|a| resolve(sh, a, &ictx)) {
                Ok(a) => Inst::Run {
                    name,
                    step: step.clone(),
                    notify: task.notify.clone(),
                    args: Box::new(a),
                    ctx: ictx,
                },
                Err(msg) => Inst::Fail { name, step: step.clone(), msg },
            }
        })
        .collect()
}

/// Failure of a probe or batch run: unreachable (no answer at all) or a
/// failed task (the node answered with an error, e.g. sudo refusing).
enum RunError {
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
    become_root: bool,
    probes: &[Probe],
    with_facts: bool,
) -> Result<(Option<Facts>, NodeState), RunError> {
    let out = run_script(t, become_root, &probe_script(probes, with_facts))
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

pub async fn play<T: Transport + ?Sized>(t: &T, job: &NodeJob, sh: &Shared) {
    let rep = &sh.reporter;
    let fail = |task: &str, msg: String| {
        rep.task(TaskEvent {
            node: job.name.clone(),
            task: task.into(),
            step: None,
            status: Status::Failed,
            handler: false,
            changes: Vec::new(),
            msg: Some(msg),
            diff: None,
        })
    };
    let all: Vec<&Task> = job.tasks.iter().chain(job.handlers.iter()).collect();
    let early: Vec<Probe> = early_probes(&sh.renderer, &all, &job.ctx).into_iter().collect();
    let (facts, mut state) = match probe(t, job.become_root, &early, true).await {
        Ok((Some(facts), state)) => (facts, state),
        Ok((None, _)) => return fail("gather facts", "the probe printed no facts".into()),
        Err(RunError::Unreachable(m)) => return rep.unreachable(&job.name, &m),
        Err(RunError::Failed(m)) => return fail("gather facts", m),
    };
    rep.task(TaskEvent {
        node: job.name.clone(),
        task: "gather facts".into(),
        step: None,
        status: Status::Ok,
        handler: false,
        changes: Vec::new(),
        msg: None,
        diff: None,
    });
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
        match probe(t, job.become_root, &late, false).await {
            Ok((_, more)) => state.merge(more),
            Err(RunError::Unreachable(m)) => return rep.unreachable(&job.name, &m),
            Err(RunError::Failed(m)) => return fail("gather state", m),
        }
    }

    let mut notified: Vec<String> = Vec::new();
    let mut segment: Vec<Inst> = Vec::new();
    // Set when the storage node failed: changes after the wait fail.
    let mut blocked: Option<String> = None;
    for inst in insts {
        if matches!(inst, Inst::Flush | Inst::Wait) {
            let seg = std::mem::take(&mut segment);
            let b = blocked.as_deref();
            if !run_segment(t, job, sh, &mut state, seg, false, &mut notified, b).await
                || !run_handlers(t, job, sh, &mut state, &ctx, &mut notified, b).await
            {
                return;
            }
            if matches!(inst, Inst::Wait) && blocked.is_none() {
                blocked = sh.wait_for_storage(&job.name).await;
            }
        } else {
            segment.push(inst);
        }
    }
    let b = blocked.as_deref();
    if run_segment(t, job, sh, &mut state, segment, false, &mut notified, b).await {
        run_handlers(t, job, sh, &mut state, &ctx, &mut notified, b).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_handlers<T: Transport + ?Sized>(
    t: &T,
    job: &NodeJob,
    sh: &Shared,
    state: &mut NodeState,
    ctx: &Json,
    notified: &mut Vec<String>,
    blocked: Option<&str>,
) -> bool {
    if notified.is_empty() {
        return true;
    }
    let names = std::mem::take(notified);
    let insts: Vec<Inst> =
        job.handlers.iter().filter(|h| names.contains(&h.name)).flat_map(|h| instances(sh, h, ctx)).collect();
    run_segment(t, job, sh, state, insts, true, notified, blocked).await
}

/// Plan, apply (one script) and report a run of instances. `false` when
/// the node's play must stop. With `blocked`, a task that would change
/// something fails with that reason instead.
#[allow(clippy::too_many_arguments)]
async fn run_segment<T: Transport + ?Sized>(
    t: &T,
    job: &NodeJob,
    sh: &Shared,
    state: &mut NodeState,
    insts: Vec<Inst>,
    handler: bool,
    notified: &mut Vec<String>,
    blocked: Option<&str>,
) -> bool {
    if insts.is_empty() {
        return true;
    }
    let rep = &sh.reporter;
    // Plan, up to and including the first failure; each plan sees the
    // effects of the changes planned before it.
    let mut planned: Vec<(Inst, Planned)> = Vec::new();
    for inst in insts {
        let p = match &inst {
            Inst::Flush | Inst::Wait => continue,
            Inst::Skip { reason, .. } => Planned::Skip(reason.clone()),
            Inst::Fail { msg, .. } => Planned::Fail(msg.clone()),
            Inst::Run { args, .. } => match (plan_one(args, state), blocked) {
                (Planned::Changes(_), Some(why)) => Planned::Fail(why.to_string()),
                (p, _) => p,
            },
        };
        let stop = matches!(p, Planned::Fail(_));
        planned.push((inst, p));
        if stop {
            break;
        }
    }

    // Apply every change in one script.
    let mut results = BTreeMap::new();
    let mut ended = true;
    let mut run_err: Option<RunError> = None;
    if !sh.check {
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
        if !items.is_empty() {
            let n = nonce();
            match run_script(t, job.become_root, &batch_script(&items, &n)).await {
                Ok(out) => {
                    let (res, end) = parse_batch(&out.stdout, &n);
                    ended = end;
                    if !end {
                        run_err = Some(classify(&out));
                    }
                    results = res.into_iter().map(|r| (r.id, r)).collect();
                }
                Err(e) => {
                    ended = false;
                    run_err = Some(RunError::Unreachable(e.to_string()));
                }
            }
        }
    }

    // Report in task order.
    for (id, (inst, p)) in planned.into_iter().enumerate() {
        let (name, step, notify, ctx) = match &inst {
            Inst::Flush | Inst::Wait => continue,
            Inst::Skip { name, step, .. } | Inst::Fail { name, step, .. } => {
                (name.clone(), step.clone(), Vec::new(), None)
            }
            Inst::Run { name, step, notify, ctx, .. } => {
                (name.clone(), step.clone(), notify.clone(), Some(ctx))
            }
        };
        let mut ev = TaskEvent {
            node: job.name.clone(),
            task: name,
            step,
            status: Status::Ok,
            handler,
            changes: Vec::new(),
            msg: None,
            diff: None,
        };
        match p {
            Planned::Ok => {}
            Planned::Skip(why) => {
                ev.status = Status::Skipped;
                ev.msg = Some(why);
            }
            Planned::Fail(msg) => {
                ev.status = Status::Failed;
                ev.msg = Some(msg);
                rep.task(ev);
                return false;
            }
            Planned::Changes(changes) => {
                ev.changes = changes.iter().map(|c| c.summary.clone()).collect();
                let d: String = changes
                    .iter()
                    .filter_map(|c| c.diff.as_ref())
                    .map(|d| unified(&d.path, d.before.as_deref(), &d.after))
                    .collect();
                ev.diff = (!d.is_empty()).then_some(d);
                let changed_when = match &inst {
                    Inst::Run { args, .. } => match args.as_ref() {
                        ModuleArgs::Command(c) => c.changed_when.clone(),
                        _ => None,
                    },
                    _ => None,
                };
                if sh.check {
                    ev.status =
                        if changed_when == Some(Json::Bool(false)) { Status::Ok } else { Status::Changed };
                } else {
                    match results.get(&id) {
                        None => {
                            if let Some(RunError::Unreachable(m)) = &run_err {
                                rep.unreachable(&job.name, m);
                                return false;
                            }
                            let why = match &run_err {
                                Some(RunError::Failed(m) | RunError::Unreachable(m)) => m.clone(),
                                None if !ended => "the node stopped answering".into(),
                                None => "did not run".into(),
                            };
                            ev.status = Status::Failed;
                            ev.msg = Some(why);
                            rep.task(ev);
                            return false;
                        }
                        Some(r) if r.rc != 0 => {
                            ev.status = Status::Failed;
                            let out = tail(&r.output, 15);
                            ev.msg = Some(if out.is_empty() {
                                format!("exit status {}", r.rc)
                            } else {
                                format!("exit status {}: {out}", r.rc)
                            });
                            rep.task(ev);
                            return false;
                        }
                        Some(r) => {
                            ev.status = match changed_when {
                                None => Status::Changed,
                                Some(Json::Bool(b)) => {
                                    if b {
                                        Status::Changed
                                    } else {
                                        Status::Ok
                                    }
                                }
                                Some(Json::String(expr)) => {
                                    let mut c = ctx.cloned().unwrap_or(Json::Null);
                                    if let Json::Object(m) = &mut c {
                                        m.insert("rc".into(), json!(r.rc));
                                        m.insert("stdout".into(), json!(r.output));
                                    }
                                    match sh.renderer.truth(&expr, &c) {
                                        Ok(true) => Status::Changed,
                                        Ok(false) => Status::Ok,
                                        Err(e) => {
                                            ev.status = Status::Failed;
                                            ev.msg = Some(format!("changed_when: {e}"));
                                            rep.task(ev);
                                            return false;
                                        }
                                    }
                                }
                                Some(other) => {
                                    ev.status = Status::Failed;
                                    ev.msg = Some(format!(
                                        "changed_when must be a bool or an expression, got {other}"
                                    ));
                                    rep.task(ev);
                                    return false;
                                }
                            };
                        }
                    }
                }
                if ev.status == Status::Ok {
                    ev.changes.clear();
                    ev.diff = None;
                } else {
                    for n in notify {
                        if !notified.contains(&n) {
                            notified.push(n);
                        }
                    }
                }
            }
        }
        rep.task(ev);
    }
    true
}

/// A task's planned outcome, computed without touching any node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    Ok,
    Skip(String),
    Fail(String),
    Changes(Vec<Change>),
}

/// Plan a node's whole play (handlers aside) against given facts and
/// state, as if every change succeeded; anything the state does not tell
/// counts as missing. For fixture tests and explanations.
pub fn preview(sh: &Shared, job: &NodeJob, facts: &Facts, state: &NodeState) -> Vec<(String, Preview)> {
    let ctx = with_facts(job.ctx.clone(), facts);
    let insts: Vec<Inst> = job.tasks.iter().flat_map(|t| instances(sh, t, &ctx)).collect();
    let mut st = state.clone();
    for i in &insts {
        if let Inst::Run { args, .. } = i {
            for p in args.probes() {
                if st.has(&p) {
                    continue;
                }
                match p {
                    Probe::File(f) => {
                        st.files.insert(f, None);
                    }
                    Probe::User(u) => {
                        st.users.insert(u, None);
                    }
                    Probe::Service(s) => {
                        st.services.insert(s, Default::default());
                    }
                }
            }
        }
    }
    let homes: Vec<String> =
        st.users.values().flatten().map(|u| u.home.trim_end_matches('/').to_string()).collect();
    for h in homes {
        for f in [format!("{h}/.ssh"), format!("{h}/.ssh/authorized_keys")] {
            st.files.entry(f).or_insert(None);
        }
    }
    insts
        .into_iter()
        .filter_map(|i| match i {
            Inst::Flush | Inst::Wait => None,
            Inst::Skip { name, reason, .. } => Some((name, Preview::Skip(reason))),
            Inst::Fail { name, msg, .. } => Some((name, Preview::Fail(msg))),
            Inst::Run { name, args, .. } => Some((
                name,
                match plan_one(&args, &mut st) {
                    Planned::Skip(why) => Preview::Skip(why),
                    Planned::Ok => Preview::Ok,
                    Planned::Changes(c) => Preview::Changes(c),
                    Planned::Fail(e) => Preview::Fail(e),
                },
            )),
        })
        .collect()
}
