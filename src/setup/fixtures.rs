//! Fixture tests of the embedded playbooks and templates: what each kind of
//! node gets, planned against a blank state, without any host.

use std::collections::BTreeMap;

use serde_json::Map;

use super::assets::Assets;
use super::context::tests::{inventory, node, three};
use super::context::{self, addresses};
use super::engine::{preview, NodeJob, Preview, Shared};
use super::modules::Change;
use super::play::{build_jobs, load_playbooks, Options};
use super::render::Renderer;
use super::report::{Reporter, Sink};
use super::state::{NodeState, UserEntry};
use crate::facts::Facts;
use crate::inventory::{Inventory, Role};

const MIRROR: &str = "http://198.18.41.1:8080";

fn facts(os_id: &str, codename: &str, dpkg_arch: &str) -> Facts {
    Facts {
        os_id: Some(os_id.into()),
        os_codename: Some(codename.into()).filter(|c: &String| !c.is_empty()),
        dpkg_arch: Some(dpkg_arch.into()),
        arch: match dpkg_arch {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            _ => "armv7l",
        }
        .into(),
        cores: 4,
        user: "pi".into(),
        home: "/home/pi".into(),
        ..Facts::default()
    }
}

fn sources(f: &Facts) -> Result<String, super::render::RenderError> {
    let inv = three();
    let r = Renderer::new(&Assets::embedded().templates).unwrap();
    let ctx = context::base(&inv, &inv.nodes[1], "pi", true, "", &addresses(&inv, || None), &Map::new());
    r.template("sources.list.j2", &context::with_facts(ctx, f))
}

const HEAD: &str = "# Managed by dffmpeg setup from http://198.18.41.1:8080: changes here are overwritten.\n";

#[test]
fn sources_raspbian_bookworm_armhf() {
    assert_eq!(
        sources(&facts("raspbian", "bookworm", "armhf")).unwrap(),
        format!("{HEAD}deb {MIRROR}/raspbian/raspbian/ bookworm main contrib non-free rpi\n")
    );
}

#[test]
fn sources_debian_bookworm_amd64() {
    let c = "main contrib non-free non-free-firmware";
    assert_eq!(
        sources(&facts("debian", "bookworm", "amd64")).unwrap(),
        format!(
            "{HEAD}deb {MIRROR}/debian bookworm {c}\ndeb {MIRROR}/debian bookworm-updates {c}\ndeb {MIRROR}/debian-security bookworm-security {c}\n"
        )
    );
}

#[test]
fn sources_debian_trixie_arm64() {
    let c = "main contrib non-free non-free-firmware";
    assert_eq!(
        sources(&facts("debian", "trixie", "arm64")).unwrap(),
        format!(
            "{HEAD}deb {MIRROR}/debian trixie {c}\ndeb {MIRROR}/debian trixie-updates {c}\ndeb {MIRROR}/debian-security trixie-security {c}\n"
        )
    );
}

#[test]
fn sources_debian_old_releases() {
    let c = "main contrib non-free";
    assert_eq!(
        sources(&facts("debian", "buster", "armhf")).unwrap(),
        format!(
            "{HEAD}deb {MIRROR}/debian buster {c}\ndeb {MIRROR}/debian buster-updates {c}\ndeb {MIRROR}/debian-security buster/updates {c}\n"
        )
    );
    assert!(sources(&facts("debian", "bullseye", "amd64"))
        .unwrap()
        .contains("debian-security bullseye-security main contrib non-free\n"));
}

#[test]
fn sources_ubuntu_noble_arm64_and_amd64() {
    let c = "main restricted universe multiverse";
    assert_eq!(
        sources(&facts("ubuntu", "noble", "arm64")).unwrap(),
        format!(
            "{HEAD}deb {MIRROR}/ubuntu-ports noble {c}\ndeb {MIRROR}/ubuntu-ports noble-updates {c}\ndeb {MIRROR}/ubuntu-ports noble-security {c}\n"
        )
    );
    assert!(sources(&facts("ubuntu", "noble", "amd64"))
        .unwrap()
        .starts_with(&format!("{HEAD}deb {MIRROR}/ubuntu noble {c}\n")));
}

#[test]
fn sources_unknown_os_or_codename_fail_clearly() {
    let e = sources(&facts("fedora", "40", "amd64")).unwrap_err().0;
    assert!(e.contains("no apt sources for OS fedora"), "{e}");
    let e = sources(&facts("debian", "", "amd64")).unwrap_err().0;
    assert!(e.contains("VERSION_CODENAME"), "{e}");
}

fn shared() -> (Shared, Sink) {
    let sink: Sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let assets = Assets::embedded();
    let sh = Shared {
        renderer: Renderer::new(&assets.templates).unwrap(),
        raw_templates: BTreeMap::new(),
        check: true,
        diff: true,
        reporter: Reporter::new(sink.clone(), false, true, &[]),
        storage: None,
    };
    (sh, sink)
}

fn jobs(inv: &Inventory, only: &[&str]) -> Vec<NodeJob> {
    let mut opts = Options::new(Assets::embedded());
    opts.only = only.iter().map(|s| s.to_string()).collect();
    let pbs = load_playbooks(&opts.assets).unwrap();
    let selected: Vec<_> = inv.nodes.iter().collect();
    // The controller reaches every node from 198.18.41.1.
    let from = |_: &crate::inventory::Node| Some("198.18.41.1".to_string());
    let keys =
        super::keys::KeyPlan { pubkey: "ssh-ed25519 AAAAC3Nza dffmpeg@ctl", wanted: true, from: &from };
    build_jobs(inv, &selected, &pbs, &opts, &keys, &addresses(inv, || None)).unwrap()
}

/// A fresh node: user pi, no packages, nothing of ours.
fn blank() -> NodeState {
    let mut st = NodeState { packages: Some(Default::default()), ..NodeState::default() };
    st.users.insert(
        "pi".into(),
        Some(UserEntry { name: "pi".into(), uid: 1000, gid: 1000, home: "/home/pi".into() }),
    );
    st
}

fn plan_of(job: &NodeJob, f: &Facts) -> Vec<(String, Preview)> {
    let (sh, _) = shared();
    preview(&sh, job, f, &blank())
}

fn changes<'a>(plan: &'a [(String, Preview)], task: &str) -> &'a [Change] {
    match plan.iter().find(|(n, _)| n == task) {
        Some((_, Preview::Changes(c))) => c,
        other => panic!("{task}: {other:?}\nplan: {plan:#?}"),
    }
}

fn written(plan: &[(String, Preview)], task: &str) -> String {
    let c = changes(plan, task);
    let d = c.iter().find_map(|c| c.diff.as_ref()).expect("a file change");
    String::from_utf8(d.after.clone()).unwrap()
}

#[test]
fn storage_node_exports_only_the_other_compute_nodes() {
    let inv = three();
    let jobs = jobs(&inv, &[]);
    let plan = plan_of(&jobs[0], &facts("raspbian", "bookworm", "armhf"));
    let exports = written(&plan, "NFS exports for the compute nodes");
    let ro = "(ro,sync,no_subtree_check,root_squash)";
    let rw = "(rw,sync,no_subtree_check,root_squash)";
    assert_eq!(
        exports,
        format!(
            "# Managed by dffmpeg setup: changes here are overwritten.\n/srv/dffmpeg/upload 198.18.41.11{ro} 198.18.41.20{ro}\n/srv/dffmpeg/work 198.18.41.11{rw} 198.18.41.20{rw}\n/srv/dffmpeg/output 198.18.41.11{ro} 198.18.41.20{ro}\n"
        )
    );
    assert!(!exports.contains('*') && !exports.contains("198.18.41.10") && !exports.contains("insecure"));
    let c = changes(&plan, "NFS exports for the compute nodes");
    assert!(c[0].script.contains("/etc/exports.d/dffmpeg.exports"));

    // The shared tree: group-owned, 2775, nothing world-writable.
    let g = changes(&plan, "shared group");
    assert_eq!(g[0].script, "groupadd --gid 2775 dffmpeg\n");
    assert_eq!(g[1].script, "usermod -a -G dffmpeg pi\n");
    for t in [
        "shared directory",
        "shared directory (upload)",
        "shared directory (work)",
        "shared directory (output)",
    ] {
        let s = &changes(&plan, t)[0].script;
        assert!(s.contains("chown root:dffmpeg") && s.contains("chmod 02775"), "{t}: {s}");
    }
    // No systemd in a blank state: the service task is skipped, not failed.
    assert!(matches!(plan.iter().find(|(n, _)| n == "NFS server running"), Some((_, Preview::Skip(_)))));
    // Packages: the controller's and the server's; no mounts on the storage node.
    assert_eq!(changes(&plan, "NFS server")[0].summary, "install nfs-kernel-server");
    assert_eq!(
        changes(&plan, "ffmpeg and ssh on the controller")[0].summary,
        "install ffmpeg openssh-client"
    );
    assert!(plan
        .iter()
        .filter(|(n, _)| n.starts_with("NFS mount"))
        .all(|(_, p)| matches!(p, Preview::Skip(_))));
    // The controller key for pi, restricted to the controller's address.
    let keys = written(&plan, "controller key in authorized_keys");
    assert_eq!(keys, "from=\"198.18.41.1\",restrict ssh-ed25519 AAAAC3Nza dffmpeg@ctl\n");
}

#[test]
fn compute_nodes_mount_from_fstab() {
    let inv = three();
    let jobs = jobs(&inv, &[]);
    let plan = plan_of(&jobs[1], &facts("raspbian", "bookworm", "armhf"));
    // An automount from the next boot on: a mount tried at boot while the
    // storage node is not serving yet fails for good (found in VMs).
    let opts = ",nosuid,nodev,_netdev,nofail,noatime,x-systemd.automount";
    let mut fstab = String::new();
    for (item, mode) in [("upload", "ro"), ("work", "rw"), ("output", "ro")] {
        let task = format!("NFS mount ({item})");
        let c = changes(&plan, &task);
        // Each task adds its line to the fstab as the previous ones left it.
        let d = c[0].diff.as_ref().unwrap();
        let before = String::from_utf8(d.before.clone().unwrap_or_default()).unwrap();
        assert_eq!(before, fstab, "{task}");
        fstab.push_str(&format!(
            "198.18.41.10:/srv/dffmpeg/{item} /srv/dffmpeg/{item} nfs {mode}{opts} 0 0\n"
        ));
        assert_eq!(String::from_utf8(d.after.clone()).unwrap(), fstab, "{task}");
        assert_eq!(c[1].summary, format!("mount /srv/dffmpeg/{item}"));
    }
    // systemd rereads the fstab (a handler of the mounts, only where systemd runs).
    let reload = jobs[1].handlers.iter().find(|h| h.name == "systemd daemon-reload").expect("handler");
    assert_eq!(reload.when.as_deref(), Some("facts.systemd"));
    for t in jobs[1].tasks.iter().filter(|t| t.name == "NFS mount") {
        assert_eq!(t.notify, ["systemd daemon-reload"]);
    }
    let r = Renderer::new(&Assets::embedded().templates).unwrap();
    for systemd in [true, false] {
        let f = Facts { systemd, ..facts("raspbian", "bookworm", "armhf") };
        let ctx = context::with_facts(jobs[1].ctx.clone(), &f);
        assert_eq!(r.truth("facts.systemd", &ctx).unwrap(), systemd);
    }
    assert_eq!(changes(&plan, "NFS client")[0].summary, "install nfs-common");
    assert_eq!(changes(&plan, "shared group")[0].script, "groupadd --gid 2775 dffmpeg\n");
    assert!(!plan.iter().any(|(n, _)| n.contains("exports")));
    // Raspbian sources for the Pi, then `apt update` as a handler.
    assert!(written(&plan, "apt sources from the cluster mirror").contains("/raspbian/raspbian/ bookworm"));
}

#[test]
fn an_x86_debian_node_gets_debian_sources() {
    let inv = three();
    let jobs = jobs(&inv, &[]);
    let plan = plan_of(&jobs[2], &facts("debian", "bookworm", "amd64"));
    let s = written(&plan, "apt sources from the cluster mirror");
    assert!(s.contains("/debian bookworm main") && s.contains("/debian-security bookworm-security"));
    assert!(!s.contains("raspbian"));
}

#[test]
fn no_mirror_leaves_sources_alone_and_ssh_storage_has_no_nfs() {
    let mut inv = three();
    inv.cluster.apt_mirror = None;
    inv.cluster.storage = crate::inventory::StorageMode::Ssh;
    let jobs = jobs(&inv, &[]);
    let plan = plan_of(&jobs[1], &facts("debian", "bookworm", "amd64"));
    for (n, p) in &plan {
        if n.starts_with("apt sources") || n.starts_with("NFS") || n.starts_with("distribution sources") {
            assert!(matches!(p, Preview::Skip(_)), "{n}: {p:?}");
        }
    }
}

#[test]
fn only_selects_steps() {
    let inv = three();
    let jobs = jobs(&inv, &["mounts", "ssh-keys"]);
    let plan = plan_of(&jobs[1], &facts("debian", "bookworm", "amd64"));
    let names: Vec<&str> = plan.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "controller key in authorized_keys",
            "shared group",
            "shared directory mount point",
            "NFS mount (upload)",
            "NFS mount (work)",
            "NFS mount (output)"
        ]
    );
}

#[test]
fn a_local_compute_node_needs_an_address_for_the_exports() {
    use Role::*;
    let inv = inventory(vec![
        node("me", "local", &[Controller, Compute]),
        node("st", "198.18.41.10", &[Storage, Compute]),
    ]);
    let js = jobs(&inv, &["exports"]);
    let plan = plan_of(&js[1], &facts("debian", "bookworm", "amd64"));
    match plan.iter().find(|(n, _)| n == "NFS exports for the compute nodes") {
        Some((_, Preview::Fail(m))) => {
            assert!(m.contains("no address for compute node(s) me"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_watch_service_runs_dffmpeg_as_the_controllers_user() {
    let mut inv = three();
    let f = facts("raspbian", "bookworm", "armhf");
    // Without `cluster.watch`: nothing.
    let plan = plan_of(&jobs(&inv, &[])[0], &f);
    assert!(matches!(plan.iter().find(|(n, _)| n == "watch service"), Some((_, Preview::Skip(_)))));
    inv.cluster.watch = Some(crate::inventory::Watch {
        input: "/srv/dffmpeg/upload".into(),
        output: "/srv/dffmpeg/output".into(),
        args: vec!["-c:v".into(), "libx264".into(), "-metadata".into(), "title=50% \"$HOME\"".into()],
        http: None,
    });
    let mut opts = Options::new(Assets::embedded());
    let w = inv.cluster.watch.clone().unwrap();
    let line = [
        "/usr/bin/dffmpeg",
        "transcode",
        "--watch",
        "-O",
        "/srv/dffmpeg/output",
        "/srv/dffmpeg/upload",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(w.args.iter().cloned())
    .map(|s| crate::quote::systemd(&s))
    .collect::<Vec<_>>()
    .join(" ");
    opts.vars.insert("watch_exec".into(), serde_json::Value::String(line));
    opts.vars.insert("watch_paths".into(), serde_json::Value::String(super::watch::watch_paths(&inv, &w)));
    let pbs = load_playbooks(&opts.assets).unwrap();
    let selected: Vec<_> = inv.nodes.iter().collect();
    let from = |_: &crate::inventory::Node| Some("198.18.41.1".to_string());
    let keys =
        super::keys::KeyPlan { pubkey: "ssh-ed25519 AAAAC3Nza dffmpeg@ctl", wanted: true, from: &from };
    let jobs = build_jobs(&inv, &selected, &pbs, &opts, &keys, &addresses(&inv, || None)).unwrap();
    let plan = plan_of(&jobs[0], &f);
    let unit = written(&plan, "watch service");
    assert!(unit.contains("\nUser=pi\n"), "{unit}");
    // systemd's quoting: % and $ doubled, quotes escaped.
    assert!(unit.contains(r#""-metadata" "title=50%% \"$$HOME\"""#), "{unit}");
    assert!(unit.contains(r#"ExecStart="/usr/bin/dffmpeg" "transcode" "--watch""#), "{unit}");
    // Hardened: it writes only its home, the output folder and the shared directory.
    for line in ["NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict", "UMask=0022"] {
        assert!(unit.contains(&format!("\n{line}\n")), "{line}: {unit}");
    }
    assert!(unit.contains(r#"ReadWritePaths="-/home/pi" "-/srv/dffmpeg/output""#), "{unit}");
    assert!(changes(&plan, "watch service")[0].script.contains("/etc/systemd/system/dffmpeg-watch.service"));
    // A compute-only node runs no watch service.
    assert!(plan_of(&jobs[1], &f).iter().all(|(n, _)| n != "watch service"));
}
