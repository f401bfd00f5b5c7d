//! Report: what the user sees of a job — the events every stage sends, and
//! the printers for a terminal, plain lines and `--json`.

pub mod events;
pub mod progress;
