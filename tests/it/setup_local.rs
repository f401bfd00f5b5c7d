//! Whole plays against this machine (`remote::local::Local`), every target
//! under a temporary root (`vars.root`): first run changes, second run
//! `changed=0`, check mode touches nothing, drift is found and repaired.

use std::path::Path;
use std::sync::{Arc, Mutex};

use dffmpeg::inventory::{Host, Inventory, Role};
use dffmpeg::remote::local::Local;
use dffmpeg::setup::assets::Assets;
use dffmpeg::setup::report::Sink;
use dffmpeg::setup::{play_cluster, Options, Summary};
use serde_json::Value as Json;

const PLAYBOOK: &str = r#"
tasks:
  - name: shared dir
    step: exports
    file: { path: "{{ vars.root }}/srv", state: directory, mode: "2775" }
  - name: sub
    step: exports
    loop: [upload, work]
    file: { path: "{{ vars.root }}/srv/{{ item }}", state: directory, mode: "0755" }
  - name: sources
    step: apt-sources
    template: { src: sources.list.j2, dest: "{{ vars.root }}/sources.list", mode: "0644" }
    notify: sources changed
  - name: exports
    step: exports
    template: { src: exports.j2, dest: "{{ vars.root }}/exports", mode: "0644" }
  - name: note
    step: exports
    copy: { content: "hello {{ node.name }} on {{ facts.os_id }}\n", dest: "{{ vars.root }}/srv/note.txt", mode: "0640" }
  - name: never
    step: exports
    when: node.name == 'nobody'
    copy: { content: "x", dest: "{{ vars.root }}/never" }
  - name: make once
    step: packages
    command: { argv: [touch, "{{ vars.root }}/made once"], creates: "{{ vars.root }}/made once" }
  - name: query only
    step: packages
    command: { argv: ["true"], changed_when: false }
  - name: coreutils
    step: packages
    apt: { name: coreutils }
  - name: key
    step: ssh-keys
    authorized_key: { user: "{{ node.user }}", key: "{{ controller.pubkey }}", path: "{{ vars.root }}/ssh/authorized_keys" }
  - name: fstab entry
    step: mounts
    mount: { src: "st:/srv/x", path: "{{ vars.root }}/mnt dir", fstype: nfs, opts: "ro,_netdev,nofail", state: present, fstab: "{{ vars.root }}/fstab" }
handlers:
  - name: sources changed
    command: { argv: [sh, -c, 'echo ran >> "$1"', sh, "{{ vars.root }}/handler ran"] }
"#;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey dffmpeg@test";

fn inventory() -> Inventory {
    let node = crate::common::test_node;
    let nodes = vec![
        node("here", Host::Local, vec![Role::Controller, Role::Compute, Role::Storage]),
        node("far", Host::Remote("198.18.41.99".into()), vec![Role::Compute]),
    ];
    crate::common::inventory("test inventory", Some("http://198.18.41.1:8080"), nodes)
}

struct Run {
    summary: Result<Summary, u8>,
    out: String,
}

impl Run {
    fn events(&self) -> Vec<Json> {
        self.out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    fn recap(&self, node: &str) -> dffmpeg::setup::report::Recap {
        self.summary.as_ref().unwrap().recaps[node].clone()
    }
}

async fn run(root: &Path, f: impl FnOnce(&mut Options)) -> Run {
    let mut assets = Assets::embedded();
    assets.playbooks.clear();
    assets.playbooks.insert("common.yaml".into(), ("test.yaml".into(), PLAYBOOK.into()));
    let mut opts = Options::new(assets);
    opts.vars.insert("root".into(), Json::String(root.display().to_string()));
    opts.pubkey = Some(KEY.into());
    opts.limit = vec!["here".into()];
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    opts.sink = buf.clone() as Sink;
    f(&mut opts);
    let inv = inventory();
    let nodes = vec![("here".to_string(), Ok(Local::new("here")))];
    let summary = play_cluster(&inv, nodes, opts).await.map_err(|f| f.code());
    let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    Run { summary, out }
}

#[tokio::test]
async fn first_run_changes_second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let first = run(root, |_| {}).await;
    let r = first.recap("here");
    assert_eq!((r.changed, r.failed, r.unreachable, r.skipped), (10, 0, 0, 1), "{}", first.out);
    assert!(first.out.contains("changed: [here] sources (create "), "{}", first.out);
    assert!(first.out.contains("changed: [here] handler: sources changed"));
    assert!(first.out.contains("ok: [here] query only\n"));
    assert!(first.out.contains("ok: [here] coreutils\n"));
    assert!(first.out.contains("skipping: [here] never (when: node.name == 'nobody')"));
    assert!(first.out.contains("\nPLAY RECAP\nhere : ok="), "{}", first.out);

    // What the play wrote.
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let os = std::fs::read_to_string("/etc/os-release").unwrap();
    if os.contains("ID=debian") {
        assert!(read("sources.list").contains("/debian-security "));
    }
    assert!(
        read("exports").contains("/srv/dffmpeg/work 198.18.41.99(rw,sync,no_subtree_check,root_squash)\n")
    );
    assert!(read("srv/note.txt").starts_with("hello here on "));
    assert_eq!(read("ssh/authorized_keys"), format!("{KEY}\n"));
    assert_eq!(
        read("fstab"),
        format!(
            "st:/srv/x {}/mnt\\040dir nfs ro,_netdev,nofail 0 0\n",
            root.display().to_string().replace(' ', "\\040")
        )
    );
    assert_eq!(read("handler ran"), "ran\n");
    assert!(root.join("made once").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("srv"), 0o2775);
    assert_eq!(mode("srv/note.txt"), 0o640);
    assert_eq!(mode("ssh"), 0o700);
    assert_eq!(mode("ssh/authorized_keys"), 0o600);
    assert!(!std::fs::read_dir(root.join("srv")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".dffmpeg.")));

    let second = run(root, |_| {}).await;
    let r = second.recap("here");
    assert_eq!((r.changed, r.failed, r.skipped), (0, 0, 1), "{}", second.out);
    assert!(second.out.contains("here : ok=12 changed=0 unreachable=0 failed=0 skipped=1"), "{}", second.out);
    assert_eq!(read("handler ran"), "ran\n", "handler ran without a change");
}

#[tokio::test]
async fn check_mode_changes_nothing_and_diff_shows_what_would() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let check = run(root, |o| {
        o.check = true;
        o.diff = true;
    })
    .await;
    assert_eq!(check.recap("here").changed, 10, "{}", check.out);
    assert_eq!(std::fs::read_dir(root).unwrap().count(), 0, "check mode wrote something");
    let exports = root.join("exports").display().to_string();
    assert!(
        check.out.contains(&format!(
            "--- {exports} (before)\n+++ {exports} (after)\n@@ -0,0 +1,4 @@\n+# Managed by dffmpeg setup"
        )),
        "{}",
        check.out
    );

    // A real run, then drift on one file: --check --diff finds it and
    // leaves it; a normal run repairs it.
    run(root, |_| {}).await;
    let path = root.join("exports");
    let good = std::fs::read_to_string(&path).unwrap();
    let drifted = good.replace("198.18.41.99(rw", "*(rw");
    std::fs::write(&path, &drifted).unwrap();
    let found = run(root, |o| {
        o.check = true;
        o.diff = true;
        o.json = true;
    })
    .await;
    assert_eq!(found.recap("here").changed, 1, "{}", found.out);
    let ev = found.events();
    let task = ev.iter().find(|e| e["event"] == "task" && e["status"] == "changed").unwrap();
    assert_eq!(task["task"], "exports");
    let diff = task["diff"].as_str().unwrap();
    assert!(
        diff.contains("\n-/srv/dffmpeg/work *(rw") && diff.contains("\n+/srv/dffmpeg/work 198.18.41.99(rw"),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), drifted);
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "recap");
    assert_eq!(last["nodes"][0]["node"], "here");

    let repaired = run(root, |_| {}).await;
    assert_eq!(repaired.recap("here").changed, 1, "{}", repaired.out);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
    assert_eq!(run(root, |_| {}).await.recap("here").changed, 0);
}

#[tokio::test]
async fn only_and_limit_select_and_unknown_names_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r = run(root, |o| o.only = vec!["ssh-keys".into(), "mounts".into()]).await;
    assert_eq!(r.recap("here").changed, 2, "{}", r.out);
    assert!(root.join("fstab").exists() && !root.join("exports").exists());

    assert_eq!(run(root, |o| o.only = vec!["mount".into()]).await.summary.unwrap_err(), 2);
    assert_eq!(run(root, |o| o.limit = vec!["nope".into()]).await.summary.unwrap_err(), 2);
    assert_eq!(std::fs::read_dir(root).unwrap().count(), 2, "a usage error touched something");
}

#[tokio::test]
async fn an_unreachable_node_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r = run(root, |o| o.limit.clear()).await;
    let s = r.summary.as_ref().unwrap();
    assert_eq!(s.failed, vec!["far".to_string()]);
    assert_eq!(r.recap("far").unreachable, 1);
    assert_eq!(r.recap("here").failed, 0);
    assert!(r.recap("here").changed > 0);
    assert!(r.out.contains("unreachable: [far] => no connection was made to this node"), "{}", r.out);
    assert!(r.out.contains("far : ok=0 changed=0 unreachable=1 failed=0 skipped=0"));
    assert!(r.out.trim_end().ends_with("--limit far"), "{}", r.out);
}

#[tokio::test]
async fn a_failing_task_stops_its_node_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pb = r#"
tasks:
  - name: first
    step: exports
    copy: { content: "a\n", dest: "{{ vars.root }}/a" }
  - name: breaks
    step: exports
    command: { cmd: "echo 'cannot do it' >&2; exit 3" }
  - name: after
    step: exports
    copy: { content: "b\n", dest: "{{ vars.root }}/b" }
"#;
    let r = run(root, |o| {
        o.assets.playbooks.insert("common.yaml".into(), ("fail.yaml".into(), pb.into()));
    })
    .await;
    assert!(r.out.contains("changed: [here] first"), "{}", r.out);
    assert!(r.out.contains("failed: [here] breaks => exit status 3: cannot do it"), "{}", r.out);
    assert!(!r.out.contains("] after"));
    assert!(root.join("a").exists() && !root.join("b").exists());
    assert_eq!(r.summary.unwrap().failed, vec!["here".to_string()]);
    assert!(r.out.trim_end().ends_with("--limit here"));
}

#[tokio::test]
async fn verbose_shows_each_nodes_facts_and_change_batches() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = run(dir.path(), |_| {}).await;
    assert!(!quiet.out.contains("[here] facts:") && !quiet.out.contains("change batch"), "{}", quiet.out);
    let dir = tempfile::tempdir().unwrap();
    let verbose = run(dir.path(), |o| o.verbose = true).await;
    assert!(verbose.out.contains("  [here] facts: "), "{}", verbose.out);
    assert!(verbose.out.contains("  [here] change batch: "), "{}", verbose.out);
}

/// `setup --log-file`: every line of the run with a time stamp, with -v's
/// detail, even with --json (whose stdout stays JSON).
#[test]
fn setup_writes_its_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pbs = root.join("assets/playbooks");
    std::fs::create_dir_all(&pbs).unwrap();
    for role in ["compute", "controller", "storage"] {
        std::fs::write(pbs.join(format!("{role}.yaml")), "tasks: []\n").unwrap();
    }
    let common = format!(
        "tasks:\n  - name: note\n    step: exports\n    copy: {{ content: \"hi\\n\", dest: \"{}/note\" }}\n",
        root.display()
    );
    std::fs::write(pbs.join("common.yaml"), common).unwrap();
    let inv = root.join("inv.yaml");
    std::fs::write(&inv, "nodes:\n  here: { host: local, roles: [controller, compute, storage] }\n").unwrap();
    let log = root.join("setup.log");
    let out = crate::common::run::dffmpeg()
        .env("HOME", root)
        .env("XDG_STATE_HOME", root.join("state"))
        .args(["setup", "--json", "--log-file"])
        .arg(&log)
        .arg("--playbook-dir")
        .arg(root.join("assets"))
        .arg(&inv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().all(|l| l.starts_with('{')), "{stdout}");
    assert_eq!(std::fs::read_to_string(root.join("note")).unwrap(), "hi\n");
    let text = std::fs::read_to_string(&log).unwrap();
    for line in [
        "changed: [here] note",
        "[here] facts: ",
        "[here] change batch: 1 tasks",
        "PLAY RECAP",
        "exit status 0",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(text.lines().all(|l| l.as_bytes().get(10) == Some(&b'T')), "{text}");
}
