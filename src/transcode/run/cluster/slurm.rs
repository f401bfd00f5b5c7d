//! The nodes of a Slurm partition as the job's cluster (`engine: slurm`):
//! one dffmpeg node per Slurm node, so that the scheduler measures each
//! node's speed and a node Slurm loses takes only its own chunks with it.
//!
//! Nothing runs on the nodes to learn them: `sinfo` tells their CPUs and
//! state, `scontrol` their architecture, and their ffmpeg is taken to be
//! this machine's (a Slurm cluster
//! runs one software image; a node whose build differs is caught by the
//! verification of its first chunk, one without ffmpeg fails its chunks
//! and leaves).

use std::sync::Arc;

use crate::facts::{self, Facts};
use crate::inventory::{Inventory, SlurmSpec};
use crate::remote::slurm::query::{self, SlurmNode};
use crate::remote::{Local, Node, Slurm};

use super::{slots_and_threads, Cluster, ConnectError};
use crate::transcode::dispatch::WorkerNode;

/// The partition's usable nodes; those Slurm has down or drained are left
/// out with a warning, and so is everything when Slurm cannot be asked.
pub async fn connect(inv: &Inventory, spec: &SlurmSpec) -> Cluster {
    let shared_dir = inv.shared_dir();
    let mut cluster = Cluster {
        description: String::new(),
        nodes: Vec::new(),
        facts: Vec::new(),
        warnings: Vec::new(),
        shared_dir,
    };
    let found = match look(spec).await {
        Ok(found) => found,
        Err(why) => {
            cluster.warnings.push(why.to_string());
            cluster.description = describe(inv, spec, &cluster);
            return cluster;
        }
    };
    let spec = Arc::new(spec.clone());
    let (nodes, facts) = found;
    let arches = query::node_arches().await;
    for n in nodes {
        if !query::usable(&n.state) {
            cluster.warnings.push(format!("Slurm node {} is {}: left out of the job", n.name, n.state));
            continue;
        }
        // As over SSH, at most 8 slots a node (each an srun on this
        // machine), a big node's CPUs shared among them (--cpus-per-task).
        let (slots, threads) = slots_and_threads(None, n.cpus, true);
        let transport = Node::Slurm(Slurm::new(n.name.clone(), spec.clone(), threads));
        let arch = arches.iter().find(|(name, _)| *name == n.name).map(|(_, a)| a.clone());
        let node_facts = Facts {
            cores: n.cpus,
            cpu_quota: None,
            hostname: n.name.clone(),
            arch: arch.unwrap_or_else(|| facts.arch.clone()),
            ..facts.clone()
        };
        cluster.nodes.push(WorkerNode {
            key: format!("{}@slurm:{}", n.name, spec.partition),
            name: n.name,
            transport: Arc::new(transport),
            slots,
            threads: Some(threads),
            capacity: node_facts.capacity(),
            known: None,
        });
        cluster.facts.push(node_facts);
    }
    cluster.description = describe(inv, &spec, &cluster);
    cluster
}

/// The partition's nodes, checked that Slurm takes jobs there, and the
/// ffmpeg facts of this machine (standing for the nodes').
async fn look(spec: &SlurmSpec) -> Result<(Vec<SlurmNode>, Facts), ConnectError> {
    let nodes = query::partition_nodes(spec).await?;
    query::test_submit(spec).await?;
    let here = Local::new("controller");
    let facts = facts::gather(&here, None).await?;
    if facts.ffmpeg_version.is_none() {
        return Err(ConnectError::NoLocalFfmpeg);
    }
    Ok((nodes, facts))
}

fn describe(inv: &Inventory, spec: &SlurmSpec, c: &Cluster) -> String {
    let names: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("{} ({} slot{})", n.name, n.slots, if n.slots == 1 { "" } else { "s" }))
        .collect();
    let nodes = if names.is_empty() { "no node".to_string() } else { names.join(", ") };
    format!(
        "{}: Slurm partition {}: {nodes}; shared dir {}",
        inv.source,
        spec.partition,
        inv.cluster.shared_dir.display()
    )
}

/// Before the first submission of a run: cancel the jobs a killed dffmpeg
/// of this machine left in Slurm and wait until they are gone (so that no
/// chunk runs twice). While waiting a line says so on stderr (the batch
/// has not started: nothing else is shown yet); what was done becomes a
/// warning of the batch.
pub async fn cancel_leftovers(cluster: &mut Cluster) {
    let waiting = |line: &str| {
        crate::log::line(line);
        eprintln!("{line}");
    };
    match query::cancel_orphans(waiting).await {
        Ok(o) if o.cancelled.is_empty() => {}
        Ok(o) => {
            cluster.warnings.push(format!(
                "cancelled {} Slurm job(s) left by an earlier dffmpeg that is gone: {}",
                o.cancelled.len(),
                query::describe(&o.cancelled)
            ));
            if !o.lingering.is_empty() {
                let ids: Vec<String> = o.lingering.iter().map(u32::to_string).collect();
                cluster.warnings.push(format!(
                    "Slurm still lists job(s) {} after {} s (a node not answering?): their chunks may run twice",
                    ids.join(", "),
                    crate::remote::slurm::ORPHAN_WAIT.as_secs()
                ));
            }
        }
        Err(e) => {
            cluster.warnings.push(format!("cannot look for Slurm jobs left by an earlier dffmpeg: {e}"))
        }
    }
}
