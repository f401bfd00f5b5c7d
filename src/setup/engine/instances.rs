//! From playbook tasks to task instances: `loop` expanded, `when`
//! evaluated, arguments rendered and typed, `template`/`copy` resolved to
//! the content they want.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::Shared;
use crate::setup::context::with_item;
use crate::setup::modules::files::ContentArgs;
use crate::setup::modules::{ModuleArgs, ModuleError};
use crate::setup::playbook::{Action, Task};
use crate::setup::render::{RenderError, Renderer};
use crate::setup::state::Probe;

/// Why a task instance cannot run.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TaskError {
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("loop: {0}")]
    Loop(RenderError),
    #[error("loop must give a list, got {0}")]
    LoopNotList(String),
    #[error("copy: no file {0} in templates/")]
    NoSource(String),
    #[error("copy needs exactly one of `content`, `src` or `content_base64` (valid base64)")]
    CopyArgs,
    #[error("changed_when: {0}")]
    ChangedWhen(RenderError),
    #[error("changed_when must be a bool or an expression, got {0}")]
    ChangedWhenType(String),
    #[error("not done: the storage node {0} failed in this run")]
    StorageFailed(String),
}

/// A task after `loop` and `when`, with its arguments rendered.
pub enum Inst {
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
        error: TaskError,
    },
    Run {
        name: String,
        step: Option<String>,
        notify: Vec<String>,
        args: Box<ModuleArgs>,
        ctx: Json,
        /// The task's own `timeout:`, if any.
        timeout: Option<std::time::Duration>,
    },
}

fn item_label(item: &Json) -> String {
    match item {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `(name, context)` per loop item (one without a loop).
fn expand(r: &Renderer, task: &Task, ctx: &Json) -> Result<Vec<(String, Json)>, TaskError> {
    let items = match &task.loop_items {
        None => {
            return Ok(vec![(r.string(&task.name, ctx).unwrap_or_else(|_| task.name.clone()), ctx.clone())])
        }
        Some(v) => match r.value(v, ctx).map_err(TaskError::Loop)? {
            Json::Array(a) => a,
            other => return Err(TaskError::LoopNotList(other.to_string())),
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

fn parse_args(r: &Renderer, module: &str, args: &Json, ctx: &Json) -> Result<ModuleArgs, TaskError> {
    let rendered = r.value(args, ctx)?;
    Ok(ModuleArgs::parse(module, rendered)?)
}

/// `template` and `copy` become the content they want at `dest`.
fn resolve(sh: &Shared, a: ModuleArgs, ctx: &Json) -> Result<ModuleArgs, TaskError> {
    Ok(match a {
        ModuleArgs::Template(t) => ModuleArgs::Content(ContentArgs {
            content: sh.renderer.template(&t.src, ctx)?.into_bytes(),
            dest: t.dest,
            owner: t.owner,
            group: t.group,
            mode: t.mode,
            secret: false,
        }),
        ModuleArgs::Copy(c) => {
            let content = match (c.content, &c.src, &c.content_base64) {
                (Some(text), None, None) => text.into_bytes(),
                (None, Some(src), None) => sh
                    .raw_templates
                    .get(src)
                    .cloned()
                    .ok_or_else(|| TaskError::NoSource(src.clone()))?
                    .into_bytes(),
                (None, None, Some(b)) => {
                    crate::setup::b64::decode(b.trim()).map_err(|_| TaskError::CopyArgs)?
                }
                _ => return Err(TaskError::CopyArgs),
            };
            ModuleArgs::Content(ContentArgs {
                dest: c.dest,
                content,
                owner: c.owner,
                group: c.group,
                mode: c.mode,
                secret: c.secret,
            })
        }
        other => other,
    })
}

/// What can be probed before facts are known.
pub fn early_probes(r: &Renderer, tasks: &[&Task], ctx: &Json) -> BTreeSet<Probe> {
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

/// One task's instances.
pub fn instances(sh: &Shared, task: &Task, ctx: &Json) -> Vec<Inst> {
    let (module, args) = match &task.action {
        Action::FlushHandlers => return vec![Inst::Flush],
        Action::WaitForStorage => return vec![Inst::Wait],
        Action::Module { name, args } => (name, args),
    };
    let step = task.step.clone();
    match expand(&sh.renderer, task, ctx) {
        Ok(items) => {
            items.into_iter().map(|(name, ictx)| instance(sh, task, module, args, name, ictx)).collect()
        }
        Err(error) => vec![Inst::Fail { name: task.name.clone(), step, error }],
    }
}

fn instance(sh: &Shared, task: &Task, module: &str, args: &Json, name: String, ctx: Json) -> Inst {
    let step = task.step.clone();
    if let Some(w) = &task.when {
        match sh.renderer.truth(w, &ctx) {
            Ok(true) => {}
            Ok(false) => return Inst::Skip { name, step, reason: format!("when: {w}") },
            Err(e) => return Inst::Fail { name, step, error: e.into() },
        }
    }
    match parse_args(&sh.renderer, module, args, &ctx).and_then(|a| resolve(sh, a, &ctx)) {
        Ok(a) => Inst::Run {
            name,
            step,
            notify: task.notify.clone(),
            args: Box::new(a),
            ctx,
            timeout: task.timeout.map(std::time::Duration::from_secs),
        },
        Err(error) => Inst::Fail { name, step, error },
    }
}
