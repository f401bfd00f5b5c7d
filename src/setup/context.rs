//! The rendering context of one node: the node, the cluster, the inventory's
//! addresses, the controller's public key, playbook vars and (once gathered)
//! the node's facts.
//!
//! ```text
//! node:          {name, host, address, port, user, roles, controller, compute, storage, become}
//! cluster:       {shared_dir, storage ("nfs"|"ssh"), nfs (bool), apt_mirror (no trailing /, or none)}
//! nodes:         [{name, host, address, roles}]            every node of the inventory
//! compute_hosts: [address]     compute nodes other than the storage node (the NFS clients)
//! unaddressed:   [name]        compute nodes with `host: local` whose address is unknown
//! storage_node:  name | none
//! storage_host:  address of the storage node as this node reaches it, `[v6]` bracketed
//! controller:    {name, pubkey}
//! vars:          playbook `vars:` + extra vars
//! facts:         see [`crate::facts::Facts`] (absent before facts are gathered)
//! slurm:         with `cluster.engine: slurm`, see [`super::slurm`]; else none
//! item:          the loop item, in looped tasks
//! ```

use std::collections::BTreeMap;

use serde_json::{json, Map, Value as Json};

use crate::inventory::{Host, Inventory, Node, Role, StorageMode};

use crate::facts::Facts;

/// Node name → the address other nodes reach it at. `host: local` nodes
/// are resolved by the caller (the controller's source address toward the
/// other nodes), `None` when that was not possible.
pub type Addresses = BTreeMap<String, Option<String>>;

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Controller => "controller",
        Role::Compute => "compute",
        Role::Storage => "storage",
    }
}

/// `host` as written in the inventory (`local` for the local host).
pub fn host_word(h: &Host) -> &str {
    match h {
        Host::Local => "local",
        Host::Remote(s) => s,
    }
}

/// Addresses straight from the inventory; `local` hosts via `resolve_local`.
pub fn addresses(inv: &Inventory, resolve_local: impl Fn() -> Option<String>) -> Addresses {
    let mut local: Option<Option<String>> = None;
    inv.nodes
        .iter()
        .map(|n| {
            let a = match &n.host {
                Host::Remote(h) => Some(h.clone()),
                Host::Local => local.get_or_insert_with(&resolve_local).clone(),
            };
            (n.name.clone(), a)
        })
        .collect()
}

/// The context before facts are known.
pub fn base(
    inv: &Inventory,
    node: &Node,
    login_user: &str,
    become_root: bool,
    pubkey: &str,
    addrs: &Addresses,
    vars: &Map<String, Json>,
) -> Json {
    let addr = |n: &Node| addrs.get(&n.name).cloned().flatten();
    let roles = |n: &Node| n.roles.iter().map(|r| role_name(*r)).collect::<Vec<_>>();
    let storage = inv.storage_node();
    // `engine: slurm` may share a directory of the Slurm cluster's own
    // (no storage node): then there is no NFS to set up.
    let nfs = inv.cluster.storage == StorageMode::Nfs && storage.is_some();
    let is_storage_node = |n: &Node| storage.map(|s| s.name == n.name).unwrap_or(false);
    let clients: Vec<&Node> = inv.compute_nodes().filter(|n| !is_storage_node(n)).collect();
    let compute_hosts: Vec<String> = clients.iter().filter_map(|n| addr(n)).collect();
    let unaddressed: Vec<&str> =
        clients.iter().filter(|n| addr(n).is_none()).map(|n| n.name.as_str()).collect();
    let storage_host = storage.and_then(|s| {
        if s.name == node.name {
            return Some("localhost".to_string());
        }
        addr(s).map(|a| if a.contains(':') && !a.starts_with('[') { format!("[{a}]") } else { a })
    });
    let controller = inv.nodes.iter().find(|n| n.has(Role::Controller));
    json!({
        "node": {
            "name": node.name,
            "host": host_word(&node.host),
            "address": addr(node),
            "port": node.port,
            "user": login_user,
            "roles": roles(node),
            "controller": node.has(Role::Controller),
            "compute": node.has(Role::Compute),
            "storage": node.has(Role::Storage),
            "become": become_root,
        },
        "cluster": {
            "shared_dir": inv.cluster.shared_dir.display().to_string(),
            "storage": if nfs { "nfs" } else { "ssh" },
            "nfs": nfs,
            "apt_mirror": inv.cluster.apt_mirror.as_ref().map(|m| m.trim_end_matches('/').to_string()),
            "watch": inv.cluster.watch.as_ref().map(|w| json!({
                "input": w.input.display().to_string(),
                "output": w.output.display().to_string(),
                "args": w.args,
            })),
        },
        "nodes": inv.nodes.iter().map(|n| json!({
            "name": n.name,
            "host": host_word(&n.host),
            "address": addr(n),
            "roles": roles(n),
        })).collect::<Vec<_>>(),
        "compute_hosts": compute_hosts,
        "unaddressed": unaddressed,
        "storage_node": storage.map(|s| s.name.clone()),
        "storage_host": storage_host,
        "controller": {
            "name": controller.map(|c| c.name.clone()),
            "pubkey": pubkey.trim(),
        },
        "vars": vars,
        "slurm": Json::Null,
    })
}

/// Add the gathered facts.
pub fn with_facts(mut ctx: Json, facts: &Facts) -> Json {
    if let Json::Object(m) = &mut ctx {
        m.insert("facts".into(), serde_json::to_value(facts).unwrap_or(Json::Null));
    }
    ctx
}

/// Add (or replace) the loop item.
pub fn with_item(ctx: &Json, item: &Json) -> Json {
    let mut ctx = ctx.clone();
    if let Json::Object(m) = &mut ctx {
        m.insert("item".into(), item.clone());
    }
    ctx
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::inventory::Cluster;
    use std::path::PathBuf;

    pub fn node(name: &str, host: &str, roles: &[Role]) -> Node {
        Node {
            name: name.into(),
            host: if host == "local" { Host::Local } else { Host::Remote(host.into()) },
            port: 22,
            user: Some("pi".into()),
            roles: roles.to_vec(),
            slots: None,
            identity_file: None,
            become_root: true,
        }
    }

    pub fn inventory(nodes: Vec<Node>) -> Inventory {
        Inventory {
            source: "test.yaml".into(),
            cluster: Cluster {
                shared_dir: PathBuf::from("/srv/dffmpeg"),
                storage: StorageMode::Nfs,
                apt_mirror: Some("http://198.18.41.1:8080/".into()),
                watch: None,
                engine: Default::default(),
            },
            nodes,
        }
    }

    /// pi3 = controller+compute+storage, pi2-a and nuc compute.
    pub fn three() -> Inventory {
        use Role::*;
        inventory(vec![
            node("pi3", "198.18.41.10", &[Controller, Compute, Storage]),
            node("pi2-a", "198.18.41.11", &[Compute]),
            node("nuc", "198.18.41.20", &[Compute]),
        ])
    }

    #[test]
    fn compute_hosts_exclude_the_storage_node() {
        let inv = three();
        let addrs = addresses(&inv, || None);
        let ctx = base(&inv, &inv.nodes[1], "pi", true, "ssh-ed25519 AAAA k\n", &addrs, &Map::new());
        assert_eq!(ctx["compute_hosts"], json!(["198.18.41.11", "198.18.41.20"]));
        assert_eq!(ctx["storage_host"], json!("198.18.41.10"));
        assert_eq!(ctx["cluster"]["apt_mirror"], json!("http://198.18.41.1:8080"));
        assert_eq!(ctx["controller"]["pubkey"], json!("ssh-ed25519 AAAA k"));
        assert_eq!(ctx["node"]["roles"], json!(["compute"]));
        let own = base(&inv, &inv.nodes[0], "pi", true, "", &addrs, &Map::new());
        assert_eq!(own["storage_host"], json!("localhost"));
    }

    #[test]
    fn local_hosts_are_resolved_once_or_listed_as_unaddressed() {
        use Role::*;
        let inv =
            inventory(vec![node("me", "local", &[Controller, Compute]), node("st", "fe80::2", &[Storage])]);
        let ctx = |a: &Addresses| base(&inv, &inv.nodes[0], "pi", true, "", a, &Map::new());
        let resolved = addresses(&inv, || Some("198.18.41.5".into()));
        assert_eq!(ctx(&resolved)["compute_hosts"], json!(["198.18.41.5"]));
        assert_eq!(ctx(&resolved)["storage_host"], json!("[fe80::2]"));
        let unknown = addresses(&inv, || None);
        assert_eq!(ctx(&unknown)["unaddressed"], json!(["me"]));
        assert_eq!(ctx(&unknown)["compute_hosts"], json!([]));
    }
}
