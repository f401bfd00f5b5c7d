//! The nodes a job runs on: from the inventory's compute nodes, connected
//! and checked (facts) before any chunk is sent; or, with `engine: slurm`,
//! the nodes of a Slurm partition (`cluster/slurm.rs`).

mod slurm;

use std::path::PathBuf;
use std::sync::Arc;

use crate::facts::{self, Facts};
use crate::inventory::{Engine, Host, Inventory, StorageMode};
use crate::remote::hostkeys::FirstContact;
use crate::remote::{self, ConnectOptions, Node};

use crate::transcode::dispatch::WorkerNode;

pub struct Cluster {
    /// For the first line of output: which cluster this is.
    pub description: String,
    pub nodes: Vec<WorkerNode<Arc<Node>>>,
    pub facts: Vec<Facts>,
    /// Nodes left out, and why.
    pub warnings: Vec<String>,
    /// With shared storage: the directory every node sees at the same path.
    pub shared_dir: Option<PathBuf>,
}

/// Why a node, or with Slurm the whole partition, is left out of the job
/// (the warning says it, followed by `: left out of the job` for a node).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Connect(#[from] remote::SshError),
    #[error(transparent)]
    Facts(#[from] facts::GatherError),
    #[error("Slurm: {0}")]
    Slurm(#[from] crate::remote::slurm::query::SlurmError),
    #[error("this machine has no ffmpeg, whose encoders stand for the Slurm nodes'")]
    NoLocalFfmpeg,
}

/// Slots and encoder threads of a node: one slot per usable core (cores,
/// capped by a cgroup CPU quota) unless the inventory says otherwise, and
/// the cores shared among the slots. Over SSH at most
/// [`MAX_DEFAULT_SSH_SLOTS`] by default: every slot holds a session on the
/// node's one connection, and a stock sshd allows 10 (`MaxSessions`); the
/// slots then run more encoder threads each.
pub fn slots_and_threads(slots: Option<u32>, cores: u32, ssh: bool) -> (usize, u32) {
    let cores = cores.max(1);
    let default = if ssh { cores.min(MAX_DEFAULT_SSH_SLOTS) } else { cores };
    let slots = slots.unwrap_or(default).max(1);
    (slots as usize, (cores / slots).max(1))
}

/// Default slot cap of an SSH node (sessions: one per slot, one spare for
/// stopping a process, within sshd's default `MaxSessions 10`).
pub const MAX_DEFAULT_SSH_SLOTS: u32 = 8;

/// The cluster of a run that will encode: [`connect`], and with Slurm the
/// jobs a killed dffmpeg left behind cancelled first.
pub async fn connect_to_run(inv: &Inventory, opts: &ConnectOptions) -> Cluster {
    let mut cluster = connect(inv, opts).await;
    if matches!(inv.cluster.engine, Engine::Slurm(_)) && !cluster.nodes.is_empty() {
        slurm::cancel_leftovers(&mut cluster).await;
    }
    cluster
}

/// Connect to every compute node in parallel and read its facts. Nodes that
/// cannot be reached or have no ffmpeg are left out with a warning. With
/// Slurm, only asks Slurm (nothing is submitted or cancelled).
pub async fn connect(inv: &Inventory, opts: &ConnectOptions) -> Cluster {
    if let Engine::Slurm(spec) = &inv.cluster.engine {
        return slurm::connect(inv, spec).await;
    }
    let compute: Vec<_> = inv.compute_nodes().cloned().collect();
    let remote = compute.iter().any(|n| n.host != Host::Local);
    let known_hosts = remote.then(crate::remote::ssh::known_hosts_path).and_then(Result::ok);
    let mut first = Vec::new();
    if let Some(kh) = &known_hosts {
        for n in &compute {
            first.extend(FirstContact::of(kh, n).await);
        }
    }
    let connected = remote::connect_all(&compute, opts).await;
    let shared = inv.shared_dir();
    let gathered = connected.into_iter().map(|(name, conn)| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let conn = conn?;
            let f = facts::gather(&conn, shared.as_deref()).await?;
            Ok::<_, ConnectError>((name, conn, f))
        })
    });
    let gathered: Vec<_> = gathered.collect();
    let mut cluster = Cluster {
        description: String::new(),
        nodes: Vec::new(),
        facts: Vec::new(),
        warnings: Vec::new(),
        shared_dir: shared,
    };
    // Trust on first use is never silent: each new key is named.
    if let Some(kh) = &known_hosts {
        for f in first {
            cluster.warnings.extend(f.trusted(kh).await);
        }
    }
    for (spec, task) in compute.iter().zip(gathered) {
        match task.await {
            Ok(Ok((name, conn, f))) => {
                if f.ffmpeg_version.is_none() {
                    cluster.warnings.push(format!("node {name} has no ffmpeg: left out (run dffmpeg setup)"));
                    continue;
                }
                let ssh = spec.host != Host::Local;
                if ssh && spec.slots.is_some_and(|n| n > MAX_DEFAULT_SSH_SLOTS + 1) {
                    cluster.warnings.push(format!(
                        "node {name}: {} slots need as many SSH sessions; a stock sshd allows 10 \
                         (raise MaxSessions in the node's sshd_config)",
                        spec.slots.unwrap_or_default()
                    ));
                }
                let (slots, threads) = slots_and_threads(spec.slots, f.usable_cores(), ssh);
                cluster.nodes.push(WorkerNode {
                    key: format!("{name}@{}", spec.host),
                    name,
                    transport: conn,
                    slots,
                    threads: Some(threads),
                    capacity: f.capacity(),
                    known: None,
                });
                cluster.facts.push(f);
            }
            Ok(Err(e)) => cluster.warnings.push(format!("{e}: left out of the job")),
            Err(e) => cluster.warnings.push(format!("node {}: {e}: left out of the job", spec.name)),
        }
    }
    let names: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{} ({} slot{})", n.name, n.slots, if n.slots == 1 { "" } else { "s" }))
        .collect();
    let local_only = compute.len() == 1 && compute[0].host == Host::Local;
    cluster.description = if local_only && inv.source == Inventory::local_default().source {
        let slots: usize = cluster.nodes.iter().map(|n| n.slots).sum();
        format!("{}: this machine, {slots} slots", inv.source)
    } else {
        let storage = match inv.cluster.storage {
            StorageMode::Ssh => "storage ssh".to_string(),
            StorageMode::Nfs => format!("storage nfs at {}", inv.cluster.shared_dir.display()),
        };
        format!(
            "{}: {}; {storage}",
            inv.source,
            if names.is_empty() { "no node".into() } else { names.join(", ") }
        )
    };
    cluster
}

impl Cluster {
    pub fn slots(&self) -> usize {
        self.nodes.iter().map(|n| n.slots).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_share_the_cores() {
        assert_eq!(slots_and_threads(None, 4, true), (4, 1));
        assert_eq!(slots_and_threads(Some(2), 4, true), (2, 2));
        assert_eq!(slots_and_threads(Some(3), 2, true), (3, 1));
        assert_eq!(slots_and_threads(None, 0, true), (1, 1));
        // 16 cores over SSH: 8 sessions of 2 encoder threads; locally 16.
        assert_eq!(slots_and_threads(None, 16, true), (8, 2));
        assert_eq!(slots_and_threads(None, 16, false), (16, 1));
        assert_eq!(slots_and_threads(Some(12), 16, true), (12, 1), "the inventory decides");
    }
}
