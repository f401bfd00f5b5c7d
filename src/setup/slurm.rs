//! `cluster.engine: slurm`: what every node's play needs to know before it
//! starts, gathered once for the whole run and added to each node's
//! context as `slurm` (absent with `engine: ssh`):
//!
//! ```text
//! slurm: {partition,
//!         controller: {name, hostname, address},              SlurmctldHost
//!         nodes:      [{name, hostname, address, cpus, mem_mb}] one slurmd each (the compute nodes)
//!         missing:    [name]     compute nodes whose facts this run has not (unreachable, --limit)
//!         munge_key:  base64 | none}
//! ```
//!
//! `slurm.conf` lists every node with its CPUs and memory, on every host,
//! so each play needs the facts of all of them: they are read here, one
//! facts round trip per node, before the plays. The munge key is the
//! controller's `/etc/munge/munge.key`, made there (1024 random bytes,
//! mode 0400) when missing and never replaced; every play copies it
//! (`playbooks/slurm.yaml`, a secret: never in `--diff`).

use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::facts::Facts;
use crate::inventory::{Engine, Inventory, Node, Role};
use crate::remote::{SshError, Transport};

use super::context::Addresses;
use super::report::{Status, TaskEvent};
use super::script::run_script;

/// The cluster's munge key on the controller.
pub const MUNGE_KEY: &str = "/etc/munge/munge.key";

/// Stand-in key in check mode when the controller has none yet.
const CHECK_MODE_KEY: &[u8] = b"(check mode: the munge key is not created yet)";

/// Reads the controller's munge key (base64 on the line after `KEY`),
/// making it first when missing (unless `$1` is `check`). The temporary
/// file is made in /etc/munge (root's), renamed over the key: never half a
/// key. Owned by munge when that user exists (else munge's postinst
/// takes it over when the package is installed).
const KEY_SCRIPT: &str = r#"set -e
k=/etc/munge/munge.key
if [ -f "$k" ] && [ -s "$k" ]; then echo OLD
elif [ "$1" = check ]; then echo NEW; exit 0
else
  umask 077
  mkdir -p /etc/munge
  tmp=$(mktemp /etc/munge/.munge.key.XXXXXX)
  trap 'rm -f "$tmp"' EXIT
  head -c 1024 /dev/urandom >"$tmp"
  chmod 0400 "$tmp"
  if id munge >/dev/null 2>&1; then chown munge:munge "$tmp"; chown munge:munge /etc/munge; fi
  mv -fT "$tmp" "$k"
  echo NEW
fi
echo KEY
base64 -w0 "$k"; echo
"#;

/// What the plays are told about Slurm, and the controller's key event.
pub struct Prepared {
    pub ctx: Json,
    pub events: Vec<TaskEvent>,
}

/// Whether `setup` provisions Slurm: `engine: slurm` with compute nodes in
/// the inventory (they become its slurmd nodes). Without any, the
/// inventory describes a Slurm cluster of someone else's (the controller a
/// submit host of it): its munge key and slurm.conf are left alone.
pub fn provisions(inv: &Inventory) -> bool {
    matches!(inv.cluster.engine, Engine::Slurm(_)) && inv.compute_nodes().next().is_some()
}

/// Whether a node runs a Slurm daemon (slurmctld or slurmd).
fn in_slurm(n: &Node) -> bool {
    n.has(Role::Controller) || n.has(Role::Compute)
}

/// The short host name Slurm knows a node by (slurmd finds its own
/// `NodeName` line by it).
fn short_hostname(f: &Facts) -> String {
    f.hostname.split('.').next().unwrap_or_default().to_string()
}

/// The `slurm` context from each node's facts (`None`: not read) and the
/// key. Pure.
pub fn context(
    inv: &Inventory,
    partition: &str,
    facts: &[(String, Facts)],
    addrs: &Addresses,
    munge_key: Option<&str>,
) -> Json {
    let facts_of = |name: &str| facts.iter().find(|(n, _)| n == name).map(|(_, f)| f);
    let addr = |name: &str| addrs.get(name).cloned().flatten();
    let controller = inv.nodes.iter().find(|n| n.has(Role::Controller));
    let mut nodes = Vec::new();
    let mut missing = Vec::new();
    // No address (a `host: local` node of a cluster with no other host):
    // Slurm resolves the host name.
    for n in inv.compute_nodes() {
        match facts_of(&n.name) {
            Some(f) if !short_hostname(f).is_empty() => nodes.push(json!({
                "name": n.name,
                "hostname": short_hostname(f),
                "address": addr(&n.name),
                "cpus": f.usable_cores(),
                "mem_mb": f.mem_mb,
            })),
            _ => missing.push(n.name.clone()),
        }
    }
    let ctl = controller.map(|c| {
        let f = facts_of(&c.name).filter(|f| !short_hostname(f).is_empty());
        if f.is_none() {
            missing.push(c.name.clone());
        }
        json!({
            "name": c.name,
            "hostname": f.map(short_hostname),
            "address": addr(&c.name),
        })
    });
    json!({
        "partition": partition,
        "controller": ctl,
        "nodes": nodes,
        "missing": missing,
        "munge_key": munge_key,
    })
}

/// For `engine: slurm` (and when the `slurm` step runs): every Slurm
/// node's facts and the munge key, as the `slurm` context. `None` with
/// `engine: ssh`.
pub async fn prepare<T: Transport>(
    inv: &Inventory,
    conns: &[(String, Result<T, SshError>)],
    addrs: &Addresses,
    check: bool,
    timeout: Duration,
) -> Option<Prepared> {
    let Engine::Slurm(spec) = &inv.cluster.engine else { return None };
    if !provisions(inv) {
        return None;
    }
    // All nodes at once: one facts round trip each.
    let reads = inv.nodes.iter().filter(|n| in_slurm(n)).filter_map(|n| {
        let (_, conn) = conns.iter().find(|(name, _)| *name == n.name)?;
        let t = conn.as_ref().ok()?;
        Some(async move { crate::facts::gather(t, None).await.ok().map(|f| (n.name.clone(), f)) })
    });
    let facts: Vec<(String, Facts)> = join_all(reads.collect()).await.into_iter().flatten().collect();
    let mut events = Vec::new();
    let key = match controller_key(inv, conns, check, timeout).await {
        Some((node, Ok((key, created)))) => {
            events.push(key_event(&node, created, None));
            Some(key)
        }
        Some((node, Err(msg))) => {
            events.push(key_event(&node, false, Some(msg)));
            None
        }
        None => None,
    };
    let ctx = context(inv, &spec.partition, &facts, addrs, key.as_deref());
    Some(Prepared { ctx, events })
}

/// Runs the futures concurrently (on this task); their outputs in order.
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()).filter(|(_, o)| o.is_none()) {
            match f.as_mut().poll(cx) {
                Poll::Ready(v) => *o = Some(v),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

fn key_event(node: &str, created: bool, error: Option<String>) -> TaskEvent {
    let status = match (&error, created) {
        (Some(_), _) => Status::Failed,
        (None, true) => Status::Changed,
        (None, false) => Status::Ok,
    };
    TaskEvent {
        node: node.to_string(),
        task: format!("munge key {MUNGE_KEY}"),
        step: Some("slurm".into()),
        status,
        handler: false,
        changes: if created { vec![format!("create {MUNGE_KEY}")] } else { Vec::new() },
        msg: error,
        diff: None,
    }
}

/// The controller's key (base64) and whether it was made now; `None` when
/// the controller is not part of this run or not connected.
async fn controller_key<T: Transport>(
    inv: &Inventory,
    conns: &[(String, Result<T, SshError>)],
    check: bool,
    timeout: Duration,
) -> Option<(String, Result<(String, bool), String>)> {
    let c = inv.nodes.iter().find(|n| n.has(Role::Controller))?;
    let (_, Ok(t)) = conns.iter().find(|(name, _)| *name == c.name)? else { return None };
    let user = super::controller::login_user(c);
    let become_root = c.become_root && user != "root";
    let mode = if check { "check" } else { "make" };
    let script = format!("set -- {mode}\n{KEY_SCRIPT}");
    let out = match run_script(t, become_root, &script, timeout).await {
        Ok(o) => o,
        Err(e) => return Some((c.name.clone(), Err(format!("munge key: {e}")))),
    };
    Some((c.name.clone(), parse_key_output(&out.stdout, out.code, &out.stderr)))
}

/// `OLD|NEW`, then `KEY` and the key in base64 (none in check mode for a
/// key not made yet: the stand-in).
fn parse_key_output(stdout: &str, code: Option<i32>, stderr: &str) -> Result<(String, bool), String> {
    let mut lines = stdout.lines().map(str::trim).skip_while(|l| *l != "OLD" && *l != "NEW");
    let created = match lines.next() {
        Some("NEW") => true,
        Some(_) => false,
        None => return Err(format!("munge key: exit {code:?}: {}", stderr.trim())),
    };
    match (lines.next(), lines.next()) {
        (Some("KEY"), Some(k)) if !k.is_empty() => Ok((k.to_string(), created)),
        (None, _) if created => Ok((super::b64::encode(CHECK_MODE_KEY), true)),
        _ => Err(format!("munge key: cannot read {MUNGE_KEY} back: {}", stderr.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::context::tests::{inventory, node};

    fn facts(host: &str, cores: u32, quota: Option<f64>) -> Facts {
        Facts { hostname: host.into(), cores, cpu_quota: quota, mem_mb: Some(3906), ..Facts::default() }
    }

    #[test]
    fn nodes_from_facts_and_the_missing_ones_named() {
        use Role::*;
        let inv = inventory(vec![
            node("ctl", "local", &[Controller]),
            node("a", "198.18.5.11", &[Compute]),
            node("b", "198.18.5.12", &[Compute]),
        ]);
        let mut addrs = Addresses::new();
        addrs.insert("ctl".into(), Some("198.18.5.10".into()));
        addrs.insert("a".into(), Some("198.18.5.11".into()));
        addrs.insert("b".into(), Some("198.18.5.12".into()));
        let f = vec![
            ("ctl".to_string(), facts("ctl.lan", 4, None)),
            ("a".to_string(), facts("node-a.example.org", 4, Some(1.5))),
        ];
        let ctx = context(&inv, "video", &f, &addrs, Some("a2V5"));
        assert_eq!(ctx["controller"], json!({"name": "ctl", "hostname": "ctl", "address": "198.18.5.10"}));
        assert_eq!(
            ctx["nodes"],
            json!([{"name": "a", "hostname": "node-a", "address": "198.18.5.11", "cpus": 2, "mem_mb": 3906}])
        );
        assert_eq!(ctx["missing"], json!(["b"]));
        assert_eq!(ctx["munge_key"], json!("a2V5"));
        addrs.insert("a".into(), None);
        let ctx = context(&inv, "video", &f, &addrs, None);
        assert_eq!(ctx["nodes"][0]["address"], Json::Null, "Slurm resolves the host name");
        assert_eq!(ctx["missing"], json!(["b"]));
    }

    /// slurm.conf as the embedded template renders it for `ctx`.
    fn conf(slurm: Json) -> Result<String, String> {
        use crate::setup::{assets::Assets, context, render::Renderer};
        let inv = inventory(vec![node("ctl", "local", &[Role::Controller])]);
        let r = Renderer::new(&Assets::embedded().templates).unwrap();
        let mut vars = serde_json::Map::new();
        for (k, v) in [("slurm_cluster", "dffmpeg"), ("slurmctld_port", "6817"), ("slurmd_port", "6818")] {
            vars.insert(k.into(), json!(v));
        }
        let mut ctx = context::base(&inv, &inv.nodes[0], "pi", true, "", &Addresses::new(), &vars);
        ctx["slurm"] = slurm;
        r.template("slurm.conf.j2", &ctx).map_err(|e| e.0)
    }

    #[test]
    fn slurm_conf_lists_every_node_or_refuses() {
        let ctl = json!({"name": "ctl", "hostname": "ctl", "address": "198.18.5.10"});
        let nodes = json!([
            {"name": "a", "hostname": "pi-a", "address": "198.18.5.11", "cpus": 4, "mem_mb": 926},
            {"name": "b", "hostname": "nuc", "address": null, "cpus": 8, "mem_mb": null},
        ]);
        let ok =
            json!({"partition": "video", "controller": ctl, "nodes": nodes, "missing": [], "munge_key": "k"});
        let text = conf(ok.clone()).unwrap();
        assert!(text.contains("SlurmctldHost=ctl(198.18.5.10)\n"), "{text}");
        assert!(text.contains("\nNodeName=pi-a NodeAddr=198.18.5.11 CPUs=4 RealMemory=926 State=UNKNOWN\n"));
        assert!(text.contains("\nNodeName=nuc CPUs=8 State=UNKNOWN\n"), "{text}");
        assert!(text.contains("\nPartitionName=video Nodes=pi-a,nuc Default=YES"), "{text}");
        let mut local = ok.clone();
        local["controller"]["address"] = Json::Null;
        assert!(conf(local).unwrap().contains("\nSlurmctldHost=ctl\nSlurmctldPort="));
        let mut missing = ok.clone();
        missing["missing"] = json!(["c"]);
        let e = conf(missing).unwrap_err();
        assert!(e.contains("no facts of c") && e.contains("--limit"), "{e}");
        let mut none = ok;
        none["nodes"] = json!([]);
        assert!(conf(none).unwrap_err().contains("at least one compute node"));
    }

    #[tokio::test]
    async fn join_all_runs_them_together_and_keeps_the_order() {
        // Each waits for the other at a barrier: one after the other would
        // never end (the timeout is only a safety net).
        let barrier = tokio::sync::Barrier::new(2);
        let meet = |v: u32| {
            let b = &barrier;
            async move {
                b.wait().await;
                v
            }
        };
        let both = tokio::time::timeout(std::time::Duration::from_secs(30), join_all(vec![meet(1), meet(2)]));
        assert_eq!(both.await.expect("both ran at once"), [1, 2]);
    }

    #[test]
    fn only_a_cluster_with_compute_nodes_is_provisioned() {
        use crate::inventory::{Engine, SlurmSpec};
        let slurm = Engine::Slurm(SlurmSpec { partition: "video".into(), account: None, qos: None });
        let mut own =
            inventory(vec![node("ctl", "local", &[Role::Controller]), node("a", "a", &[Role::Compute])]);
        own.cluster.engine = slurm.clone();
        assert!(provisions(&own));
        let mut theirs = inventory(vec![node("ctl", "local", &[Role::Controller])]);
        theirs.cluster.engine = slurm;
        assert!(!provisions(&theirs), "a submit host of someone else's Slurm");
        assert!(!provisions(&inventory(vec![node("a", "a", &[Role::Compute])])), "engine: ssh");
    }

    #[test]
    fn key_output() {
        assert_eq!(parse_key_output("OLD\nKEY\nAAAA\n", Some(0), ""), Ok(("AAAA".into(), false)));
        assert_eq!(parse_key_output("banner\nNEW\nKEY\nBBBB\n", Some(0), ""), Ok(("BBBB".into(), true)));
        let (k, created) = parse_key_output("NEW\n", Some(0), "").unwrap();
        assert!(created && super::super::b64::decode(&k).unwrap() == CHECK_MODE_KEY);
        assert!(parse_key_output("", Some(1), "sudo: a password is required").unwrap_err().contains("sudo"));
    }

    #[test]
    fn the_key_script_makes_a_key_once_in_a_real_shell() {
        // The script's logic on a scratch copy of its paths.
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("munge");
        let script = KEY_SCRIPT.replace("/etc/munge", etc.to_str().unwrap());
        let run = |mode: &str| {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("set -- {mode}\n{script}")])
                .output()
                .unwrap();
            parse_key_output(&String::from_utf8_lossy(&out.stdout), out.status.code(), "").unwrap()
        };
        let (_, created) = run("check");
        assert!(created && !etc.exists(), "check mode makes nothing");
        let (first, created) = run("make");
        assert!(created);
        assert_eq!(super::super::b64::decode(&first).unwrap().len(), 1024);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(etc.join("munge.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400);
        assert_eq!(run("make"), (first, false), "kept, not made again");
    }
}
