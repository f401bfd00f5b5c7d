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
        self.nodes
            .iter()
            .find(|n| n.has(Role::Controller))
            .expect("validated inventory has a controller")
    }

    pub fn compute_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.has(Role::Compute))
    }

    pub fn storage_node(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.has(Role::Storage))
    }

    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| InventoryError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        parse(&text, &path.display().to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `file:line:column: message`
    #[error("{file}:{line}:{column}: {message}")]
    At {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Parse and validate an inventory. `file` is used in error messages.
pub fn parse(_text: &str, file: &str) -> Result<Inventory, InventoryError> {
    Err(InventoryError::At {
        file: file.into(),
        line: 1,
        column: 1,
        message: "inventory parsing is not implemented yet".into(),
    })
}
