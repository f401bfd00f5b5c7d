//! The cluster description: parsed from YAML, every rule checked before any
//! node is touched. (Parsing and validation: see `parse`.)

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMode {
    /// Chunks and results live under `cluster.shared_dir`, seen by every node.
    Nfs,
    /// Chunks stream to the node and results back over SSH.
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Controller,
    Compute,
    Storage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `host: local`: this machine, no SSH.
    Local,
    Remote(String),
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub shared_dir: PathBuf,
    pub storage: StorageMode,
    pub apt_mirror: Option<String>,
    /// `watch:` — a service on the controller transcoding every new video
    /// of `input` into `output` (`dffmpeg transcode --watch`).
    pub watch: Option<Watch>,
    /// What runs the chunks on the nodes: dffmpeg's own SSH queue, or Slurm.
    pub engine: Engine,
}

/// `cluster.engine`: who places the chunks on the nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    /// dffmpeg's own queue over SSH sessions to the inventory's compute nodes.
    #[default]
    Ssh,
    /// Each chunk attempt is a Slurm job (`srun`) in a partition; the
    /// controller is a submit host and needs no SSH to the nodes.
    Slurm(SlurmSpec),
}

/// Where and as whom `engine: slurm` submits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmSpec {
    pub partition: String,
    pub account: Option<String>,
    pub qos: Option<String>,
}

/// The controller's watch service.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// Watched directory (default: SHARED_DIR/upload).
    pub input: PathBuf,
    /// Where the outputs go (default: SHARED_DIR/output).
    pub output: PathBuf,
    /// ffmpeg output options, as after the inputs of `dffmpeg transcode`.
    pub args: Vec<String>,
    /// `http: 127.0.0.1:PORT`: the service serves its status page there
    /// (read-only, no login: loopback unless the operator says otherwise).
    pub http: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub host: Host,
    pub port: u16,
    pub user: Option<String>,
    pub roles: Vec<Role>,
    /// Parallel encodes on this node; `None` = from its cores.
    pub slots: Option<u32>,
    pub identity_file: Option<PathBuf>,
    pub become_root: bool,
}

impl Node {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[derive(Debug, Clone)]
pub struct Inventory {
    /// Where it came from (`<embedded local cluster>` for the default).
    pub source: String,
    pub cluster: Cluster,
    pub nodes: Vec<Node>,
}

impl Inventory {
    /// The embedded default: this machine only, no SSH, one node holding
    /// every role.
    pub fn local_default() -> Inventory {
        Inventory {
            source: "embedded local cluster".into(),
            cluster: Cluster {
                shared_dir: PathBuf::from("/srv/dffmpeg"),
                storage: StorageMode::Ssh,
                apt_mirror: None,
                watch: None,
                engine: Engine::Ssh,
            },
            nodes: vec![Node {
                name: "local".into(),
                host: Host::Local,
                port: 22,
                user: None,
                roles: vec![Role::Controller, Role::Compute, Role::Storage],
                slots: None,
                identity_file: None,
                become_root: false,
            }],
        }
    }

    pub fn controller(&self) -> &Node {
        self.nodes.iter().find(|n| n.has(Role::Controller)).expect("validated inventory has a controller")
    }

    pub fn compute_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.has(Role::Compute))
    }

    pub fn storage_node(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.has(Role::Storage))
    }

    /// With `storage: nfs`, the directory every node sees at the same path
    /// (jobs work in its `work/`); None when chunks go over SSH.
    pub fn shared_dir(&self) -> Option<PathBuf> {
        (self.cluster.storage == StorageMode::Nfs).then(|| self.cluster.shared_dir.clone())
    }

    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InventoryError::Read { path: path.display().to_string(), cause: e })?;
        parse(&text, &path.display().to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    /// `file:line:column: message`
    #[error("{file}:{line}:{column}: {message}")]
    At { file: String, line: usize, column: usize, message: String },
}

/// `cluster.shared_dir` when the inventory does not set it.
pub const DEFAULT_SHARED_DIR: &str = "/srv/dffmpeg";

impl Inventory {
    /// The inventory `transcode` uses: `-I FILE`, else `$DFFMPEG_INVENTORY`,
    /// else the embedded local cluster.
    pub fn resolve(arg: Option<&Path>) -> Result<Inventory, InventoryError> {
        if let Some(path) = arg {
            return Inventory::load(path);
        }
        match std::env::var_os("DFFMPEG_INVENTORY") {
            Some(p) if !p.is_empty() => Inventory::load(Path::new(&p)),
            _ => Ok(Inventory::local_default()),
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

impl Host {
    /// The address given to ssh, or `local`.
    pub fn as_str(&self) -> &str {
        match self {
            Host::Local => "local",
            Host::Remote(h) => h,
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Controller, Role::Compute, Role::Storage];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Compute => "compute",
            Role::Storage => "storage",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Parsing: YAML is first read into a located tree (every key and value keeps
// its line and column), then every rule is checked on that tree, so that
// semantic errors point at the offending key or value, not just bad YAML.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One YAML value, as serde-saphyr resolved its scalar type.
#[derive(Debug)]
enum Val {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Val>>),
    Map(Vec<(Spanned<String>, Spanned<Val>)>),
}

impl<'de> Deserialize<'de> for Val {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Val, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Val;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Val, E> {
                Ok(Val::Null)
            }
            fn visit_none<E>(self) -> Result<Val, E> {
                Ok(Val::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
                Val::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Val, E> {
                Ok(Val::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Val, E> {
                Ok(Val::Int(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Val, E> {
                Ok(Val::Int(n.into()))
            }
            fn visit_i128<E>(self, n: i128) -> Result<Val, E> {
                Ok(Val::Int(n))
            }
            fn visit_u128<E>(self, n: u128) -> Result<Val, E> {
                Ok(Val::Int(i128::try_from(n).unwrap_or(i128::MAX)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Val, E> {
                Ok(Val::Float(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<Val, E> {
                Ok(Val::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Val, E> {
                Ok(Val::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Val, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Val::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Val, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = a.next_key()? {
                    let value = a.next_value()?;
                    entries.push((key, value));
                }
                Ok(Val::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

type Entries = [(Spanned<String>, Spanned<Val>)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

fn pos<T>(s: &Spanned<T>) -> Pos {
    let (line, column) = (s.referenced.line(), s.referenced.column());
    if line == 0 {
        // Unknown location (should not happen for string input).
        return Pos { line: 1, column: 1 };
    }
    Pos { line: line as usize, column: column as usize }
}

fn kind(v: &Val) -> &'static str {
    match v {
        Val::Null => "nothing",
        Val::Bool(_) => "true/false",
        Val::Int(_) | Val::Float(_) => "a number",
        Val::Str(_) => "text",
        Val::Seq(_) => "a list",
        Val::Map(_) => "a mapping",
    }
}

const TOP_KEYS: &[&str] = &["cluster", "defaults", "nodes"];
const CLUSTER_KEYS: &[&str] =
    &["shared_dir", "storage", "apt_mirror", "watch", "engine", "partition", "account", "qos"];
const WATCH_KEYS: &[&str] = &["input", "output", "args", "http"];
const DEFAULT_KEYS: &[&str] = &["user", "port", "become", "identity_file", "slots"];
const NODE_KEYS: &[&str] = &["host", "port", "user", "roles", "slots", "identity_file", "become"];
/// Names people reach for from Ansible or ssh_config, and what we call them.
const KEY_ALIASES: &[(&str, &str)] = &[
    ("hostname", "host"),
    ("address", "host"),
    ("addr", "host"),
    ("ip", "host"),
    ("ansible_host", "host"),
    ("ssh_port", "port"),
    ("ansible_port", "port"),
    ("username", "user"),
    ("ansible_user", "user"),
    ("role", "roles"),
    ("key", "identity_file"),
    ("ssh_key", "identity_file"),
    ("identityfile", "identity_file"),
    ("private_key", "identity_file"),
    ("sudo", "become"),
    ("threads", "slots"),
    ("jobs", "slots"),
    ("weight", "slots"),
    ("shared", "shared_dir"),
    ("mirror", "apt_mirror"),
    ("node", "nodes"),
    ("hosts", "nodes"),
    ("default", "defaults"),
];

/// Edit distance counting an adjacent transposition as one edit
/// (optimal string alignment, from `strsim`), on lowercase characters.
fn distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(&a.to_lowercase(), &b.to_lowercase())
}

/// The known word closest to `word`, if it is close enough to be a typo.
fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = word.to_lowercase();
    if let Some((_, to)) = KEY_ALIASES.iter().find(|(from, _)| *from == lower) {
        if let Some(k) = known.iter().find(|k| *k == to) {
            return Some(k);
        }
    }
    if lower.chars().count() >= 3 {
        if let Some(k) = known.iter().find(|k| k.starts_with(&lower) || lower.starts_with(*k)) {
            return Some(k);
        }
    }
    known
        .iter()
        .map(|k| (distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.chars().count() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn did_you_mean(word: &str, known: &[&str]) -> String {
    match closest(word, known) {
        Some(k) => format!("did you mean `{k}`?"),
        None => format!("expected one of: {}", known.join(", ")),
    }
}

struct Ctx<'a> {
    file: &'a str,
}

type R<T> = Result<T, InventoryError>;

impl Ctx<'_> {
    fn err(&self, at: Pos, message: impl Into<String>) -> InventoryError {
        InventoryError::At {
            file: self.file.to_string(),
            line: at.line,
            column: at.column,
            message: message.into(),
        }
    }

    fn yaml_error(&self, e: &serde_saphyr::Error) -> InventoryError {
        let at = e
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| Pos { line: l.line() as usize, column: l.column() as usize })
            .unwrap_or(Pos { line: 1, column: 1 });
        let mut msg = e.without_snippet().to_string();
        let suffix = format!(" at line {}, column {}", at.line, at.column);
        if let Some(m) = msg.strip_suffix(&suffix) {
            msg = m.to_string();
        }
        if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
            let key = rest.split(", set DuplicateKeyPolicy").next().unwrap_or(rest);
            msg = format!("duplicate key `{key}`: each key, and each node name, may appear only once");
        }
        self.err(at, format!("invalid YAML: {msg}"))
    }

    /// The entries of a mapping; `~` (nothing) counts as an empty mapping.
    fn entries<'v>(&self, v: &'v Spanned<Val>, what: &str) -> R<&'v Entries> {
        match &v.value {
            Val::Map(e) => Ok(e),
            Val::Null => Ok(&[]),
            other => Err(self
                .err(pos(v), format!("{what} must be a mapping of `key: value` lines, not {}", kind(other)))),
        }
    }

    fn unknown_key(&self, key: &Spanned<String>, known: &[&str], place: &str) -> InventoryError {
        self.err(
            pos(key),
            format!("unknown key `{}` {place}; {}", key.value, did_you_mean(&key.value, known)),
        )
    }

    /// A single scalar as text (numbers and booleans as written).
    fn text(&self, key: &str, v: &Spanned<Val>) -> R<String> {
        let s = match &v.value {
            Val::Str(s) => s.clone(),
            Val::Int(n) => n.to_string(),
            Val::Float(x) => x.to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Null => return Err(self.err(pos(v), format!("`{key}` needs a value"))),
            other => {
                return Err(self.err(pos(v), format!("`{key}` must be a single value, not {}", kind(other))))
            }
        };
        if s.trim().is_empty() {
            return Err(self.err(pos(v), format!("`{key}` is empty")));
        }
        Ok(s)
    }

    /// User names: one word that ssh cannot take for an option.
    fn word(&self, key: &str, v: &Spanned<Val>, example: &str) -> R<String> {
        let s = self.text(key, v)?;
        if s.starts_with('-') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err(
                pos(v),
                format!(
                    "`{key}: {s}` is not valid: one word, not starting with `-` (e.g. `{key}: {example}`)"
                ),
            ));
        }
        Ok(s)
    }

    /// `host:`: `local`, an IP address or a host name — nothing that ssh
    /// could take for an option or /etc/exports for a wildcard or options.
    fn host(&self, v: &Spanned<Val>) -> R<Host> {
        let h = self.text("host", v)?;
        if h == "local" {
            return Ok(Host::Local);
        }
        if h.contains('@') {
            return Err(
                self.err(pos(v), format!("`host: {h}`: put the user name in `user:`, not in the host"))
            );
        }
        if !is_host_name_or_address(&h) {
            return Err(self.err(
                pos(v),
                format!(
                    "`host: {h}` is not a host name or an IP address (letters, digits, `-`, `_` and `.`, \
                     not starting with `-`; e.g. `host: 192.168.1.10` or `host: pi2.lan`)"
                ),
            ));
        }
        Ok(Host::Remote(h))
    }

    /// `identity_file:`, with a leading `~/` expanded to `$HOME` here, once,
    /// for every command that uses it.
    fn identity_file(&self, v: &Spanned<Val>) -> R<PathBuf> {
        let s = self.text("identity_file", v)?;
        expand_home(&s).map_err(|why| self.err(pos(v), format!("`identity_file: {s}`: {why}")))
    }

    fn boolean(&self, key: &str, v: &Spanned<Val>) -> R<bool> {
        match &v.value {
            Val::Bool(b) => Ok(*b),
            Val::Str(s) if s == "true" || s == "false" => Ok(s == "true"),
            other => Err(self.err(pos(v), format!("`{key}` must be true or false, not {}", kind(other)))),
        }
    }

    fn port(&self, v: &Spanned<Val>) -> R<u16> {
        let n = match &v.value {
            Val::Int(n) => Some(*n),
            Val::Str(s) => s.trim().parse::<i128>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(self.err(
                pos(v),
                format!("bad port `{}`: a port is a number from 1 to 65535 (ssh's is 22)", self.shown(v)),
            )),
        }
    }

    fn slots(&self, v: &Spanned<Val>) -> R<u32> {
        match &v.value {
            Val::Int(n) if (1..=4096).contains(n) => Ok(*n as u32),
            Val::Int(n) if *n < 1 => Err(self.err(
                pos(v),
                format!("`slots: {n}`: a node needs at least 1 slot (leave `slots` out to use one per core group)"),
            )),
            _ => Err(self.err(
                pos(v),
                format!(
                    "bad `slots: {}`: slots is a whole number of parallel encodes, from 1 to 4096",
                    self.shown(v)
                ),
            )),
        }
    }

    fn shown(&self, v: &Spanned<Val>) -> String {
        match &v.value {
            Val::Str(s) => s.clone(),
            Val::Int(n) => n.to_string(),
            Val::Float(x) => x.to_string(),
            Val::Bool(b) => b.to_string(),
            other => kind(other).to_string(),
        }
    }
}

/// What `defaults:` sets for every node.
struct Defaults {
    user: Option<String>,
    port: u16,
    become_root: bool,
    identity_file: Option<PathBuf>,
    slots: Option<u32>,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults { user: None, port: 22, become_root: false, identity_file: None, slots: None }
    }
}

/// A node with the locations needed by the cross-node rules.
struct Located {
    node: Node,
    /// Where `host:` is, or the node name when the name is the host.
    host_pos: Pos,
    roles: Vec<(Role, Pos)>,
}

fn role_names() -> Vec<&'static str> {
    Role::ALL.iter().map(|r| r.as_str()).collect()
}

/// Parse and validate an inventory. `file` is used in error messages.
///
/// Every rule is checked here, before any node is contacted; each error is
/// `file:line:column: what is wrong and how to fix it`.
///
/// Choices where the format leaves room:
/// - `host` defaults to the node's name (as in Ansible); `host: local` is
///   this machine, reached without SSH.
/// - `cluster.storage` defaults to `nfs` when some node has the `storage`
///   role and to `ssh` otherwise (an inventory without a storage node cannot
///   mean a shared directory).
/// - At most one node may have the `storage` role, in either mode.
pub fn parse(text: &str, file: &str) -> Result<Inventory, InventoryError> {
    let cx = Ctx { file };
    let doc: Spanned<Val> = serde_saphyr::from_str(text).map_err(|e| cx.yaml_error(&e))?;
    let top = top_sections(&cx, &doc)?;
    let cluster = match top.cluster {
        Some(v) => parse_cluster(&cx, v)?,
        None => ClusterDraft::default(),
    };
    let defaults = match top.defaults {
        Some(v) => parse_defaults(&cx, v)?,
        None => Defaults::default(),
    };
    let Some((nodes_key, nodes_v)) = top.nodes else {
        return Err(cx.err(
            pos(&doc),
            "no `nodes:` section: list the machines of the cluster under `nodes:` (see inventory.example.yaml)",
        ));
    };
    let located = parse_nodes(&cx, nodes_key, nodes_v, &defaults)?;
    check_distinct_machines(&cx, &located)?;
    let nodes_at = pos(nodes_key);
    check_one_controller(&cx, nodes_at, &located)?;
    let engine = settle_engine(&cx, &cluster)?;
    let storage = match engine {
        Engine::Ssh => storage_mode(&cx, cluster.storage, &located)?,
        Engine::Slurm(_) => slurm_storage(&cx, cluster.storage, &located)?,
    };
    // Slurm's partition holds the compute nodes; the inventory's are only
    // those `setup` provisions.
    if engine == Engine::Ssh && with_role(&located, Role::Compute).is_empty() {
        return Err(cx.err(nodes_at, "no compute node: add `compute` to the roles of at least one node"));
    }
    Ok(Inventory {
        source: file.to_string(),
        cluster: Cluster {
            watch: cluster.watch.map(|w| w.settle(&cluster.shared_dir)),
            shared_dir: cluster.shared_dir,
            storage,
            apt_mirror: cluster.apt_mirror,
            engine,
        },
        nodes: located.into_iter().map(|l| l.node).collect(),
    })
}

/// The three top-level sections, each optional here.
struct Top<'a> {
    cluster: Option<&'a Spanned<Val>>,
    defaults: Option<&'a Spanned<Val>>,
    nodes: Option<(&'a Spanned<String>, &'a Spanned<Val>)>,
}

fn top_sections<'a>(cx: &Ctx, doc: &'a Spanned<Val>) -> R<Top<'a>> {
    let entries =
        match &doc.value {
            Val::Map(e) => e.as_slice(),
            Val::Null => return Err(cx.err(
                pos(doc),
                "the inventory is empty: it needs at least a `nodes:` section (see inventory.example.yaml)",
            )),
            other => {
                return Err(cx.err(
                    pos(doc),
                    format!(
                        "the inventory must be a mapping with `cluster`, `defaults` and `nodes`, not {}",
                        kind(other)
                    ),
                ))
            }
        };
    let mut top = Top { cluster: None, defaults: None, nodes: None };
    for (k, v) in entries {
        match k.value.as_str() {
            "cluster" => top.cluster = Some(v),
            "defaults" => top.defaults = Some(v),
            "nodes" => top.nodes = Some((k, v)),
            _ => return Err(cx.unknown_key(k, TOP_KEYS, "at the top level")),
        }
    }
    Ok(top)
}

/// `cluster:` as written; the storage mode is settled once the nodes are
/// known.
struct ClusterDraft {
    shared_dir: PathBuf,
    storage: Option<(StorageMode, Pos)>,
    apt_mirror: Option<String>,
    watch: Option<WatchDraft>,
    /// `engine:` as written: true for slurm.
    engine: Option<(bool, Pos)>,
    /// `partition`, `account`, `qos` as written.
    slurm: [Option<(String, Pos)>; 3],
}

impl Default for ClusterDraft {
    fn default() -> ClusterDraft {
        ClusterDraft {
            shared_dir: PathBuf::from(DEFAULT_SHARED_DIR),
            storage: None,
            apt_mirror: None,
            watch: None,
            engine: None,
            slurm: [None, None, None],
        }
    }
}

/// The keys of `engine: slurm`, in the order of [`ClusterDraft::slurm`].
const SLURM_KEYS: [&str; 3] = ["partition", "account", "qos"];

fn engine_word(cx: &Ctx, v: &Spanned<Val>) -> R<bool> {
    let s = cx.text("engine", v)?;
    match s.as_str() {
        "ssh" => Ok(false),
        "slurm" => Ok(true),
        _ => Err(cx.err(
            pos(v),
            format!(
                "unknown engine `{s}`; {} (ssh: dffmpeg's own queue over SSH; slurm: submit to a Slurm partition)",
                did_you_mean(&s, &["ssh", "slurm"])
            ),
        )),
    }
}

/// A Slurm partition, account or QOS name: one word of letters, digits,
/// `_`, `-` and `.`, not starting with `-` (it becomes an option's value).
fn slurm_name(cx: &Ctx, key: &str, v: &Spanned<Val>) -> R<String> {
    let s = cx.text(key, v)?;
    let ok = !s.starts_with('-')
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !ok {
        return Err(cx.err(
            pos(v),
            format!("`{key}: {s}` is not a Slurm name: letters, digits, `_`, `-` and `.`, not starting with `-` (`sinfo` lists the partitions)"),
        ));
    }
    Ok(s)
}

/// `engine` with its Slurm keys: a partition is needed for slurm, and the
/// Slurm keys mean nothing without it.
fn settle_engine(cx: &Ctx, c: &ClusterDraft) -> R<Engine> {
    let [partition, account, qos] = c.slurm.clone();
    match c.engine {
        Some((true, at)) => {
            let Some((partition, _)) = partition else {
                return Err(cx.err(
                    at,
                    "`engine: slurm` needs `partition:` in `cluster`: the Slurm partition dffmpeg submits to (`sinfo` lists them)",
                ));
            };
            let (account, qos) = (account.map(|a| a.0), qos.map(|q| q.0));
            Ok(Engine::Slurm(SlurmSpec { partition, account, qos }))
        }
        _ => match SLURM_KEYS.iter().zip(&c.slurm).find_map(|(k, v)| v.as_ref().map(|(_, at)| (k, *at))) {
            Some((key, at)) => Err(cx.err(
                at,
                format!(
                    "`{key}` is for `engine: slurm`: add `engine: slurm` to `cluster`, or remove `{key}`"
                ),
            )),
            None => Ok(Engine::Ssh),
        },
    }
}

/// Slurm nodes read and write chunks in the shared directory: `storage:
/// ssh` cannot work, and the shared directory need not be on a storage
/// node of the inventory (a Slurm cluster has its own).
fn slurm_storage(cx: &Ctx, written: Option<(StorageMode, Pos)>, located: &[Located]) -> R<StorageMode> {
    if let Some((StorageMode::Ssh, at)) = written {
        return Err(cx.err(
            at,
            "`engine: slurm` needs shared storage: Slurm jobs read and write their chunks in shared_dir, \
             which every Slurm node must see at the same path; use `storage: nfs` (or leave it out)",
        ));
    }
    match with_role(located, Role::Storage).is_empty() {
        true => Ok(StorageMode::Nfs),
        false => storage_mode(cx, written, located),
    }
}

/// `watch:` as written; its directories default to the shared tree's.
#[derive(Default)]
struct WatchDraft {
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    args: Vec<String>,
    http: Option<std::net::SocketAddr>,
}

impl WatchDraft {
    fn settle(self, shared: &Path) -> Watch {
        Watch {
            input: self.input.unwrap_or_else(|| shared.join("upload")),
            output: self.output.unwrap_or_else(|| shared.join("output")),
            args: self.args,
            http: self.http,
        }
    }
}

fn parse_watch(cx: &Ctx, v: &Spanned<Val>) -> R<WatchDraft> {
    let mut w = WatchDraft::default();
    for (k, v) in cx.entries(v, "`watch`")? {
        match k.value.as_str() {
            "input" => w.input = Some(absolute(cx, "input", v, "")?),
            "output" => w.output = Some(absolute(cx, "output", v, "")?),
            "args" => w.args = words(cx, "args", v)?,
            "http" => w.http = Some(http_address(cx, v)?),
            _ => return Err(cx.unknown_key(k, WATCH_KEYS, "in `watch`")),
        }
    }
    Ok(w)
}

/// `watch.http`: an IP address and a port (any address: the operator
/// decides who may look; the examples say loopback), or a port alone for
/// loopback (`8080` is `127.0.0.1:8080`).
fn http_address(cx: &Ctx, v: &Spanned<Val>) -> R<std::net::SocketAddr> {
    let s = cx.text("http", v)?;
    let addr = match s.parse::<u16>() {
        Ok(port) => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => s.parse::<std::net::SocketAddr>(),
    };
    match addr {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(cx.err(
            pos(v),
            format!(
                "`http: {s}` must be an IP address and a port, e.g. 127.0.0.1:8080 (loopback: only this \
                 machine) or [::1]:8080"
            ),
        )),
    }
}

/// An absolute path; `hint` follows the message when it is not.
fn absolute(cx: &Ctx, key: &str, v: &Spanned<Val>, hint: &str) -> R<PathBuf> {
    let s = cx.text(key, v)?;
    if !s.starts_with('/') {
        return Err(cx.err(pos(v), format!("`{key}: {s}` must be an absolute path{hint}")));
    }
    Ok(PathBuf::from(s))
}

/// A list of words (`[-c:v, libx264, -crf, 23]`).
fn words(cx: &Ctx, key: &str, v: &Spanned<Val>) -> R<Vec<String>> {
    match &v.value {
        Val::Seq(items) => items.iter().map(|i| cx.text(key, i)).collect(),
        other => {
            Err(cx.err(pos(v), format!("`{key}` must be a list, e.g. [-c:v, libx264], not {}", kind(other))))
        }
    }
}

fn parse_cluster(cx: &Ctx, v: &Spanned<Val>) -> R<ClusterDraft> {
    let mut c = ClusterDraft::default();
    for (k, v) in cx.entries(v, "`cluster`")? {
        match k.value.as_str() {
            "shared_dir" => c.shared_dir = shared_dir(cx, v)?,
            "storage" => c.storage = Some((storage_word(cx, v)?, pos(v))),
            "apt_mirror" => c.apt_mirror = Some(apt_mirror(cx, v)?),
            "watch" => c.watch = Some(parse_watch(cx, v)?),
            "engine" => c.engine = Some((engine_word(cx, v)?, pos(v))),
            key @ ("partition" | "account" | "qos") => {
                let i = SLURM_KEYS.iter().position(|k| *k == key).unwrap_or(0);
                c.slurm[i] = Some((slurm_name(cx, key, v)?, pos(k)));
            }
            _ => return Err(cx.unknown_key(k, CLUSTER_KEYS, "in `cluster`")),
        }
    }
    Ok(c)
}

fn shared_dir(cx: &Ctx, v: &Spanned<Val>) -> R<PathBuf> {
    absolute(cx, "shared_dir", v, &format!(" (the same path on every node), e.g. {DEFAULT_SHARED_DIR}"))
}

fn storage_word(cx: &Ctx, v: &Spanned<Val>) -> R<StorageMode> {
    let s = cx.text("storage", v)?;
    match s.as_str() {
        "nfs" => Ok(StorageMode::Nfs),
        "ssh" => Ok(StorageMode::Ssh),
        _ => Err(cx.err(
            pos(v),
            format!(
                "unknown storage `{s}`; {} (nfs: a shared directory on the storage node; ssh: chunks stream over SSH)",
                did_you_mean(&s, &["nfs", "ssh"])
            ),
        )),
    }
}

fn apt_mirror(cx: &Ctx, v: &Spanned<Val>) -> R<String> {
    let s = cx.text("apt_mirror", v)?;
    if !(s.starts_with("http://") || s.starts_with("https://")) || s.chars().any(char::is_whitespace) {
        return Err(cx.err(
            pos(v),
            format!("`apt_mirror: {s}` must be an http:// or https:// URL, e.g. https://deb.debian.org"),
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

fn parse_defaults(cx: &Ctx, v: &Spanned<Val>) -> R<Defaults> {
    let mut d = Defaults::default();
    for (k, v) in cx.entries(v, "`defaults`")? {
        match k.value.as_str() {
            "user" => d.user = Some(cx.word("user", v, "pi")?),
            "port" => d.port = cx.port(v)?,
            "become" => d.become_root = cx.boolean("become", v)?,
            "identity_file" => d.identity_file = Some(cx.identity_file(v)?),
            "slots" => d.slots = Some(cx.slots(v)?),
            "host" | "roles" => {
                return Err(
                    cx.err(pos(k), format!("`{}` cannot have a default: set it on each node", k.value))
                )
            }
            _ => return Err(cx.unknown_key(k, DEFAULT_KEYS, "in `defaults`")),
        }
    }
    Ok(d)
}

fn parse_nodes(
    cx: &Ctx,
    nodes_key: &Spanned<String>,
    nodes_v: &Spanned<Val>,
    defaults: &Defaults,
) -> R<Vec<Located>> {
    let located = cx
        .entries(nodes_v, "`nodes`")?
        .iter()
        .map(|(k, v)| parse_node(cx, k, v, defaults))
        .collect::<R<Vec<Located>>>()?;
    if located.is_empty() {
        return Err(cx.err(
            pos(nodes_key),
            "`nodes` is empty: list the machines of the cluster, e.g. `pi3: { host: 192.168.1.10, roles: [controller, compute, storage] }`",
        ));
    }
    Ok(located)
}

/// No machine is listed twice (the same host and port, or `local` twice).
fn check_distinct_machines(cx: &Ctx, located: &[Located]) -> R<()> {
    for (i, b) in located.iter().enumerate() {
        if let Some(a) = located[..i].iter().find(|a| same_machine(&a.node, &b.node)) {
            let addr = match &b.node.host {
                Host::Local => "local".to_string(),
                Host::Remote(h) => format!("{h}:{}", b.node.port),
            };
            return Err(cx.err(
                b.host_pos,
                format!(
                    "duplicate host: node `{}` is the same machine as node `{}` ({addr}); list each machine once and give it several roles",
                    b.node.name, a.node.name
                ),
            ));
        }
    }
    Ok(())
}

/// The nodes holding `role`, with where the role is written.
fn with_role(located: &[Located], role: Role) -> Vec<(&Located, Pos)> {
    located.iter().filter_map(|l| l.roles.iter().find(|(r, _)| *r == role).map(|(_, p)| (l, *p))).collect()
}

fn check_one_controller(cx: &Ctx, nodes_at: Pos, located: &[Located]) -> R<()> {
    match with_role(located, Role::Controller).as_slice() {
        [] => Err(cx.err(
            nodes_at,
            "no controller: add `controller` to the roles of exactly one node (the machine that runs dffmpeg)",
        )),
        [_] => Ok(()),
        [(first, _), (second, at), ..] => Err(cx.err(
            *at,
            format!(
                "two controllers: `{}` and `{}`; exactly one node may have the controller role, remove it from the other",
                first.node.name, second.node.name
            ),
        )),
    }
}

/// At most one storage node; `storage: nfs` needs one; left out, the mode
/// follows from whether there is one.
fn storage_mode(cx: &Ctx, written: Option<(StorageMode, Pos)>, located: &[Located]) -> R<StorageMode> {
    let stores = with_role(located, Role::Storage);
    if let [(first, _), (second, at), ..] = stores.as_slice() {
        return Err(cx.err(
            *at,
            format!(
                "two storage nodes: `{}` and `{}`; exactly one node holds the shared directory, remove `storage` from the other",
                first.node.name, second.node.name
            ),
        ));
    }
    match written {
        Some((StorageMode::Nfs, at)) if stores.is_empty() => Err(cx.err(
            at,
            "`storage: nfs` needs a storage node: add `storage` to the roles of the node that holds shared_dir, or use `storage: ssh`",
        )),
        Some((mode, _)) => Ok(mode),
        None if stores.is_empty() => Ok(StorageMode::Ssh),
        None => Ok(StorageMode::Nfs),
    }
}

/// An IPv4 or IPv6 address, or a host name: dot-separated labels of
/// letters, digits, `-` and `_`, none empty or starting or ending with `-`.
pub fn is_host_name_or_address(h: &str) -> bool {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    h.len() <= 253 && h.trim_end_matches('.').split('.').all(label_ok)
}

/// Why a `~` path cannot be expanded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HomeError {
    #[error("only `~/` is expanded (to your home directory), not `~user`")]
    OtherUser,
    #[error("`~` needs $HOME, which is not set")]
    NoHome,
}

/// `~` and `~/...` → `$HOME/...`; other paths as they are.
pub fn expand_home(path: &str) -> Result<PathBuf, HomeError> {
    let rest = match path.strip_prefix('~') {
        None => return Ok(PathBuf::from(path)),
        Some("") => "",
        Some(r) if r.starts_with('/') => &r[1..],
        Some(_) => return Err(HomeError::OtherUser),
    };
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(rest)),
        None => Err(HomeError::NoHome),
    }
}

fn same_machine(a: &Node, b: &Node) -> bool {
    match (&a.host, &b.host) {
        (Host::Local, Host::Local) => true,
        (Host::Remote(x), Host::Remote(y)) => x.eq_ignore_ascii_case(y) && a.port == b.port,
        _ => false,
    }
}

fn valid_node_name(name: &str) -> bool {
    !name.starts_with('-') && name.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn parse_node(cx: &Ctx, k: &Spanned<String>, v: &Spanned<Val>, defaults: &Defaults) -> R<Located> {
    let name = k.value.clone();
    if name.trim().is_empty() {
        return Err(cx.err(pos(k), "empty node name: give each node a short name, e.g. `pi3:`"));
    }
    if !valid_node_name(&name) {
        return Err(cx.err(
            pos(k),
            format!("bad node name `{name}`: use letters, digits, `-`, `_` and `.` only, not starting with `-` (names are used in --limit lists)"),
        ));
    }
    let mut node = Node {
        name: name.clone(),
        host: Host::Remote(name.clone()),
        port: defaults.port,
        user: defaults.user.clone(),
        roles: Vec::new(),
        slots: defaults.slots,
        identity_file: defaults.identity_file.clone(),
        become_root: defaults.become_root,
    };
    let mut host_pos = pos(k);
    let mut host_written = false;
    let mut roles: Option<Vec<(Role, Pos)>> = None;
    let place = format!("in node `{name}`");
    for (key, val) in cx.entries(v, &format!("node `{name}`"))? {
        match key.value.as_str() {
            "host" => {
                node.host = cx.host(val)?;
                host_pos = pos(val);
                host_written = true;
            }
            "port" => node.port = cx.port(val)?,
            "user" => node.user = Some(cx.word("user", val, "pi")?),
            "slots" => node.slots = Some(cx.slots(val)?),
            "identity_file" => node.identity_file = Some(cx.identity_file(val)?),
            "become" => node.become_root = cx.boolean("become", val)?,
            "roles" => roles = Some(parse_roles(cx, val, &name)?),
            _ => return Err(cx.unknown_key(key, NODE_KEYS, &place)),
        }
    }
    if !host_written && !is_host_name_or_address(&name) {
        return Err(cx.err(
            pos(k),
            format!("node `{name}` has no `host:`, and its name is not a host name to reach it by: add `host: ADDRESS`"),
        ));
    }
    let Some(roles) = roles else {
        return Err(cx.err(
            pos(k),
            format!("node `{name}` has no `roles`: give it one or more of controller, compute, storage, e.g. `roles: [compute]`"),
        ));
    };
    node.roles = roles.iter().map(|(r, _)| *r).collect();
    Ok(Located { node, host_pos, roles })
}

fn parse_roles(cx: &Ctx, v: &Spanned<Val>, name: &str) -> R<Vec<(Role, Pos)>> {
    let items: Vec<&Spanned<Val>> = match &v.value {
        Val::Seq(items) => items.iter().collect(),
        // `roles: compute` is read as `roles: [compute]`.
        Val::Str(_) => vec![v],
        other => {
            return Err(cx.err(
                pos(v),
                format!("`roles` must be a list such as `[controller, compute]`, not {}", kind(other)),
            ))
        }
    };
    let mut roles: Vec<(Role, Pos)> = Vec::new();
    for item in items {
        let s = cx.text("roles", item)?;
        let role = Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            cx.err(
                pos(item),
                format!("unknown role `{s}` in node `{name}`; {}", did_you_mean(&s, &role_names())),
            )
        })?;
        if !roles.iter().any(|(r, _)| *r == role) {
            roles.push((role, pos(item)));
        }
    }
    if roles.is_empty() {
        return Err(cx.err(
            pos(v),
            format!("node `{name}` has an empty `roles` list: give it one or more of controller, compute, storage"),
        ));
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
cluster:
  shared_dir: /srv/dffmpeg
  storage: nfs
defaults: { user: pi, port: 22, become: true }
nodes:
  pi3:    { host: 192.168.1.10, roles: [controller, compute, storage] }
  pi2-a:  { host: 192.168.1.11, roles: [compute] }
  nuc:    { host: 192.168.1.20, user: me, roles: [compute], slots: 4 }
";

    /// Parse `text`, expect an error, return (line, column, message).
    fn error(text: &str) -> (usize, usize, String) {
        match parse(text, "inv.yaml") {
            Ok(inv) => panic!("expected an error, parsed {inv:?}"),
            Err(InventoryError::At { file, line, column, message }) => {
                assert_eq!(file, "inv.yaml");
                (line, column, message)
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    fn assert_error(text: &str, line: usize, column: usize, needle: &str) {
        let (l, c, m) = error(text);
        assert!(m.contains(needle), "message {m:?} does not contain {needle:?}");
        assert_eq!((l, c), (line, column), "location of {m:?}");
    }

    #[test]
    fn the_design_example_parses() {
        let inv = parse(GOOD, "inv.yaml").unwrap();
        assert_eq!(inv.source, "inv.yaml");
        assert_eq!(inv.cluster.storage, StorageMode::Nfs);
        assert_eq!(inv.cluster.shared_dir, PathBuf::from("/srv/dffmpeg"));
        assert_eq!(inv.nodes.len(), 3);
        let pi3 = &inv.nodes[0];
        assert_eq!(pi3.name, "pi3");
        assert_eq!(pi3.host, Host::Remote("192.168.1.10".into()));
        assert_eq!(pi3.user.as_deref(), Some("pi"));
        assert!(pi3.become_root);
        assert_eq!(pi3.slots, None);
        assert_eq!(inv.controller().name, "pi3");
        assert_eq!(inv.storage_node().map(|n| n.name.as_str()), Some("pi3"));
        let nuc = inv.node("nuc").unwrap();
        assert_eq!(nuc.user.as_deref(), Some("me"));
        assert_eq!(nuc.slots, Some(4));
        assert_eq!(nuc.port, 22);
        assert_eq!(inv.compute_nodes().count(), 3);
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../inventory.example.yaml");
        let inv = parse(text, "inventory.example.yaml").unwrap();
        assert_eq!(inv.cluster.storage, StorageMode::Nfs);
        assert_eq!(inv.cluster.apt_mirror, None);
        let names: Vec<_> = inv.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["pi3", "pi2"]);
        assert_eq!(inv.controller().host, Host::Remote("192.168.1.10".into()));
        assert_eq!(inv.node("pi2").unwrap().roles, vec![Role::Compute], "pi2 only computes");
        assert!(inv.nodes.iter().all(|n| n.user.as_deref() == Some("pi")));
        // The commented x86 node is valid once uncommented.
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("  # ")
                    .filter(|r| r.starts_with("nuc:") || r.starts_with("watch:") || r.starts_with("  "))
                    .map(|r| format!("  {r}"))
                    .unwrap_or_else(|| l.to_string())
            })
            .collect::<Vec<_>>()
            .join("\n");
        let inv = parse(&uncommented, "x.yaml").unwrap();
        let nuc = inv.node("nuc").expect("nuc uncommented");
        assert_eq!(nuc.user.as_deref(), Some("me"));
        let watch = inv.cluster.watch.as_ref().expect("watch uncommented");
        assert_eq!(watch.input, PathBuf::from("/srv/dffmpeg/upload"));
        assert_eq!(watch.args, ["-c:v", "libx264", "-crf", "23", "-c:a", "aac"]);
        assert_eq!(watch.http, Some(([127, 0, 0, 1], 8080).into()));
        assert_eq!(nuc.slots, Some(4));
        // `~/` is expanded when the inventory is read, for every command.
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
        assert_eq!(nuc.identity_file, Some(home.join(".ssh/id_ed25519")));
    }

    #[test]
    fn identity_file_tilde() {
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
        assert_eq!(expand_home("~/k").unwrap(), home.join("k"));
        assert_eq!(expand_home("~").unwrap(), home);
        assert_eq!(expand_home("/abs/k").unwrap(), PathBuf::from("/abs/k"));
        assert_eq!(expand_home("rel/~/k").unwrap(), PathBuf::from("rel/~/k"));
        assert_error(
            "nodes:\n  a: { roles: [controller, compute], identity_file: ~bob/k }\n",
            2,
            53,
            "only `~/` is expanded",
        );
    }

    #[test]
    fn hosts_are_names_or_addresses() {
        for ok in ["192.168.1.10", "fe80::1", "::1", "pi2", "pi2.lan", "my_box.local.", "a-b.c-d", "10.0.0.1"]
        {
            assert!(is_host_name_or_address(ok), "{ok}");
            let text = format!("nodes:\n  a: {{ host: '{ok}', roles: [controller, compute] }}\n");
            assert_eq!(parse(&text, "i").unwrap().nodes[0].host, Host::Remote(ok.into()));
        }
        for bad in
            ["-x", "a b", "*", "a(rw)", "h,i", "x.-y", "y-.z", "a..b", "[::1]", "h:22", "$(id)", "a/b", ""]
        {
            assert!(!is_host_name_or_address(bad), "{bad:?}");
        }
        for bad in ["'*'", "'10.0.0.0/8'", "'pi2(rw,insecure)'", "'a,b'", "'-oProxyCommand=x'"] {
            let text = format!("nodes:\n  a: {{ host: {bad}, roles: [controller, compute] }}\n");
            let (_, _, m) = error(&text);
            assert!(
                m.contains("not a host name or an IP address") || m.contains("not starting with `-`"),
                "{m}"
            );
        }
        // A node without `host:` is reached by its name: the name must be one.
        assert_error(
            "nodes:\n  -oProxyCommand=x: { roles: [controller, compute] }\n",
            2,
            3,
            "not starting with `-`",
        );
        assert_error("nodes:\n  'a.-b': { roles: [controller, compute] }\n", 2, 3, "has no `host:`");
        parse("nodes:\n  'a.-b': { host: 10.0.0.1, roles: [controller, compute] }\n", "i").unwrap();
    }

    #[test]
    fn defaults_and_choices() {
        let inv = parse("nodes:\n  here: { host: local, roles: [controller, compute] }\n", "i").unwrap();
        assert_eq!(inv.cluster.storage, StorageMode::Ssh, "no storage node");
        assert_eq!(inv.cluster.shared_dir, PathBuf::from(DEFAULT_SHARED_DIR));
        let n = &inv.nodes[0];
        assert_eq!(n.host, Host::Local);
        assert_eq!((n.port, n.user.clone(), n.become_root), (22, None, false));

        // storage omitted but a storage node exists: nfs.
        let inv = parse(
            "nodes:\n  a: { roles: [controller, compute, storage] }\n  b: { port: 2222, roles: compute }\n",
            "i",
        )
        .unwrap();
        assert_eq!(inv.cluster.storage, StorageMode::Nfs);
        // host defaults to the node name; a single role needs no brackets.
        assert_eq!(inv.nodes[0].host, Host::Remote("a".into()));
        assert_eq!(inv.nodes[1].roles, vec![Role::Compute]);
        assert_eq!(inv.nodes[1].port, 2222);

        // ssh storage with a storage node is allowed; quoted port works.
        let inv = parse(
            "cluster: { storage: ssh, apt_mirror: 'https://deb.debian.org/' }\ndefaults: { port: '2200', slots: 2, identity_file: ~/.ssh/k }\nnodes:\n  a: { host: 10.0.0.1, roles: [controller, compute, storage] }\n",
            "i",
        )
        .unwrap();
        assert_eq!(inv.cluster.storage, StorageMode::Ssh);
        assert_eq!(inv.cluster.apt_mirror.as_deref(), Some("https://deb.debian.org"));
        assert_eq!(inv.nodes[0].port, 2200);
        assert_eq!(inv.nodes[0].slots, Some(2));
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
        assert_eq!(inv.nodes[0].identity_file, Some(home.join(".ssh/k")));
    }

    #[test]
    fn same_host_on_other_ports_is_two_machines() {
        parse(
            "nodes:\n  a: { host: h, roles: [controller, compute] }\n  b: { host: h, port: 2222, roles: [compute] }\n",
            "i",
        )
        .unwrap();
    }

    #[test]
    fn bad_yaml() {
        assert_error(
            "nodes:\n  a: { host: h, roles: [controller, compute }\n",
            2,
            24,
            "invalid YAML: mismatched bracket",
        );
        assert_error("nodes:\n  a: b\n  c\n", 3, 3, "invalid YAML");
        assert_error("nodes:\n\ta: 1\n", 2, 2, "invalid YAML: tabs");
    }

    #[test]
    fn duplicate_node_name_is_a_yaml_error() {
        assert_error(
            "nodes:\n  a: { roles: [controller, compute] }\n  a: { roles: [compute] }\n",
            3,
            3,
            "duplicate key `a`",
        );
    }

    #[test]
    fn empty_or_not_a_mapping() {
        assert_error("", 1, 1, "the inventory is empty");
        assert_error("- a\n- b\n", 1, 1, "must be a mapping");
        assert_error("cluster: {}\n", 1, 1, "no `nodes:` section");
        assert_error("nodes:\n", 1, 1, "`nodes` is empty");
        assert_error("nodes: [a, b]\n", 1, 8, "`nodes` must be a mapping");
    }

    #[test]
    fn unknown_keys_suggest_the_closest() {
        assert_error(
            "nodes:\n  pi3:\n    hots: 1.2.3.4\n    roles: [controller, compute]\n",
            3,
            5,
            "unknown key `hots` in node `pi3`; did you mean `host`?",
        );
        assert_error("node:\n  a: {}\n", 1, 1, "unknown key `node` at the top level; did you mean `nodes`?");
        assert_error(
            "cluster:\n  shareddir: /x\nnodes: {}\n",
            2,
            3,
            "unknown key `shareddir` in `cluster`; did you mean `shared_dir`?",
        );
        assert_error(
            "defaults: { usr: pi }\nnodes: {}\n",
            1,
            13,
            "unknown key `usr` in `defaults`; did you mean `user`?",
        );
        assert_error("nodes:\n  a: { hostname: x, roles: [compute] }\n", 2, 8, "did you mean `host`?");
        assert_error(
            "nodes:\n  a: { zzzzzz: x, roles: [compute] }\n",
            2,
            8,
            "unknown key `zzzzzz` in node `a`; expected one of: host, port, user, roles, slots, identity_file, become",
        );
        assert_error("defaults: { roles: [compute] }\nnodes: {}\n", 1, 13, "`roles` cannot have a default");
    }

    #[test]
    fn unknown_role() {
        assert_error(
            "nodes:\n  a: { roles: [controller, comptue] }\n",
            2,
            28,
            "unknown role `comptue` in node `a`; did you mean `compute`?",
        );
        assert_error(
            "nodes:\n  a: { roles: [boss] }\n",
            2,
            16,
            "unknown role `boss` in node `a`; expected one of: controller, compute, storage",
        );
        assert_error("nodes:\n  a: { roles: [] }\n", 2, 15, "empty `roles` list");
        assert_error("nodes:\n  a: { host: x }\n", 2, 3, "node `a` has no `roles`");
    }

    #[test]
    fn controller_rules() {
        assert_error("nodes:\n  a: { roles: [compute] }\n", 1, 1, "no controller");
        assert_error(
            "nodes:\n  a: { roles: [controller, compute] }\n  b:\n    roles:\n      - compute\n      - controller\n",
            6,
            9,
            "two controllers: `a` and `b`",
        );
    }

    #[test]
    fn storage_rules() {
        assert_error(
            "cluster:\n  storage: nfs\nnodes:\n  a: { roles: [controller, compute] }\n",
            2,
            12,
            "`storage: nfs` needs a storage node",
        );
        assert_error(
            "nodes:\n  a: { roles: [controller, storage] }\n  b: { roles: [compute, storage] }\n",
            3,
            25,
            "two storage nodes: `a` and `b`",
        );
        assert_error(
            "cluster: { storage: nsf }\nnodes: {}\n",
            1,
            21,
            "unknown storage `nsf`; did you mean `nfs`?",
        );
    }

    #[test]
    fn slurm_engine() {
        let inv = parse(
            "cluster:\n  engine: slurm\n  partition: video\n  account: lab-1\n  shared_dir: /shared/dffmpeg\nnodes:\n  me: { host: local, roles: [controller] }\n",
            "i",
        )
        .unwrap();
        let spec = SlurmSpec { partition: "video".into(), account: Some("lab-1".into()), qos: None };
        assert_eq!(inv.cluster.engine, Engine::Slurm(spec));
        // Shared storage without a storage node (the Slurm cluster's own),
        // and no compute node in the inventory (the partition has them).
        assert_eq!(inv.cluster.storage, StorageMode::Nfs);
        assert_eq!(inv.shared_dir(), Some(PathBuf::from("/shared/dffmpeg")));
        assert_eq!(inv.compute_nodes().count(), 0);
        // The default is today's engine.
        let inv = parse("nodes:\n  a: { host: local, roles: [controller, compute] }\n", "i").unwrap();
        assert_eq!(inv.cluster.engine, Engine::Ssh);
        let inv = parse(
            "cluster: { engine: ssh }\nnodes:\n  a: { host: local, roles: [controller, compute] }\n",
            "i",
        )
        .unwrap();
        assert_eq!(inv.cluster.engine, Engine::Ssh);
    }

    #[test]
    fn slurm_engine_errors() {
        let me = "nodes:\n  me: { host: local, roles: [controller] }\n";
        assert_error(
            &format!("cluster: {{ engine: slrum }}\n{me}"),
            1,
            20,
            "unknown engine `slrum`; did you mean `slurm`?",
        );
        assert_error(&format!("cluster: {{ engine: slurm }}\n{me}"), 1, 20, "needs `partition:`");
        assert_error(
            &format!("cluster: {{ partition: video }}\n{me}"),
            1,
            12,
            "`partition` is for `engine: slurm`",
        );
        assert_error(
            &format!("cluster: {{ engine: slurm, partition: video, storage: ssh }}\n{me}"),
            1,
            54,
            "`engine: slurm` needs shared storage",
        );
        assert_error(
            &format!("cluster: {{ engine: slurm, partition: '-p x' }}\n{me}"),
            1,
            38,
            "not a Slurm name",
        );
        assert_error(
            &format!("cluster: {{ engine: slurm, partition: v, qos: 'a b' }}\n{me}"),
            1,
            46,
            "`qos: a b` is not a Slurm name",
        );
        assert_error(
            &format!("cluster: {{ engine: slurm, partiton: v }}\n{me}"),
            1,
            27,
            "did you mean `partition`?",
        );
        // Still one storage node at most.
        assert_error(
            "cluster: { engine: slurm, partition: v }\nnodes:\n  a: { host: local, roles: [controller, storage] }\n  b: { roles: [storage] }\n",
            4,
            16,
            "two storage nodes",
        );
        // Without slurm, a compute node is still needed.
        assert_error(me, 1, 1, "no compute node");
    }

    #[test]
    fn no_compute_node() {
        assert_error("nodes:\n  a: { roles: [controller, storage] }\n", 1, 1, "no compute node");
    }

    #[test]
    fn duplicate_hosts() {
        assert_error(
            "nodes:\n  a: { host: 10.0.0.1, roles: [controller, compute] }\n  b: { host: 10.0.0.1, roles: [compute] }\n",
            3,
            14,
            "duplicate host: node `b` is the same machine as node `a` (10.0.0.1:22)",
        );
        // Same host through defaults.port and an explicit 22.
        assert_error(
            "nodes:\n  a: { host: H, roles: [controller, compute] }\n  b: { host: h, port: 22, roles: [compute] }\n",
            3,
            14,
            "duplicate host",
        );
        // The node name is the host when `host` is left out.
        assert_error(
            "nodes:\n  pi: { roles: [controller, compute] }\n  pi2: { host: pi, roles: [compute] }\n",
            3,
            16,
            "same machine as node `pi`",
        );
        assert_error(
            "nodes:\n  a: { host: local, roles: [controller] }\n  b: { host: local, port: 2, roles: [compute] }\n",
            3,
            14,
            "(local)",
        );
    }

    #[test]
    fn bad_ports() {
        for port in ["0", "65536", "abc", "-1", "2.5"] {
            let text = format!("nodes:\n  a: {{ roles: [compute], port: {port} }}\n");
            assert_error(&text, 2, 32, &format!("bad port `{port}`"));
        }
        assert_error(
            "defaults:\n  port: 99999\nnodes: {}\n",
            2,
            9,
            "bad port `99999`: a port is a number from 1 to 65535",
        );
        assert_error("nodes:\n  a: { roles: [compute], port: [22] }\n", 2, 32, "bad port `a list`");
    }

    #[test]
    fn the_status_page_address() {
        let at = |http: &str| {
            let text = format!(
                "cluster:\n  watch: {{ http: {http} }}\nnodes:\n  a: {{ roles: [controller, compute] }}\n"
            );
            parse(&text, "x.yaml").map(|i| i.cluster.watch.and_then(|w| w.http).map(|a| a.to_string()))
        };
        assert_eq!(at("127.0.0.1:8080").unwrap().as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(at("8080").unwrap().as_deref(), Some("127.0.0.1:8080"), "a port alone: loopback");
        assert_eq!(at("'[::1]:8081'").unwrap().as_deref(), Some("[::1]:8081"));
        assert_eq!(at("0.0.0.0:80").unwrap().as_deref(), Some("0.0.0.0:80"), "the operator's choice");
        for bad in ["localhost:8080", "127.0.0.1", "127.0.0.1:0", "0", "'1.2.3.4:99999'"] {
            let text = format!(
                "cluster:\n  watch: {{ http: {bad} }}\nnodes:\n  a: {{ roles: [controller, compute] }}\n"
            );
            assert_error(&text, 2, 18, "must be an IP address and a port, e.g. 127.0.0.1:8080");
        }
    }

    #[test]
    fn bad_slots() {
        assert_error(
            "nodes:\n  a: { roles: [controller, compute], slots: 0 }\n",
            2,
            45,
            "a node needs at least 1 slot",
        );
        assert_error(
            "nodes:\n  a: { roles: [controller, compute], slots: many }\n",
            2,
            45,
            "bad `slots: many`",
        );
    }

    #[test]
    fn bad_node_names() {
        assert_error("nodes:\n  '': { roles: [controller, compute] }\n", 2, 3, "empty node name");
        assert_error("nodes:\n  'a,b': { roles: [controller, compute] }\n", 2, 3, "bad node name `a,b`");
    }

    #[test]
    fn bad_values() {
        assert_error(
            "nodes:\n  a: { host: -oProxyCommand=x, roles: [compute] }\n",
            2,
            14,
            "not starting with `-`",
        );
        assert_error(
            "nodes:\n  a: { host: pi@h, roles: [compute] }\n",
            2,
            14,
            "put the user name in `user:`",
        );
        assert_error("nodes:\n  a: { host: , roles: [compute] }\n", 2, 12, "`host` needs a value");
        assert_error(
            "nodes:\n  a: { become: maybe, roles: [compute] }\n",
            2,
            16,
            "`become` must be true or false",
        );
        assert_error("cluster: { shared_dir: srv }\nnodes: {}\n", 1, 24, "must be an absolute path");
        assert_error(
            "cluster: { apt_mirror: ftp.debian.org }\nnodes: {}\n",
            1,
            24,
            "must be an http:// or https:// URL",
        );
        assert_error("nodes:\n  a: [compute]\n", 2, 6, "node `a` must be a mapping");
    }

    #[test]
    fn error_display_is_file_line_column() {
        let e = parse("nodes:\n  a: { roles: [compute] }\n", "dir/inv.yaml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dir/inv.yaml:1:1: no controller: add `controller` to the roles of exactly one node (the machine that runs dffmpeg)"
        );
    }

    #[test]
    fn typo_distance() {
        assert_eq!(distance("hots", "host"), 1);
        assert_eq!(distance("roles", "roles"), 0);
        assert_eq!(closest("Host", NODE_KEYS), Some("host"));
        assert_eq!(closest("identity", NODE_KEYS), Some("identity_file"));
        assert_eq!(closest("colour", NODE_KEYS), None);
    }
}
