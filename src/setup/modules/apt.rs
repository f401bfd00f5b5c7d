//! `apt`: packages present. Installed = dpkg status `?i` (see the probe);
//! missing ones are installed in one `apt-get install` without recommends,
//! non-interactively, keeping existing config files.

use serde::Deserialize;

use crate::quote::join;
use crate::setup::state::NodeState;

use super::{string_list, Change, Effect, ModuleError};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptArgs {
    /// One package or a list.
    #[serde(deserialize_with = "string_list")]
    pub name: Vec<String>,
}

fn valid_name(n: &str) -> bool {
    let (pkg, arch) = n.split_once(':').unwrap_or((n, ""));
    let ok = |s: &str, extra: &[u8]| {
        s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
    };
    pkg.len() >= 2 && pkg.as_bytes()[0].is_ascii_alphanumeric() && ok(pkg, b"+-.") && ok(arch, b"-")
}

/// The `apt-get install` argv for `pkgs`.
pub fn install_argv(pkgs: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        "-o",
        "DPkg::Lock::Timeout=300",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(pkgs.iter().cloned());
    argv
}

pub fn plan(a: &AptArgs, st: &NodeState) -> Result<Vec<Change>, ModuleError> {
    if let Some(bad) = a.name.iter().find(|n| !valid_name(n)) {
        return Err(ModuleError::Invalid(format!("not a package name: {bad:?}")));
    }
    let installed = st.packages.as_ref().ok_or_else(|| {
        ModuleError::Invalid("no dpkg on this node: the apt module needs Debian, Raspbian or Ubuntu".into())
    })?;
    let missing: Vec<String> = a
        .name
        .iter()
        .filter(|n| {
            let base = n.split(':').next().unwrap_or(n);
            !installed.contains(*n) && !installed.contains(base)
        })
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Change::new(format!("install {}", missing.join(" ")), join(&install_argv(&missing)) + "\n")
        .with(Effect::Installed(missing))])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(pkgs: &[&str]) -> NodeState {
        NodeState { packages: Some(pkgs.iter().map(|s| s.to_string()).collect()), ..NodeState::default() }
    }

    fn args(names: &[&str]) -> AptArgs {
        AptArgs { name: names.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn installs_only_what_is_missing() {
        let s = st(&["ffmpeg", "nfs-common"]);
        assert!(plan(&args(&["ffmpeg", "nfs-common"]), &s).unwrap().is_empty());
        let c = plan(&args(&["ffmpeg", "nfs-kernel-server"]), &s).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].summary, "install nfs-kernel-server");
        assert_eq!(
            c[0].script,
            "env 'DEBIAN_FRONTEND=noninteractive' apt-get install -y --no-install-recommends -o 'DPkg::Lock::Timeout=300' -o 'Dpkg::Options::=--force-confdef' -o 'Dpkg::Options::=--force-confold' nfs-kernel-server\n"
        );
        assert!(plan(&args(&["ffmpeg:arm64"]), &s).unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_names_and_non_dpkg_nodes() {
        assert!(plan(&args(&["-y"]), &st(&[])).is_err());
        assert!(plan(&args(&["a b"]), &st(&[])).is_err());
        assert!(plan(&args(&["ffmpeg"]), &NodeState::default()).is_err());
    }
}
