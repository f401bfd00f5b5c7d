//! What earlier jobs measured of each node, so that the next one starts
//! informed: per node, the work one of its slots does per second with
//! given encoder settings, how it compares with the other nodes, and how
//! many attempts it runs at once without each getting less than a CPU.
//! Kept in dffmpeg's state directory (`speeds.json`, next to its
//! known_hosts); every job measures again and overwrites what changed, so
//! a node that got faster or slower is corrected by the next job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::transcode::scheduler::KnownSpeed;

/// One node's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMemo {
    /// Settings key → work per second of one slot.
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
    /// One of its slots against the fastest slot of the latest job it ran.
    pub relative: f64,
    /// Attempts at once.
    pub slots: usize,
}

/// The store: node key (`name@host`) → record.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Speeds {
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeMemo>,
}

/// A key for encoder settings: the same options encode at the same speed
/// (per megapixel).
pub fn settings_key(codec_args: &[String]) -> String {
    format!("{:016x}", crate::transcode::job::fnv1a(codec_args.join("\0").as_bytes()))
}

/// `$XDG_STATE_HOME/dffmpeg/speeds.json` (or `~/.local/state/...`).
pub fn default_path() -> Option<PathBuf> {
    Some(crate::state::dir()?.join("speeds.json"))
}

impl Speeds {
    /// The store at `path`; an unreadable or damaged one is as good as none
    /// (speeds are measured again).
    pub fn load(path: &Path) -> Speeds {
        let mut s: Speeds =
            std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        s.sanitize();
        s
    }

    /// Only values a real node could have: a rate in (0, MAX_RATE], a
    /// relative speed in (0, 1], 1 to 1024 slots; anything else is
    /// forgotten (and measured again).
    fn sanitize(&mut self) {
        use crate::transcode::scheduler::MAX_RATE;
        self.nodes.retain(|_, m| {
            m.rates.retain(|_, r| r.is_finite() && *r > 0.0 && *r <= MAX_RATE);
            m.relative.is_finite() && m.relative > 0.0 && m.relative <= 1.0 && (1..=1024).contains(&m.slots)
        });
    }

    /// Write it whole or not at all (the state directory is this user's).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().ok_or_else(|| anyhow::anyhow!("{}: no directory", path.display()))?;
        crate::state::create_private(dir)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        crate::safefs::Dir::open(dir)?.write_atomic(&name, &serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// What is known of `node` for these settings.
    pub fn known(&self, node: &str, settings: &str) -> Option<KnownSpeed> {
        let m = self.nodes.get(node)?;
        Some(KnownSpeed {
            slot_rate: m.rates.get(settings).copied(),
            relative: m.relative,
            slots: m.slots.max(1),
        })
    }

    /// Record what a job measured: `(node key, Some((work/s of a slot,
    /// slots)))` for every node that encoded.
    pub fn learn(&mut self, settings: &str, measured: &[(String, Option<(f64, usize)>)]) {
        let fastest = measured.iter().filter_map(|(_, m)| m.map(|(r, _)| r)).fold(0.0, f64::max);
        if fastest <= 0.0 {
            return;
        }
        for (node, m) in measured {
            let Some((rate, slots)) = m else { continue };
            let memo = self.nodes.entry(node.clone()).or_default();
            memo.rates.insert(settings.to_string(), *rate);
            memo.relative = rate / fastest;
            memo.slots = *slots;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_speeds_come_back_and_are_corrected() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("state/dffmpeg/speeds.json");
        let x264 = settings_key(&["-c:v".into(), "libx264".into()]);
        let mpeg4 = settings_key(&["-c:v".into(), "mpeg4".into()]);
        let mut s = Speeds::load(&path);
        assert_eq!(s.known("pi@10.0.0.2", &x264), None);
        s.learn(
            &x264,
            &[("pc@a".into(), Some((40.0, 2))), ("pi@b".into(), Some((4.0, 1))), ("gone@c".into(), None)],
        );
        s.save(&path).unwrap();
        let s = Speeds::load(&path);
        assert_eq!(
            s.known("pi@b", &x264),
            Some(KnownSpeed { slot_rate: Some(4.0), relative: 0.1, slots: 1 })
        );
        // Other settings: the relative speed and slots, no rate.
        assert_eq!(s.known("pi@b", &mpeg4), Some(KnownSpeed { slot_rate: None, relative: 0.1, slots: 1 }));
        assert_eq!(s.known("gone@c", &x264), None);
        let mut s = s;
        s.learn(&x264, &[("pc@a".into(), Some((40.0, 2))), ("pi@b".into(), Some((20.0, 2)))]);
        assert_eq!(s.known("pi@b", &x264).map(|k| (k.slot_rate, k.slots)), Some((Some(20.0), 2)));
        // Poisoned values are forgotten, the rest kept.
        std::fs::write(
            &path,
            br#"{"nodes":{"a":{"rates":{"k":2.3e13,"j":3.0},"relative":1.0,"slots":1},"b":{"rates":{},"relative":1e300,"slots":1}}}"#,
        )
        .unwrap();
        let s = Speeds::load(&path);
        assert_eq!(s.nodes.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(s.nodes["a"].rates.keys().collect::<Vec<_>>(), ["j"]);
        std::fs::write(&path, b"{ damaged").unwrap();
        assert_eq!(Speeds::load(&path), Speeds::default());
    }
}
