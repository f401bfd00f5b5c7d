//! `dffmpeg facts`: what each node is and has.

use crate::cli::FactsArgs;
use crate::exit::{usage, Outcome};

pub async fn run(_args: FactsArgs) -> Outcome {
    Err(usage(anyhow::anyhow!("facts: not implemented yet")))
}
