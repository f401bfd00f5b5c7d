//! `--limit` and `--only`: which nodes and which steps. Unknown names are
//! usage errors, found before any node is touched.

use std::collections::BTreeSet;

use crate::inventory::{Inventory, Node};

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
