//! Slurm's client commands, run on this machine (the submit host): the
//! partition's nodes (`sinfo`), this user's jobs (`squeue --me`), a test
//! submission (`srun --test-only`) and cancelling jobs (`scancel`). Each
//! command's output is read by a pure parser.

use std::time::{Duration, Instant};

use super::{Owner, ORPHAN_WAIT};
use crate::inventory::SlurmSpec;

/// Why a Slurm command did not give an answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SlurmError {
    #[error(
        "`{tool}` is not installed: this machine must be a Slurm submit host (on Debian: apt-get install \
         slurm-client munge, with the cluster's slurm.conf and munge key)"
    )]
    Missing { tool: String },
    #[error("`{command}` failed: {detail}")]
    Failed { command: String, detail: String },
    #[error("`{command}` did not answer within {seconds} s: is slurmctld up?")]
    Timeout { command: String, seconds: u64 },
    #[error("partition {partition} has no nodes (or there is no such partition: `sinfo` lists them)")]
    NoNodes { partition: String },
}

/// How long a Slurm query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Run a Slurm client command to its end; its stdout.
async fn run(argv: &[String]) -> Result<String, SlurmError> {
    let command = argv.join(" ");
    let mut cmd = crate::process::command(&argv[0]);
    cmd.args(&argv[1..]).stdin(std::process::Stdio::null());
    let out = match tokio::time::timeout(QUERY_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(SlurmError::Timeout { command, seconds: QUERY_TIMEOUT.as_secs() }),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SlurmError::Missing { tool: argv[0].clone() })
        }
        Ok(Err(e)) => return Err(SlurmError::Failed { command, detail: e.to_string() }),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        // Slurm's last word is its verdict (`sinfo: fatal: ...`, `allocation
        // failure: ...`): one line for the message.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
        let detail = match last {
            "" => format!("exit status {}", out.status),
            l => crate::text::printable(l),
        };
        return Err(SlurmError::Failed { command, detail });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// A node of the partition, as `sinfo` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmNode {
    pub name: String,
    pub cpus: u32,
    /// `sinfo`'s compact state: `idle`, `mix`, `alloc`, `down*` ...
    pub state: String,
}

/// `sinfo -h -N -o %N|%c|%t` lines; a node listed twice counts once.
pub fn parse_nodes(text: &str) -> Vec<SlurmNode> {
    let mut nodes: Vec<SlurmNode> = Vec::new();
    for line in text.lines() {
        let mut f = line.trim().split('|');
        let (Some(name), Some(cpus), Some(state)) = (f.next(), f.next(), f.next()) else { continue };
        let Ok(cpus) = cpus.trim().parse::<u32>() else { continue };
        if name.is_empty() || nodes.iter().any(|n| n.name == name) {
            continue;
        }
        nodes.push(SlurmNode { name: name.into(), cpus, state: state.trim().into() });
    }
    nodes
}

/// The partition's nodes; an error when it has none.
pub async fn partition_nodes(spec: &SlurmSpec) -> Result<Vec<SlurmNode>, SlurmError> {
    let argv = words(&["sinfo", "--noheader", "--Node", "--partition", &spec.partition, "--format=%N|%c|%t"]);
    let nodes = parse_nodes(&run(&argv).await?);
    if nodes.is_empty() {
        return Err(SlurmError::NoNodes { partition: spec.partition.clone() });
    }
    Ok(nodes)
}

/// A node's state now (None: not in the partition).
pub async fn node_state(spec: &SlurmSpec, node: &str) -> Result<Option<String>, SlurmError> {
    let argv = words(&[
        "sinfo",
        "--noheader",
        "--Node",
        "--partition",
        &spec.partition,
        "--nodes",
        node,
        "--format=%N|%c|%t",
    ]);
    Ok(parse_nodes(&run(&argv).await?).into_iter().find(|n| n.name == node).map(|n| n.state))
}

/// Whether a node in this `sinfo` state takes jobs: not down, drained,
/// failing or unknown, and answering (no `*`). A powered-down node counts:
/// Slurm powers it up for the job.
pub fn usable(state: &str) -> bool {
    if state.contains('*') {
        return false;
    }
    let base: String = state.chars().take_while(|c| c.is_ascii_alphabetic() || *c == '_').collect();
    matches!(base.as_str(), "idle" | "mix" | "alloc" | "comp" | "plnd" | "resv" | "pow_up" | "pow_dn")
}

/// `scontrol -o show node` lines: each node's architecture, as its slurmd
/// reported it (`Arch=aarch64`).
pub fn parse_arches(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let word =
                |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).map(str::to_string);
            Some((word("NodeName=")?, word("Arch=").filter(|a| !a.is_empty() && a != "(null)")?))
        })
        .collect()
}

/// The nodes' architectures Slurm knows (none when it cannot be asked).
pub async fn node_arches() -> Vec<(String, String)> {
    run(&words(&["scontrol", "--oneliner", "show", "node"]))
        .await
        .map(|t| parse_arches(&t))
        .unwrap_or_default()
}

/// Ask Slurm whether it would take a job with these partition, account
/// and QOS at all (`srun --test-only`: nothing is submitted).
pub async fn test_submit(spec: &SlurmSpec) -> Result<(), SlurmError> {
    let mut argv = words(&["srun", "--test-only", "--quiet", "--ntasks=1"]);
    argv.push(format!("--partition={}", spec.partition));
    argv.extend(spec.account.iter().map(|a| format!("--account={a}")));
    argv.extend(spec.qos.iter().map(|q| format!("--qos={q}")));
    argv.push("true".into());
    run(&argv).await.map(|_| ())
}

/// A job of this user's, as `squeue` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub id: u32,
    pub name: String,
    /// PENDING, RUNNING, COMPLETING ...
    pub state: String,
    pub nodes: String,
    pub comment: String,
}

const QUEUE_FORMAT: &str = "--format=%i|%j|%T|%N|%k";

/// `squeue -h -o %i|%j|%T|%N|%k` lines (the comment last: it may hold `|`).
pub fn parse_queue(text: &str) -> Vec<Queued> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(5, '|');
            let id = f.next()?.trim().parse().ok()?;
            let (name, state, nodes) = (f.next()?, f.next()?, f.next()?);
            let comment = f.next().unwrap_or("").trim();
            Some(Queued {
                id,
                name: name.into(),
                state: state.into(),
                nodes: nodes.into(),
                comment: comment.into(),
            })
        })
        .collect()
}

/// This user's jobs that Slurm still knows as active (queued, running,
/// completing).
pub async fn my_jobs() -> Result<Vec<Queued>, SlurmError> {
    Ok(parse_queue(&run(&words(&["squeue", "--me", "--noheader", QUEUE_FORMAT])).await?))
}

/// Cancel jobs by id, only if this user's (`scancel --user`).
pub async fn cancel(ids: &[u32]) -> Result<(), SlurmError> {
    if ids.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let mut argv = words(&["scancel", "--quiet"]);
    argv.push(format!("--user={uid}"));
    argv.extend(ids.iter().map(u32::to_string));
    run(&argv).await.map(|_| ())
}

/// Cancel one job and wait, up to `limit`, until Slurm no longer lists it
/// (its processes are gone: a stopped attempt leaves nothing running).
pub async fn cancel_and_wait(id: u32, limit: Duration) -> Result<(), SlurmError> {
    // A job already completing refuses the cancel: it is waited for.
    let _ = cancel(&[id]).await;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && my_jobs().await?.iter().any(|j| j.id == id) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A job a dffmpeg of this machine submitted and left behind when it died.
pub fn is_orphan(job: &Queued) -> bool {
    job.name.starts_with("dffmpeg-") && Owner::parse(&job.comment).is_some_and(|o| o.is_gone())
}

/// What [`cancel_orphans`] did.
#[derive(Debug, Default)]
pub struct Orphans {
    pub cancelled: Vec<Queued>,
    /// Still known to Slurm when dffmpeg stopped waiting (a node that does
    /// not answer): their chunks may run twice.
    pub lingering: Vec<u32>,
}

/// Cancel the jobs killed dffmpegs of this machine left (their `srun` is
/// gone, but a job whose node could not be told yet still runs: it is
/// COMPLETING until its node confirms), and wait until Slurm has none of
/// them any more, so that no chunk runs twice. `waiting` is told once
/// what is waited for.
pub async fn cancel_orphans(waiting: impl Fn(&str)) -> Result<Orphans, SlurmError> {
    let orphans: Vec<Queued> = my_jobs().await?.into_iter().filter(is_orphan).collect();
    if orphans.is_empty() {
        return Ok(Orphans::default());
    }
    let ids: Vec<u32> = orphans.iter().map(|j| j.id).collect();
    // scancel fails for a job already COMPLETING: what counts is that they
    // all leave, which is waited for.
    let _ = cancel(&ids).await;
    waiting(&format!(
        "cancelled {} Slurm job(s) left by an earlier dffmpeg that is gone ({}): waiting for them to end",
        ids.len(),
        describe(&orphans)
    ));
    let deadline = Instant::now() + ORPHAN_WAIT;
    loop {
        let known: Vec<u32> = my_jobs().await?.iter().map(|j| j.id).filter(|id| ids.contains(id)).collect();
        if known.is_empty() || Instant::now() >= deadline {
            return Ok(Orphans { cancelled: orphans, lingering: known });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `12 dffmpeg-in-…-c3-a7 on a (RUNNING), ...`
pub fn describe(jobs: &[Queued]) -> String {
    let one = |j: &Queued| {
        let on = if j.nodes.is_empty() { String::new() } else { format!(" on {}", j.nodes) };
        format!("{} {}{on} ({})", j.id, j.name, j.state)
    };
    jobs.iter().map(one).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinfo_lines() {
        let text = "a|4|idle\nb|1|down*\na|4|idle\nbad line\nc|x|idle\nd|2|mix\n";
        let nodes = parse_nodes(text);
        let names: Vec<_> = nodes.iter().map(|n| (n.name.as_str(), n.cpus, n.state.as_str())).collect();
        assert_eq!(names, [("a", 4, "idle"), ("b", 1, "down*"), ("d", 2, "mix")]);
    }

    #[test]
    fn scontrol_arches() {
        let text = "NodeName=a Arch=x86_64 CoresPerSocket=1 OS=Linux 6.1.0-18-amd64 #1 SMP\nNodeName=pi3 Arch=aarch64 CPUTot=4\nNodeName=new Arch=(null)\n";
        assert_eq!(parse_arches(text), [("a".into(), "x86_64".into()), ("pi3".into(), "aarch64".into())]);
    }

    #[test]
    fn usable_states() {
        for ok in ["idle", "mix", "alloc", "comp", "idle~", "mix-", "idle#", "resv", "pow_up"] {
            assert!(usable(ok), "{ok}");
        }
        for bad in ["down", "down*", "idle*", "drain", "drng", "fail", "maint", "unk", "unk*", "npc", ""] {
            assert!(!usable(bad), "{bad}");
        }
    }

    #[test]
    fn squeue_lines_and_orphans() {
        let me = Owner::me();
        let dead = Owner { start: me.start + 1, ..me.clone() };
        let text = format!(
            "12|dffmpeg-in-00ff-c3-a7|RUNNING|a|{}\n13|dffmpeg-in-00ff-c4-a8|COMPLETING|b|{}\n14|other|RUNNING|a|{}\n15|dffmpeg-x-c1-a1|PENDING||a | b\n",
            dead.comment(),
            me.comment(),
            dead.comment()
        );
        let jobs = parse_queue(&text);
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[3].comment, "a | b", "the comment keeps its `|`");
        assert_eq!(jobs[3].nodes, "");
        let orphans: Vec<u32> = jobs.iter().filter(|j| is_orphan(j)).map(|j| j.id).collect();
        // Only a dead dffmpeg's own jobs: not this one's, not another
        // name's, not one without dffmpeg's comment.
        assert_eq!(orphans, [12]);
        assert_eq!(describe(&jobs[..1]), "12 dffmpeg-in-00ff-c3-a7 on a (RUNNING)");
    }
}
