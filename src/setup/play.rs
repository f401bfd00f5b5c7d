//! The play: each selected node's playbooks, run over its connection —
//! what `setup` does once the nodes are connected (any [`Transport`]: SSH
//! in production, [`crate::remote::local::Local`] in tests).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::{Map, Value as Json};

use super::assets::Assets;
use super::controller::{controller_address_toward, local_peer, local_source_address, login_user};
use super::engine::{self, NodeJob, Shared, StorageGate};
use super::first_contact::NewHostKey;
use super::keys::{self, KeyPlan};
use super::playbook::{self, Playbook, Task};
use super::render::Renderer;
use super::report::{self, Recap, Reporter, Sink, Status, TaskEvent};
use super::{context, select, slurm};
use crate::exit::{failed, usage, Failure, Outcome};
use crate::inventory::{Inventory, Node, Role};
use crate::remote::{SshError, Transport};

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
    /// The controller's public key line; `None` = dffmpeg's own key
    /// (`~/.ssh/dffmpeg_ed25519.pub`), created when missing (only when the
    /// `ssh-keys` step runs). Installed on SSH nodes with restrictions
    /// ([`keys::restricted_line`]).
    pub pubkey: Option<String>,
    /// Results obtained before connecting (e.g. `--ask-pass` key installs).
    pub pre_events: Vec<TaskEvent>,
    /// Host keys trusted for the first time in this run, for the report.
    pub new_host_keys: Vec<NewHostKey>,
    /// The limit of each remote step (a task may allow itself more).
    pub timeout: Duration,
    pub sink: Sink,
    /// `-v`: detail lines (each node's facts, each change batch).
    pub verbose: bool,
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
            new_host_keys: Vec::new(),
            timeout: Duration::from_secs(120),
            sink: report::stdout_sink(),
            verbose: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub recaps: BTreeMap<String, Recap>,
    /// Failed or unreachable nodes, in inventory order.
    pub failed: Vec<String>,
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

/// The playbooks that apply to `node`, in order (`slurm.yaml` only when
/// setup provisions Slurm, [`slurm::provisions`]: no page of skipped Slurm
/// tasks otherwise).
fn node_playbooks<'a>(pbs: &'a BTreeMap<String, Playbook>, node: &Node, slurm: bool) -> Vec<&'a Playbook> {
    let mut files = vec!["common.yaml"];
    for role in [Role::Controller, Role::Storage, Role::Compute] {
        if node.has(role) {
            files.push(playbook::role_file(role));
        }
    }
    if slurm {
        files.push("slurm.yaml");
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
    keys: &KeyPlan,
    addrs: &context::Addresses,
) -> Result<Vec<NodeJob>, Failure> {
    let mut jobs = Vec::new();
    for node in selected {
        let books = node_playbooks(pbs, node, slurm::provisions(inventory));
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
        let node_key = keys.line_for(node)?;
        let ctx = context::base(inventory, node, &user, become_root, &node_key, addrs, &vars);
        jobs.push(NodeJob {
            name: node.name.clone(),
            timeout: opts.timeout,
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
pub(super) fn key_event(inventory: &Inventory, key: &keys::ControllerKey) -> TaskEvent {
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
    nodes: Vec<(String, Result<T, SshError>)>,
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
    nodes: Vec<(String, Result<T, SshError>)>,
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
    let reporter = Reporter::new(opts.sink.clone(), opts.json, opts.diff, &names).with_verbose(opts.verbose);
    reporter.start(&inventory.source, &names, opts.check);
    for k in &opts.new_host_keys {
        reporter.host_key(&k.node, &k.host, &k.fingerprints);
    }
    for e in &opts.pre_events {
        reporter.task(e.clone());
    }
    let wants_keys = opts.only.is_empty() || opts.only.iter().any(|s| s == "ssh-keys");
    let pubkey = controller_pubkey(inventory, &opts, &names, &reporter, wants_keys).await?;
    let addrs =
        context::addresses(inventory, || local_peer(inventory).as_deref().and_then(local_source_address));
    let key_plan = KeyPlan { pubkey: &pubkey, wanted: wants_keys, from: &controller_address_toward };
    let mut jobs: BTreeMap<String, NodeJob> =
        build_jobs(inventory, &selected, &pbs, &opts, &key_plan, &addrs)?
            .into_iter()
            .map(|j| (j.name.clone(), j))
            .collect();
    let wants_slurm = opts.only.is_empty() || opts.only.iter().any(|s| s == "slurm");
    if wants_slurm {
        if let Some(p) = slurm::prepare(inventory, &nodes, &addrs, opts.check, opts.timeout).await {
            p.events.into_iter().filter(|e| names.contains(&e.node)).for_each(|e| reporter.task(e));
            with_slurm(&mut jobs, &p.ctx);
        }
    }

    // Compute nodes mount the storage node's exports: they wait for its play
    // (`meta: wait_for_storage`) when it is part of this run.
    let storage_name = inventory.storage_node().map(|s| s.name.clone()).filter(|s| jobs.contains_key(s));
    let (storage_tx, storage_rx) = tokio::sync::watch::channel(None);
    let storage = storage_name.clone().map(|node| StorageGate { node, done: storage_rx });
    let shared =
        Arc::new(Shared { renderer, raw_templates, check: opts.check, diff: opts.diff, reporter, storage });
    let plays = Plays { storage: storage_name, storage_done: storage_tx, forks: opts.forks };
    plays.run(jobs, nodes, &shared, &names).await?;
    let failed_nodes = shared.reporter.finish(&names);
    Ok(Summary { recaps: shared.reporter.recaps(), failed: failed_nodes })
}

/// Every play's context gets `slurm` (see [`super::slurm`]).
fn with_slurm(jobs: &mut BTreeMap<String, NodeJob>, slurm: &Json) {
    for j in jobs.values_mut() {
        if let Json::Object(m) = &mut j.ctx {
            m.insert("slurm".into(), slurm.clone());
        }
    }
}

/// The controller's public key, when the ssh-keys step runs (made here if
/// missing, and reported).
async fn controller_pubkey(
    inventory: &Inventory,
    opts: &Options,
    names: &[String],
    reporter: &Reporter,
    wants_keys: bool,
) -> Result<String, Failure> {
    if let Some(k) = &opts.pubkey {
        return Ok(k.clone());
    }
    if !wants_keys {
        return Ok(String::new());
    }
    let path = keys::default_path().map_err(failed)?;
    let key =
        keys::ensure(&path, opts.check).await.with_context(|| "the controller's SSH key").map_err(failed)?;
    let ev = key_event(inventory, &key);
    if names.contains(&ev.node) {
        reporter.task(ev);
    } else if key.created {
        reporter.note(&report::task_line(&ev));
    }
    Ok(key.pubkey)
}

/// How the nodes' plays run: in parallel, at most `forks` at once, the
/// storage node's play first.
struct Plays {
    storage: Option<String>,
    /// Told when the storage node's play ends (others wait for it).
    storage_done: tokio::sync::watch::Sender<Option<engine::PlayOutcome>>,
    forks: usize,
}

impl Plays {
    async fn run<T: Transport + 'static>(
        self,
        mut jobs: BTreeMap<String, NodeJob>,
        nodes: Vec<(String, Result<T, SshError>)>,
        shared: &Arc<Shared>,
        names: &[String],
    ) -> Result<(), Failure> {
        let sem = Arc::new(tokio::sync::Semaphore::new(self.forks.max(1)));
        let mut conns: BTreeMap<String, Result<T, SshError>> = nodes.into_iter().collect();
        let mut set = tokio::task::JoinSet::new();
        // The storage node takes the first fork (permits are taken here, in
        // this order), so that nodes waiting for it can never hold every fork.
        let is_storage = |n: &String| Some(n) == self.storage.as_ref();
        let order = names.iter().filter(|n| is_storage(n)).chain(names.iter().filter(|n| !is_storage(n)));
        let mut storage_done = Some(self.storage_done);
        for name in order {
            let Some(job) = jobs.remove(name) else { continue };
            let conn = conns.remove(name).unwrap_or(Err(SshError::NotConnected));
            let sh = shared.clone();
            let permit = sem.clone().acquire_owned().await;
            let done = if is_storage(name) { storage_done.take() } else { None };
            set.spawn(async move {
                let _permit = permit;
                let outcome = match conn {
                    Ok(t) => engine::play(&t, &job, &sh).await,
                    Err(e) => {
                        sh.reporter.unreachable(&job.name, &e.to_string());
                        engine::PlayOutcome::Unreachable
                    }
                };
                if let Some(tx) = done {
                    // No receiver left (every other node is done) is fine.
                    let _ = tx.send(Some(outcome));
                }
            });
        }
        drop(storage_done);
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                return Err(failed(anyhow!("a node's play crashed: {e}")));
            }
        }
        Ok(())
    }
}
