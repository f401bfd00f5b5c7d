//! `meta: wait_for_storage` without hosts: two nodes on this machine
//! (`Local`), a slow storage node and a compute node that mounts after it.
//! The compute node's tasks after the wait see what the storage node made;
//! when the storage node fails, they fail at once instead of being tried
//! (what is already right stays ok); a single fork cannot deadlock.

use std::path::Path;
use std::sync::{Arc, Mutex};

use dffmpeg::inventory::{Host, Inventory, Role};
use dffmpeg::remote::local::Local;
use dffmpeg::setup::assets::Assets;
use dffmpeg::setup::report::Sink;
use dffmpeg::setup::{play_cluster, Options, Summary};
use serde_json::Value as Json;

/// The storage node takes a while (or fails), then makes `export`.
const STORAGE: &str = r#"
tasks:
  - name: slow export
    step: exports
    command:
      argv: [sh, -c, 'sleep 0.5; if [ -e "$1/break" ]; then echo broken >&2; exit 1; fi; touch "$1/export"', sh, "{{ vars.root }}"]
      creates: "{{ vars.root }}/export"
"#;

/// The compute node: something before the wait, then one task that is
/// already right and one that needs the export.
const COMPUTE: &str = r#"
tasks:
  - name: before
    step: packages
    copy: { content: "x\n", dest: "{{ vars.root }}/before" }
  - meta: wait_for_storage
  - name: already right
    step: mounts
    copy: { content: "same\n", dest: "{{ vars.root }}/same" }
  - name: mount
    step: mounts
    command: { argv: [sh, -c, 'test -e "$1/export" && touch "$1/mounted"', sh, "{{ vars.root }}"], creates: "{{ vars.root }}/mounted" }
"#;

fn inventory() -> Inventory {
    let node = |name: &str, roles: Vec<Role>| crate::common::test_node(name, Host::Local, roles);
    // The compute node first: it must still wait.
    let nodes = vec![node("c1", vec![Role::Compute]), node("st", vec![Role::Controller, Role::Storage])];
    crate::common::inventory("order test", None, nodes)
}

async fn run(root: &Path, forks: usize) -> (Summary, String) {
    let mut assets = Assets::embedded();
    assets.playbooks.clear();
    assets.playbooks.insert("storage.yaml".into(), ("storage.yaml".into(), STORAGE.into()));
    assets.playbooks.insert("compute.yaml".into(), ("compute.yaml".into(), COMPUTE.into()));
    let mut opts = Options::new(assets);
    opts.vars.insert("root".into(), Json::String(root.display().to_string()));
    opts.pubkey = Some(String::new());
    opts.forks = forks;
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    opts.sink = buf.clone() as Sink;
    let nodes = vec![("c1".to_string(), Ok(Local::new("c1"))), ("st".to_string(), Ok(Local::new("st")))];
    let summary =
        tokio::time::timeout(std::time::Duration::from_secs(20), play_cluster(&inventory(), nodes, opts))
            .await
            .expect("no deadlock")
            .unwrap_or_else(|f| panic!("exit {}", f.code()));
    let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    (summary, out)
}

#[tokio::test]
async fn compute_nodes_mount_after_the_storage_node_even_with_one_fork() {
    for forks in [5, 1] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("same"), "same\n").unwrap();
        let (s, out) = run(dir.path(), forks).await;
        assert!(s.failed.is_empty(), "forks {forks}:\n{out}");
        assert!(dir.path().join("mounted").exists(), "{out}");
        // gather facts and "already right" ok; "before" and "mount" changed.
        assert_eq!((s.recaps["c1"].changed, s.recaps["c1"].ok), (2, 2), "{out}");
        // Before the wait, the compute node did not wait (with forks).
        if forks > 1 {
            let before = out.find("changed: [c1] before").unwrap();
            let export = out.find("changed: [st] slow export").unwrap();
            assert!(before < export, "{out}");
        }
    }
}

#[tokio::test]
async fn when_the_storage_node_fails_the_mounts_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("break"), "").unwrap();
    std::fs::write(dir.path().join("same"), "same\n").unwrap();
    let (s, out) = run(dir.path(), 5).await;
    assert_eq!(s.failed, vec!["c1".to_string(), "st".to_string()], "{out}");
    assert!(out.contains("failed: [st] slow export"), "{out}");
    assert!(out.contains("failed: [c1] mount => not done: the storage node st failed in this run"), "{out}");
    assert!(!dir.path().join("mounted").exists());
    assert!(out.contains("ok: [c1] already right"), "{out}");
    assert_eq!(s.recaps["c1"].failed, 1, "{out}");
    // The ready --limit value names both.
    assert!(out.trim_end().ends_with("--limit c1,st"), "{out}");
}
