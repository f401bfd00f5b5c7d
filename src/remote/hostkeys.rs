//! Host keys in dffmpeg's known_hosts file, through `ssh-keygen` (which
//! also reads hashed entries): is a node known, what are the fingerprints
//! of its keys, and moving a node's keys from one file to another (keys
//! learned into a scratch file before the user has confirmed them).

use std::path::Path;
use std::process::Stdio;

/// How a host appears in known_hosts: `host`, or `[host]:port`.
pub fn pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

async fn keygen(args: &[&std::ffi::OsStr]) -> Option<std::process::Output> {
    crate::process::command("ssh-keygen")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()
}

/// The lines of `file` for the host (`ssh-keygen -F`), without comments;
/// empty when there are none or the file does not exist.
pub async fn entries(file: &Path, host: &str, port: u16) -> Vec<String> {
    let pat = pattern(host, port);
    let Some(out) = keygen(&["-F".as_ref(), pat.as_ref(), "-f".as_ref(), file.as_os_str()]).await else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether `file` holds a key for the host.
pub async fn is_known(file: &Path, host: &str, port: u16) -> bool {
    !entries(file, host, port).await.is_empty()
}

/// `ED25519 SHA256:...` for each key of the host in `file`.
pub async fn fingerprints(file: &Path, host: &str, port: u16) -> Vec<String> {
    let pat = pattern(host, port);
    let args = ["-l".as_ref(), "-F".as_ref(), pat.as_ref(), "-f".as_ref(), file.as_os_str()];
    let Some(out) = keygen(&args).await else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 3).then(|| format!("{} {}", w[1], w[2]))
        })
        .collect()
}

/// A node about to be contacted for the first time: its key is not in
/// dffmpeg's known_hosts yet, so connecting trusts it (trust on first use).
/// Never silent: once connected, [`FirstContact::trusted`] names the key.
pub struct FirstContact {
    pub node: String,
    host: String,
    port: u16,
}

impl FirstContact {
    /// `Some` for an SSH node whose key `known_hosts` does not hold.
    pub async fn of(known_hosts: &Path, node: &crate::inventory::Node) -> Option<FirstContact> {
        let crate::inventory::Host::Remote(host) = &node.host else { return None };
        if is_known(known_hosts, host, node.port).await {
            return None;
        }
        Some(FirstContact { node: node.name.clone(), host: host.clone(), port: node.port })
    }

    /// After the connection: `new host key: node N (HOST) FINGERPRINTS
    /// (first contact: now trusted)`, or None if no key was learned.
    pub async fn trusted(&self, known_hosts: &Path) -> Option<String> {
        let fps = fingerprints(known_hosts, &self.host, self.port).await;
        (!fps.is_empty()).then(|| {
            format!(
                "new host key: node {} ({}) {} (first contact: now trusted)",
                self.node,
                self.host,
                crate::text::printable(&fps.join(", "))
            )
        })
    }
}

/// Append the host's lines of `from` to `to` (created 0600 if missing).
pub async fn copy_entries(from: &Path, to: &Path, host: &str, port: u16) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let lines = entries(from, host, port).await;
    if lines.is_empty() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(to)?;
    let mut text = lines.join("\n");
    text.push('\n');
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn known_hosts_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(ok.success());
        let public = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
        let blob: Vec<&str> = public.split_whitespace().take(2).collect();
        let scratch = dir.path().join("scratch known hosts");
        std::fs::write(
            &scratch,
            format!("[10.0.0.2]:2222 {}\n10.0.0.3 {}\n", blob.join(" "), blob.join(" ")),
        )
        .unwrap();
        assert!(is_known(&scratch, "10.0.0.2", 2222).await);
        assert!(!is_known(&scratch, "10.0.0.2", 22).await);
        let fp = fingerprints(&scratch, "10.0.0.3", 22).await;
        assert_eq!(fp.len(), 1);
        assert!(fp[0].starts_with("ED25519 SHA256:"), "{fp:?}");
        let real = dir.path().join("real");
        assert!(!is_known(&real, "10.0.0.3", 22).await, "no file: not known");
        copy_entries(&scratch, &real, "10.0.0.3", 22).await.unwrap();
        assert!(is_known(&real, "10.0.0.3", 22).await);
        assert!(!is_known(&real, "10.0.0.2", 2222).await, "only that host's lines");
        assert_eq!(fingerprints(&real, "10.0.0.3", 22).await, fp);
    }
}
