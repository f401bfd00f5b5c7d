//! `dffmpeg setup`: Ansible-like bring-up of the cluster. This file is the
//! command's entry ([`run`]: arguments, connections, first contact); the
//! play itself is [`play`] ([`run_with`]: any [`crate::remote::Transport`],
//! the SSH transport in production, [`crate::remote::local::Local`] in
//! tests).
//!
//! Playbooks per role ([`playbook`], embedded from `playbooks/`) render
//! templates ([`render`], from `templates/`) against a context of the
//! inventory and each node's facts ([`context`]). Each node costs one round
//! trip to read facts and state ([`state`]), and one more (a batch script)
//! only when something changes ([`engine`]). Modules plan changes as pure
//! functions ([`modules`]); results are reported Ansible-style
//! ([`report`]).

pub mod assets;
pub mod b64;
pub mod context;
mod controller;
pub mod diff;
pub mod engine;
pub mod first_contact;
pub mod keys;
pub mod modules;
pub mod password;
pub mod play;
pub mod playbook;
pub mod render;
pub mod report;
pub mod script;
pub mod select;
pub mod slurm;
pub mod state;
mod watch;

#[cfg(test)]
mod fixtures;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::Value as Json;

use crate::cli::SetupArgs;
use crate::exit::{failed, usage, Failure, Outcome};
use crate::inventory::{Host, Inventory, Node};
use crate::remote::ssh::ConnectOptions;
use crate::remote::SshError;

use assets::Assets;
pub use play::{play_cluster, run_with, Options, Summary};

/// `dffmpeg setup INVENTORY ...`. SIGINT or SIGTERM stops it: the work is
/// dropped (local ssh clients die with it), every SSH master is closed, and
/// it exits 1 saying so.
pub async fn run(args: SetupArgs) -> Outcome {
    let signal = match crate::signals::unless_stopped(run_to_end(args)).await {
        Ok(r) => return r,
        Err(s) => s,
    };
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
    let mut opts = options(&args)?;
    if let Some(w) = &inventory.cluster.watch {
        let line = watch::watch_exec(&args.inventory, w).map_err(usage)?;
        opts.vars.insert("watch_exec".into(), Json::String(line));
        opts.vars.insert("watch_paths".into(), Json::String(watch::watch_paths(&inventory, w)));
    }
    let selected: Vec<Node> =
        select::nodes(&inventory, &opts.limit).map_err(usage)?.into_iter().cloned().collect();
    if let Some(hint) = select::limit_hint(&inventory, &opts.limit) {
        let line = format!("warning: {hint}");
        crate::log::line(&line);
        eprintln!("{line}");
    }
    let pbs = play::load_playbooks(&opts.assets).map_err(usage)?;
    let known = select::known_steps(pbs.values().flat_map(|p| p.tasks.iter()));
    select::check_steps(&opts.only, &known).map_err(usage)?;
    let mut copts = args.connect.options().map_err(failed)?;
    copts.connect_timeout = copts.connect_timeout.min(opts.timeout);
    let remote: Vec<&Node> = selected.iter().filter(|n| matches!(n.host, Host::Remote(_))).collect();
    let unknown = first_contact::unknown_hosts(&copts, &remote).await;
    let mut refused = BTreeMap::new();
    if args.ask_pass && !opts.check && !remote.is_empty() {
        let how = first_contact::AskPass { accept_new: args.accept_new_host_keys, timeout: opts.timeout };
        let done = first_contact::ask_pass(&remote, &copts, &unknown, &how).await?;
        // The key was made (and is reported) here, before the play.
        let ev = play::key_event(&inventory, &done.key);
        if selected.iter().any(|n| n.name == ev.node) {
            opts.pre_events.push(ev);
        }
        opts.pre_events.extend(done.events);
        opts.pubkey = Some(done.key.pubkey);
        refused = done.refused;
    }
    let nodes = connect(&selected, &copts, refused).await;
    opts.new_host_keys = first_contact::new_host_keys(&copts, &remote, &unknown, &nodes).await;
    run_with(&inventory, nodes, opts).await
}

/// Options of the command line (playbooks from `--playbook-dir`).
fn options(args: &SetupArgs) -> Result<Options, Failure> {
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

/// Connections to the selected nodes, in parallel: `host: local` runs
/// directly, the others over SSH (key only, dffmpeg's known_hosts). Nodes
/// in `refused` are not connected.
async fn connect(
    nodes: &[Node],
    copts: &ConnectOptions,
    mut refused: BTreeMap<String, SshError>,
) -> Vec<(String, Result<std::sync::Arc<crate::remote::Node>, SshError>)> {
    let asked: Vec<Node> = nodes.iter().filter(|n| !refused.contains_key(&n.name)).cloned().collect();
    let mut done = crate::remote::connect_all(&asked, copts).await;
    done.extend(nodes.iter().filter_map(|n| Some((n.name.clone(), Err(refused.remove(&n.name)?)))));
    done
}
