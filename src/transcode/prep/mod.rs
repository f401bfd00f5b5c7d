//! Prepare: one file's job before any chunk runs — its job directory and
//! private record, the preflight (the options checked by one plain run of the
//! first frame), the plan of keyframe-aligned chunks, and `--dry-run`, which
//! stops there.

pub mod alike;
pub mod dry_run;
pub mod encoders;
pub mod job;
pub mod plan;
pub mod preflight;
pub mod prepare;
