//! Test support shared by the integration tests (`mod common;`).
//!
//! * [`lab`]: test hosts on this machine (network namespace + overlay root + own sshd).
//! * [`aptmirror`]: a small signed apt mirror holding the NFS packages.
//!
//! Everything here needs root.
#![allow(dead_code)]

pub mod aptmirror;
pub mod lab;
