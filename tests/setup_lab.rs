//! `dffmpeg setup` on real test hosts (real sshd, sudo, apt, exportfs,
//! mount(8) with a stand-in mount.nfs). Skipped unless DFFMPEG_SETUP_LAB
//! describes prepared hosts, e.g.
//!
//! ```text
//! DFFMPEG_SETUP_LAB="st=root@198.18.41.11:controller+storage+compute,c1=pi@198.18.41.12:compute,..."
//! DFFMPEG_SETUP_LAB_KEY=/tmp/dlsetup-key          # private key root@ hosts accept
//! DFFMPEG_SETUP_LAB_MIRROR=http://198.18.41.1:8080
//! DFFMPEG_SETUP_LAB_PASSWORD=raspberry            # of the pi@ hosts (key installed with it)
//! ```
//!
//! The SSH transport here is a stand-in (system ssh with a control
//! master) until the real one lands.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dffmpeg::inventory::{Cluster, Host, Inventory, Node, Role, StorageMode};
use dffmpeg::quote::join;
use dffmpeg::remote::Transport;
use dffmpeg::setup::assets::Assets;
use dffmpeg::setup::password::{install_key_with_password_to, KeyInstall, SshTarget};
use dffmpeg::setup::report::Sink;
use dffmpeg::setup::{play_cluster, Options, Summary};

struct SysSsh {
    name: String,
    dest: String,
    key: PathBuf,
}

impl Transport for SysSsh {
    fn name(&self) -> &str {
        &self.name
    }

    fn command(&self, argv: &[String]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ssh");
        c.arg("-i")
            .arg(&self.key)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ControlMaster=auto",
                "-o",
                "ControlPath=/tmp/dls-%C",
                "-o",
                "ControlPersist=60",
                "-o",
                "ConnectTimeout=5",
            ])
            .arg(&self.dest)
            .arg("--")
            .arg(join(argv));
        c
    }

    async fn kill(&self, _pid: u32) {}

    fn reports_pid(&self) -> bool {
        false
    }
}

struct Lab {
    inv: Inventory,
    key: PathBuf,
    pubkey: String,
}

fn lab() -> Option<Lab> {
    let spec = std::env::var("DFFMPEG_SETUP_LAB").ok()?;
    let key = PathBuf::from(std::env::var("DFFMPEG_SETUP_LAB_KEY").ok()?);
    let mirror = std::env::var("DFFMPEG_SETUP_LAB_MIRROR").ok();
    let mut nodes = Vec::new();
    for part in spec.split(',') {
        let (name, rest) = part.split_once('=')?;
        let (dest, roles) = rest.split_once(':')?;
        let (user, host) = dest.split_once('@')?;
        let roles = roles
            .split('+')
            .map(|r| match r {
                "controller" => Role::Controller,
                "storage" => Role::Storage,
                _ => Role::Compute,
            })
            .collect();
        nodes.push(Node {
            name: name.into(),
            host: Host::Remote(host.into()),
            port: 22,
            user: Some(user.into()),
            roles,
            slots: None,
            identity_file: None,
            become_root: true,
        });
    }
    let pubkey = std::fs::read_to_string(format!("{}.pub", key.display())).ok()?;
    Some(Lab {
        inv: Inventory {
            source: "lab".into(),
            cluster: Cluster {
                shared_dir: PathBuf::from("/srv/dffmpeg"),
                storage: StorageMode::Nfs,
                apt_mirror: mirror,
            },
            nodes,
        },
        key,
        pubkey: pubkey.trim().into(),
    })
}

async fn run(lab: &Lab, f: impl FnOnce(&mut Options)) -> (Summary, String, f64) {
    let mut opts = Options::new(Assets::embedded());
    opts.pubkey = Some(lab.pubkey.clone());
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    opts.sink = buf.clone() as Sink;
    f(&mut opts);
    let nodes = lab
        .inv
        .nodes
        .iter()
        .map(|n| {
            let Host::Remote(h) = &n.host else { unreachable!() };
            let t = SysSsh {
                name: n.name.clone(),
                dest: format!("{}@{h}", n.user.clone().unwrap_or_default()),
                key: lab.key.clone(),
            };
            (n.name.clone(), Ok(t))
        })
        .collect();
    let t0 = Instant::now();
    let s = play_cluster(&lab.inv, nodes, opts).await.unwrap_or_else(|f| panic!("exit {}", f.code()));
    let secs = t0.elapsed().as_secs_f64();
    let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    println!("{out}--- {secs:.2} s");
    (s, out, secs)
}

#[tokio::test]
async fn setup_on_test_hosts() {
    let Some(lab) = lab() else {
        eprintln!("DFFMPEG_SETUP_LAB not set: skipped");
        return;
    };
    // First bring-up of password-only nodes.
    if let Ok(pw) = std::env::var("DFFMPEG_SETUP_LAB_PASSWORD") {
        for n in lab.inv.nodes.iter().filter(|n| n.user.as_deref() != Some("root")) {
            let Host::Remote(h) = &n.host else { continue };
            let t = SshTarget {
                host: h.clone(),
                port: 22,
                user: n.user.clone().unwrap_or_default(),
                known_hosts: Some(PathBuf::from("/dev/null")),
                strict_host_keys: false,
            };
            let r = install_key_with_password_to(&t, &pw, &lab.pubkey, Some(&lab.key)).await;
            println!("{}: {r:?}", n.name);
            assert!(r.is_ok());
            let again = install_key_with_password_to(&t, &pw, &lab.pubkey, Some(&lab.key)).await;
            assert_eq!(again.unwrap(), KeyInstall::AlreadyWorks);
        }
    }
    let (first, _, _) = run(&lab, |_| {}).await;
    assert!(first.failed.is_empty(), "{:?}", first.failed);
    let (second, _, secs) = run(&lab, |_| {}).await;
    assert!(second.failed.is_empty());
    for (n, r) in &second.recaps {
        assert_eq!(r.changed, 0, "{n}");
    }
    println!("no-op run: {secs:.2} s");
    let (check, _, _) = run(&lab, |o| {
        o.check = true;
        o.diff = true;
    })
    .await;
    assert!(check.recaps.values().all(|r| r.changed == 0));

    // Drift on the storage node: found by --check --diff, left alone,
    // repaired by a normal run.
    let storage = lab.inv.storage_node().unwrap().clone();
    let Host::Remote(sh) = &storage.host else { unreachable!() };
    let ssh = |cmd: &str| {
        let out = std::process::Command::new("ssh")
            .arg("-i")
            .arg(&lab.key)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{}@{sh}", storage.user.clone().unwrap_or_default()))
            .arg(cmd)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ssh("sudo -n sed -i 's/^\\(\\/srv\\/dffmpeg\\/work\\) /\\1 *(rw) /' /etc/exports.d/dffmpeg.exports");
    let drifted = ssh("cat /etc/exports.d/dffmpeg.exports");
    assert!(drifted.contains("*(rw)"), "{drifted}");
    let (found, out, _) = run(&lab, |o| {
        o.check = true;
        o.diff = true;
    })
    .await;
    assert_eq!(found.recaps[&storage.name].changed, 2, "exports + exportfs handler");
    assert!(out.contains("-/srv/dffmpeg/work *(rw) "), "{out}");
    assert_eq!(ssh("cat /etc/exports.d/dffmpeg.exports"), drifted);
    let (fixed, _, _) = run(&lab, |_| {}).await;
    assert_eq!(fixed.recaps[&storage.name].changed, 2);
    assert!(!ssh("cat /etc/exports.d/dffmpeg.exports").contains('*'));

    // A node joins: only the storage node's exports change.
    let last = lab.inv.nodes.last().unwrap().name.clone();
    let mut smaller = Lab { inv: lab.inv.clone(), key: lab.key.clone(), pubkey: lab.pubkey.clone() };
    smaller.inv.nodes.pop();
    run(&smaller, |_| {}).await;
    let (joined, _, _) = run(&lab, |_| {}).await;
    for (n, r) in &joined.recaps {
        let want = if *n == storage.name { 2 } else { 0 };
        assert_eq!(r.changed, want, "{n} after {last} joined");
    }

    // An unreachable node does not stop the others.
    let mut with_dead = Lab { inv: lab.inv.clone(), key: lab.key.clone(), pubkey: lab.pubkey.clone() };
    let mut dead = lab.inv.nodes.last().unwrap().clone();
    dead.name = "dead".into();
    dead.host = Host::Remote("198.18.41.250".into());
    with_dead.inv.nodes.push(dead);
    let (r, out, _) = run(&with_dead, |o| o.only = vec!["ssh-keys".into()]).await;
    assert_eq!(r.failed, vec!["dead".to_string()]);
    assert!(out.contains("dead : ok=0 changed=0 unreachable=1 failed=0 skipped=0"));
    assert!(out.trim_end().ends_with("--limit dead"), "{out}");
}
