//! The inventory's rules, each error checked at its line and column.

use std::path::PathBuf;

use super::*;

const GOOD: &str = "\
cluster:
  shared_dir: /srv/dffmpeg
  storage: nfs
defaults: { user: pi, port: 22, become: true }
nodes:
  pi3:    { host: 192.168.1.10, roles: [controller, compute, storage] }
  pi2-a:  { host: 192.168.1.11, roles: [compute] }
  nuc:    { host: 192.168.1.20, user: me, roles: [compute], slots: 4 }
";

/// Parse `text`, expect an error, return (line, column, message).
fn error(text: &str) -> (usize, usize, String) {
    match parse(text, "inv.yaml") {
        Ok(inv) => panic!("expected an error, parsed {inv:?}"),
        Err(InventoryError::At(yaml::Error { file, line, column, message })) => {
            assert_eq!(file, "inv.yaml");
            (line, column, message)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn assert_error(text: &str, line: usize, column: usize, needle: &str) {
    let (l, c, m) = error(text);
    assert!(m.contains(needle), "message {m:?} does not contain {needle:?}");
    assert_eq!((l, c), (line, column), "location of {m:?}");
}

#[test]
fn the_design_example_parses() {
    let inv = parse(GOOD, "inv.yaml").unwrap();
    assert_eq!(inv.source, "inv.yaml");
    assert_eq!(inv.cluster.storage, StorageMode::Nfs);
    assert_eq!(inv.cluster.shared_dir, PathBuf::from("/srv/dffmpeg"));
    assert_eq!(inv.nodes.len(), 3);
    let pi3 = &inv.nodes[0];
    assert_eq!(pi3.name, "pi3");
    assert_eq!(pi3.host, Host::Remote("192.168.1.10".into()));
    assert_eq!(pi3.user.as_deref(), Some("pi"));
    assert!(pi3.become_root);
    assert_eq!(pi3.slots, None);
    assert_eq!(inv.controller().name, "pi3");
    assert_eq!(inv.storage_node().map(|n| n.name.as_str()), Some("pi3"));
    let nuc = inv.node("nuc").unwrap();
    assert_eq!(nuc.user.as_deref(), Some("me"));
    assert_eq!(nuc.slots, Some(4));
    assert_eq!(nuc.port, 22);
    assert_eq!(inv.compute_nodes().count(), 3);
}

#[test]
fn the_example_file_parses() {
    let text = include_str!("../../inventory.example.yaml");
    let inv = parse(text, "inventory.example.yaml").unwrap();
    assert_eq!(inv.cluster.storage, StorageMode::Nfs);
    assert_eq!(inv.cluster.apt_mirror, None);
    let names: Vec<_> = inv.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["pi3", "pi2"]);
    assert_eq!(inv.controller().host, Host::Remote("192.168.1.10".into()));
    assert_eq!(inv.node("pi2").unwrap().roles, vec![Role::Compute], "pi2 only computes");
    assert!(inv.nodes.iter().all(|n| n.user.as_deref() == Some("pi")));
    // The commented x86 node is valid once uncommented.
    let uncommented: String = text
        .lines()
        .map(|l| {
            l.strip_prefix("  # ")
                .filter(|r| r.starts_with("nuc:") || r.starts_with("watch:") || r.starts_with("  "))
                .map(|r| format!("  {r}"))
                .unwrap_or_else(|| l.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n");
    let inv = parse(&uncommented, "x.yaml").unwrap();
    let nuc = inv.node("nuc").expect("nuc uncommented");
    assert_eq!(nuc.user.as_deref(), Some("me"));
    let watch = inv.cluster.watch.as_ref().expect("watch uncommented");
    assert_eq!(watch.input, PathBuf::from("/srv/dffmpeg/upload"));
    assert_eq!(watch.args, ["-c:v", "libx264", "-crf", "23", "-c:a", "aac"]);
    assert_eq!(watch.http, Some(([127, 0, 0, 1], 8080).into()));
    assert_eq!(nuc.slots, Some(4));
    // `~/` is expanded when the inventory is read, for every command.
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    assert_eq!(nuc.identity_file, Some(home.join(".ssh/id_ed25519")));
}

#[test]
fn identity_file_tilde() {
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    assert_eq!(expand_home("~/k").unwrap(), home.join("k"));
    assert_eq!(expand_home("~").unwrap(), home);
    assert_eq!(expand_home("/abs/k").unwrap(), PathBuf::from("/abs/k"));
    assert_eq!(expand_home("rel/~/k").unwrap(), PathBuf::from("rel/~/k"));
    assert_error(
        "nodes:\n  a: { roles: [controller, compute], identity_file: ~bob/k }\n",
        2,
        53,
        "only `~/` is expanded",
    );
}

#[test]
fn hosts_are_names_or_addresses() {
    for ok in ["192.168.1.10", "fe80::1", "::1", "pi2", "pi2.lan", "my_box.local.", "a-b.c-d", "10.0.0.1"] {
        assert!(is_host_name_or_address(ok), "{ok}");
        let text = format!("nodes:\n  a: {{ host: '{ok}', roles: [controller, compute] }}\n");
        assert_eq!(parse(&text, "i").unwrap().nodes[0].host, Host::Remote(ok.into()));
    }
    for bad in ["-x", "a b", "*", "a(rw)", "h,i", "x.-y", "y-.z", "a..b", "[::1]", "h:22", "$(id)", "a/b", ""]
    {
        assert!(!is_host_name_or_address(bad), "{bad:?}");
    }
    for bad in ["'*'", "'10.0.0.0/8'", "'pi2(rw,insecure)'", "'a,b'", "'-oProxyCommand=x'"] {
        let text = format!("nodes:\n  a: {{ host: {bad}, roles: [controller, compute] }}\n");
        let (_, _, m) = error(&text);
        assert!(m.contains("not a host name or an IP address") || m.contains("not starting with `-`"), "{m}");
    }
    // A node without `host:` is reached by its name: the name must be one.
    assert_error(
        "nodes:\n  -oProxyCommand=x: { roles: [controller, compute] }\n",
        2,
        3,
        "not starting with `-`",
    );
    assert_error("nodes:\n  'a.-b': { roles: [controller, compute] }\n", 2, 3, "has no `host:`");
    parse("nodes:\n  'a.-b': { host: 10.0.0.1, roles: [controller, compute] }\n", "i").unwrap();
}

#[test]
fn defaults_and_choices() {
    let inv = parse("nodes:\n  here: { host: local, roles: [controller, compute] }\n", "i").unwrap();
    assert_eq!(inv.cluster.storage, StorageMode::Ssh, "no storage node");
    assert_eq!(inv.cluster.shared_dir, PathBuf::from(DEFAULT_SHARED_DIR));
    let n = &inv.nodes[0];
    assert_eq!(n.host, Host::Local);
    assert_eq!((n.port, n.user.clone(), n.become_root), (22, None, false));

    // storage omitted but a storage node exists: nfs.
    let inv = parse(
        "nodes:\n  a: { roles: [controller, compute, storage] }\n  b: { port: 2222, roles: compute }\n",
        "i",
    )
    .unwrap();
    assert_eq!(inv.cluster.storage, StorageMode::Nfs);
    // host defaults to the node name; a single role needs no brackets.
    assert_eq!(inv.nodes[0].host, Host::Remote("a".into()));
    assert_eq!(inv.nodes[1].roles, vec![Role::Compute]);
    assert_eq!(inv.nodes[1].port, 2222);

    // ssh storage with a storage node is allowed; quoted port works.
    let inv = parse(
        "cluster: { storage: ssh, apt_mirror: 'https://deb.debian.org/' }\ndefaults: { port: '2200', slots: 2, identity_file: ~/.ssh/k }\nnodes:\n  a: { host: 10.0.0.1, roles: [controller, compute, storage] }\n",
        "i",
    )
    .unwrap();
    assert_eq!(inv.cluster.storage, StorageMode::Ssh);
    assert_eq!(inv.cluster.apt_mirror.as_deref(), Some("https://deb.debian.org"));
    assert_eq!(inv.nodes[0].port, 2200);
    assert_eq!(inv.nodes[0].slots, Some(2));
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    assert_eq!(inv.nodes[0].identity_file, Some(home.join(".ssh/k")));
}

#[test]
fn same_host_on_other_ports_is_two_machines() {
    parse(
        "nodes:\n  a: { host: h, roles: [controller, compute] }\n  b: { host: h, port: 2222, roles: [compute] }\n",
        "i",
    )
    .unwrap();
}

#[test]
fn bad_yaml() {
    assert_error(
        "nodes:\n  a: { host: h, roles: [controller, compute }\n",
        2,
        24,
        "invalid YAML: mismatched bracket",
    );
    assert_error("nodes:\n  a: b\n  c\n", 3, 3, "invalid YAML");
    assert_error("nodes:\n\ta: 1\n", 2, 2, "invalid YAML: tabs");
}

#[test]
fn duplicate_node_name_is_a_yaml_error() {
    assert_error(
        "nodes:\n  a: { roles: [controller, compute] }\n  a: { roles: [compute] }\n",
        3,
        3,
        "duplicate key `a`",
    );
}

#[test]
fn empty_or_not_a_mapping() {
    assert_error("", 1, 1, "the inventory is empty");
    assert_error("- a\n- b\n", 1, 1, "must be a mapping");
    assert_error("cluster: {}\n", 1, 1, "no `nodes:` section");
    assert_error("nodes:\n", 1, 1, "`nodes` is empty");
    assert_error("nodes: [a, b]\n", 1, 8, "`nodes` must be a mapping");
}

#[test]
fn unknown_keys_suggest_the_closest() {
    assert_error(
        "nodes:\n  pi3:\n    hots: 1.2.3.4\n    roles: [controller, compute]\n",
        3,
        5,
        "unknown key `hots` in node `pi3`; did you mean `host`?",
    );
    assert_error("node:\n  a: {}\n", 1, 1, "unknown key `node` at the top level; did you mean `nodes`?");
    assert_error(
        "cluster:\n  shareddir: /x\nnodes: {}\n",
        2,
        3,
        "unknown key `shareddir` in `cluster`; did you mean `shared_dir`?",
    );
    assert_error(
        "defaults: { usr: pi }\nnodes: {}\n",
        1,
        13,
        "unknown key `usr` in `defaults`; did you mean `user`?",
    );
    assert_error("nodes:\n  a: { hostname: x, roles: [compute] }\n", 2, 8, "did you mean `host`?");
    assert_error(
        "nodes:\n  a: { zzzzzz: x, roles: [compute] }\n",
        2,
        8,
        "unknown key `zzzzzz` in node `a`; expected one of: host, port, user, roles, slots, identity_file, become",
    );
    assert_error("defaults: { roles: [compute] }\nnodes: {}\n", 1, 13, "`roles` cannot have a default");
}

#[test]
fn unknown_role() {
    assert_error(
        "nodes:\n  a: { roles: [controller, comptue] }\n",
        2,
        28,
        "unknown role `comptue` in node `a`; did you mean `compute`?",
    );
    assert_error(
        "nodes:\n  a: { roles: [boss] }\n",
        2,
        16,
        "unknown role `boss` in node `a`; expected one of: controller, compute, storage",
    );
    assert_error("nodes:\n  a: { roles: [] }\n", 2, 15, "empty `roles` list");
    assert_error("nodes:\n  a: { host: x }\n", 2, 3, "node `a` has no `roles`");
}

#[test]
fn controller_rules() {
    assert_error("nodes:\n  a: { roles: [compute] }\n", 1, 1, "no controller");
    assert_error(
        "nodes:\n  a: { roles: [controller, compute] }\n  b:\n    roles:\n      - compute\n      - controller\n",
        6,
        9,
        "two controllers: `a` and `b`",
    );
}

#[test]
fn storage_rules() {
    assert_error(
        "cluster:\n  storage: nfs\nnodes:\n  a: { roles: [controller, compute] }\n",
        2,
        12,
        "`storage: nfs` needs a storage node",
    );
    assert_error(
        "nodes:\n  a: { roles: [controller, storage] }\n  b: { roles: [compute, storage] }\n",
        3,
        25,
        "two storage nodes: `a` and `b`",
    );
    assert_error(
        "cluster: { storage: nsf }\nnodes: {}\n",
        1,
        21,
        "unknown storage `nsf`; did you mean `nfs`?",
    );
}

#[test]
fn slurm_engine() {
    let inv = parse(
        "cluster:\n  engine: slurm\n  partition: video\n  account: lab-1\n  shared_dir: /shared/dffmpeg\nnodes:\n  me: { host: local, roles: [controller] }\n",
        "i",
    )
    .unwrap();
    let spec = SlurmSpec { partition: "video".into(), account: Some("lab-1".into()), qos: None };
    assert_eq!(inv.cluster.engine, Engine::Slurm(spec));
    // Shared storage without a storage node (the Slurm cluster's own),
    // and no compute node in the inventory (the partition has them).
    assert_eq!(inv.cluster.storage, StorageMode::Nfs);
    assert_eq!(inv.shared_dir(), Some(PathBuf::from("/shared/dffmpeg")));
    assert_eq!(inv.compute_nodes().count(), 0);
    // The default is today's engine.
    let inv = parse("nodes:\n  a: { host: local, roles: [controller, compute] }\n", "i").unwrap();
    assert_eq!(inv.cluster.engine, Engine::Ssh);
    let inv =
        parse("cluster: { engine: ssh }\nnodes:\n  a: { host: local, roles: [controller, compute] }\n", "i")
            .unwrap();
    assert_eq!(inv.cluster.engine, Engine::Ssh);
}

#[test]
fn slurm_engine_errors() {
    let me = "nodes:\n  me: { host: local, roles: [controller] }\n";
    assert_error(
        &format!("cluster: {{ engine: slrum }}\n{me}"),
        1,
        20,
        "unknown engine `slrum`; did you mean `slurm`?",
    );
    assert_error(&format!("cluster: {{ engine: slurm }}\n{me}"), 1, 20, "needs `partition:`");
    assert_error(
        &format!("cluster: {{ partition: video }}\n{me}"),
        1,
        12,
        "`partition` is for `engine: slurm`",
    );
    assert_error(
        &format!("cluster: {{ engine: slurm, partition: video, storage: ssh }}\n{me}"),
        1,
        54,
        "`engine: slurm` needs shared storage",
    );
    assert_error(
        &format!("cluster: {{ engine: slurm, partition: '-p x' }}\n{me}"),
        1,
        38,
        "not a Slurm name",
    );
    assert_error(
        &format!("cluster: {{ engine: slurm, partition: v, qos: 'a b' }}\n{me}"),
        1,
        46,
        "`qos: a b` is not a Slurm name",
    );
    assert_error(
        &format!("cluster: {{ engine: slurm, partiton: v }}\n{me}"),
        1,
        27,
        "did you mean `partition`?",
    );
    // Still one storage node at most.
    assert_error(
        "cluster: { engine: slurm, partition: v }\nnodes:\n  a: { host: local, roles: [controller, storage] }\n  b: { roles: [storage] }\n",
        4,
        16,
        "two storage nodes",
    );
    // Without slurm, a compute node is still needed.
    assert_error(me, 1, 1, "no compute node");
}

#[test]
fn no_compute_node() {
    assert_error("nodes:\n  a: { roles: [controller, storage] }\n", 1, 1, "no compute node");
}

#[test]
fn duplicate_hosts() {
    assert_error(
        "nodes:\n  a: { host: 10.0.0.1, roles: [controller, compute] }\n  b: { host: 10.0.0.1, roles: [compute] }\n",
        3,
        14,
        "duplicate host: node `b` is the same machine as node `a` (10.0.0.1:22)",
    );
    // Same host through defaults.port and an explicit 22.
    assert_error(
        "nodes:\n  a: { host: H, roles: [controller, compute] }\n  b: { host: h, port: 22, roles: [compute] }\n",
        3,
        14,
        "duplicate host",
    );
    // The node name is the host when `host` is left out.
    assert_error(
        "nodes:\n  pi: { roles: [controller, compute] }\n  pi2: { host: pi, roles: [compute] }\n",
        3,
        16,
        "same machine as node `pi`",
    );
    assert_error(
        "nodes:\n  a: { host: local, roles: [controller] }\n  b: { host: local, port: 2, roles: [compute] }\n",
        3,
        14,
        "(local)",
    );
}

#[test]
fn bad_ports() {
    for port in ["0", "65536", "abc", "-1", "2.5"] {
        let text = format!("nodes:\n  a: {{ roles: [compute], port: {port} }}\n");
        assert_error(&text, 2, 32, &format!("bad port `{port}`"));
    }
    assert_error(
        "defaults:\n  port: 99999\nnodes: {}\n",
        2,
        9,
        "bad port `99999`: a port is a number from 1 to 65535",
    );
    assert_error("nodes:\n  a: { roles: [compute], port: [22] }\n", 2, 32, "bad port `a list`");
}

#[test]
fn the_status_page_address() {
    let at = |http: &str| {
        let text = format!(
            "cluster:\n  watch: {{ http: {http} }}\nnodes:\n  a: {{ roles: [controller, compute] }}\n"
        );
        parse(&text, "x.yaml").map(|i| i.cluster.watch.and_then(|w| w.http).map(|a| a.to_string()))
    };
    assert_eq!(at("127.0.0.1:8080").unwrap().as_deref(), Some("127.0.0.1:8080"));
    assert_eq!(at("8080").unwrap().as_deref(), Some("127.0.0.1:8080"), "a port alone: loopback");
    assert_eq!(at("'[::1]:8081'").unwrap().as_deref(), Some("[::1]:8081"));
    assert_eq!(at("0.0.0.0:80").unwrap().as_deref(), Some("0.0.0.0:80"), "the operator's choice");
    for bad in ["localhost:8080", "127.0.0.1", "127.0.0.1:0", "0", "'1.2.3.4:99999'"] {
        let text = format!(
            "cluster:\n  watch: {{ http: {bad} }}\nnodes:\n  a: {{ roles: [controller, compute] }}\n"
        );
        assert_error(&text, 2, 18, "must be an IP address and a port, e.g. 127.0.0.1:8080");
    }
}

#[test]
fn bad_slots() {
    assert_error(
        "nodes:\n  a: { roles: [controller, compute], slots: 0 }\n",
        2,
        45,
        "a node needs at least 1 slot",
    );
    assert_error("nodes:\n  a: { roles: [controller, compute], slots: many }\n", 2, 45, "bad `slots: many`");
}

#[test]
fn bad_node_names() {
    assert_error("nodes:\n  '': { roles: [controller, compute] }\n", 2, 3, "empty node name");
    assert_error("nodes:\n  'a,b': { roles: [controller, compute] }\n", 2, 3, "bad node name `a,b`");
}

#[test]
fn bad_values() {
    assert_error(
        "nodes:\n  a: { host: -oProxyCommand=x, roles: [compute] }\n",
        2,
        14,
        "not starting with `-`",
    );
    assert_error("nodes:\n  a: { host: pi@h, roles: [compute] }\n", 2, 14, "put the user name in `user:`");
    assert_error("nodes:\n  a: { host: , roles: [compute] }\n", 2, 12, "`host` needs a value");
    assert_error(
        "nodes:\n  a: { become: maybe, roles: [compute] }\n",
        2,
        16,
        "`become` must be true or false",
    );
    assert_error("cluster: { shared_dir: srv }\nnodes: {}\n", 1, 24, "must be an absolute path");
    assert_error(
        "cluster: { apt_mirror: ftp.debian.org }\nnodes: {}\n",
        1,
        24,
        "must be an http:// or https:// URL",
    );
    assert_error("nodes:\n  a: [compute]\n", 2, 6, "node `a` must be a mapping");
}

#[test]
fn error_display_is_file_line_column() {
    let e = parse("nodes:\n  a: { roles: [compute] }\n", "dir/inv.yaml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "dir/inv.yaml:1:1: no controller: add `controller` to the roles of exactly one node (the machine that runs dffmpeg)"
    );
}
