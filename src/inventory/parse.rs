//! Building the model from the positioned YAML tree: each section is read
//! key by key, each value through its rule, so that every error points at
//! the key or value it is about.

use std::path::{Path, PathBuf};

use super::model::*;
use super::rules::*;
use super::yaml::{kind, pos, Pos, Reader, Result, Spanned, Value};
use super::InventoryError;

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
pub fn parse(text: &str, file: &str) -> std::result::Result<Inventory, InventoryError> {
    build(text, file).map_err(InventoryError::At)
}

fn build(text: &str, file: &str) -> Result<Inventory> {
    let yaml = Reader { file, aliases: KEY_ALIASES };
    let doc = yaml.read(text)?;
    let top = top_sections(&yaml, &doc)?;
    let cluster = match top.cluster {
        Some(v) => parse_cluster(&yaml, v)?,
        None => ClusterDraft::default(),
    };
    let defaults = match top.defaults {
        Some(v) => parse_defaults(&yaml, v)?,
        None => Defaults::default(),
    };
    let Some((nodes_key, nodes_v)) = top.nodes else {
        return Err(yaml.err(
            pos(&doc),
            "no `nodes:` section: list the machines of the cluster under `nodes:` (see inventory.example.yaml)",
        ));
    };
    let nodes = parse_nodes(&yaml, nodes_key, nodes_v, &defaults)?;
    check_distinct_machines(&yaml, &nodes)?;
    let nodes_at = pos(nodes_key);
    check_one_controller(&yaml, nodes_at, &nodes)?;
    let engine = settle_engine(&yaml, &cluster)?;
    let storage = match engine {
        Engine::Ssh => storage_mode(&yaml, cluster.storage, &nodes)?,
        Engine::Slurm(_) => slurm_storage(&yaml, cluster.storage, &nodes)?,
    };
    // Slurm's partition holds the compute nodes; the inventory's are only
    // those `setup` provisions.
    if engine == Engine::Ssh && with_role(&nodes, Role::Compute).is_empty() {
        return Err(yaml.err(nodes_at, "no compute node: add `compute` to the roles of at least one node"));
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
        nodes: nodes.into_iter().map(|l| l.node).collect(),
    })
}

/// The three top-level sections, each optional here.
struct Top<'a> {
    cluster: Option<&'a Spanned<Value>>,
    defaults: Option<&'a Spanned<Value>>,
    nodes: Option<(&'a Spanned<String>, &'a Spanned<Value>)>,
}

fn top_sections<'a>(yaml: &Reader, doc: &'a Spanned<Value>) -> Result<Top<'a>> {
    let entries =
        match &doc.value {
            Value::Map(e) => e.as_slice(),
            Value::Null => return Err(yaml.err(
                pos(doc),
                "the inventory is empty: it needs at least a `nodes:` section (see inventory.example.yaml)",
            )),
            other => {
                return Err(yaml.err(
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
            _ => return Err(yaml.unknown_key(k, TOP_KEYS, "at the top level")),
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

/// `engine` with its Slurm keys: a partition is needed for slurm, and the
/// Slurm keys mean nothing without it.
fn settle_engine(yaml: &Reader, c: &ClusterDraft) -> Result<Engine> {
    let [partition, account, qos] = c.slurm.clone();
    match c.engine {
        Some((true, at)) => {
            let Some((partition, _)) = partition else {
                return Err(yaml.err(
                    at,
                    "`engine: slurm` needs `partition:` in `cluster`: the Slurm partition dffmpeg submits to (`sinfo` lists them)",
                ));
            };
            let (account, qos) = (account.map(|a| a.0), qos.map(|q| q.0));
            Ok(Engine::Slurm(SlurmSpec { partition, account, qos }))
        }
        _ => match SLURM_KEYS.iter().zip(&c.slurm).find_map(|(k, v)| v.as_ref().map(|(_, at)| (k, *at))) {
            Some((key, at)) => Err(yaml.err(
                at,
                format!(
                    "`{key}` is for `engine: slurm`: add `engine: slurm` to `cluster`, or remove `{key}`"
                ),
            )),
            None => Ok(Engine::Ssh),
        },
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

fn parse_watch(yaml: &Reader, v: &Spanned<Value>) -> Result<WatchDraft> {
    let mut w = WatchDraft::default();
    for (k, v) in yaml.entries(v, "`watch`")? {
        match k.value.as_str() {
            "input" => w.input = Some(absolute(yaml, "input", v, "")?),
            "output" => w.output = Some(absolute(yaml, "output", v, "")?),
            "args" => w.args = words(yaml, "args", v)?,
            "http" => w.http = Some(http_address(yaml, v)?),
            _ => return Err(yaml.unknown_key(k, WATCH_KEYS, "in `watch`")),
        }
    }
    Ok(w)
}

fn parse_cluster(yaml: &Reader, v: &Spanned<Value>) -> Result<ClusterDraft> {
    let mut c = ClusterDraft::default();
    for (k, v) in yaml.entries(v, "`cluster`")? {
        match k.value.as_str() {
            "shared_dir" => c.shared_dir = shared_dir(yaml, v)?,
            "storage" => c.storage = Some((storage_word(yaml, v)?, pos(v))),
            "apt_mirror" => c.apt_mirror = Some(apt_mirror(yaml, v)?),
            "watch" => c.watch = Some(parse_watch(yaml, v)?),
            "engine" => c.engine = Some((engine_word(yaml, v)?, pos(v))),
            key @ ("partition" | "account" | "qos") => {
                let i = SLURM_KEYS.iter().position(|k| *k == key).unwrap_or(0);
                c.slurm[i] = Some((slurm_name(yaml, key, v)?, pos(k)));
            }
            _ => return Err(yaml.unknown_key(k, CLUSTER_KEYS, "in `cluster`")),
        }
    }
    Ok(c)
}

fn parse_defaults(yaml: &Reader, v: &Spanned<Value>) -> Result<Defaults> {
    let mut d = Defaults::default();
    for (k, v) in yaml.entries(v, "`defaults`")? {
        match k.value.as_str() {
            "user" => d.user = Some(word(yaml, "user", v, "pi")?),
            "port" => d.port = port(yaml, v)?,
            "become" => d.become_root = yaml.boolean("become", v)?,
            "identity_file" => d.identity_file = Some(identity_file(yaml, v)?),
            "slots" => d.slots = Some(slots(yaml, v)?),
            "host" | "roles" => {
                return Err(
                    yaml.err(pos(k), format!("`{}` cannot have a default: set it on each node", k.value))
                )
            }
            _ => return Err(yaml.unknown_key(k, DEFAULT_KEYS, "in `defaults`")),
        }
    }
    Ok(d)
}

fn parse_nodes(
    yaml: &Reader,
    nodes_key: &Spanned<String>,
    nodes_v: &Spanned<Value>,
    defaults: &Defaults,
) -> Result<Vec<Written>> {
    let nodes = yaml
        .entries(nodes_v, "`nodes`")?
        .iter()
        .map(|(k, v)| parse_node(yaml, k, v, defaults))
        .collect::<Result<Vec<Written>>>()?;
    if nodes.is_empty() {
        return Err(yaml.err(
            pos(nodes_key),
            "`nodes` is empty: list the machines of the cluster, e.g. `pi3: { host: 192.168.1.10, roles: [controller, compute, storage] }`",
        ));
    }
    Ok(nodes)
}

fn parse_node(
    yaml: &Reader,
    k: &Spanned<String>,
    v: &Spanned<Value>,
    defaults: &Defaults,
) -> Result<Written> {
    let name = k.value.clone();
    if name.trim().is_empty() {
        return Err(yaml.err(pos(k), "empty node name: give each node a short name, e.g. `pi3:`"));
    }
    if !valid_node_name(&name) {
        return Err(yaml.err(
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
    for (key, val) in yaml.entries(v, &format!("node `{name}`"))? {
        match key.value.as_str() {
            "host" => {
                node.host = host(yaml, val)?;
                host_pos = pos(val);
                host_written = true;
            }
            "port" => node.port = port(yaml, val)?,
            "user" => node.user = Some(word(yaml, "user", val, "pi")?),
            "slots" => node.slots = Some(slots(yaml, val)?),
            "identity_file" => node.identity_file = Some(identity_file(yaml, val)?),
            "become" => node.become_root = yaml.boolean("become", val)?,
            "roles" => roles = Some(parse_roles(yaml, val, &name)?),
            _ => return Err(yaml.unknown_key(key, NODE_KEYS, &place)),
        }
    }
    if !host_written && !is_host_name_or_address(&name) {
        return Err(yaml.err(
            pos(k),
            format!("node `{name}` has no `host:`, and its name is not a host name to reach it by: add `host: ADDRESS`"),
        ));
    }
    let Some(roles) = roles else {
        return Err(yaml.err(
            pos(k),
            format!("node `{name}` has no `roles`: give it one or more of controller, compute, storage, e.g. `roles: [compute]`"),
        ));
    };
    node.roles = roles.iter().map(|(r, _)| *r).collect();
    Ok(Written { node, host_pos, roles })
}

fn parse_roles(yaml: &Reader, v: &Spanned<Value>, name: &str) -> Result<Vec<(Role, Pos)>> {
    let items: Vec<&Spanned<Value>> = match &v.value {
        Value::Seq(items) => items.iter().collect(),
        // `roles: compute` is read as `roles: [compute]`.
        Value::Str(_) => vec![v],
        other => {
            return Err(yaml.err(
                pos(v),
                format!("`roles` must be a list such as `[controller, compute]`, not {}", kind(other)),
            ))
        }
    };
    let mut roles: Vec<(Role, Pos)> = Vec::new();
    for item in items {
        let s = yaml.text("roles", item)?;
        let role = Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            yaml.err(
                pos(item),
                format!("unknown role `{s}` in node `{name}`; {}", yaml.did_you_mean(&s, &role_names())),
            )
        })?;
        if !roles.iter().any(|(r, _)| *r == role) {
            roles.push((role, pos(item)));
        }
    }
    if roles.is_empty() {
        return Err(yaml.err(
            pos(v),
            format!("node `{name}` has an empty `roles` list: give it one or more of controller, compute, storage"),
        ));
    }
    Ok(roles)
}
