//! What the transcodes of this machine are doing: `dffmpeg status`, the
//! status file each running transcode keeps, and the watch service's
//! status page.
//!
//! Every `dffmpeg transcode` (one command or the `--watch` service) puts
//! a [`sink`] in front of its progress reporter: it folds the events into
//! a [`model`] and keeps `status/PID.json` in dffmpeg's state directory
//! current ([`store`]); failures go to `failed.json` there, which outlives
//! the process. `dffmpeg status` reads those files (no server needed) and
//! prints them ([`summary`]) or their JSON; the watch service serves the
//! same as a page ([`page`], [`http`]) when the inventory says
//! `cluster.watch.http`.

pub mod fmt;
pub mod http;
pub mod model;
pub mod page;
pub mod sink;
pub mod store;
pub mod summary;

use std::io::Write;
use std::path::Path;

use anyhow::anyhow;

use crate::cli::StatusArgs;
use crate::exit::{failed, usage, Outcome};
use crate::inventory::Inventory;

/// How an inventory names itself in status files: its canonical path (the
/// embedded local cluster by its name).
pub fn inventory_key(inv: &Inventory) -> String {
    Path::new(&inv.source).canonicalize().map_or_else(|_| inv.source.clone(), |p| p.display().to_string())
}

/// `dffmpeg status [-I INVENTORY] [--json]`.
pub fn run(args: StatusArgs) -> Outcome {
    let inventory = match (&args.inventory, std::env::var_os("DFFMPEG_INVENTORY")) {
        (Some(p), _) => Some(Inventory::load(p).map_err(usage)?),
        (None, Some(p)) if !p.is_empty() => Some(Inventory::load(Path::new(&p)).map_err(usage)?),
        _ => None,
    };
    let key = inventory.as_ref().map(inventory_key);
    let state = store::state_dir().map_err(failed)?;
    let report = store::collect(&state, key.as_deref(), sink::unix_now());
    let text = match args.json {
        true => serde_json::to_string_pretty(&report).map(|j| j + "\n").map_err(|e| failed(anyhow!(e)))?,
        false => summary::text(&report) + &service_hint(inventory.as_ref(), &report),
    };
    // A closed stdout (`| head`) is not worth an error.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// An inventory with a watch service whose process is not running: where
/// to look (the unit `dffmpeg setup` installs).
fn service_hint(inventory: Option<&Inventory>, report: &store::Report) -> String {
    let wants = inventory.is_some_and(|i| i.cluster.watch.is_some());
    if !wants || report.transcodes.iter().any(|t| t.meta.mode == "watch") {
        return String::new();
    }
    "\nThe inventory has a watch service, but it is not running here; see \
     `systemctl status dffmpeg-watch` and `journalctl -u dffmpeg-watch`.\n"
        .into()
}
