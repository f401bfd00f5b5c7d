//! Run: the chunks on the cluster — connecting the nodes, the broker and its
//! pure scheduler, one attempt on a node, verifying what it wrote, the speeds
//! remembered for the next job and the logs of failed attempts.

pub mod chunk_log;
pub mod cluster;
pub mod context;
pub mod dispatch;
pub mod encode;
pub mod failure;
pub mod scheduler;
pub mod speeds;
pub mod verify;
