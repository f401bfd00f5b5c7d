//! The playbooks and templates: embedded in the binary, each file
//! overridable (or new ones added) from `--playbook-dir DIR`, which holds
//! `DIR/playbooks/*.yaml` and `DIR/templates/*`.

use std::collections::BTreeMap;
use std::path::Path;

const EMBEDDED_PLAYBOOKS: &[(&str, &str)] = &[
    ("common.yaml", include_str!("../../playbooks/common.yaml")),
    ("controller.yaml", include_str!("../../playbooks/controller.yaml")),
    ("storage.yaml", include_str!("../../playbooks/storage.yaml")),
    ("compute.yaml", include_str!("../../playbooks/compute.yaml")),
    ("slurm.yaml", include_str!("../../playbooks/slurm.yaml")),
];

const EMBEDDED_TEMPLATES: &[(&str, &str)] = &[
    ("sources.list.j2", include_str!("../../templates/sources.list.j2")),
    ("exports.j2", include_str!("../../templates/exports.j2")),
    ("dffmpeg-watch.service.j2", include_str!("../../templates/dffmpeg-watch.service.j2")),
    ("slurm.conf.j2", include_str!("../../templates/slurm.conf.j2")),
];

#[derive(Debug, Clone, Default)]
pub struct Assets {
    /// File name → (where it came from, text).
    pub playbooks: BTreeMap<String, (String, String)>,
    pub templates: BTreeMap<String, (String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{0} has neither a playbooks/ nor a templates/ directory")]
    Empty(String),
}

impl Assets {
    pub fn embedded() -> Assets {
        let take = |list: &[(&str, &str)], dir: &str| {
            list.iter()
                .map(|(n, t)| (n.to_string(), (format!("<embedded {dir}/{n}>"), t.to_string())))
                .collect()
        };
        Assets {
            playbooks: take(EMBEDDED_PLAYBOOKS, "playbooks"),
            templates: take(EMBEDDED_TEMPLATES, "templates"),
        }
    }

    /// The embedded assets, with every file of `dir/playbooks` and
    /// `dir/templates` replacing (or adding to) them.
    pub fn with_override(dir: &Path) -> Result<Assets, AssetError> {
        let mut assets = Assets::embedded();
        let mut found = false;
        for (sub, map) in [("playbooks", &mut assets.playbooks), ("templates", &mut assets.templates)] {
            let d = dir.join(sub);
            if !d.is_dir() {
                continue;
            }
            found = true;
            let read_err = |path: &Path, cause| AssetError::Read { path: path.display().to_string(), cause };
            for entry in std::fs::read_dir(&d).map_err(|e| read_err(&d, e))? {
                let entry = entry.map_err(|e| read_err(&d, e))?;
                let path = entry.path();
                if !path.is_file() {
                    continue;
                }
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
                map.insert(name.to_string(), (path.display().to_string(), text));
            }
        }
        if !found {
            return Err(AssetError::Empty(dir.display().to_string()));
        }
        Ok(assets)
    }

    pub fn playbook(&self, name: &str) -> Option<(&str, &str)> {
        self.playbooks.get(name).map(|(origin, text)| (origin.as_str(), text.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_has_every_role_and_template() {
        let a = Assets::embedded();
        for p in ["common.yaml", "controller.yaml", "storage.yaml", "compute.yaml"] {
            assert!(a.playbook(p).is_some(), "{p}");
        }
        assert!(a.templates.contains_key("sources.list.j2"));
        assert!(a.templates.contains_key("exports.j2"));
    }

    #[test]
    fn a_directory_overrides_single_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("templates/exports.j2"), "mine\n").unwrap();
        let a = Assets::with_override(dir.path()).unwrap();
        assert_eq!(a.templates["exports.j2"].1, "mine\n");
        assert!(a.templates["sources.list.j2"].1.contains("deb "));
        let empty = tempfile::tempdir().unwrap();
        assert!(Assets::with_override(empty.path()).is_err());
    }
}
