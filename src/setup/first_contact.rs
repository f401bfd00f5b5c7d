//! First contact: which SSH nodes are new (their host key unknown), and
//! `--ask-pass` — the controller's key installed with the password, after
//! the user has seen the new hosts' fingerprints.
//!
//! `--ask-pass` in stages: probe every node with the key ([`probe_all`]),
//! trust the host keys learned on the way where that is safe
//! ([`trust_learned`]), read the password once if a node needs it, install
//! the key with it ([`install_all`]) and report each node ([`report`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use tokio::task::JoinHandle;

use super::controller::{controller_address_toward, login_user};
use super::keys;
use super::keys::KeyPlan;
use super::password::{self, KeyProbe, PasswordError, SshTarget};
use super::report::{Status, TaskEvent};
use crate::exit::{failed, usage, Failure};
use crate::inventory::{Host, Node};
use crate::remote::ssh::ConnectOptions;
use crate::remote::{hostkeys, SshError};

/// A node's host key, trusted for the first time in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHostKey {
    pub node: String,
    pub host: String,
    /// `ED25519 SHA256:...`, one per key.
    pub fingerprints: Vec<String>,
}

/// The SSH nodes whose host key dffmpeg's known_hosts does not hold yet.
pub async fn unknown_hosts(copts: &ConnectOptions, remote: &[&Node]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for n in remote {
        let Host::Remote(h) = &n.host else { continue };
        if !hostkeys::is_known(&copts.known_hosts, h, n.port).await {
            out.insert(n.name.clone());
        }
    }
    out
}

/// The fingerprints of the host keys first trusted in this run (nodes that
/// were unknown and are connected now).
pub async fn new_host_keys<T>(
    copts: &ConnectOptions,
    remote: &[&Node],
    unknown: &BTreeSet<String>,
    nodes: &[(String, Result<T, SshError>)],
) -> Vec<NewHostKey> {
    let mut out = Vec::new();
    for n in remote.iter().filter(|n| unknown.contains(&n.name)) {
        let connected = nodes.iter().any(|(name, r)| name == &n.name && r.is_ok());
        let Host::Remote(h) = &n.host else { continue };
        if connected {
            let fingerprints = hostkeys::fingerprints(&copts.known_hosts, h, n.port).await;
            out.push(NewHostKey { node: n.name.clone(), host: h.clone(), fingerprints });
        }
    }
    out
}

/// How `--ask-pass` treats hosts never seen before.
pub struct AskPass {
    /// `--accept-new-host-keys`: no question.
    pub accept_new: bool,
    pub timeout: Duration,
}

/// What `--ask-pass` did before the play.
pub struct AskPassDone {
    pub key: keys::ControllerKey,
    pub events: Vec<TaskEvent>,
    /// Nodes that got no password (their new host key was not confirmed).
    pub refused: BTreeMap<String, SshError>,
}

/// A scratch known_hosts file, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // Missing when no new host answered: nothing to remove.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A node, how it is reached, and what the key probe found.
type Probed<'a> = (&'a Node, SshTarget, Result<KeyProbe, PasswordError>);

/// `--ask-pass`: install the controller's key on every selected SSH node
/// that does not accept it yet. Every node is probed with the key first
/// (host keys of new hosts are learned into a scratch file, not trusted
/// yet). Before the password goes to a host never seen before, its key's
/// fingerprint is shown and the user asked once for all of them
/// (`--accept-new-host-keys` for scripts; without a terminal and without
/// it, those hosts get no password). Then the password is read once and
/// the key installed where needed.
pub async fn ask_pass(
    remote: &[&Node],
    copts: &ConnectOptions,
    unknown: &BTreeSet<String>,
    how: &AskPass,
) -> Result<AskPassDone, Failure> {
    let path = keys::default_path().map_err(failed)?;
    let key = keys::ensure(&path, false).await.map_err(failed)?;
    let dir = crate::remote::ssh::private_dir(&copts.control_dir).map_err(failed)?;
    let scratch = Scratch(dir.join(format!("known_hosts.new.{}", std::process::id())));
    let target = |n: &Node| -> Option<SshTarget> {
        let Host::Remote(host) = &n.host else { return None };
        let new = unknown.contains(&n.name) && !copts.strict_host_keys;
        Some(SshTarget {
            host: host.clone(),
            port: n.port,
            user: login_user(n),
            known_hosts: if new { scratch.0.clone() } else { copts.known_hosts.clone() },
            strict_host_keys: copts.strict_host_keys,
            identity: n.identity_file.clone().unwrap_or_else(|| key.path.clone()),
            timeout: how.timeout,
        })
    };
    let probed = probe_all(remote, target).await;
    let refused = trust_learned(&probed, &scratch.0, &copts.known_hosts, how.accept_new).await?;
    let needs_password = probed
        .iter()
        .any(|(n, _, r)| matches!(r, Ok(KeyProbe::NeedsPassword)) && !refused.contains_key(&n.name));
    let pw = if needs_password {
        let read = tokio::task::spawn_blocking(|| password::read_password("SSH password: "));
        Some(read.await.map_err(|e| failed(anyhow!("reading the password: {e}")))?.map_err(usage)?)
    } else {
        None
    };
    let installs = install_all(&probed, &refused, pw, &key.pubkey, &copts.known_hosts)?;
    let events = report(installs).await;
    Ok(AskPassDone { key, events, refused })
}

/// The key first, every node at once.
async fn probe_all<'a>(remote: &[&'a Node], target: impl Fn(&Node) -> Option<SshTarget>) -> Vec<Probed<'a>> {
    let probes: Vec<_> = remote
        .iter()
        .filter_map(|n| {
            let t = target(n)?;
            Some((*n, t.clone(), tokio::spawn(async move { password::probe_key(&t).await })))
        })
        .collect();
    let mut probed = Vec::new();
    for (n, t, p) in probes {
        let r = p.await.unwrap_or_else(|e| Err(PasswordError::Refused(format!("probe crashed: {e}"))));
        probed.push((n, t, r));
    }
    probed
}

/// Host keys learned into `scratch` become trusted where the key already
/// works (trust on first use, as any connection) and, for hosts that would
/// get the password, once the user confirmed their fingerprints. Returns
/// the nodes left out (not confirmed).
async fn trust_learned(
    probed: &[Probed<'_>],
    scratch: &Path,
    known_hosts: &Path,
    accept_new: bool,
) -> Result<BTreeMap<String, SshError>, Failure> {
    let mut asking = Vec::new();
    for (n, t, r) in probed {
        if t.known_hosts == scratch && matches!(r, Ok(KeyProbe::NeedsPassword)) {
            asking.push((*n, hostkeys::fingerprints(scratch, &t.host, t.port).await));
        }
    }
    let confirmed = asking.is_empty() || confirm_new_hosts(&asking, accept_new).await?;
    let mut refused = BTreeMap::new();
    for (n, t, r) in probed {
        if t.known_hosts != scratch || r.is_err() {
            continue;
        }
        if confirmed || matches!(r, Ok(KeyProbe::Works)) {
            hostkeys::copy_entries(scratch, known_hosts, &t.host, t.port)
                .await
                .map_err(|e| failed(anyhow!("cannot write {}: {e}", known_hosts.display())))?;
        } else if let Some((_, fps)) = asking.iter().find(|(a, _)| a.name == n.name) {
            let why = SshError::HostKeyNotConfirmed {
                node: n.name.clone(),
                host: t.host.clone(),
                fingerprints: fps.join(", "),
            };
            refused.insert(n.name.clone(), why);
        }
    }
    Ok(refused)
}

/// Show the host keys of the new hosts that would get the password, and
/// whether they may have it: `--accept-new-host-keys`, or the user's yes on
/// the terminal.
async fn confirm_new_hosts(asking: &[(&Node, Vec<String>)], accept_new: bool) -> Result<bool, Failure> {
    let mut text = String::from("These hosts were never seen before; the SSH password would go to them:\n");
    for (n, fps) in asking {
        let host = n.host.to_string();
        let fps = if fps.is_empty() { "(no key read)".to_string() } else { fps.join(", ") };
        text.push_str(&format!("  {} ({host}): {fps}\n", n.name));
    }
    eprint!("{text}");
    if accept_new {
        eprintln!("(--accept-new-host-keys: sending it)");
        return Ok(true);
    }
    if !password::stdin_is_terminal() {
        eprintln!(
            "not sending the password to them: no terminal to confirm on; check the fingerprints and \
             run again with --accept-new-host-keys"
        );
        return Ok(false);
    }
    let q = "Are these the right host keys, and may the password go to them?";
    let answer = tokio::task::spawn_blocking(move || password::confirm(q));
    answer.await.map_err(|e| failed(anyhow!("reading the answer: {e}")))?.map_err(usage)
}

/// A node, its probe, and the key install started for it (if any).
type Install<'a> =
    (&'a Node, &'a Result<KeyProbe, PasswordError>, Option<JoinHandle<Result<(), PasswordError>>>);

/// With the password, the key goes on every node that asked for it and was
/// not left out; all at once.
fn install_all<'a>(
    probed: &'a [Probed<'a>],
    refused: &BTreeMap<String, SshError>,
    pw: Option<String>,
    pubkey: &str,
    known_hosts: &Path,
) -> Result<Vec<Install<'a>>, Failure> {
    let plan = KeyPlan { pubkey, wanted: true, from: &controller_address_toward };
    let mut installs = Vec::new();
    for (n, t, r) in probed {
        let task = match (r, &pw) {
            (Ok(KeyProbe::NeedsPassword), Some(pw)) if !refused.contains_key(&n.name) => {
                let line = plan.line_for(n)?;
                let t = SshTarget { known_hosts: known_hosts.to_path_buf(), ..t.clone() };
                let pw = pw.clone();
                Some(tokio::spawn(async move { password::install_with_password(&t, &pw, &line).await }))
            }
            _ => None,
        };
        installs.push((*n, r, task));
    }
    Ok(installs)
}

/// One line of the report per node: ok (the key worked), changed
/// (installed), failed. Unreachable and left-out nodes are reported once,
/// by the play.
async fn report(installs: Vec<Install<'_>>) -> Vec<TaskEvent> {
    let mut events = Vec::new();
    for (n, probe, task) in installs {
        let (status, msg) = match (probe, task) {
            (Err(PasswordError::Unreachable(_)), _) => continue,
            (Err(e), _) => (Status::Failed, Some(e.to_string())),
            (Ok(KeyProbe::Works), _) => (Status::Ok, None),
            (Ok(KeyProbe::NeedsPassword), None) => continue,
            (Ok(KeyProbe::NeedsPassword), Some(task)) => match task.await {
                Ok(Ok(())) => (Status::Changed, None),
                Ok(Err(e)) => (Status::Failed, Some(e.to_string())),
                Err(e) => (Status::Failed, Some(format!("the key install crashed: {e}"))),
            },
        };
        let changes = if status == Status::Changed {
            vec![format!("add key for {}", login_user(n))]
        } else {
            Vec::new()
        };
        events.push(TaskEvent {
            node: n.name.clone(),
            task: "install the controller's key with the password".into(),
            step: Some("ssh-keys".into()),
            status,
            handler: false,
            changes,
            msg,
            diff: None,
        });
    }
    events
}
