//! TEMPORARY stand-in for the shared test harness (`tests/common/`), which is
//! being written on the `lab` branch. Only the part of its API that
//! `tests/ssh_transport.rs` uses, implemented on `../shared/tools/lab.sh`.
//! Delete this directory when the real harness lands on main.
#![allow(dead_code)]

pub mod lab;
