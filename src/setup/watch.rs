//! The watch service's unit lines (`dffmpeg transcode --watch` on the
//! controller): its command line and the paths it may write.

use anyhow::Context;

use crate::inventory::{Inventory, Watch};
use crate::quote;

/// The watch service's command line (systemd's `ExecStart=`): this very
/// dffmpeg, the inventory it was run with (its absolute path), `transcode
/// --watch -O OUTPUT INPUT -- ARGS`, each word quoted the way systemd
/// reads it.
pub fn watch_exec(inventory: &std::path::Path, w: &Watch) -> anyhow::Result<String> {
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
    Ok(words.iter().map(|w| quote::systemd(w)).collect::<Vec<_>>().join(" "))
}

/// What the watch service may write besides its state directory (the unit
/// has `ProtectSystem=strict`): the output folder, where jobs next to the
/// outputs go too, and the shared directory's `work/`. Each is optional
/// (`-`): a folder that is missing at start does not stop the service.
pub fn watch_paths(inventory: &Inventory, w: &Watch) -> String {
    let mut paths = vec![w.output.clone()];
    if let Some(shared) = inventory.shared_dir() {
        paths.push(shared);
    }
    paths.iter().map(|p| quote::systemd(&format!("-{}", p.display()))).collect::<Vec<_>>().join(" ")
}
