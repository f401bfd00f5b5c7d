//! The inventory's rules: what each value may be (hosts, ports, names,
//! paths), and what must hold across the nodes (one controller, at most one
//! storage node, no machine listed twice).

use std::path::PathBuf;

use super::model::*;
use super::yaml::{kind, pos, Pos, Reader, Result, Spanned, Value};

/// A node with the locations needed by the cross-node rules.
pub(super) struct Written {
    pub(super) node: Node,
    /// Where `host:` is, or the node name when the name is the host.
    pub(super) host_pos: Pos,
    pub(super) roles: Vec<(Role, Pos)>,
}

/// User names: one word that ssh cannot take for an option.
pub(super) fn word(yaml: &Reader, key: &str, v: &Spanned<Value>, example: &str) -> Result<String> {
    let s = yaml.text(key, v)?;
    if s.starts_with('-') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(yaml.err(
            pos(v),
            format!("`{key}: {s}` is not valid: one word, not starting with `-` (e.g. `{key}: {example}`)"),
        ));
    }
    Ok(s)
}

/// `host:`: `local`, an IP address or a host name — nothing that ssh
/// could take for an option or /etc/exports for a wildcard or options.
pub(super) fn host(yaml: &Reader, v: &Spanned<Value>) -> Result<Host> {
    let h = yaml.text("host", v)?;
    if h == "local" {
        return Ok(Host::Local);
    }
    if h.contains('@') {
        return Err(yaml.err(pos(v), format!("`host: {h}`: put the user name in `user:`, not in the host")));
    }
    if !is_host_name_or_address(&h) {
        return Err(yaml.err(
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
pub(super) fn identity_file(yaml: &Reader, v: &Spanned<Value>) -> Result<PathBuf> {
    let s = yaml.text("identity_file", v)?;
    expand_home(&s).map_err(|why| yaml.err(pos(v), format!("`identity_file: {s}`: {why}")))
}

pub(super) fn port(yaml: &Reader, v: &Spanned<Value>) -> Result<u16> {
    let n = match &v.value {
        Value::Int(n) => Some(*n),
        Value::Str(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(yaml.err(
            pos(v),
            format!("bad port `{}`: a port is a number from 1 to 65535 (ssh's is 22)", yaml.shown(v)),
        )),
    }
}

pub(super) fn slots(yaml: &Reader, v: &Spanned<Value>) -> Result<u32> {
    match &v.value {
        Value::Int(n) if (1..=4096).contains(n) => Ok(*n as u32),
        Value::Int(n) if *n < 1 => Err(yaml.err(
            pos(v),
            format!(
                "`slots: {n}`: a node needs at least 1 slot (leave `slots` out to use one per core group)"
            ),
        )),
        _ => Err(yaml.err(
            pos(v),
            format!(
                "bad `slots: {}`: slots is a whole number of parallel encodes, from 1 to 4096",
                yaml.shown(v)
            ),
        )),
    }
}

pub(super) fn engine_word(yaml: &Reader, v: &Spanned<Value>) -> Result<bool> {
    let s = yaml.text("engine", v)?;
    match s.as_str() {
        "ssh" => Ok(false),
        "slurm" => Ok(true),
        _ => Err(yaml.err(
            pos(v),
            format!(
                "unknown engine `{s}`; {} (ssh: dffmpeg's own queue over SSH; slurm: submit to a Slurm partition)",
                yaml.did_you_mean(&s, &["ssh", "slurm"])
            ),
        )),
    }
}

/// A Slurm partition, account or QOS name: one word of letters, digits,
/// `_`, `-` and `.`, not starting with `-` (it becomes an option's value).
pub(super) fn slurm_name(yaml: &Reader, key: &str, v: &Spanned<Value>) -> Result<String> {
    let s = yaml.text(key, v)?;
    let ok = !s.starts_with('-')
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !ok {
        return Err(yaml.err(
            pos(v),
            format!("`{key}: {s}` is not a Slurm name: letters, digits, `_`, `-` and `.`, not starting with `-` (`sinfo` lists the partitions)"),
        ));
    }
    Ok(s)
}

/// Slurm nodes read and write chunks in the shared directory: `storage:
/// ssh` cannot work, and the shared directory need not be on a storage
/// node of the inventory (a Slurm cluster has its own).
pub(super) fn slurm_storage(
    yaml: &Reader,
    written: Option<(StorageMode, Pos)>,
    nodes: &[Written],
) -> Result<StorageMode> {
    if let Some((StorageMode::Ssh, at)) = written {
        return Err(yaml.err(
            at,
            "`engine: slurm` needs shared storage: Slurm jobs read and write their chunks in shared_dir, \
             which every Slurm node must see at the same path; use `storage: nfs` (or leave it out)",
        ));
    }
    match with_role(nodes, Role::Storage).is_empty() {
        true => Ok(StorageMode::Nfs),
        false => storage_mode(yaml, written, nodes),
    }
}

/// `watch.http`: an IP address and a port (any address: the operator
/// decides who may look; the examples say loopback), or a port alone for
/// loopback (`8080` is `127.0.0.1:8080`).
pub(super) fn http_address(yaml: &Reader, v: &Spanned<Value>) -> Result<std::net::SocketAddr> {
    let s = yaml.text("http", v)?;
    let addr = match s.parse::<u16>() {
        Ok(port) => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => s.parse::<std::net::SocketAddr>(),
    };
    match addr {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(yaml.err(
            pos(v),
            format!(
                "`http: {s}` must be an IP address and a port, e.g. 127.0.0.1:8080 (loopback: only this \
                 machine) or [::1]:8080"
            ),
        )),
    }
}

/// An absolute path; `hint` follows the message when it is not.
pub(super) fn absolute(yaml: &Reader, key: &str, v: &Spanned<Value>, hint: &str) -> Result<PathBuf> {
    let s = yaml.text(key, v)?;
    if !s.starts_with('/') {
        return Err(yaml.err(pos(v), format!("`{key}: {s}` must be an absolute path{hint}")));
    }
    Ok(PathBuf::from(s))
}

/// A list of words (`[-c:v, libx264, -crf, 23]`).
pub(super) fn words(yaml: &Reader, key: &str, v: &Spanned<Value>) -> Result<Vec<String>> {
    match &v.value {
        Value::Seq(items) => items.iter().map(|i| yaml.text(key, i)).collect(),
        other => {
            Err(yaml
                .err(pos(v), format!("`{key}` must be a list, e.g. [-c:v, libx264], not {}", kind(other))))
        }
    }
}

pub(super) fn shared_dir(yaml: &Reader, v: &Spanned<Value>) -> Result<PathBuf> {
    absolute(yaml, "shared_dir", v, &format!(" (the same path on every node), e.g. {DEFAULT_SHARED_DIR}"))
}

pub(super) fn storage_word(yaml: &Reader, v: &Spanned<Value>) -> Result<StorageMode> {
    let s = yaml.text("storage", v)?;
    match s.as_str() {
        "nfs" => Ok(StorageMode::Nfs),
        "ssh" => Ok(StorageMode::Ssh),
        _ => Err(yaml.err(
            pos(v),
            format!(
                "unknown storage `{s}`; {} (nfs: a shared directory on the storage node; ssh: chunks stream over SSH)",
                yaml.did_you_mean(&s, &["nfs", "ssh"])
            ),
        )),
    }
}

pub(super) fn apt_mirror(yaml: &Reader, v: &Spanned<Value>) -> Result<String> {
    let s = yaml.text("apt_mirror", v)?;
    if !(s.starts_with("http://") || s.starts_with("https://")) || s.chars().any(char::is_whitespace) {
        return Err(yaml.err(
            pos(v),
            format!("`apt_mirror: {s}` must be an http:// or https:// URL, e.g. https://deb.debian.org"),
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// No machine is listed twice (the same host and port, or `local` twice).
pub(super) fn check_distinct_machines(yaml: &Reader, nodes: &[Written]) -> Result<()> {
    for (i, b) in nodes.iter().enumerate() {
        if let Some(a) = nodes[..i].iter().find(|a| same_machine(&a.node, &b.node)) {
            let addr = match &b.node.host {
                Host::Local => "local".to_string(),
                Host::Remote(h) => format!("{h}:{}", b.node.port),
            };
            return Err(yaml.err(
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
pub(super) fn with_role(nodes: &[Written], role: Role) -> Vec<(&Written, Pos)> {
    nodes.iter().filter_map(|l| l.roles.iter().find(|(r, _)| *r == role).map(|(_, p)| (l, *p))).collect()
}

pub(super) fn check_one_controller(yaml: &Reader, nodes_at: Pos, nodes: &[Written]) -> Result<()> {
    match with_role(nodes, Role::Controller).as_slice() {
        [] => Err(yaml.err(
            nodes_at,
            "no controller: add `controller` to the roles of exactly one node (the machine that runs dffmpeg)",
        )),
        [_] => Ok(()),
        [(first, _), (second, at), ..] => Err(yaml.err(
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
pub(super) fn storage_mode(
    yaml: &Reader,
    written: Option<(StorageMode, Pos)>,
    nodes: &[Written],
) -> Result<StorageMode> {
    let stores = with_role(nodes, Role::Storage);
    if let [(first, _), (second, at), ..] = stores.as_slice() {
        return Err(yaml.err(
            *at,
            format!(
                "two storage nodes: `{}` and `{}`; exactly one node holds the shared directory, remove `storage` from the other",
                first.node.name, second.node.name
            ),
        ));
    }
    match written {
        Some((StorageMode::Nfs, at)) if stores.is_empty() => Err(yaml.err(
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
pub fn expand_home(path: &str) -> std::result::Result<PathBuf, HomeError> {
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

pub(super) fn same_machine(a: &Node, b: &Node) -> bool {
    match (&a.host, &b.host) {
        (Host::Local, Host::Local) => true,
        (Host::Remote(x), Host::Remote(y)) => x.eq_ignore_ascii_case(y) && a.port == b.port,
        _ => false,
    }
}

pub(super) fn valid_node_name(name: &str) -> bool {
    !name.starts_with('-') && name.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.')
}
