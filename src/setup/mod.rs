//! `dffmpeg setup`: Ansible-like bring-up of the cluster.

use crate::cli::SetupArgs;
use crate::exit::{usage, Outcome};

pub async fn run(_args: SetupArgs) -> Outcome {
    Err(usage(anyhow::anyhow!("setup: not implemented yet")))
}
