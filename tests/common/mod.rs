#![allow(dead_code)]
//! Test support shared by the integration tests.
pub mod aptmirror;
pub mod lab;
pub mod media;
pub mod picluster;
pub mod vm;
