//! Test support shared by the integration tests.
pub mod aptmirror;
pub mod lab;
pub mod media;
pub mod picluster;
pub mod run;
pub mod slurm;
pub mod vm;

/// ssh options for a login by password only (through SSH_ASKPASS), as a
/// stock Raspberry Pi OS user would have before `setup --ask-pass`: the
/// ones `setup --ask-pass` itself uses.
pub use dffmpeg::setup::password::PASSWORD_LOGIN;
/// An inventory node reached as `host`, with `roles`, defaults elsewhere.
pub fn test_node(
    name: &str,
    host: dffmpeg::inventory::Host,
    roles: Vec<dffmpeg::inventory::Role>,
) -> dffmpeg::inventory::Node {
    dffmpeg::inventory::Node {
        name: name.into(),
        host,
        port: 22,
        user: None,
        roles,
        slots: None,
        identity_file: None,
        become_root: false,
    }
}

/// An inventory of `nodes` with `storage: nfs` at /srv/dffmpeg, for setup
/// run in-process (no file: `source` names it in messages).
pub fn inventory(
    source: &str,
    apt_mirror: Option<&str>,
    nodes: Vec<dffmpeg::inventory::Node>,
) -> dffmpeg::inventory::Inventory {
    dffmpeg::inventory::Inventory {
        source: source.into(),
        cluster: dffmpeg::inventory::Cluster {
            shared_dir: "/srv/dffmpeg".into(),
            storage: dffmpeg::inventory::StorageMode::Nfs,
            apt_mirror: apt_mirror.map(str::to_string),
            watch: None,
            engine: Default::default(),
        },
        nodes,
    }
}
