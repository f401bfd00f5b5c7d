//! `dffmpeg setup`: Ansible-like bring-up of the cluster.
//!
//! Playbooks per role ([`playbook`], embedded from `playbooks/`) render
//! templates ([`render`], from `templates/`) against a context of the
//! inventory and each node's facts ([`context`]). Each node costs one round
//! trip to read facts and state ([`state`]), and one more (a batch script)
//! only when something changes ([`engine`]). Modules plan changes as pure
//! functions ([`modules`]); results are reported Ansible-style
//! ([`report`]).
//!
//! Entry points: [`run`] (the CLI) and [`run_with`] (any [`Transport`]: the
//! SSH transport in production, [`crate::remote::local::Local`] in tests).

pub mod assets;
pub mod b64;
pub mod context;
pub mod diff;
pub mod engine;
pub mod keys;
pub mod modules;
pub mod password;
pub mod playbook;
pub mod render;
pub mod report;
pub mod script;
pub mod select;
pub mod state;

#[cfg(test)]
mod fixtures;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use serde_json::{Map, Value as Json};

use crate::cli::SetupArgs;
use crate::exit::{failed, usage, Failure, Outcome};
use crate::inventory::{Host, Inventory, Node, Role};
use crate::remote::Transport;

use assets::Assets;
use engine::{NodeJob, Shared, StorageGate};
use playbook::{Playbook, Task};
use render::Renderer;
use report::{Recap, Reporter, Sink, Status, TaskEvent};

/// Everything [`run_with`] needs besides the inventory and connections.
pub struct Options {
    pub check: bool,
    pub diff: bool,
    pub limit: Vec<String>,
    pub only: Vec<String>,
    pub forks: usize,
    pub json: bool,
    pub assets: Assets,
    /// Extra variables, merged over the playbooks' `vars`.
    pub vars: Map<String, Json>,
    /// The controller's public key line; `None` = `~/.ssh/id_ed25519.pub`,
    /// created when missing (only when the `ssh-keys` step runs).
    pub pubkey: Option<String>,
    /// Results obtained before connecting (e.g. `--ask-pass` key installs).
    pub pre_events: Vec<TaskEvent>,
    pub sink: Sink,
}

impl Options {
    pub fn new(assets: Assets) -> Options {
        Options {
            check: false,
            diff: false,
            limit: Vec::new(),
            only: Vec::new(),
            forks: 5,
            json: false,
            assets,
            vars: Map::new(),
            pubkey: None,
            pre_events: Vec::new(),
            sink: report::stdout_sink(),
        }
    }

    /// Options of the command line (playbooks from `--playbook-dir`).
    pub fn from_args(args: &SetupArgs) -> Result<Options, Failure> {
        let assets = match &args.playbook_dir {
            Some(dir) => Assets::with_override(dir).map_err(usage)?,
            None => Assets::embedded(),
        };
        let mut o = Options::new(assets);
        o.check = args.check;
        o.diff = args.diff;
        o.limit = args.limit.clone();
        o.only = args.only.clone();
        o.forks = args.forks.max(1);
        o.json = args.json;
        Ok(o)
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub recaps: BTreeMap<String, Recap>,
    /// Failed or unreachable nodes, in inventory order.
    pub failed: Vec<String>,
}

/// The user running dffmpeg (the login user of `host: local` nodes, and
/// ssh's default user).
pub fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or NULL; the
    // name is copied out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            if let Ok(s) = std::ffi::CStr::from_ptr((*pw).pw_name).to_str() {
                return s.to_string();
            }
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// Who the play logs in as on `node`.
pub fn login_user(node: &Node) -> String {
    match (&node.host, &node.user) {
        (Host::Local, _) | (_, None) => current_user(),
        (Host::Remote(_), Some(u)) => u.clone(),
    }
}

/// This machine's source address toward `peer` (an IP address), from the
/// routing table: no packet is sent.
pub fn local_source_address(peer: &str) -> Option<String> {
    peer.parse::<std::net::IpAddr>().ok()?;
    let out = std::process::Command::new("ip")
        .args(["-o", "route", "get", peer])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = text.split_whitespace();
    while let Some(word) = w.next() {
        if word == "src" {
            return w.next().map(str::to_string);
        }
    }
    None
}

/// The playbooks, parsed: `common.yaml` then one per role.
pub fn load_playbooks(assets: &Assets) -> anyhow::Result<BTreeMap<String, Playbook>> {
    assets
        .playbooks
        .iter()
        .filter(|(name, _)| name.ends_with(".yaml") || name.ends_with(".yml"))
        .map(|(name, (origin, text))| {
            playbook::parse(text, origin).map(|p| (name.clone(), p)).map_err(anyhow::Error::from)
        })
        .collect()
}

/// The playbooks that apply to `node`, in order.
fn node_playbooks<'a>(pbs: &'a BTreeMap<String, Playbook>, node: &Node) -> Vec<&'a Playbook> {
    let mut files = vec!["common.yaml"];
    for role in [Role::Controller, Role::Storage, Role::Compute] {
        if node.has(role) {
            files.push(playbook::role_file(role));
        }
    }
    files.iter().filter_map(|f| pbs.get(*f)).collect()
}

fn check_notify(pbs: &BTreeMap<String, Playbook>) -> anyhow::Result<()> {
    let handlers: Vec<&str> = pbs.values().flat_map(|p| p.handlers.iter().map(|h| h.name.as_str())).collect();
    for pb in pbs.values() {
        for t in &pb.tasks {
            if let Some(n) = t.notify.iter().find(|n| !handlers.contains(&n.as_str())) {
                return Err(anyhow!(
                    "{}: task {:?} notifies {n:?}, which no playbook defines as a handler",
                    pb.file,
                    t.name
                ));
            }
        }
    }
    Ok(())
}

/// Each selected node's play: its playbooks' tasks (filtered by `--only`),
/// handlers and pre-facts context.
pub fn build_jobs(
    inventory: &Inventory,
    selected: &[&Node],
    pbs: &BTreeMap<String, Playbook>,
    opts: &Options,
    pubkey: &str,
    addrs: &context::Addresses,
    wants_keys: bool,
) -> Result<Vec<NodeJob>, Failure> {
    let mut jobs = Vec::new();
    for node in selected {
        let books = node_playbooks(pbs, node);
        let mut vars = Map::new();
        for b in &books {
            vars.extend(b.vars.clone());
        }
        vars.extend(opts.vars.clone());
        let all_tasks: Vec<Task> = books.iter().flat_map(|b| b.tasks.clone()).collect();
        let mut handlers: Vec<Task> = Vec::new();
        for h in books.iter().flat_map(|b| b.handlers.iter()) {
            if !handlers.iter().any(|x| x.name == h.name) {
                handlers.push(h.clone());
            }
        }
        let user = login_user(node);
        let become_root = node.become_root && user != "root";
        let node_key = match &node.identity_file {
            Some(id) if wants_keys => keys::read_pubkey(id).map_err(usage)?,
            _ => pubkey.to_string(),
        };
        let ctx = context::base(inventory, node, &user, become_root, &node_key, addrs, &vars);
        jobs.push(NodeJob {
            name: node.name.clone(),
            become_root,
            ctx,
            tasks: select::tasks(&all_tasks, &opts.only),
            handlers,
        });
    }
    Ok(jobs)
}

/// The result of making sure the controller has its SSH key, reported on
/// the controller node.
fn key_event(inventory: &Inventory, key: &keys::ControllerKey) -> TaskEvent {
    let controller = inventory.nodes.iter().find(|n| n.has(Role::Controller)).map(|n| n.name.clone());
    TaskEvent {
        node: controller.unwrap_or_else(|| "controller".into()),
        task: format!("controller SSH key {}", key.path.display()),
        step: Some("ssh-keys".into()),
        status: if key.created { Status::Changed } else { Status::Ok },
        handler: false,
        changes: if key.created { vec![format!("create {}", key.path.display())] } else { Vec::new() },
        msg: None,
        diff: None,
    }
}

/// Run the setup over already-connected nodes. `nodes` pairs each node name
/// with its connection, or why there is none (reported unreachable).
pub async fn run_with<T: Transport + 'static>(
    inventory: &Inventory,
    nodes: Vec<(String, Result<T, String>)>,
    opts: Options,
) -> Outcome {
    let summary = play_cluster(inventory, nodes, opts).await?;
    if summary.failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Reported)
    }
}

/// [`run_with`], returning the recap.
pub async fn play_cluster<T: Transport + 'static>(
    inventory: &Inventory,
    nodes: Vec<(String, Result<T, String>)>,
    opts: Options,
) -> Result<Summary, Failure> {
    // Everything that can be wrong with the input, before touching a node.
    let selected = select::nodes(inventory, &opts.limit).map_err(usage)?;
    let pbs = load_playbooks(&opts.assets).map_err(usage)?;
    check_notify(&pbs).map_err(usage)?;
    let known = select::known_steps(pbs.values().flat_map(|p| p.tasks.iter()));
    select::check_steps(&opts.only, &known).map_err(usage)?;
    let raw_templates: BTreeMap<String, String> =
        opts.assets.templates.iter().map(|(k, (_, t))| (k.clone(), t.clone())).collect();
    let renderer = Renderer::new(&opts.assets.templates).map_err(|e| usage(anyhow!("templates: {e}")))?;

    let names: Vec<String> = selected.iter().map(|n| n.name.clone()).collect();
    let reporter = Reporter::new(opts.sink.clone(), opts.json, opts.diff, &names);
    reporter.start(&inventory.source, &names, opts.check);
    for e in &opts.pre_events {
        reporter.task(e.clone());
    }

    // The controller's key, when the ssh-keys step runs.
    let wants_keys = opts.only.is_empty() || opts.only.iter().any(|s| s == "ssh-keys");
    let pubkey = match &opts.pubkey {
        Some(k) => k.clone(),
        None if wants_keys => {
            let path = keys::default_path().map_err(failed)?;
            let key = keys::ensure(&path, opts.check)
                .await
                .with_context(|| "the controller's SSH key")
                .map_err(failed)?;
            let ev = key_event(inventory, &key);
            if names.contains(&ev.node) {
                reporter.task(ev);
            } else if key.created {
                reporter.note(&report::task_line(&ev));
            }
            key.pubkey
        }
        None => String::new(),
    };

    // Addresses of `host: local` nodes as the others see them.
    let peer =
        inventory.storage_node().into_iter().chain(inventory.nodes.iter()).find_map(|n| match &n.host {
            Host::Remote(h) => Some(h.clone()),
            Host::Local => None,
        });
    let addrs = context::addresses(inventory, || peer.as_deref().and_then(local_source_address));

    let mut jobs: BTreeMap<String, NodeJob> =
        build_jobs(inventory, &selected, &pbs, &opts, &pubkey, &addrs, wants_keys)?
            .into_iter()
            .map(|j| (j.name.clone(), j))
            .collect();

    // Compute nodes mount the storage node's exports: they wait for its play
    // (`meta: wait_for_storage`) when it is part of this run.
    let storage_name = inventory.storage_node().map(|s| s.name.clone()).filter(|s| jobs.contains_key(s));
    let (storage_tx, storage_rx) = tokio::sync::watch::channel(None);
    let storage = storage_name.clone().map(|node| StorageGate { node, done: storage_rx });
    let shared =
        Arc::new(Shared { renderer, raw_templates, check: opts.check, diff: opts.diff, reporter, storage });
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.forks.max(1)));
    let mut conns: BTreeMap<String, Result<T, String>> = nodes.into_iter().collect();
    let mut set = tokio::task::JoinSet::new();
    // The storage node takes the first fork (permits are taken here, in this
    // order), so that nodes waiting for it can never hold every fork.
    let mut order: Vec<&String> = names.iter().filter(|n| Some(*n) == storage_name.as_ref()).collect();
    order.extend(names.iter().filter(|n| Some(*n) != storage_name.as_ref()));
    let mut storage_tx = Some(storage_tx);
    for name in order {
        let Some(job) = jobs.remove(name) else {
            continue;
        };
        let conn = conns.remove(name).unwrap_or_else(|| Err("no connection was made to this node".into()));
        let sh = shared.clone();
        let permit = sem.clone().acquire_owned().await;
        let done = if Some(name) == storage_name.as_ref() { storage_tx.take() } else { None };
        set.spawn(async move {
            let _permit = permit;
            let outcome = match conn {
                Ok(t) => engine::play(&t, &job, &sh).await,
                Err(msg) => {
                    sh.reporter.unreachable(&job.name, &msg);
                    engine::PlayOutcome::Unreachable
                }
            };
            if let Some(tx) = done {
                // No receiver left (every other node is done) is fine.
                let _ = tx.send(Some(outcome));
            }
        });
    }
    drop(storage_tx);
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            return Err(failed(anyhow!("a node's play crashed: {e}")));
        }
    }
    let failed_nodes = shared.reporter.finish(&names);
    Ok(Summary { recaps: shared.reporter.recaps(), failed: failed_nodes })
}

/// `dffmpeg setup INVENTORY ...`
pub async fn run(args: SetupArgs) -> Outcome {
    let inventory = Inventory::load(&args.inventory).map_err(usage)?;
    let mut opts = Options::from_args(&args)?;
    let selected: Vec<Node> =
        select::nodes(&inventory, &opts.limit).map_err(usage)?.into_iter().cloned().collect();
    if let Some(hint) = select::limit_hint(&inventory, &opts.limit) {
        eprintln!("warning: {hint}");
    }
    let pbs = load_playbooks(&opts.assets).map_err(usage)?;
    let known = select::known_steps(pbs.values().flat_map(|p| p.tasks.iter()));
    select::check_steps(&opts.only, &known).map_err(usage)?;
    if args.ask_pass {
        if let Some((key, events)) = ask_pass(&selected, opts.check, args.connect.strict_host_keys).await? {
            // The key was made (and is reported) here, before the play.
            let ev = key_event(&inventory, &key);
            if selected.iter().any(|n| n.name == ev.node) {
                opts.pre_events.push(ev);
            }
            opts.pre_events.extend(events);
            opts.pubkey = Some(key.pubkey);
        }
    }
    let nodes = connect(&inventory, &selected, &args.connect).await;
    run_with(&inventory, nodes, opts).await
}

/// `--ask-pass`: read the password once, install the controller's key on
/// every selected SSH node that does not accept it yet. Returns the
/// controller's key (created if missing) and a result per node; `None` when
/// there was nothing to do (check mode, no SSH node).
async fn ask_pass(
    nodes: &[Node],
    check: bool,
    strict: bool,
) -> Result<Option<(keys::ControllerKey, Vec<TaskEvent>)>, Failure> {
    let remote: Vec<&Node> = nodes.iter().filter(|n| matches!(n.host, Host::Remote(_))).collect();
    if remote.is_empty() || check {
        return Ok(None);
    }
    let pw = password::read_password("SSH password: ").map_err(usage)?;
    let path = keys::default_path().map_err(failed)?;
    let key = keys::ensure(&path, false).await.map_err(failed)?;
    // Every node at once (each is an ssh or two).
    let mut installs = Vec::new();
    for n in remote {
        let Host::Remote(host) = &n.host else {
            continue;
        };
        let pubkey = match &n.identity_file {
            Some(id) => keys::read_pubkey(id).map_err(usage)?,
            None => key.pubkey.clone(),
        };
        let t = password::SshTarget {
            host: host.clone(),
            port: n.port,
            user: login_user(n),
            known_hosts: crate::remote::ssh::known_hosts_path().ok(),
            strict_host_keys: strict,
        };
        let (pw, identity) = (pw.clone(), n.identity_file.clone());
        let install = tokio::spawn(async move {
            password::install_key_with_password_to(&t, &pw, &pubkey, identity.as_deref()).await
        });
        installs.push((n, install));
    }
    let mut events = Vec::new();
    for (n, install) in installs {
        let r = match install.await {
            // Reported once, as unreachable, when the play connects.
            Ok(Err(password::PasswordError::Unreachable(_))) => continue,
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the key install crashed: {e}")),
        };
        let (status, msg) = match r {
            Ok(password::KeyInstall::AlreadyWorks) => (Status::Ok, None),
            Ok(password::KeyInstall::Installed) => (Status::Changed, None),
            Err(e) => (Status::Failed, Some(e)),
        };
        events.push(TaskEvent {
            node: n.name.clone(),
            task: "install the controller's key with the password".into(),
            step: Some("ssh-keys".into()),
            status,
            handler: false,
            changes: if status == Status::Changed {
                vec![format!("add key for {}", login_user(n))]
            } else {
                Vec::new()
            },
            msg,
            diff: None,
        });
    }
    Ok(Some((key, events)))
}

/// Connections to the selected nodes, in parallel: `host: local` runs
/// directly, the others over SSH (key only, dffmpeg's known_hosts).
async fn connect(
    inventory: &Inventory,
    nodes: &[Node],
    args: &crate::cli::ConnectArgs,
) -> Vec<(String, Result<std::sync::Arc<crate::remote::Node>, String>)> {
    let subset = Inventory { nodes: nodes.to_vec(), ..inventory.clone() };
    crate::remote::connect_all(&subset, args).await
}
