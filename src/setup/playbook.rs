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
//! Read through [`crate::inventory::yaml`], like the inventory: a mistake
//! is `file:line:column: task N (name): what`, an unknown key gets a
//! did-you-mean.

use serde_json::{Map, Value as Json};

use super::modules;
use crate::inventory::yaml::{self, kind, pos, to_json, Pos, Reader, Spanned, Value};
use crate::inventory::Role;

/// The steps of the built-in playbooks, selectable with `--only`. Playbooks
/// may add their own.
pub const STEPS: &[&str] = &["apt-sources", "packages", "ssh-keys", "exports", "mounts", "slurm"];

/// The keys a task may have besides its module.
const TASK_KEYS: &[&str] = &["name", "step", "when", "notify", "loop", "timeout", "meta"];

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

/// What is wrong in a playbook, at its line and column
/// (`file:line:column: task 2 (name): message`).
pub type PlaybookError = yaml::Error;

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
    let yaml = Reader { file, aliases: &[] };
    let doc = yaml.read(text)?;
    let mut book = Playbook { file: file.to_string(), ..Playbook::default() };
    for (k, v) in yaml.entries(&doc, "a playbook")? {
        match k.value.as_str() {
            "vars" => book.vars = vars(&yaml, v)?,
            "tasks" => book.tasks = tasks(&yaml, v, false)?,
            "handlers" => book.handlers = tasks(&yaml, v, true)?,
            _ => return Err(yaml.unknown_key(k, &["vars", "tasks", "handlers"], "at the top level")),
        }
    }
    Ok(book)
}

fn vars(yaml: &Reader, v: &Spanned<Value>) -> Result<Map<String, Json>, PlaybookError> {
    let entries = yaml.entries(v, "`vars`")?;
    Ok(entries.iter().map(|(k, v)| (k.value.clone(), to_json(&v.value))).collect())
}

/// `tasks:` or `handlers:`: a list of tasks; each error names the task.
fn tasks(yaml: &Reader, v: &Spanned<Value>, handler: bool) -> Result<Vec<Task>, PlaybookError> {
    let items: &[Spanned<Value>] = match &v.value {
        Value::Seq(items) => items,
        Value::Null => &[],
        other => {
            let what = if handler { "handlers" } else { "tasks" };
            return Err(yaml.err(pos(v), format!("`{what}` must be a list of tasks, not {}", kind(other))));
        }
    };
    let what = if handler { "handler" } else { "task" };
    let located = |i: usize, (at, name, m): (Pos, String, String)| {
        yaml.err(at, format!("{what} {} ({name}): {m}", i + 1))
    };
    items.iter().enumerate().map(|(i, t)| parse_task(yaml, t, handler).map_err(|e| located(i, e))).collect()
}

/// A task's keys, taken one by one; what is left at the end is unknown.
struct Fields<'v> {
    left: Vec<(&'v Spanned<String>, &'v Spanned<Value>)>,
}

impl<'v> Fields<'v> {
    fn take(&mut self, key: &str) -> Option<&'v Spanned<Value>> {
        let i = self.left.iter().position(|(k, _)| k.value == key)?;
        Some(self.left.remove(i).1)
    }
}

/// Why a task is refused: where, the task's name (so far), what.
type TaskError = (Pos, String, String);

fn parse_task(yaml: &Reader, v: &Spanned<Value>, handler: bool) -> Result<Task, TaskError> {
    let at = pos(v);
    let entries = yaml.entries(v, "a task").map_err(|e| (at, String::new(), e.message))?;
    let mut fields = Fields { left: entries.iter().map(|(k, v)| (k, v)).collect() };
    let name = string_field(fields.take("name"), "`name` must be a string")
        .map_err(|(p, m)| (p, String::new(), m))?;
    let name = name.unwrap_or_default();
    let fail = |(p, m): (Pos, String)| (p, name.clone(), m);
    let step = string_field(fields.take("step"), "`step` must be a string").map_err(fail)?;
    let when = when_field(fields.take("when")).map_err(fail)?;
    let notify = notify_field(fields.take("notify")).map_err(fail)?;
    let loop_items = loop_field(fields.take("loop")).map_err(fail)?;
    let timeout = timeout_field(fields.take("timeout")).map_err(fail)?;
    let action = action(at, &mut fields, handler).map_err(fail)?;
    if let Some((k, _)) = fields.left.first() {
        let known: Vec<&str> = TASK_KEYS.iter().copied().chain(modules::names()).collect();
        return Err(fail((
            pos(k),
            format!("unknown key `{}`; {}", k.value, yaml.did_you_mean(&k.value, &known)),
        )));
    }
    if name.is_empty() && !action.is_meta() {
        return Err(fail((at, "every task needs a `name`".into())));
    }
    if !handler && step.is_none() && !action.is_meta() {
        return Err(fail((at, format!("every task needs a `step` (e.g. {}) for --only", STEPS.join(", ")))));
    }
    if handler && !notify.is_empty() {
        return Err(fail((at, "handlers cannot notify".into())));
    }
    let name = match (&action, name.is_empty()) {
        (Action::FlushHandlers, true) => "flush handlers".into(),
        (Action::WaitForStorage, true) => "wait for the storage node".into(),
        _ => name,
    };
    Ok(Task { name, step, when, notify, loop_items, timeout, action })
}

/// What is wrong with one field, and where.
type FieldError = (Pos, String);

/// An optional string field.
fn string_field(v: Option<&Spanned<Value>>, wrong: &str) -> Result<Option<String>, FieldError> {
    match v.map(|v| (v, &v.value)) {
        Some((_, Value::Str(s))) => Ok(Some(s.clone())),
        Some((v, _)) => Err((pos(v), wrong.to_string())),
        None => Ok(None),
    }
}

/// `when`: an expression (`true`/`false` as written).
fn when_field(v: Option<&Spanned<Value>>) -> Result<Option<String>, FieldError> {
    match v.map(|v| (v, &v.value)) {
        Some((_, Value::Str(s))) => Ok(Some(s.clone())),
        Some((_, Value::Bool(b))) => Ok(Some(b.to_string())),
        Some((v, _)) => Err((pos(v), "`when` must be an expression string".into())),
        None => Ok(None),
    }
}

/// `notify`: one handler's name or a list of them.
fn notify_field(v: Option<&Spanned<Value>>) -> Result<Vec<String>, FieldError> {
    let wrong = |v: &Spanned<Value>| (pos(v), "`notify` must name handlers".to_string());
    let Some(v) = v else { return Ok(Vec::new()) };
    match &v.value {
        Value::Str(s) => Ok(vec![s.clone()]),
        Value::Seq(items) => items
            .iter()
            .map(|i| match &i.value {
                Value::Str(s) => Ok(s.clone()),
                _ => Err(wrong(i)),
            })
            .collect(),
        _ => Err(wrong(v)),
    }
}

/// `loop`: a list, or one expression giving a list.
fn loop_field(v: Option<&Spanned<Value>>) -> Result<Option<Json>, FieldError> {
    match v.map(|v| (v, &v.value)) {
        Some((_, value @ (Value::Seq(_) | Value::Str(_)))) => Ok(Some(to_json(value))),
        Some((v, _)) => Err((pos(v), "`loop` must be a list or an expression".into())),
        None => Ok(None),
    }
}

/// `timeout`: whole seconds, at least 1.
fn timeout_field(v: Option<&Spanned<Value>>) -> Result<Option<u64>, FieldError> {
    let Some(v) = v else { return Ok(None) };
    match &v.value {
        Value::Int(n) if *n >= 1 => u64::try_from(*n).map(Some).map_err(|_| (pos(v), TIMEOUT.into())),
        _ => Err((pos(v), TIMEOUT.into())),
    }
}

const TIMEOUT: &str = "`timeout` is a whole number of seconds, at least 1";

/// The task's one module (with its arguments) or `meta` action.
fn action(at: Pos, fields: &mut Fields, handler: bool) -> Result<Action, FieldError> {
    if let Some(meta) = fields.take("meta") {
        return match &meta.value {
            Value::Str(s) if s == "flush_handlers" => Ok(Action::FlushHandlers),
            Value::Str(s) if s == "wait_for_storage" && !handler => Ok(Action::WaitForStorage),
            _ => Err((pos(meta), "`meta` is flush_handlers or wait_for_storage (not in handlers)".into())),
        };
    }
    let mut found = fields.left.iter().filter(|(k, _)| modules::is_module(&k.value));
    let module = match (found.next(), found.next()) {
        (Some((k, _)), None) => k.value.clone(),
        (None, _) => {
            let keys = fields.left.iter().map(|(k, _)| k.value.as_str()).collect::<Vec<_>>().join(", ");
            let names = modules::names().collect::<Vec<_>>().join(", ");
            return Err((at, format!("no module (one of {names}) in keys: {keys}")));
        }
        (Some((a, _)), Some((b, _))) => {
            return Err((pos(b), format!("two modules: {} and {}", a.value, b.value)))
        }
    };
    let args = fields.take(&module).map(|v| to_json(&v.value)).unwrap_or(Json::Null);
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
        let e = parse(unknown, "c.yaml").unwrap_err().to_string();
        assert_eq!(e, "c.yaml:5:5: task 1 (x): unknown key `whn`; did you mean `when`?");
        let e = parse("tasks:\n  - name: x\n    step: s\n    timeout: soon\n    file: {}\n", "c.yaml");
        assert!(e.unwrap_err().to_string().starts_with("c.yaml:4:14: task 1 (x): `timeout`"));
        let e = parse("vars: {}\ntask: []\n", "c.yaml").unwrap_err().to_string();
        assert_eq!(e, "c.yaml:2:1: unknown key `task` at the top level; did you mean `tasks`?");
        let none = "tasks:\n  - name: x\n    step: s\n    shell: ls\n";
        assert!(parse(none, "c.yaml").unwrap_err().to_string().contains("no module"));
        assert!(parse("tasks: [", "c.yaml").unwrap_err().to_string().starts_with("c.yaml:1:"));
        let meta = "tasks:\n  - meta: end_play\n";
        assert!(parse(meta, "c.yaml").unwrap_err().to_string().contains("wait_for_storage"));
    }

    #[test]
    fn empty_file_is_an_empty_playbook() {
        assert!(parse("", "x.yaml").unwrap().tasks.is_empty());
    }
}
