//! `dffmpeg transcode`: probe → plan → split → dispatch → verify → merge.

use crate::cli::TranscodeArgs;
use crate::exit::{usage, Outcome};

pub async fn run(_args: TranscodeArgs) -> Outcome {
    Err(usage(anyhow::anyhow!("transcode: not implemented yet")))
}
