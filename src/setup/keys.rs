//! The controller's SSH key: dffmpeg's own, `~/.ssh/dffmpeg_ed25519`
//! ([`crate::remote::ssh::default_identity`]), created without a passphrase
//! when missing (the `ssh-keys` step; transcodes run unattended), whose
//! public half goes to every node's authorized_keys with the restrictions
//! it can live with (`from=` the controller's address, `restrict`). It is
//! not one of ssh's default keys, so plain `ssh` never offers it elsewhere,
//! and dffmpeg offers nodes nothing else (`IdentitiesOnly`).

use std::path::{Path, PathBuf};

use crate::exit::{usage, Failure};
use crate::inventory::{Host, Node};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerKey {
    pub path: PathBuf,
    /// The public key line.
    pub pubkey: String,
    /// Created by this run (or, in check mode, would be).
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Place(#[from] crate::remote::SshError),
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("ssh-keygen failed for {path}: {msg}")]
    Keygen { path: String, msg: String },
}

/// Stand-in for a key that check mode would create.
pub const CHECK_MODE_KEY: &str = "ssh-ed25519 AAAA-controller-key-not-created-yet dffmpeg (check mode)";

pub fn default_path() -> Result<PathBuf, KeyError> {
    Ok(crate::remote::ssh::default_identity()?)
}

/// The authorized_keys line of dffmpeg's key for a node: `restrict` (no
/// pty, no forwarding of any kind, no ~/.ssh/rc; OpenSSH 7.2 and later) and,
/// when the controller's address toward the node is known, `from=` it.
pub fn restricted_line(pubkey: &str, from: Option<&str>) -> String {
    match from {
        Some(addr) => format!("from=\"{addr}\",restrict {}", pubkey.trim()),
        None => format!("restrict {}", pubkey.trim()),
    }
}

fn pub_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// The public key of `identity` (its `.pub` file).
pub fn read_pubkey(identity: &Path) -> Result<String, KeyError> {
    let p = pub_path(identity);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| KeyError::Io { path: p.display().to_string(), cause: e })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "controller".into())
}

async fn keygen(args: &[&str], path: &Path) -> Result<std::process::Output, KeyError> {
    let out = crate::process::command("ssh-keygen")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| KeyError::Keygen { path: path.display().to_string(), msg: e.to_string() })?;
    if !out.status.success() {
        return Err(KeyError::Keygen {
            path: path.display().to_string(),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// The key at `path`, created (ed25519, no passphrase) when missing —
/// unless `check`, which only says it would be.
pub async fn ensure(path: &Path, check: bool) -> Result<ControllerKey, KeyError> {
    let done = |created| -> Result<ControllerKey, KeyError> {
        Ok(ControllerKey { path: path.to_path_buf(), pubkey: read_pubkey(path)?, created })
    };
    if pub_path(path).exists() {
        return done(false);
    }
    let p = path.display().to_string();
    if path.exists() {
        // Private key without its .pub: derive it.
        if check {
            return Ok(ControllerKey {
                path: path.to_path_buf(),
                pubkey: CHECK_MODE_KEY.into(),
                created: true,
            });
        }
        let out = keygen(&["-y", "-f", &p], path).await?;
        std::fs::write(pub_path(path), &out.stdout)
            .map_err(|e| KeyError::Io { path: pub_path(path).display().to_string(), cause: e })?;
        return done(true);
    }
    if check {
        return Ok(ControllerKey { path: path.to_path_buf(), pubkey: CHECK_MODE_KEY.into(), created: true });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| KeyError::Io { path: dir.display().to_string(), cause: e })?;
        use std::os::unix::fs::PermissionsExt;
        // ssh insists only on the key file's own mode; a directory we may
        // not chmod (not ours) still holds the key.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let comment = format!("dffmpeg@{}", hostname());
    keygen(&["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f", &p], path).await?;
    done(true)
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
    pub fn line_for(&self, node: &Node) -> Result<String, Failure> {
        match &node.identity_file {
            Some(id) if self.wanted => read_pubkey(id).map_err(usage),
            _ if self.pubkey.trim().is_empty() => Ok(String::new()),
            _ => Ok(match node.host {
                Host::Local => self.pubkey.trim().to_string(),
                Host::Remote(_) => restricted_line(self.pubkey, (self.from)(node).as_deref()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_once_and_check_mode_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh").join("dffmpeg_ed25519");
        let c = ensure(&path, true).await.unwrap();
        assert!(c.created && c.pubkey == CHECK_MODE_KEY && !path.exists());
        let k = ensure(&path, false).await.unwrap();
        assert!(k.created);
        assert!(k.pubkey.starts_with("ssh-ed25519 "), "{}", k.pubkey);
        let again = ensure(&path, false).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.pubkey, k.pubkey);
        std::fs::remove_file(pub_path(&path)).unwrap();
        let derived = ensure(&path, false).await.unwrap();
        assert_eq!(derived.pubkey.split_whitespace().nth(1), k.pubkey.split_whitespace().nth(1));
    }

    #[test]
    fn restrictions() {
        let k = "ssh-ed25519 AAAA dffmpeg@ctl\n";
        assert_eq!(
            restricted_line(k, Some("10.0.0.1")),
            "from=\"10.0.0.1\",restrict ssh-ed25519 AAAA dffmpeg@ctl"
        );
        assert_eq!(restricted_line(k, None), "restrict ssh-ed25519 AAAA dffmpeg@ctl");
    }
}
