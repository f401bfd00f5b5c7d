//! `authorized_key`: a public key present in a user's authorized_keys, with
//! the permissions sshd's StrictModes wants (`~/.ssh` 0700, the file 0600,
//! both owned by the user). Other keys in the file are kept.
//!
//! A `key` given with options (`from="10.0.0.1",restrict ssh-ed25519 ...`)
//! is enforced: the key's line must be exactly that, and a line of the same
//! key with other options (or none) is replaced in place. A `key` without
//! options is only added when missing: options someone gave it stay.

use serde::Deserialize;

use crate::quote::join;
use crate::setup::state::{FileKind, NodeState, Probe};

use super::files::{mode_word, write_script};
use super::{byte_lines, check_path, current_content, Change, Effect, FileDiff, ModuleError};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizedKeyArgs {
    pub user: String,
    /// One authorized_keys line (`ssh-ed25519 AAAA... comment`).
    pub key: String,
    /// Default: `~user/.ssh/authorized_keys`.
    #[serde(default)]
    pub path: Option<String>,
}

impl AuthorizedKeyArgs {
    pub fn probes(&self) -> Vec<Probe> {
        let mut p = vec![Probe::User(self.user.clone())];
        if let Some(path) = &self.path {
            p.push(Probe::File(path.clone()));
            p.push(Probe::File(parent(path).to_string()));
        }
        p
    }
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => ".",
    }
}

fn is_key_type(w: &str) -> bool {
    w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-")
}

/// `(type, base64 blob)` of an authorized_keys line, skipping any options.
pub fn key_id(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| is_key_type(w))?;
    Some((words[i], words.get(i + 1)?))
}

/// Whether an authorized_keys line starts with options.
pub fn has_options(line: &str) -> bool {
    line.split_whitespace().next().is_some_and(|w| !is_key_type(w))
}

fn same_line(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// Where the key goes and whose it is.
struct Target {
    path: String,
    dir: String,
    uid: u32,
    gid: u32,
    owner: String,
    group: String,
}

impl Target {
    /// `uid:gid`, for chown.
    fn ids(&self) -> String {
        format!("{}:{}", self.owner, self.group)
    }

    /// `chown uid:gid PATH`, reported as `chown USER PATH`.
    fn chown(&self, user: &str, path: &str) -> Change {
        Change::new(format!("chown {user} {path}"), join(&["chown", &self.ids(), path]) + "\n")
    }
}

pub fn plan(a: &AuthorizedKeyArgs, st: &NodeState) -> Result<Vec<Change>, ModuleError> {
    let want =
        key_id(&a.key).ok_or_else(|| ModuleError::Invalid(format!("not a public key line: {:?}", a.key)))?;
    if a.key.contains('\n') {
        return Err(ModuleError::Invalid("the key must be one line".into()));
    }
    let t = target(a, st)?;
    let mut out = dir_changes(a, st, &t)?;
    let cur = st.file(&t.path);
    if cur.is_some_and(|c| c.kind != FileKind::File) {
        return Err(ModuleError::Invalid(format!("{} is not a regular file", t.path)));
    }
    let text = current_content(&t.path, cur)?;
    let lines: Vec<&[u8]> = byte_lines(text).collect();
    let ours: Vec<usize> =
        (0..lines.len()).filter(|i| key_id(&String::from_utf8_lossy(lines[*i])) == Some(want)).collect();
    let exact = |i: usize| same_line(&String::from_utf8_lossy(lines[i]), &a.key);
    let line_ok = match ours.as_slice() {
        [] => false,
        [one] => !has_options(&a.key) || exact(*one),
        _ => !has_options(&a.key),
    };
    if line_ok {
        let c = cur.ok_or_else(|| ModuleError::NotProbed("a stat".into()))?;
        if c.uid != t.uid || c.gid != t.gid {
            out.push(t.chown(&a.user, &t.path));
        }
        if c.mode & 0o7777 != 0o600 {
            out.push(chmod(&t.path, 0o600));
        }
        return Ok(out);
    }
    let new = with_key(&lines, &ours, a.key.trim(), text.len());
    let verb = if ours.is_empty() { "add key to" } else { "set the key's options in" };
    out.push(Change {
        summary: format!("{verb} {}", t.path),
        script: write_script(&t.path, &new, Some(&t.owner), Some(&t.group), 0o600),
        diff: Some(FileDiff { path: t.path.clone(), before: cur.map(|_| text.to_vec()), after: new.clone() }),
        effects: vec![Effect::File {
            path: t.path.clone(),
            content: Some(new),
            owner: Some(t.owner),
            group: Some(t.group),
            mode: 0o600,
        }],
    });
    Ok(out)
}

/// The user's authorized_keys path and ids, both probed.
fn target(a: &AuthorizedKeyArgs, st: &NodeState) -> Result<Target, ModuleError> {
    if !st.users.contains_key(&a.user) {
        return Err(ModuleError::NotProbed(format!("user {}", a.user)));
    }
    let user =
        st.user(&a.user).ok_or_else(|| ModuleError::Invalid(format!("no user {} on this node", a.user)))?;
    let path =
        a.path.clone().unwrap_or_else(|| format!("{}/.ssh/authorized_keys", user.home.trim_end_matches('/')));
    check_path("authorized_keys path", &path)?;
    let dir = parent(&path).to_string();
    if !st.files.contains_key(&path) || !st.files.contains_key(&dir) {
        return Err(ModuleError::NotProbed(path));
    }
    let (owner, group) = (user.uid.to_string(), user.gid.to_string());
    Ok(Target { path, dir, uid: user.uid, gid: user.gid, owner, group })
}

/// `~/.ssh`: made 0700 and the user's when missing, else put right.
fn dir_changes(a: &AuthorizedKeyArgs, st: &NodeState, t: &Target) -> Result<Vec<Change>, ModuleError> {
    let dir = &t.dir;
    let mut out = Vec::new();
    match st.file(dir) {
        None => out.push(
            Change::new(
                format!("create {dir} (0700)"),
                [
                    join(&["mkdir", "-p", "--", dir]),
                    join(&["chown", &t.ids(), dir]),
                    join(&["chmod", &mode_word(0o700), dir]),
                ]
                .map(|l| l + "\n")
                .concat(),
            )
            .with(Effect::Dir {
                path: dir.clone(),
                owner: Some(t.owner.clone()),
                group: Some(t.group.clone()),
                mode: 0o700,
            }),
        ),
        Some(d) if d.kind != FileKind::Dir => {
            return Err(ModuleError::Invalid(format!("{dir} is not a directory")))
        }
        Some(d) => {
            if d.uid != t.uid {
                out.push(t.chown(&a.user, dir));
            }
            if d.mode & 0o7777 != 0o700 {
                out.push(chmod(dir, 0o700));
            }
        }
    }
    Ok(out)
}

fn chmod(path: &str, mode: u32) -> Change {
    Change::new(format!("chmod {mode:04o} {path}"), join(&["chmod", &mode_word(mode), path]) + "\n")
}

/// The file with the key's line where its first line was (or at the end),
/// every other byte as it was.
fn with_key(lines: &[&[u8]], ours: &[usize], key: &str, size: usize) -> Vec<u8> {
    let mut new = Vec::with_capacity(size + key.len() + 1);
    let mut placed = false;
    for (i, l) in lines.iter().enumerate() {
        if !ours.contains(&i) {
            new.extend_from_slice(l);
            new.push(b'\n');
        } else if !placed {
            new.extend_from_slice(key.as_bytes());
            new.push(b'\n');
            placed = true;
        }
    }
    if !placed {
        new.extend_from_slice(key.as_bytes());
        new.push(b'\n');
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::modules::files::tests::stat;
    use crate::setup::state::UserEntry;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey dffmpeg@ctl";

    fn state(dir: Option<(u32, u32)>, file: Option<(&[u8], u32)>) -> NodeState {
        let mut st = NodeState::default();
        st.users.insert(
            "pi".into(),
            Some(UserEntry { name: "pi".into(), uid: 1000, gid: 1000, home: "/home/pi".into() }),
        );
        st.files.insert(
            "/home/pi/.ssh".into(),
            dir.and_then(|(mode, _)| stat(FileKind::Dir, mode, "pi", "pi", None)),
        );
        st.files.insert(
            "/home/pi/.ssh/authorized_keys".into(),
            file.and_then(|(c, mode)| stat(FileKind::File, mode, "pi", "pi", Some(c))),
        );
        st
    }

    fn args() -> AuthorizedKeyArgs {
        AuthorizedKeyArgs { user: "pi".into(), key: KEY.into(), path: None }
    }

    #[test]
    fn noop_when_present_with_right_perms() {
        let other = format!("ssh-rsa AAAAB3other me@laptop\nfrom=\"10.0.0.1\" {KEY} old-comment\n");
        let st = state(Some((0o700, 0)), Some((other.as_bytes(), 0o600)));
        assert!(plan(&args(), &st).unwrap().is_empty());
    }

    #[test]
    fn appends_keeping_other_keys() {
        let st = state(Some((0o700, 0)), Some((b"ssh-rsa AAAAB3other me@laptop", 0o600)));
        let c = plan(&args(), &st).unwrap();
        assert_eq!(c.len(), 1);
        let d = c[0].diff.as_ref().unwrap();
        assert_eq!(String::from_utf8_lossy(&d.after), format!("ssh-rsa AAAAB3other me@laptop\n{KEY}\n"));
        assert!(c[0].script.contains("chown 1000:1000"));
        assert!(c[0].script.contains("chmod 00600"));
    }

    #[test]
    fn creates_dir_and_file_and_fixes_modes() {
        let c = plan(&args(), &state(None, None)).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c[0].script.contains("chmod 00700 /home/pi/.ssh"));
        assert_eq!(c[1].diff.as_ref().unwrap().before, None);
        let loose = state(Some((0o755, 0)), Some((KEY.as_bytes(), 0o664)));
        let c = plan(&args(), &loose).unwrap();
        assert_eq!(c.len(), 2, "{c:?}");
    }

    #[test]
    fn other_keys_survive_byte_for_byte() {
        let other: &[u8] = b"ssh-rsa AAAAB3other caf\xe9@laptop\r\n# \xff\xfe\n";
        let st = state(Some((0o700, 0)), Some((other, 0o600)));
        let c = plan(&args(), &st).unwrap();
        assert_eq!(c[0].diff.as_ref().unwrap().after, [other, KEY.as_bytes(), b"\n"].concat());
    }

    #[test]
    fn a_key_with_options_is_enforced_in_place() {
        let restricted = format!("from=\"198.18.1.10\",restrict {KEY}");
        let mut a = args();
        a.key = restricted.clone();
        // The same key without restrictions (an older setup): replaced where it was.
        let before = format!("ssh-rsa AAAAB3other me@laptop\n{KEY}\n# end\n");
        let st = state(Some((0o700, 0)), Some((before.as_bytes(), 0o600)));
        let c = plan(&a, &st).unwrap();
        assert_eq!(c.len(), 1);
        assert!(c[0].summary.starts_with("set the key's options in"), "{}", c[0].summary);
        let after = String::from_utf8(c[0].diff.as_ref().unwrap().after.clone()).unwrap();
        assert_eq!(after, format!("ssh-rsa AAAAB3other me@laptop\n{restricted}\n# end\n"));
        // Already so: nothing to do; another address: rewritten; duplicates go.
        let st = state(Some((0o700, 0)), Some((after.as_bytes(), 0o600)));
        assert!(plan(&a, &st).unwrap().is_empty());
        let moved = format!("from=\"198.18.1.99\",restrict {KEY}\n{KEY}\n");
        let st = state(Some((0o700, 0)), Some((moved.as_bytes(), 0o600)));
        let c = plan(&a, &st).unwrap();
        assert_eq!(c[0].diff.as_ref().unwrap().after, format!("{restricted}\n").into_bytes());
        // Without options in the task, options found on the node stay.
        let st = state(Some((0o700, 0)), Some((moved.as_bytes(), 0o600)));
        assert!(plan(&args(), &st).unwrap().is_empty());
        assert!(has_options(&restricted) && !has_options(KEY));
    }

    #[test]
    fn an_unread_file_is_refused() {
        let mut st = state(Some((0o700, 0)), Some((b"", 0o600)));
        if let Some(Some(f)) = st.files.get_mut("/home/pi/.ssh/authorized_keys") {
            f.content = None;
            f.size = 3 << 20;
        }
        let e = plan(&args(), &st).unwrap_err().to_string();
        assert!(e.contains("authorized_keys was not read") && e.contains("refusing"), "{e}");
    }

    #[test]
    fn errors() {
        let mut a = args();
        a.user = "bob".into();
        assert!(plan(&a, &state(None, None)).is_err());
        let mut st = state(None, None);
        st.users.insert("bob".into(), None);
        assert!(plan(&a, &st).unwrap_err().to_string().contains("no user bob"));
        let mut b = args();
        b.key = "not a key".into();
        assert!(plan(&b, &state(None, None)).is_err());
    }
}
