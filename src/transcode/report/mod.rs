//! Report: what the user sees of a job — the events every stage sends
//! (`events`, with the results they carry), and the reporter (`progress`)
//! that hands each to one sink per output mode (`plain`, `bars`, `json`,
//! as ripgrep's printers) and to the log file (`sink`), with the lines
//! that tell it (`lines`) and the running count (`tally`).

pub mod events;
pub mod progress;

mod bars;
mod json;
mod lines;
mod plain;
mod sink;
mod tally;
