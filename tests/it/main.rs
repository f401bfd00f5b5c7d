//! dffmpeg's integration tests: one test binary with a module per subject
//! (one link instead of one per file, and one set of helpers in `common`,
//! compiled once). Real ffmpeg, real sshd on test hosts (network
//! namespaces), real kernels in VMs.
//!
//! One subject: `cargo test --test it transcode_cluster::`; the VM test,
//! alone: `DFFMPEG_VM_TESTS=1 cargo test --test it vm_cluster:: -- --nocapture`.

mod common;

mod arm_cluster;
mod lab_smoke;
mod setup_bench;
mod setup_cluster;
mod setup_harden;
mod setup_local;
mod setup_order;
mod setup_slurm;
mod slurm_cluster;
mod ssh_transport;
mod status_page;
mod transcode_batch;
mod transcode_cluster;
mod transcode_dry_run;
mod transcode_encoders;
mod transcode_errors;
mod transcode_fidelity;
mod transcode_logs;
mod transcode_trust;
mod vm_cluster;
mod vm_smoke;
