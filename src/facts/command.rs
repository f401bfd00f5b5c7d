//! `dffmpeg facts INVENTORY`: every node's facts, as a table or JSON lines.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::{gather, Facts};
use crate::exit::{failed, usage, Failure, Outcome};
use crate::inventory::Inventory;
use crate::remote::{self, hostkeys, ConnectOptions};

/// What `dffmpeg facts` is asked (from its command line).
#[derive(Debug, Clone)]
pub struct Request {
    pub inventory: PathBuf,
    /// Check whether this encoder exists on each node.
    pub encoder: Option<String>,
    /// One JSON object per node.
    pub json: bool,
    /// Refuse hosts whose key is not yet known.
    pub strict_host_keys: bool,
}

/// One node's line of `dffmpeg facts`.
#[derive(Debug, Serialize)]
struct Report {
    node: String,
    host: String,
    reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    facts: Option<Facts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_encoder: Option<bool>,
}

/// `dffmpeg facts INVENTORY`. SIGINT or SIGTERM stops it: the work is
/// dropped, every SSH master closed, exit 1 saying so.
pub async fn run(args: Request) -> Outcome {
    let signal = match crate::signals::unless_stopped(run_to_end(args)).await {
        Ok(r) => return r,
        Err(s) => s,
    };
    remote::ssh::close_all_masters().await;
    Err(failed(anyhow::anyhow!("interrupted by {signal}: facts stopped and its SSH connections are closed")))
}

async fn run_to_end(args: Request) -> Outcome {
    let inventory = Inventory::load(&args.inventory).map_err(usage)?;
    let opts = ConnectOptions::new(args.strict_host_keys).map_err(failed)?;
    let reports = collect(&inventory, &opts, args.encoder.as_deref()).await;
    if args.json {
        for r in &reports {
            match serde_json::to_string(r) {
                Ok(line) => {
                    // A closed stdout: the exit status still tells.
                    let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{line}\n").as_bytes());
                }
                Err(e) => return Err(failed(anyhow::anyhow!("cannot write JSON: {e}"))),
            }
        }
    } else {
        // A closed stdout: the exit status still tells.
        let _ = std::io::Write::write_all(
            &mut std::io::stdout(),
            table(&reports, args.encoder.as_deref()).as_bytes(),
        );
        for r in &reports {
            if let Some(e) = &r.error {
                eprintln!("dffmpeg: {}", crate::text::printable(e));
            }
        }
    }
    if reports.iter().all(|r| r.reachable) {
        Ok(())
    } else {
        Err(Failure::Reported)
    }
}

/// Connect to and gather every node, in parallel, in inventory order.
async fn collect(inventory: &Inventory, opts: &ConnectOptions, encoder: Option<&str>) -> Vec<Report> {
    let dir = Arc::new(inventory.cluster.shared_dir.clone());
    let tasks: Vec<_> = inventory
        .nodes
        .iter()
        .map(|n| {
            let (n, opts, dir) = (n.clone(), opts.clone(), dir.clone());
            tokio::spawn(async move {
                let first = hostkeys::FirstContact::of(&opts.known_hosts, &n).await;
                let node = remote::connect(&n, &opts).await.map_err(|e| e.to_string())?;
                if let Some(f) = &first {
                    if let Some(line) = f.trusted(&opts.known_hosts).await {
                        eprintln!("{line}");
                    }
                }
                let facts = gather(&node, Some(&dir)).await.map_err(|e| e.to_string());
                node.close().await;
                facts
            })
        })
        .collect();
    let mut reports = Vec::new();
    for (n, task) in inventory.nodes.iter().zip(tasks) {
        let result = task.await.unwrap_or_else(|e| Err(format!("node {}: facts task failed: {e}", n.name)));
        let (facts, error) = match result {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        let has_encoder = encoder.and_then(|e| Some(facts.as_ref()?.has_encoder(e)));
        reports.push(Report {
            node: n.name.clone(),
            host: n.host.to_string(),
            reachable: facts.is_some(),
            error,
            facts,
            encoder: encoder.map(str::to_string),
            has_encoder,
        });
    }
    reports
}

fn table(reports: &[Report], encoder: Option<&str>) -> String {
    let mut head = vec!["NODE", "HOST", "REACHABLE", "ARCH", "OS", "CORES", "FFMPEG"];
    let enc_head = encoder.map(|e| e.to_uppercase());
    if let Some(e) = &enc_head {
        head.push(e);
    }
    head.push("FREE DISK");
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let mut row = vec![r.node.clone(), r.host.clone()];
            if let Some(f) = &r.facts {
                row.extend([
                    "yes".into(),
                    f.arch.clone(),
                    f.os().unwrap_or_else(dash),
                    match f.cpu_quota {
                        Some(q) => format!("{} (quota {q:.2})", f.cores),
                        None => f.cores.to_string(),
                    },
                    f.ffmpeg_version.clone().unwrap_or_else(|| "missing".into()),
                ]);
                if let Some(e) = encoder {
                    row.push(if f.has_encoder(e) { "yes" } else { "no" }.into());
                }
                row.push(
                    f.free_disk_mb.map(|mb| format!("{:.1} GiB", mb as f64 / 1024.0)).unwrap_or_else(dash),
                );
            } else {
                row.push("no".into());
                row.extend(std::iter::repeat_with(dash).take(head.len() - 3));
            }
            // Every cell may hold text from the node: no terminal escapes.
            row.iter().map(|c| crate::text::printable(c)).collect()
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter().map(|r| r[i].chars().count()).chain([head[i].chars().count()]).max().unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let mut s = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(head.clone());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_node() {
        let pi = super::super::parse(super::super::tests::PI).unwrap();
        let mut reports = vec![
            Report {
                node: "pi3".into(),
                host: "192.168.1.10".into(),
                reachable: true,
                error: None,
                facts: Some(pi),
                encoder: Some("libx264".into()),
                has_encoder: Some(true),
            },
            Report {
                node: "pi2".into(),
                host: "192.168.1.11".into(),
                reachable: false,
                error: Some("unreachable: node pi2".into()),
                facts: None,
                encoder: Some("libx264".into()),
                has_encoder: None,
            },
        ];
        let t = table(&reports, Some("libx264"));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("NODE  HOST"), "{t}");
        assert!(lines[0].contains("LIBX264"), "{t}");
        let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            words(lines[1]),
            [
                "pi3",
                "192.168.1.10",
                "yes",
                "armv7l",
                "raspbian/stretch",
                "4",
                "3.2.10-1~deb9u1+rpt1",
                "yes",
                "2.0",
                "GiB"
            ]
        );
        assert_eq!(words(lines[2]), ["pi2", "192.168.1.11", "no", "-", "-", "-", "-", "-", "-"]);
        // A node's strings reach the terminal without escape sequences.
        let mut hostile = reports.remove(0);
        if let Some(f) = hostile.facts.as_mut() {
            f.arch = "arm\u{1b}]0;pwned\u{7}v7l".into();
            f.ffmpeg_version = Some("6.0\u{1b}[2J".into());
        }
        let t = table(&[hostile], None);
        assert!(!t.contains('\u{1b}') && t.contains("armv7l") && t.contains("6.0"), "{t:?}");
        let json = serde_json::to_string(&reports[0]).unwrap();
        assert!(json.contains("\"reachable\":false"), "{json}");
        assert!(json.contains("\"error\":\"unreachable: node pi2\""), "{json}");
    }
}
