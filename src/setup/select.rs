//! `--limit` and `--only`: which nodes and which steps. Unknown names are
//! usage errors, found before any node is touched.

use std::collections::BTreeSet;

use crate::inventory::{Inventory, Node, Role, StorageMode};

use super::playbook::{Task, STEPS};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("--limit: no node named {name} in {inventory} (nodes: {known})")]
    UnknownNode { name: String, inventory: String, known: String },
    #[error("--only: no step named {name} (steps: {known})")]
    UnknownStep { name: String, known: String },
}

/// The nodes to set up, in inventory order (all without `--limit`).
pub fn nodes<'a>(inv: &'a Inventory, limit: &[String]) -> Result<Vec<&'a Node>, SelectError> {
    for name in limit {
        if !inv.nodes.iter().any(|n| &n.name == name) {
            return Err(SelectError::UnknownNode {
                name: name.clone(),
                inventory: inv.source.clone(),
                known: inv.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(inv.nodes.iter().filter(|n| limit.is_empty() || limit.contains(&n.name)).collect())
}

/// A warning when `--limit` takes compute nodes but leaves out the storage
/// node: its NFS exports list the compute nodes' addresses, so a compute
/// node new to the inventory cannot mount the share until the storage node
/// is set up again too.
pub fn limit_hint(inv: &Inventory, limit: &[String]) -> Option<String> {
    if limit.is_empty() || inv.cluster.storage != StorageMode::Nfs {
        return None;
    }
    let storage = inv.storage_node()?;
    let compute: Vec<&str> = inv
        .nodes
        .iter()
        .filter(|n| limit.contains(&n.name) && n.has(Role::Compute) && n.name != storage.name)
        .map(|n| n.name.as_str())
        .collect();
    if compute.is_empty() || limit.contains(&storage.name) {
        return None;
    }
    Some(format!(
        "--limit leaves out the storage node {s}, whose NFS exports list the compute nodes: \
         a new compute node cannot mount the share until {s} is set up too (--limit {s},{c})",
        s = storage.name,
        c = compute.join(",")
    ))
}

/// The built-in steps plus those the playbooks use.
pub fn known_steps<'a>(tasks: impl Iterator<Item = &'a Task>) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = STEPS.iter().map(|s| s.to_string()).collect();
    s.extend(tasks.filter_map(|t| t.step.clone()));
    s
}

pub fn check_steps(only: &[String], known: &BTreeSet<String>) -> Result<(), SelectError> {
    match only.iter().find(|s| !known.contains(*s)) {
        Some(bad) => Err(SelectError::UnknownStep {
            name: bad.clone(),
            known: known.iter().cloned().collect::<Vec<_>>().join(", "),
        }),
        None => Ok(()),
    }
}

/// The tasks of the selected steps (all without `--only`); `meta` tasks
/// stay.
pub fn tasks(all: &[Task], only: &[String]) -> Vec<Task> {
    all.iter()
        .filter(|t| {
            only.is_empty()
                || t.action.is_meta()
                || t.step.as_ref().map(|s| only.contains(s)).unwrap_or(false)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::context::tests::three;
    use crate::setup::playbook::parse;

    #[test]
    fn limiting_to_a_compute_node_hints_at_the_storage_node() {
        let inv = crate::inventory::parse(
            "cluster: { shared_dir: /srv/dffmpeg }\nnodes:\n  pi3: { roles: [controller, storage, compute] }\n  nuc: { roles: [compute] }\n",
            "inv.yaml",
        )
        .unwrap();
        let hint = limit_hint(&inv, &["nuc".to_string()]).unwrap();
        assert!(hint.contains("--limit pi3,nuc"), "{hint}");
        assert_eq!(limit_hint(&inv, &["pi3".to_string(), "nuc".to_string()]), None);
        assert_eq!(limit_hint(&inv, &[]), None);
    }

    #[test]
    fn limit_keeps_inventory_order_and_refuses_unknown_nodes() {
        let inv = three();
        let names = |l: &[&str]| {
            nodes(&inv, &l.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map(|v| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>())
        };
        assert_eq!(names(&[]).unwrap(), vec!["pi3", "pi2-a", "nuc"]);
        assert_eq!(names(&["nuc", "pi3"]).unwrap(), vec!["pi3", "nuc"]);
        let e = names(&["pi4"]).unwrap_err().to_string();
        assert!(e.contains("pi4") && e.contains("pi3, pi2-a, nuc"), "{e}");
    }

    #[test]
    fn only_filters_tasks_and_refuses_unknown_steps() {
        let pb = parse(
            "tasks:\n  - {name: a, step: packages, apt: {name: x}}\n  - meta: flush_handlers\n  - {name: b, step: mine, apt: {name: y}}\n",
            "t.yaml",
        )
        .unwrap();
        let known = known_steps(pb.tasks.iter());
        assert!(known.contains("mine") && known.contains("mounts"));
        assert!(check_steps(&["mounts".into(), "mine".into()], &known).is_ok());
        let e = check_steps(&["mount".into()], &known).unwrap_err().to_string();
        assert!(e.contains("no step named mount"), "{e}");
        let t = tasks(&pb.tasks, &["mine".into()]);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].name, "b");
        assert_eq!(tasks(&pb.tasks, &[]).len(), 3);
    }
}
