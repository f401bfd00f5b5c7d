//! What setup knows about a node, gathered in the same round trip as the
//! state of every task's target (see [`super::state`]).

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// os-release `ID` (debian, raspbian, ubuntu, ...).
    pub os_id: String,
    /// os-release `VERSION_CODENAME` (bookworm, trixie, noble, ...).
    pub os_codename: String,
    pub os_version_id: String,
    pub os_pretty_name: String,
    /// `uname -m` (x86_64, aarch64, armv7l, ...).
    pub arch: String,
    /// `dpkg --print-architecture` (amd64, arm64, armhf, ...).
    pub dpkg_arch: String,
    pub cores: u32,
    /// `ffmpeg -version`'s version word, when ffmpeg is installed.
    pub ffmpeg_version: Option<String>,
    /// The login user (the one sudo was run by, when become is used).
    pub user: String,
    pub home: String,
    pub hostname: String,
    /// Whether systemd is the running init (`/run/systemd/system`).
    pub systemd: bool,
}

impl Facts {
    /// Facts from the raw `key → value` records of the probe script.
    pub fn from_raw(raw: &BTreeMap<String, String>) -> Facts {
        let get = |k: &str| raw.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        let os = parse_os_release(raw.get("os_release").map(String::as_str).unwrap_or(""));
        let os_get = |k: &str| os.get(k).cloned().unwrap_or_default();
        let mut codename = os_get("VERSION_CODENAME");
        if codename.is_empty() {
            codename = os_get("UBUNTU_CODENAME");
        }
        if codename.is_empty() {
            // VERSION="9 (stretch)"
            let v = os_get("VERSION");
            if let (Some(a), Some(b)) = (v.find('('), v.find(')')) {
                if a < b {
                    codename = v[a + 1..b].trim().to_lowercase();
                }
            }
        }
        Facts {
            os_id: os_get("ID").to_lowercase(),
            os_codename: codename,
            os_version_id: os_get("VERSION_ID"),
            os_pretty_name: os_get("PRETTY_NAME"),
            arch: get("uname_m"),
            dpkg_arch: get("dpkg_arch"),
            cores: get("nproc").parse().unwrap_or(1),
            ffmpeg_version: ffmpeg_version(&get("ffmpeg")),
            user: get("user"),
            home: get("home"),
            hostname: get("hostname"),
            systemd: get("systemd") == "yes",
        }
    }
}

/// `ffmpeg version 5.1.6-0+deb12u1 Copyright ...` → `5.1.6-0+deb12u1`.
pub fn ffmpeg_version(first_line: &str) -> Option<String> {
    let rest = first_line.trim().strip_prefix("ffmpeg version ")?;
    rest.split_whitespace().next().map(str::to_string)
}

/// `KEY=value` / `KEY="value"` lines of os-release(5).
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (k, v) = line.split_once('=')?;
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
            {
                &v[1..v.len() - 1]
            } else {
                v
            };
            let v = v.replace("\\\"", "\"").replace("\\$", "$").replace("\\\\", "\\");
            Some((k.trim().to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn debian_and_raspbian_and_old_releases() {
        let f = Facts::from_raw(&raw(&[
            ("os_release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n"),
            ("uname_m", "x86_64\n"),
            ("dpkg_arch", "amd64\n"),
            ("nproc", "4\n"),
            ("ffmpeg", "ffmpeg version 5.1.6-0+deb12u1 Copyright (c) 2000-2024"),
            ("systemd", "no"),
        ]));
        assert_eq!(f.os_id, "debian");
        assert_eq!(f.os_codename, "bookworm");
        assert_eq!(f.cores, 4);
        assert_eq!(f.ffmpeg_version.as_deref(), Some("5.1.6-0+deb12u1"));
        assert!(!f.systemd);

        let old = Facts::from_raw(&raw(&[("os_release", "ID=raspbian\nVERSION=\"9 (stretch)\"\n")]));
        assert_eq!((old.os_id.as_str(), old.os_codename.as_str()), ("raspbian", "stretch"));
        let ubuntu = Facts::from_raw(&raw(&[("os_release", "ID=ubuntu\nUBUNTU_CODENAME=noble\n")]));
        assert_eq!(ubuntu.os_codename, "noble");
        assert_eq!(ubuntu.ffmpeg_version, None);
    }
}
