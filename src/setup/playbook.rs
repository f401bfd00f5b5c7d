//! Playbooks: one YAML file per role (`common`, `controller`, `storage`,
//! `compute`), each a list of tasks and handlers.
//!
//! ```yaml
//! vars: { shared_group: dffmpeg }
//! tasks:
//!   - name: apt sources from the cluster mirror
//!     step: apt-sources
//!     when: cluster.apt_mirror
//!     template: { src: sources.list.j2, dest: /etc/apt/sources.list, mode: "0644" }
//!     notify: apt update
//!   - meta: flush_handlers
//! handlers:
//!   - name: apt update
//!     command: { argv: [apt-get, update] }
//! ```
//!
//! A task has exactly one module key; its arguments are templated later
//! (see [`super::render`]). `loop` repeats a task once per item (`item`).

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::inventory::Role;

/// The steps of the built-in playbooks, selectable with `--only`. Playbooks
/// may add their own.
pub const STEPS: &[&str] = &["apt-sources", "packages", "ssh-keys", "exports", "mounts", "slurm"];

/// The module names a task may use.
pub const MODULES: &[&str] =
    &["template", "copy", "file", "apt", "authorized_key", "mount", "service", "command", "group"];

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A module and its (untemplated) arguments.
    Module { name: String, args: Json },
    /// `meta: flush_handlers`: run the handlers notified so far, now.
    FlushHandlers,
    /// `meta: wait_for_storage`: flush the handlers, then wait until the
    /// storage node's play of this run has ended (its directories exist and
    /// its exports are live), so that NFS mounts after it can succeed. A
    /// no-op on the storage node itself and when it is not part of the run.
    WaitForStorage,
}

impl Action {
    /// `meta:` actions: no module, no step; kept by `--only`.
    pub fn is_meta(&self) -> bool {
        matches!(self, Action::FlushHandlers | Action::WaitForStorage)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: String,
    /// `--only` tag; `None` for handlers and `meta` tasks.
    pub step: Option<String>,
    /// A minijinja expression over the context; `None` = always.
    pub when: Option<String>,
    pub notify: Vec<String>,
    /// A list, or a string holding one template expression giving a list.
    pub loop_items: Option<Json>,
    /// `timeout:` seconds the task may take on the node (default: the
    /// module's, see [`super::modules::ModuleArgs::default_timeout`]).
    pub timeout: Option<u64>,
    pub action: Action,
}

#[derive(Debug, Clone, Default)]
pub struct Playbook {
    /// File name, for messages.
    pub file: String,
    pub vars: Map<String, Json>,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("{file}: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: {what} {index} ({name}): {message}")]
    Task { file: String, what: &'static str, index: usize, name: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    #[serde(default)]
    vars: Map<String, Json>,
    #[serde(default)]
    tasks: Vec<Map<String, Json>>,
    #[serde(default)]
    handlers: Vec<Map<String, Json>>,
}

/// The playbook file of a role.
pub fn role_file(role: Role) -> &'static str {
    match role {
        Role::Controller => "controller.yaml",
        Role::Storage => "storage.yaml",
        Role::Compute => "compute.yaml",
    }
}

/// Parse one playbook. `file` is used in messages.
pub fn parse(text: &str, file: &str) -> Result<Playbook, PlaybookError> {
    let raw: Option<RawPlaybook> = if text.trim().is_empty() {
        None
    } else {
        Some(
            serde_saphyr::from_str(text)
                .map_err(|e| PlaybookError::Yaml { file: file.to_string(), message: e.to_string() })?,
        )
    };
    let Some(raw) = raw else {
        return Ok(Playbook { file: file.to_string(), ..Playbook::default() });
    };
    let tasks = raw
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| parse_task(t, false).map_err(|(name, m)| err(file, "task", i + 1, name, m)))
        .collect::<Result<Vec<_>, _>>()?;
    let handlers = raw
        .handlers
        .into_iter()
        .enumerate()
        .map(|(i, t)| parse_task(t, true).map_err(|(name, m)| err(file, "handler", i + 1, name, m)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Playbook { file: file.to_string(), vars: raw.vars, tasks, handlers })
}

fn err(file: &str, what: &'static str, index: usize, name: String, message: String) -> PlaybookError {
    PlaybookError::Task { file: file.to_string(), what, index, name, message }
}

fn parse_task(mut map: Map<String, Json>, handler: bool) -> Result<Task, (String, String)> {
    let name = string_field(&mut map, "name", "`name` must be a string").map_err(|m| (String::new(), m))?;
    let name = name.unwrap_or_default();
    let fail = |m: String| (name.clone(), m);
    let step = string_field(&mut map, "step", "`step` must be a string").map_err(fail)?;
    let when = match map.remove("when") {
        Some(Json::String(s)) => Some(s),
        Some(Json::Bool(b)) => Some(b.to_string()),
        Some(_) => return Err(fail("`when` must be an expression string".into())),
        None => None,
    };
    let notify = notify_field(&mut map).map_err(fail)?;
    let loop_items = match map.remove("loop") {
        Some(v @ (Json::Array(_) | Json::String(_))) => Some(v),
        Some(_) => return Err(fail("`loop` must be a list or an expression".into())),
        None => None,
    };
    let timeout = timeout_field(&mut map).map_err(fail)?;
    let action = action(&mut map, handler).map_err(fail)?;
    if let Some(k) = map.keys().next() {
        return Err(fail(format!("unknown key `{k}`")));
    }
    if name.is_empty() && !action.is_meta() {
        return Err(fail("every task needs a `name`".into()));
    }
    if !handler && step.is_none() && !action.is_meta() {
        return Err(fail(format!("every task needs a `step` (e.g. {}) for --only", STEPS.join(", "))));
    }
    if handler && !notify.is_empty() {
        return Err(fail("handlers cannot notify".into()));
    }
    let name = match (&action, name.is_empty()) {
        (Action::FlushHandlers, true) => "flush handlers".into(),
        (Action::WaitForStorage, true) => "wait for the storage node".into(),
        _ => name,
    };
    Ok(Task { name, step, when, notify, loop_items, timeout, action })
}

/// An optional string field, taken out of the task's map.
fn string_field(map: &mut Map<String, Json>, key: &str, wrong: &str) -> Result<Option<String>, String> {
    match map.remove(key) {
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong.to_string()),
        None => Ok(None),
    }
}

/// `notify`: one handler's name or a list of them.
fn notify_field(map: &mut Map<String, Json>) -> Result<Vec<String>, String> {
    let wrong = || "`notify` must name handlers".to_string();
    match map.remove("notify") {
        Some(Json::String(s)) => Ok(vec![s]),
        Some(Json::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Json::String(s) => Ok(s),
                _ => Err(wrong()),
            })
            .collect(),
        Some(_) => Err(wrong()),
        None => Ok(Vec::new()),
    }
}

/// `timeout`: whole seconds, at least 1.
fn timeout_field(map: &mut Map<String, Json>) -> Result<Option<u64>, String> {
    match map.remove("timeout") {
        None => Ok(None),
        Some(v) => match v.as_u64().filter(|n| *n > 0) {
            Some(n) => Ok(Some(n)),
            None => Err("`timeout` is a whole number of seconds, at least 1".into()),
        },
    }
}

/// The task's one module (with its arguments) or `meta` action.
fn action(map: &mut Map<String, Json>, handler: bool) -> Result<Action, String> {
    if let Some(meta) = map.remove("meta") {
        return match meta.as_str() {
            Some("flush_handlers") => Ok(Action::FlushHandlers),
            Some("wait_for_storage") if !handler => Ok(Action::WaitForStorage),
            _ => Err("`meta` is flush_handlers or wait_for_storage (not in handlers)".into()),
        };
    }
    let mut modules = map.keys().filter(|k| MODULES.contains(&k.as_str()));
    let module = match (modules.next(), modules.next()) {
        (Some(m), None) => m.clone(),
        (None, _) => {
            let keys = map.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(format!("no module (one of {}) in keys: {keys}", MODULES.join(", ")));
        }
        (Some(a), Some(b)) => return Err(format!("two modules: {a} and {b}")),
    };
    let args = map.remove(&module).unwrap_or(Json::Null);
    Ok(Action::Module { name: module, args })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tasks_handlers_and_meta() {
        let text = r#"
vars: { g: dffmpeg }
tasks:
  - name: sources
    step: apt-sources
    when: cluster.apt_mirror
    template: { src: sources.list.j2, dest: /etc/apt/sources.list }
    notify: apt update
  - meta: flush_handlers
  - meta: wait_for_storage
  - name: dirs
    step: exports
    loop: [upload, work]
    file: { path: "/srv/{{ item }}", state: directory }
handlers:
  - name: apt update
    timeout: 900
    command: { argv: [apt-get, update] }
"#;
        let pb = parse(text, "common.yaml").unwrap();
        assert_eq!(pb.handlers[0].timeout, Some(900));
        assert_eq!(pb.tasks[0].timeout, None);
        let zero = "tasks:\n  - name: x\n    step: s\n    timeout: 0\n    file: {}\n";
        assert!(parse(zero, "c.yaml").unwrap_err().to_string().contains("`timeout`"));
        assert_eq!(pb.vars["g"], Json::String("dffmpeg".into()));
        assert_eq!(pb.tasks.len(), 4);
        assert_eq!(pb.tasks[0].notify, vec!["apt update".to_string()]);
        assert_eq!(pb.tasks[0].when.as_deref(), Some("cluster.apt_mirror"));
        assert_eq!(pb.tasks[1].action, Action::FlushHandlers);
        assert_eq!(pb.tasks[2].action, Action::WaitForStorage);
        assert!(pb.tasks[3].loop_items.is_some());
        assert_eq!(pb.handlers[0].name, "apt update");
    }

    #[test]
    fn rejects_bad_tasks_with_file_and_name() {
        let no_step = "tasks:\n  - name: x\n    file: { path: /a }\n";
        let e = parse(no_step, "c.yaml").unwrap_err().to_string();
        assert!(e.contains("c.yaml") && e.contains("(x)") && e.contains("step"), "{e}");
        let two = "tasks:\n  - name: x\n    step: s\n    file: {}\n    copy: {}\n";
        assert!(parse(two, "c.yaml").unwrap_err().to_string().contains("two modules"));
        let unknown = "tasks:\n  - name: x\n    step: s\n    file: {}\n    whn: a\n";
        assert!(parse(unknown, "c.yaml").unwrap_err().to_string().contains("unknown key `whn`"));
        let none = "tasks:\n  - name: x\n    step: s\n    shell: ls\n";
        assert!(parse(none, "c.yaml").unwrap_err().to_string().contains("no module"));
        assert!(parse("tasks: [", "c.yaml").unwrap_err().to_string().starts_with("c.yaml: "));
        let meta = "tasks:\n  - meta: end_play\n";
        assert!(parse(meta, "c.yaml").unwrap_err().to_string().contains("wait_for_storage"));
    }

    #[test]
    fn empty_file_is_an_empty_playbook() {
        assert!(parse("", "x.yaml").unwrap().tasks.is_empty());
    }
}
