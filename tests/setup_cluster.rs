//! `dffmpeg setup` on test hosts: prototype.

mod common;

use common::picluster::*;

fn inventory(c: &PiCluster, nodes: &[(&str, &str)]) -> String {
    let mut y = format!(
        "cluster:\n  shared_dir: {SHARED_DIR}\n  storage: nfs\n  apt_mirror: {}\ndefaults: {{ user: pi, become: true }}\nnodes:\n",
        c.mirror.url
    );
    for (name, roles) in nodes {
        let host = if *name == "pi3" { "local".to_string() } else { c.host(name).ip.clone() };
        y.push_str(&format!("  {name}: {{ host: {host}, roles: [{roles}] }}\n"));
    }
    y
}

#[test]
fn proto() {
    let c = PiCluster::new(
        "setit",
        91,
        &[
            Spec { name: "pi3", os: Os::RaspbianBookworm, kind: Kind::Controller, uid_offset: 0 },
            Spec { name: "pi2", os: Os::RaspbianBookworm, kind: Kind::Compute, uid_offset: 0 },
            Spec { name: "nuc", os: Os::DebianTrixie, kind: Kind::Compute, uid_offset: 1 },
        ],
    );
    c.write_inventory(&inventory(&c, &[("pi3", "controller, compute, storage"), ("pi2", "compute")]));
    let r = c.setup_ask_pass("");
    println!("{r}");
    let r = c.setup("");
    println!("{r}");
}
