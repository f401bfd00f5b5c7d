//! dffmpeg's state directory on this machine (`$XDG_STATE_HOME/dffmpeg`,
//! else `~/.local/state/dffmpeg`): what it remembers between runs (node
//! speeds, known hosts) and the files of running jobs that only the
//! controller may write (`jobs/`, outside anything a node can reach).

use std::path::PathBuf;

/// The directory's path (not created); None when neither `XDG_STATE_HOME`
/// nor `HOME` is an absolute path.
pub fn dir() -> Option<PathBuf> {
    let state =
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from).filter(|p| p.is_absolute()).or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".local/state"))
        })?;
    Some(state.join("dffmpeg"))
}

/// Create `path` (with its parents) private to this user (0700).
pub fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}
