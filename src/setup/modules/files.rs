//! `template`, `copy` and `file`: file content, directories, owner and mode.
//!
//! Content is written to a temporary file next to the destination (same
//! filesystem), given its owner and mode, then renamed over the
//! destination: readers see the old file or the new one, never half of it.

use serde::Deserialize;

use crate::quote::{join, quote};
use crate::setup::b64;
use crate::setup::state::{FileKind, FileStat, NodeState};

use super::{check_path, id_matches, opt_mode, opt_string, Change, Effect, FileDiff, ModuleError};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateArgs {
    /// A template name in templates/.
    pub src: String,
    pub dest: String,
    #[serde(default, deserialize_with = "opt_string")]
    pub owner: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub group: Option<String>,
    #[serde(default, deserialize_with = "opt_mode")]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyArgs {
    /// Literal content, or
    #[serde(default)]
    pub content: Option<String>,
    /// a file of templates/ copied as is, or
    #[serde(default)]
    pub src: Option<String>,
    /// bytes given in base64 (a key: not text).
    #[serde(default)]
    pub content_base64: Option<String>,
    /// The content is a secret (a key): no `--diff` of it, ever.
    #[serde(default)]
    pub secret: bool,
    pub dest: String,
    #[serde(default, deserialize_with = "opt_string")]
    pub owner: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub group: Option<String>,
    #[serde(default, deserialize_with = "opt_mode")]
    pub mode: Option<u32>,
}

/// `template` and `copy`, resolved to the bytes wanted at `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentArgs {
    pub dest: String,
    pub content: Vec<u8>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<u32>,
    /// Never shown (`--diff` says only that it changes).
    pub secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// A directory (created with parents when missing).
    #[default]
    Directory,
    /// An existing file: only owner and mode are managed.
    File,
    /// Created empty when missing.
    Touch,
    /// Removed (a directory only when empty).
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArgs {
    pub path: String,
    #[serde(default)]
    pub state: FileState,
    #[serde(default, deserialize_with = "opt_string")]
    pub owner: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub group: Option<String>,
    #[serde(default, deserialize_with = "opt_mode")]
    pub mode: Option<u32>,
}

/// `chmod` operand: five octal digits, so that a directory's setgid bit is
/// cleared when the mode says so (GNU chmod keeps it for shorter numbers).
pub fn mode_word(mode: u32) -> String {
    format!("{mode:05o}")
}

fn chown_word(owner: Option<&str>, group: Option<&str>) -> Option<String> {
    match (owner, group) {
        (Some(o), Some(g)) => Some(format!("{o}:{g}")),
        (Some(o), None) => Some(o.to_string()),
        (None, Some(g)) => Some(format!(":{g}")),
        (None, None) => None,
    }
}

/// The shell lines that write `content` to `path` atomically.
pub fn write_script(
    path: &str,
    content: &[u8],
    owner: Option<&str>,
    group: Option<&str>,
    mode: u32,
) -> String {
    let mut s = format!(
        "tmp=$(mktemp {})\ntrap 'rm -f \"$tmp\"' EXIT\nbase64 -d >\"$tmp\" <<'DFFMPEG_EOF'\n{}DFFMPEG_EOF\n",
        quote(&format!("{path}.dffmpeg.XXXXXX")),
        b64::encode_lines(content)
    );
    if let Some(w) = chown_word(owner, group) {
        s.push_str(&format!("chown {} \"$tmp\"\n", quote(&w)));
    }
    s.push_str(&format!("chmod {} \"$tmp\"\n", mode_word(mode)));
    // -T: never into a directory that appeared at `path`.
    s.push_str(&format!("mv -fT \"$tmp\" {}\n", quote(path)));
    s
}

/// chown/chmod changes for an existing path.
fn attr_changes(
    path: &str,
    cur: &FileStat,
    owner: Option<&str>,
    group: Option<&str>,
    mode: Option<u32>,
) -> Vec<Change> {
    let mut out = Vec::new();
    let o = owner.filter(|o| !id_matches(o, &cur.owner, cur.uid));
    let g = group.filter(|g| !id_matches(g, &cur.group, cur.gid));
    if let Some(w) = chown_word(o, g) {
        out.push(Change::new(format!("chown {w} {path}"), join(&["chown", &w, path]) + "\n").with(
            Effect::Attrs {
                path: path.into(),
                owner: o.map(str::to_string),
                group: g.map(str::to_string),
                mode: None,
            },
        ));
    }
    if let Some(m) = mode {
        if cur.mode & 0o7777 != m {
            out.push(
                Change::new(
                    format!("chmod {:04o} {path} (was {:04o})", m, cur.mode & 0o7777),
                    join(&["chmod", &mode_word(m), path]) + "\n",
                )
                .with(Effect::Attrs {
                    path: path.into(),
                    owner: None,
                    group: None,
                    mode: Some(m),
                }),
            );
        }
    }
    out
}

/// Content at `dest`, with owner and mode.
pub fn plan_content(a: &ContentArgs, st: &NodeState) -> Result<Vec<Change>, ModuleError> {
    check_path("dest", &a.dest)?;
    if !st.files.contains_key(&a.dest) {
        return Err(ModuleError::NotProbed(a.dest.clone()));
    }
    let cur = st.file(&a.dest);
    if let Some(c) = cur {
        if c.kind != FileKind::File {
            return Err(ModuleError::Invalid(format!("{} exists and is not a regular file", a.dest)));
        }
    }
    let same = cur.and_then(|c| c.content.as_deref()).map(|c| c == a.content.as_slice()).unwrap_or(false);
    if same {
        let c = cur.ok_or_else(|| ModuleError::NotProbed("a stat".into()))?;
        return Ok(attr_changes(&a.dest, c, a.owner.as_deref(), a.group.as_deref(), a.mode));
    }
    // A rewrite keeps the current owner and mode unless told otherwise.
    let owner = a.owner.clone().or_else(|| cur.map(|c| c.uid.to_string()));
    let group = a.group.clone().or_else(|| cur.map(|c| c.gid.to_string()));
    let mode = a.mode.or(cur.map(|c| c.mode & 0o7777)).unwrap_or(0o644);
    let verb = if cur.is_some() { "update" } else { "create" };
    let diff = FileDiff {
        path: a.dest.clone(),
        before: cur.map(|c| c.content.clone().unwrap_or_default()),
        after: a.content.clone(),
    };
    Ok(vec![Change {
        summary: format!("{verb} {}{}", a.dest, if a.secret { " (secret: not shown)" } else { "" }),
        script: write_script(&a.dest, &a.content, owner.as_deref(), group.as_deref(), mode),
        diff: (!a.secret).then_some(diff),
        effects: vec![Effect::File {
            path: a.dest.clone(),
            content: Some(a.content.clone()),
            owner,
            group,
            mode,
        }],
    }])
}

/// Directories, existing files' attributes, empty files, removal.
pub fn plan_file(a: &FileArgs, st: &NodeState) -> Result<Vec<Change>, ModuleError> {
    check_path("path", &a.path)?;
    if !st.files.contains_key(&a.path) {
        return Err(ModuleError::NotProbed(a.path.clone()));
    }
    let p = a.path.as_str();
    let cur = st.file(p);
    let (owner, group) = (a.owner.as_deref(), a.group.as_deref());
    match (a.state, cur) {
        (FileState::Absent, None) => Ok(Vec::new()),
        (FileState::Absent, Some(c)) => {
            let argv: &[&str] =
                if c.kind == FileKind::Dir { &["rmdir", "--", p] } else { &["rm", "-f", "--", p] };
            Ok(vec![Change::new(format!("remove {p}"), join(argv) + "\n").with(Effect::Gone(p.into()))])
        }
        (FileState::Directory, None) => {
            let mut s = join(&["mkdir", "-p", "--", p]) + "\n";
            if let Some(w) = chown_word(owner, group) {
                s += &(join(&["chown", &w, p]) + "\n");
            }
            let mode = a.mode.unwrap_or(0o755);
            s += &(join(&["chmod", &mode_word(mode), p]) + "\n");
            Ok(vec![Change::new(format!("create directory {p}"), s).with(Effect::Dir {
                path: p.into(),
                owner: a.owner.clone(),
                group: a.group.clone(),
                mode,
            })])
        }
        (FileState::Directory, Some(c)) => {
            if c.kind != FileKind::Dir {
                return Err(ModuleError::Invalid(format!("{p} exists and is not a directory")));
            }
            Ok(attr_changes(p, c, owner, group, a.mode))
        }
        (FileState::File, None) => Err(ModuleError::Invalid(format!("{p} does not exist"))),
        (FileState::Touch, None) => {
            let mut s = format!(": >> {}\n", quote(p));
            if let Some(w) = chown_word(owner, group) {
                s += &(join(&["chown", &w, p]) + "\n");
            }
            let mode = a.mode.unwrap_or(0o644);
            s += &(join(&["chmod", &mode_word(mode), p]) + "\n");
            Ok(vec![Change::new(format!("create empty {p}"), s).with(Effect::File {
                path: p.into(),
                content: Some(Vec::new()),
                owner: a.owner.clone(),
                group: a.group.clone(),
                mode,
            })])
        }
        (FileState::File | FileState::Touch, Some(c)) => {
            if c.kind == FileKind::Dir {
                return Err(ModuleError::Invalid(format!("{p} is a directory")));
            }
            Ok(attr_changes(p, c, owner, group, a.mode))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn stat(
        kind: FileKind,
        mode: u32,
        owner: &str,
        group: &str,
        content: Option<&[u8]>,
    ) -> Option<FileStat> {
        let id = |n: &str| if n == "root" { 0 } else { 1000 };
        Some(FileStat {
            kind,
            mode,
            uid: id(owner),
            gid: id(group),
            owner: owner.into(),
            group: group.into(),
            size: content.map(|c| c.len() as u64).unwrap_or(4096),
            content: content.map(<[u8]>::to_vec),
        })
    }

    fn with(path: &str, s: Option<FileStat>) -> NodeState {
        let mut st = NodeState::default();
        st.files.insert(path.into(), s);
        st
    }

    fn content(c: &[u8]) -> ContentArgs {
        ContentArgs {
            dest: "/etc/exports".into(),
            content: c.to_vec(),
            owner: Some("root".into()),
            group: Some("root".into()),
            mode: Some(0o644),
            secret: false,
        }
    }

    #[test]
    fn a_secret_is_written_but_never_diffed() {
        let a = ContentArgs { secret: true, ..content(b"key bytes") };
        let st = with("/etc/exports", stat(FileKind::File, 0o400, "root", "root", Some(b"old key")));
        let c = plan_content(&a, &st).unwrap();
        assert!(c[0].diff.is_none() && c[0].summary.contains("secret"), "{:?}", c[0]);
    }

    #[test]
    fn content_noop_when_equal_and_changes_when_not() {
        let same = with("/etc/exports", stat(FileKind::File, 0o644, "root", "root", Some(b"a\n")));
        assert!(plan_content(&content(b"a\n"), &same).unwrap().is_empty());

        let changes = plan_content(&content(b"b\n"), &same).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].summary, "update /etc/exports");
        let d = changes[0].diff.as_ref().unwrap();
        assert_eq!((d.before.as_deref(), d.after.as_slice()), (Some(&b"a\n"[..]), &b"b\n"[..]));
        assert!(changes[0].script.contains("mv -fT \"$tmp\" /etc/exports"));
        assert!(changes[0].script.contains("chmod 00644"));

        let missing = with("/etc/exports", None);
        let c = plan_content(&content(b"a\n"), &missing).unwrap();
        assert_eq!(c[0].summary, "create /etc/exports");
        assert_eq!(c[0].diff.as_ref().unwrap().before, None);

        let wrong_mode = with("/etc/exports", stat(FileKind::File, 0o600, "root", "root", Some(b"a\n")));
        let c = plan_content(&content(b"a\n"), &wrong_mode).unwrap();
        assert_eq!(c.len(), 1);
        assert!(c[0].summary.starts_with("chmod 0644"), "{}", c[0].summary);
        assert!(c[0].diff.is_none());

        let dir = with("/etc/exports", stat(FileKind::Dir, 0o755, "root", "root", None));
        assert!(plan_content(&content(b"a\n"), &dir).is_err());
        assert!(plan_content(&content(b"a\n"), &NodeState::default()).is_err());
    }

    #[test]
    fn rewrite_keeps_current_owner_and_mode_when_unspecified() {
        let st = with("/etc/x", stat(FileKind::File, 0o600, "pi", "pi", Some(b"old")));
        let a = ContentArgs {
            dest: "/etc/x".into(),
            content: b"new".to_vec(),
            owner: None,
            group: None,
            mode: None,
            secret: false,
        };
        let c = plan_content(&a, &st).unwrap();
        assert!(c[0].script.contains("chown 1000:1000"), "{}", c[0].script);
        assert!(c[0].script.contains("chmod 00600"));
    }

    #[test]
    fn the_write_script_is_atomic_and_exact_in_a_real_shell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("we'ird $name");
        let data = b"line 1\n\xff binary \0 and 'quotes' $(x)\nDFFMPEG_EOF\n";
        let script =
            format!("set -e\n{}", write_script(&path.display().to_string(), data, None, None, 0o640));
        let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temp file left");
        // A directory that appeared at the path is not written into: the
        // write fails instead.
        let d = dir.path().join("now a dir");
        std::fs::create_dir(&d).unwrap();
        let script = format!("set -e\n{}", write_script(&d.display().to_string(), data, None, None, 0o644));
        let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(!out.status.success());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "nothing moved into the directory");
    }

    fn dir_args(mode: u32) -> FileArgs {
        FileArgs {
            path: "/srv/dffmpeg".into(),
            state: FileState::Directory,
            owner: Some("root".into()),
            group: Some("dffmpeg".into()),
            mode: Some(mode),
        }
    }

    #[test]
    fn directories() {
        let ok = with("/srv/dffmpeg", stat(FileKind::Dir, 0o2775, "root", "dffmpeg", None));
        assert!(plan_file(&dir_args(0o2775), &ok).unwrap().is_empty());
        let c = plan_file(&dir_args(0o2775), &with("/srv/dffmpeg", None)).unwrap();
        assert_eq!(c.len(), 1);
        assert!(c[0].script.contains("mkdir -p -- /srv/dffmpeg"));
        assert!(c[0].script.contains("chown root:dffmpeg /srv/dffmpeg"));
        assert!(c[0].script.contains("chmod 02775 /srv/dffmpeg"));
        let wrong = with("/srv/dffmpeg", stat(FileKind::Dir, 0o777, "root", "root", None));
        let c = plan_file(&dir_args(0o2775), &wrong).unwrap();
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].script.starts_with("chown :dffmpeg"));
        // Clearing setgid on a directory needs the five-digit form.
        let sgid = with("/srv/dffmpeg", stat(FileKind::Dir, 0o2755, "root", "dffmpeg", None));
        assert!(plan_file(&dir_args(0o755), &sgid).unwrap()[0].script.contains("chmod 00755"));
        let file = with("/srv/dffmpeg", stat(FileKind::File, 0o644, "root", "root", Some(b"")));
        assert!(plan_file(&dir_args(0o755), &file).is_err());
    }

    #[test]
    fn absent_touch_and_file() {
        let mut a = dir_args(0o644);
        a.state = FileState::Absent;
        assert!(plan_file(&a, &with("/srv/dffmpeg", None)).unwrap().is_empty());
        let f = with("/srv/dffmpeg", stat(FileKind::File, 0o644, "root", "root", Some(b"")));
        assert!(plan_file(&a, &f).unwrap()[0].script.starts_with("rm -f --"));
        a.state = FileState::Touch;
        a.group = Some("root".into());
        assert!(plan_file(&a, &f).unwrap().is_empty());
        assert!(plan_file(&a, &with("/srv/dffmpeg", None)).unwrap()[0]
            .script
            .starts_with(": >> /srv/dffmpeg"));
        a.state = FileState::File;
        assert!(plan_file(&a, &with("/srv/dffmpeg", None)).is_err());
    }
}
