//! os-release(5): which distribution and release a node runs.

use serde::Serialize;

/// The fields dffmpeg uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    /// `ID`, lower case: debian, raspbian, ubuntu ...
    pub id: Option<String>,
    /// `VERSION_CODENAME`, else `UBUNTU_CODENAME`, else the name in
    /// parentheses of `VERSION` (`9 (stretch)`): bookworm, noble ...
    pub codename: Option<String>,
    /// `VERSION_ID`: 12, 24.04 ... (none on testing/unstable)
    pub version_id: Option<String>,
    /// `PRETTY_NAME`
    pub pretty_name: Option<String>,
}

impl OsRelease {
    /// Parse the file's text. Unknown or malformed lines are ignored, as
    /// os-release(5) asks of its readers.
    pub fn parse(text: &str) -> OsRelease {
        let vars: Vec<(&str, String)> = text.lines().filter_map(assignment).collect();
        let get = |k: &str| vars.iter().rev().find(|(n, v)| *n == k && !v.is_empty()).map(|(_, v)| v.clone());
        let codename = get("VERSION_CODENAME")
            .or_else(|| get("UBUNTU_CODENAME"))
            .or_else(|| get("VERSION").and_then(|v| codename_in_version(&v)));
        OsRelease {
            id: get("ID").map(|s| s.to_lowercase()),
            codename,
            version_id: get("VERSION_ID"),
            pretty_name: get("PRETTY_NAME"),
        }
    }
}

/// `KEY=value`, `KEY="value"` or `KEY='value'`, shell escapes undone.
fn assignment(line: &str) -> Option<(&str, String)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let (k, v) = line.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let v = v.trim();
    let quoted = v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')));
    let v = if quoted { &v[1..v.len() - 1] } else { v };
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('\\', _) => out.extend(chars.next()),
            (c, _) => out.push(c),
        }
    }
    Some((k, out))
}

/// `9 (stretch)` → stretch; `10 (buster, fake)` → buster.
fn codename_in_version(version: &str) -> Option<String> {
    let (_, rest) = version.split_once('(')?;
    let name = rest.split([')', ',']).next()?.trim();
    (!name.is_empty() && !name.contains(' ')).then(|| name.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real files of the systems dffmpeg meets.
    fn fixture(name: &str) -> OsRelease {
        let text = match name {
            "raspbian-bookworm" => include_str!("os-release/raspbian-bookworm"),
            "raspbian-stretch" => include_str!("os-release/raspbian-stretch"),
            "rpios-bookworm-arm64" => include_str!("os-release/rpios-bookworm-arm64"),
            "debian-bookworm" => include_str!("os-release/debian-bookworm"),
            "debian-trixie" => include_str!("os-release/debian-trixie"),
            "debian-sid" => include_str!("os-release/debian-sid"),
            "ubuntu-noble" => include_str!("os-release/ubuntu-noble"),
            "ubuntu-trusty" => include_str!("os-release/ubuntu-trusty"),
            other => panic!("no fixture {other}"),
        };
        OsRelease::parse(text)
    }

    fn triple(o: &OsRelease) -> (Option<&str>, Option<&str>, Option<&str>) {
        (o.id.as_deref(), o.codename.as_deref(), o.version_id.as_deref())
    }

    #[test]
    fn real_files() {
        let cases = [
            ("raspbian-bookworm", (Some("raspbian"), Some("bookworm"), Some("12"))),
            // No VERSION_CODENAME before buster: from VERSION.
            ("raspbian-stretch", (Some("raspbian"), Some("stretch"), Some("9"))),
            // 64-bit Raspberry Pi OS says it is Debian.
            ("rpios-bookworm-arm64", (Some("debian"), Some("bookworm"), Some("12"))),
            ("debian-bookworm", (Some("debian"), Some("bookworm"), Some("12"))),
            ("debian-trixie", (Some("debian"), Some("trixie"), Some("13"))),
            ("debian-sid", (Some("debian"), Some("trixie"), None)),
            ("ubuntu-noble", (Some("ubuntu"), Some("noble"), Some("24.04"))),
            // Nothing says "trusty" as a word of its own: no codename.
            ("ubuntu-trusty", (Some("ubuntu"), None, Some("14.04"))),
        ];
        for (name, want) in cases {
            assert_eq!(triple(&fixture(name)), want, "{name}");
        }
        assert_eq!(fixture("debian-trixie").pretty_name.as_deref(), Some("Debian GNU/Linux 13 (trixie)"));
    }

    #[test]
    fn odd_lines() {
        let o = OsRelease::parse("# comment\nID=\"Debian\"\nbroken line\nVERSION_CODENAME='x\\\"y'\n=v\n");
        assert_eq!(o.id.as_deref(), Some("debian"));
        assert_eq!(o.codename.as_deref(), Some("x\"y"));
        assert_eq!(OsRelease::parse(""), OsRelease::default());
        // UBUNTU_CODENAME when VERSION_CODENAME is missing.
        assert_eq!(OsRelease::parse("ID=ubuntu\nUBUNTU_CODENAME=noble\n").codename.as_deref(), Some("noble"));
    }
}
