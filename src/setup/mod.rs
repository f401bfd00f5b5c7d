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
pub mod first_contact;
pub mod keys;
pub mod modules;
pub mod password;
pub mod playbook;
pub mod render;
pub mod report;
pub mod script;
pub mod select;
pub mod slurm;
pub mod state;

#[cfg(test)]
mod fixtures;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::{Map, Value as Json};

use crate::cli::SetupArgs;
use crate::exit::{failed, usage, Failure, Outcome};
use crate::inventory::{Host, Inventory, Node, Role};
use crate::remote::ssh::ConnectOptions;
use crate::remote::{SshError, Transport};

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

/// A node's host key, trusted for the first time in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHostKey {
    pub node: String,
    pub host: String,
    /// `ED25519 SHA256:...`, one per key.
    pub fingerprints: Vec<String>,
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
        o.timeout = Duration::from_secs(args.timeout.max(1));
        o.verbose = args.log.verbose;
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
    let out = crate::process::std_command("ip")
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

/// The controller's address as `node` sees it (for the `from=` of its
/// key): this machine's source address toward the node's host, resolved.
/// `None` for `host: local` or when it cannot be told.
pub fn controller_address_toward(node: &Node) -> Option<String> {
    use std::net::ToSocketAddrs;
    let Host::Remote(h) = &node.host else { return None };
    let ip = (h.as_str(), node.port).to_socket_addrs().ok()?.next()?.ip();
    local_source_address(&ip.to_string())
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

/// The playbooks that apply to `node`, in order (`slurm.yaml` only with
/// `cluster.engine: slurm`: no page of skipped Slurm tasks otherwise).
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

/// The key each node's play installs.
pub struct KeyPlan<'a> {
    /// dffmpeg's public key line (empty: none).
    pub pubkey: &'a str,
    /// Whether the `ssh-keys` step runs (reads `identity_file` keys).
    pub wanted: bool,
    /// The controller's address toward a node, for `from=`.
    pub from: &'a dyn Fn(&Node) -> Option<String>,
}

impl KeyPlan<'_> {
    /// The authorized_keys line for `node`: an `identity_file`'s key as it
    /// is (the user's key: its options are the user's business); dffmpeg's
    /// key restricted on SSH nodes.
    fn line_for(&self, node: &Node) -> Result<String, Failure> {
        match &node.identity_file {
            Some(id) if self.wanted => keys::read_pubkey(id).map_err(usage),
            _ if self.pubkey.trim().is_empty() => Ok(String::new()),
            _ => Ok(match node.host {
                Host::Local => self.pubkey.trim().to_string(),
                Host::Remote(_) => keys::restricted_line(self.pubkey, (self.from)(node).as_deref()),
            }),
        }
    }
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
        let slurm = matches!(inventory.cluster.engine, crate::inventory::Engine::Slurm(_));
        let books = node_playbooks(pbs, node, slurm);
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
            for j in jobs.values_mut() {
                if let Json::Object(m) = &mut j.ctx {
                    m.insert("slurm".into(), p.ctx.clone());
                }
            }
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

/// A remote host of the inventory (the storage node's first): `host: local`
/// nodes are seen by the others at this machine's address toward it.
fn local_peer(inventory: &Inventory) -> Option<String> {
    inventory.storage_node().into_iter().chain(inventory.nodes.iter()).find_map(|n| match &n.host {
        Host::Remote(h) => Some(h.clone()),
        Host::Local => None,
    })
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

/// `dffmpeg setup INVENTORY ...`. SIGINT or SIGTERM stops it: the work is
/// dropped (local ssh clients die with it), every SSH master is closed, and
/// it exits 1 saying so.
pub async fn run(args: SetupArgs) -> Outcome {
    let mut work = Box::pin(run_to_end(args));
    let signal = tokio::select! {
        r = &mut work => return r,
        s = crate::signals::wait() => s,
    };
    drop(work);
    password::restore_terminal();
    crate::remote::ssh::close_all_masters().await;
    Err(failed(anyhow!(
        "interrupted by {signal}: setup stopped and its SSH connections are closed; a node may have \
         stopped in the middle of a change batch (files are replaced whole): run setup again"
    )))
}

async fn run_to_end(args: SetupArgs) -> Outcome {
    args.log.open()?;
    let inventory = Inventory::load(&args.inventory).map_err(usage)?;
    let mut opts = Options::from_args(&args)?;
    if let Some(w) = &inventory.cluster.watch {
        let line = watch_exec(&args.inventory, w).map_err(usage)?;
        opts.vars.insert("watch_exec".into(), Json::String(line));
        opts.vars.insert("watch_paths".into(), Json::String(watch_paths(&inventory, w)));
    }
    let selected: Vec<Node> =
        select::nodes(&inventory, &opts.limit).map_err(usage)?.into_iter().cloned().collect();
    if let Some(hint) = select::limit_hint(&inventory, &opts.limit) {
        let line = format!("warning: {hint}");
        crate::log::line(&line);
        eprintln!("{line}");
    }
    let pbs = load_playbooks(&opts.assets).map_err(usage)?;
    let known = select::known_steps(pbs.values().flat_map(|p| p.tasks.iter()));
    select::check_steps(&opts.only, &known).map_err(usage)?;
    let mut copts = ConnectOptions::from_args(&args.connect).map_err(failed)?;
    copts.connect_timeout = copts.connect_timeout.min(opts.timeout);
    let remote: Vec<&Node> = selected.iter().filter(|n| matches!(n.host, Host::Remote(_))).collect();
    let unknown = first_contact::unknown_hosts(&copts, &remote).await;
    let mut refused = BTreeMap::new();
    if args.ask_pass && !opts.check && !remote.is_empty() {
        let how = first_contact::AskPass { accept_new: args.accept_new_host_keys, timeout: opts.timeout };
        let done = first_contact::ask_pass(&remote, &copts, &unknown, &how).await?;
        // The key was made (and is reported) here, before the play.
        let ev = key_event(&inventory, &done.key);
        if selected.iter().any(|n| n.name == ev.node) {
            opts.pre_events.push(ev);
        }
        opts.pre_events.extend(done.events);
        opts.pubkey = Some(done.key.pubkey);
        refused = done.refused;
    }
    let nodes = connect(&inventory, &selected, &copts, refused).await;
    opts.new_host_keys = first_contact::new_host_keys(&copts, &remote, &unknown, &nodes).await;
    run_with(&inventory, nodes, opts).await
}

/// The watch service's command line (systemd's `ExecStart=`): this very
/// dffmpeg, the inventory it was run with (its absolute path), `transcode
/// --watch -O OUTPUT INPUT -- ARGS`, each word quoted the way systemd
/// reads it.
fn watch_exec(inventory: &std::path::Path, w: &crate::inventory::Watch) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("the path of this dffmpeg")?;
    let inv = inventory.canonicalize().with_context(|| format!("{}", inventory.display()))?;
    let mut words =
        vec![exe.display().to_string(), "transcode".into(), "-I".into(), inv.display().to_string()];
    words.extend([
        "--watch".into(),
        "-O".into(),
        w.output.display().to_string(),
        w.input.display().to_string(),
    ]);
    words.push("--".into());
    words.extend(w.args.iter().cloned());
    Ok(words.iter().map(|w| systemd_quote(w)).collect::<Vec<_>>().join(" "))
}

/// What the watch service may write besides its state directory (the unit
/// has `ProtectSystem=strict`): the output folder, where jobs next to the
/// outputs go too, and the shared directory's `work/`. Each is optional
/// (`-`): a folder that is missing at start does not stop the service.
pub fn watch_paths(inventory: &Inventory, w: &crate::inventory::Watch) -> String {
    let mut paths = vec![w.output.clone()];
    if let Some(shared) = inventory.shared_dir() {
        paths.push(shared);
    }
    paths.iter().map(|p| systemd_quote(&format!("-{}", p.display()))).collect::<Vec<_>>().join(" ")
}

/// One word for a systemd unit's command line: in double quotes, with
/// `\`, `"`, `%` (specifiers), `$` (variables) and newlines escaped.
pub fn systemd_quote(word: &str) -> String {
    let mut q = String::from("\"");
    for c in word.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '%' => q.push_str("%%"),
            '$' => q.push_str("$$"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Connections to the selected nodes, in parallel: `host: local` runs
/// directly, the others over SSH (key only, dffmpeg's known_hosts). Nodes
/// in `refused` are not connected.
async fn connect(
    inventory: &Inventory,
    nodes: &[Node],
    copts: &ConnectOptions,
    mut refused: BTreeMap<String, SshError>,
) -> Vec<(String, Result<std::sync::Arc<crate::remote::Node>, SshError>)> {
    let subset = Inventory {
        nodes: nodes.iter().filter(|n| !refused.contains_key(&n.name)).cloned().collect(),
        ..inventory.clone()
    };
    let mut done = crate::remote::connect_all_with(&subset, copts).await;
    done.extend(nodes.iter().filter_map(|n| Some((n.name.clone(), Err(refused.remove(&n.name)?)))));
    done
}
