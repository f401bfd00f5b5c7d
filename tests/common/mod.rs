#![allow(dead_code)]
pub mod media;
