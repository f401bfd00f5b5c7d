//! The cluster description as dffmpeg uses it: the cluster, its nodes and
//! their roles (what `parse` builds from the inventory file).

use super::{parse, InventoryError};
use std::path::{Path, PathBuf};

/// `cluster.shared_dir` when the inventory does not set it.
pub const DEFAULT_SHARED_DIR: &str = "/srv/dffmpeg";

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
                shared_dir: PathBuf::from(DEFAULT_SHARED_DIR),
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
