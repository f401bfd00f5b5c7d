//! A node of the cluster as a batch runs on it: one [`Worker`] holds all
//! that is known of it (how to reach it, its facts, slots, speeds and what
//! it did), and [`Workers`] holds them by [`NodeId`], handed out as the
//! cluster is built.

use crate::facts::Facts;
use crate::transcode::events::NodeStats;
use crate::transcode::ids::{IdVec, NodeId};
use crate::transcode::scheduler::KnownSpeed;

/// The nodes of a batch, by id.
pub type Workers<T> = IdVec<NodeId, Worker<T>>;

/// A node: `T` is how to run commands there (a [`crate::remote::Transport`]).
#[derive(Debug, Clone)]
pub struct Worker<T> {
    pub name: String,
    pub transport: T,
    /// What it has: its encoders, architecture, cores.
    pub facts: Facts,
    /// At most this many attempts at once.
    pub slots: usize,
    /// Threads per encode (None: leave it to ffmpeg or the user's -threads).
    pub threads: Option<u32>,
    /// CPUs it shows: its speed guess of last resort.
    pub capacity: f64,
    /// `name@host`: its key in the speed memory.
    pub key: String,
    /// What earlier jobs measured of it.
    pub known: Option<KnownSpeed>,
    /// What this batch measured of it (slot rate, slots), for the next job.
    pub learned: Option<(f64, usize)>,
    /// What it did in this batch.
    pub stats: NodeStats,
}

impl<T> Worker<T> {
    /// A node as connected: its capacity from its facts, nothing measured.
    pub fn new(
        name: String,
        key: String,
        transport: T,
        facts: Facts,
        (slots, threads): (usize, u32),
    ) -> Self {
        let stats = NodeStats { node: name.clone(), arch: facts.arch.clone(), ..Default::default() };
        Worker {
            name,
            transport,
            capacity: facts.capacity(),
            facts,
            slots,
            threads: Some(threads),
            key,
            known: None,
            learned: None,
            stats,
        }
    }
}
