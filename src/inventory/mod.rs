//! The cluster description: read from the inventory YAML, every rule
//! checked before any node is touched. This folder owns the model
//! (`model`: cluster, nodes, roles), the positioned YAML reader every
//! configuration file goes through (`yaml`: values with line and column,
//! did-you-mean), building the model (`parse`) and the inventory's rules
//! (`rules`: values, and what must hold across the nodes).

mod model;
mod parse;
mod rules;
#[cfg(test)]
mod tests;
pub mod yaml;

pub use model::*;
pub use parse::parse;
pub use rules::{expand_home, is_host_name_or_address, HomeError};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    /// `file:line:column: message`
    #[error(transparent)]
    At(yaml::Error),
}
