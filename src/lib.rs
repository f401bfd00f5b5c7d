//! dffmpeg: distributed ffmpeg over a small cluster of spare machines.

pub mod cli;
pub mod exit;
pub mod facts;
pub mod inventory;
pub mod log;
pub mod manpages;
pub mod process;
pub mod quote;
pub mod remote;
pub mod safefs;
pub mod setup;
pub mod signals;
pub mod state;
pub mod status;
pub mod text;
pub mod transcode;
