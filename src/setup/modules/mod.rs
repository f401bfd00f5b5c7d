//! Modules: each turns its arguments and the node's current state into the
//! list of changes that would bring the node to the wanted state — empty
//! when it is already there. Plans are pure functions (tested without any
//! host); each [`Change`] carries the shell fragment that makes it, built
//! with [`crate::quote`].

pub mod apt;
pub mod authorized_key;
pub mod command;
pub mod effect;
pub mod files;
pub mod group;
pub mod mount;
pub mod service;

use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;

use super::state::{FileStat, NodeState, Probe, MAX_CONTENT};

pub use effect::Effect;

/// Why a task cannot be planned. The message is the task's `failed` line.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ModuleError {
    #[error("unknown module {0}")]
    Unknown(String),
    #[error("{module}: {detail}")]
    Args { module: String, detail: String },
    /// A target the engine should have probed first (a bug, not the node).
    #[error("internal: {0} was not probed")]
    NotProbed(String),
    /// What the arguments ask for, or the node's state, rules the task out.
    #[error("{0}")]
    Invalid(String),
}

/// A file whose content changes (for `--diff`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    pub path: String,
    /// `None`: the file does not exist yet.
    pub before: Option<Vec<u8>>,
    pub after: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What changes, for humans (`write /etc/exports`, `install ffmpeg`).
    pub summary: String,
    /// POSIX shell lines making the change; run under `set -e`.
    pub script: String,
    pub diff: Option<FileDiff>,
    /// What the node's state will be like after it (for later tasks' plans).
    pub effects: Vec<Effect>,
}

impl Change {
    pub fn new(summary: impl Into<String>, script: impl Into<String>) -> Change {
        Change { summary: summary.into(), script: script.into(), diff: None, effects: Vec::new() }
    }

    pub fn with(mut self, e: Effect) -> Change {
        self.effects.push(e);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do when empty.
    Changes(Vec<Change>),
    /// The module does not apply to this node (e.g. no systemd).
    Skip(String),
}

/// A task's arguments once templated and typed. `template` and `copy` both
/// arrive here as [`files::ContentArgs`] (the engine renders the template).
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleArgs {
    Template(files::TemplateArgs),
    Copy(files::CopyArgs),
    Content(files::ContentArgs),
    File(files::FileArgs),
    Apt(apt::AptArgs),
    AuthorizedKey(authorized_key::AuthorizedKeyArgs),
    Mount(mount::MountArgs),
    Service(service::ServiceArgs),
    Command(command::CommandArgs),
    Group(group::GroupArgs),
}

fn typed<T: serde::de::DeserializeOwned>(module: &str, args: Json) -> Result<T, ModuleError> {
    serde_json::from_value(args)
        .map_err(|e| ModuleError::Args { module: module.into(), detail: e.to_string() })
}

/// Reads a module's rendered arguments into its typed arguments.
type ArgsReader = fn(&str, Json) -> Result<ModuleArgs, ModuleError>;

/// The module registry: every module a task may name, and how its
/// arguments are read. The one list of module names.
const REGISTRY: &[(&str, ArgsReader)] = &[
    ("template", |m, a| Ok(ModuleArgs::Template(typed(m, a)?))),
    ("copy", |m, a| Ok(ModuleArgs::Copy(typed(m, a)?))),
    ("file", |m, a| Ok(ModuleArgs::File(typed(m, a)?))),
    ("apt", |m, a| Ok(ModuleArgs::Apt(typed(m, a)?))),
    ("authorized_key", |m, a| Ok(ModuleArgs::AuthorizedKey(typed(m, a)?))),
    ("mount", |m, a| Ok(ModuleArgs::Mount(typed(m, a)?))),
    ("service", |m, a| Ok(ModuleArgs::Service(typed(m, a)?))),
    ("command", |m, a| Ok(ModuleArgs::Command(typed(m, a)?))),
    ("group", |m, a| Ok(ModuleArgs::Group(typed(m, a)?))),
];

/// The names of the modules, in the registry's order.
pub fn names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(name, _)| *name)
}

/// Whether a task key names a module.
pub fn is_module(key: &str) -> bool {
    REGISTRY.iter().any(|(name, _)| *name == key)
}

impl ModuleArgs {
    /// Typed arguments of `module` from its rendered arguments.
    pub fn parse(module: &str, args: Json) -> Result<ModuleArgs, ModuleError> {
        match REGISTRY.iter().find(|(name, _)| *name == module) {
            Some((_, read)) => read(module, args),
            None => Err(ModuleError::Unknown(module.into())),
        }
    }

    /// How long the module's changes may take on a node when its task sets
    /// no `timeout:`: installing packages (download, unpack, maintainer
    /// scripts on an SD card) gets 30 minutes, anything else `base` (the
    /// `--timeout` of the run).
    pub fn default_timeout(&self, base: std::time::Duration) -> std::time::Duration {
        match self {
            ModuleArgs::Apt(_) => base.max(std::time::Duration::from_secs(1800)),
            _ => base,
        }
    }

    /// What the plan needs to know about the node.
    pub fn probes(&self) -> Vec<Probe> {
        match self {
            ModuleArgs::Template(a) => vec![Probe::File(a.dest.clone())],
            ModuleArgs::Copy(a) => vec![Probe::File(a.dest.clone())],
            ModuleArgs::Content(a) => vec![Probe::File(a.dest.clone())],
            ModuleArgs::File(a) => vec![Probe::File(a.path.clone())],
            ModuleArgs::Apt(_) | ModuleArgs::Group(_) => Vec::new(),
            ModuleArgs::AuthorizedKey(a) => a.probes(),
            ModuleArgs::Mount(a) => vec![Probe::File(a.fstab.clone())],
            ModuleArgs::Service(a) => {
                let mut p = vec![Probe::Service(a.name.clone())];
                p.extend(a.pidfile.iter().map(|f| Probe::Daemon(f.clone())));
                p
            }
            ModuleArgs::Command(a) => {
                a.creates.iter().chain(a.removes.iter()).map(|p| Probe::File(p.clone())).collect()
            }
        }
    }

    /// The changes that bring the node from `st` to what the args want.
    pub fn plan(&self, st: &NodeState) -> Result<Plan, ModuleError> {
        let changes = match self {
            ModuleArgs::Template(_) | ModuleArgs::Copy(_) => {
                return Err(ModuleError::Invalid("internal: template/copy not resolved to content".into()))
            }
            ModuleArgs::Content(a) => files::plan_content(a, st)?,
            ModuleArgs::File(a) => files::plan_file(a, st)?,
            ModuleArgs::Apt(a) => apt::plan(a, st)?,
            ModuleArgs::AuthorizedKey(a) => authorized_key::plan(a, st)?,
            ModuleArgs::Mount(a) => mount::plan(a, st)?,
            ModuleArgs::Service(a) => return service::plan(a, st),
            ModuleArgs::Command(a) => command::plan(a, st)?,
            ModuleArgs::Group(a) => group::plan(a, st)?,
        };
        Ok(Plan::Changes(changes))
    }
}

/// Accepts `"0644"`, `"2775"` (strings are octal). YAML numbers are refused:
/// `0644` unquoted means different things in YAML 1.1 and 1.2.
pub fn parse_mode(s: &str) -> Result<u32, ModuleError> {
    let digits = s.trim().trim_start_matches("0o");
    let m = u32::from_str_radix(digits, 8)
        .map_err(|_| ModuleError::Invalid(format!("bad mode {s:?} (octal, e.g. \"0644\")")))?;
    if m > 0o7777 {
        return Err(ModuleError::Invalid(format!("bad mode {s:?}")));
    }
    Ok(m)
}

/// A string, or a number written as its decimal digits (for ids).
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<Json>::deserialize(d)?;
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(Json::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!("expected a string, got {other}"))),
    }
}

/// A mode: only strings (see [`parse_mode`]).
pub(crate) fn opt_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Option::<Json>::deserialize(d)?;
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => parse_mode(&s).map(Some).map_err(serde::de::Error::custom),
        Some(other) => Err(serde::de::Error::custom(format!(
            "mode must be a quoted octal string like \"0644\", got {other}"
        ))),
    }
}

/// A string or a list of strings.
pub(crate) fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// Whether a wanted owner/group (name or numeric id) matches.
pub fn id_matches(want: &str, name: &str, id: u32) -> bool {
    if !want.is_empty() && want.bytes().all(|b| b.is_ascii_digit()) {
        want.parse::<u32>().map(|w| w == id).unwrap_or(false)
    } else {
        want == name
    }
}

/// An absolute path without `..` tricks or newlines.
/// The bytes of a file that a module edits line by line (fstab,
/// authorized_keys): empty when it does not exist. A file whose content
/// the probe did not read (over [`MAX_CONTENT`], or unreadable) is refused:
/// rewriting it from what was seen would lose what was not.
pub fn current_content<'a>(path: &str, cur: Option<&'a FileStat>) -> Result<&'a [u8], ModuleError> {
    match cur {
        None => Ok(&[]),
        Some(c) => c.content.as_deref().ok_or_else(|| {
            ModuleError::Invalid(format!(
                "{path} was not read ({} bytes; setup reads files of up to {MAX_CONTENT} bytes that it may \
                 open): refusing to rewrite it from a partial view; edit it by hand",
                c.size
            ))
        }),
    }
}

/// The lines of `text` as bytes, without their `\n` (like `str::lines`,
/// but nothing else is touched: a `\r` or bytes that are not UTF-8 stay).
pub fn byte_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    body.split(|b| *b == b'\n').filter(move |_| !text.is_empty())
}

pub fn check_path(what: &str, p: &str) -> Result<(), ModuleError> {
    if !p.starts_with('/') || p.contains('\n') || p.contains('\0') {
        return Err(ModuleError::Invalid(format!("{what} must be an absolute path: {p:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_lines_keep_every_byte() {
        let lines: Vec<&[u8]> = byte_lines(b"a\r\n\xff b\n\nlast").collect();
        assert_eq!(lines, [&b"a\r"[..], b"\xff b", b"", b"last"]);
        assert_eq!(byte_lines(b"one\n").count(), 1);
        assert_eq!(byte_lines(b"").count(), 0);
        assert_eq!(byte_lines(b"\n").collect::<Vec<_>>(), [&b""[..]]);
    }

    #[test]
    fn modes_and_ids() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("2775"), Ok(0o2775));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("17777").is_err());
        assert!(id_matches("0", "root", 0));
        assert!(id_matches("root", "root", 0));
        assert!(!id_matches("pi", "root", 0));
    }

    #[test]
    fn unknown_args_and_numeric_modes_are_refused() {
        let e = ModuleArgs::parse("file", serde_json::json!({"path": "/a", "mdoe": "0644"}));
        assert!(e.unwrap_err().to_string().contains("mdoe"));
        let e = ModuleArgs::parse("file", serde_json::json!({"path": "/a", "mode": 644}));
        assert!(e.unwrap_err().to_string().contains("quoted"));
        assert!(ModuleArgs::parse("nope", serde_json::json!({})).is_err());
    }
}
