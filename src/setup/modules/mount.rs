//! `mount`: a line in /etc/fstab (so the mount survives reboots) and, with
//! `state: mounted`, mounted now through mount(8) from that line. A changed
//! line of a mounted filesystem is applied by unmounting and mounting again.

use serde::Deserialize;

use crate::quote::join;
use crate::setup::state::{escape_mount_field, unescape_mount_field, NodeState};

use super::files::write_script;
use super::{byte_lines, check_path, current_content, Change, Effect, FileDiff, ModuleError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MountWanted {
    /// In fstab and mounted now.
    #[default]
    Mounted,
    /// In fstab only.
    Present,
}

fn default_opts() -> String {
    "defaults".into()
}

fn default_fstab() -> String {
    "/etc/fstab".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountArgs {
    pub src: String,
    pub path: String,
    pub fstype: String,
    #[serde(default = "default_opts")]
    pub opts: String,
    #[serde(default)]
    pub state: MountWanted,
    /// The fstab file (tests use another one).
    #[serde(default = "default_fstab")]
    pub fstab: String,
}

/// `SRC PATH TYPE OPTS 0 0`, fields escaped the fstab way.
pub fn fstab_line(src: &str, path: &str, fstype: &str, opts: &str) -> String {
    format!("{} {} {} {} 0 0", escape_mount_field(src), escape_mount_field(path), fstype, opts)
}

/// `text` with exactly one entry for `path`, equal to `line` (the first
/// existing entry is replaced in place, later duplicates dropped, or the
/// line appended). `None` when `text` already is like that. Every other
/// line is kept byte for byte.
pub fn fstab_with(text: &[u8], path: &str, line: &str) -> Option<Vec<u8>> {
    let want: Vec<&str> = line.split_whitespace().collect();
    let is_entry = |l: &[u8]| {
        let l = String::from_utf8_lossy(l);
        let t = l.trim_start();
        !t.starts_with('#')
            && t.split_whitespace().nth(1).map(|p| unescape_mount_field(p) == path).unwrap_or(false)
    };
    let entries: Vec<&[u8]> = byte_lines(text).filter(|l| is_entry(l)).collect();
    if entries.len() == 1
        && String::from_utf8_lossy(entries[0]).split_whitespace().collect::<Vec<_>>() == want
    {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() + line.len() + 1);
    let mut placed = false;
    for l in byte_lines(text) {
        if is_entry(l) {
            if !placed {
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
                placed = true;
            }
        } else {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
    }
    if !placed {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    Some(out)
}

pub fn plan(a: &MountArgs, st: &NodeState) -> Result<Vec<Change>, ModuleError> {
    check_path("path", &a.path)?;
    if a.fstype.is_empty() || a.fstype.contains(char::is_whitespace) {
        return Err(ModuleError::Invalid(format!("bad fstype {:?}", a.fstype)));
    }
    if a.opts.is_empty() || a.opts.contains(char::is_whitespace) {
        return Err(ModuleError::Invalid(format!("bad mount options {:?}", a.opts)));
    }
    if !st.files.contains_key(&a.fstab) {
        return Err(ModuleError::NotProbed(a.fstab.clone()));
    }
    let cur = st.file(&a.fstab);
    let text = current_content(&a.fstab, cur)?;
    let line = fstab_line(&a.src, &a.path, &a.fstype, &a.opts);
    let mut out = Vec::new();
    let new = fstab_with(text, &a.path, &line);
    if let Some(new) = &new {
        let mode = cur.map(|c| c.mode & 0o7777).unwrap_or(0o644);
        let (o, g) = cur.map(|c| (c.uid.to_string(), c.gid.to_string())).unwrap_or(("0".into(), "0".into()));
        out.push(Change {
            summary: format!("{} in {}: {line}", a.path, a.fstab),
            script: write_script(&a.fstab, new, Some(&o), Some(&g), mode),
            diff: Some(FileDiff {
                path: a.fstab.clone(),
                before: cur.map(|_| text.to_vec()),
                after: new.clone(),
            }),
            effects: vec![Effect::File {
                path: a.fstab.clone(),
                content: Some(new.clone()),
                owner: Some(o.clone()),
                group: Some(g.clone()),
                mode,
            }],
        });
    }
    if a.state == MountWanted::Mounted {
        let mounted = st.mounts.iter().any(|m| m.target == a.path);
        if !mounted {
            out.push(
                Change::new(
                    format!("mount {}", a.path),
                    join(&["mkdir", "-p", "--", &a.path]) + "\n" + &join(&["mount", &a.path]) + "\n",
                )
                .with(Effect::Mounted(a.path.clone())),
            );
        } else if new.is_some() {
            out.push(Change::new(
                format!("remount {}", a.path),
                join(&["umount", &a.path]) + "\n" + &join(&["mount", &a.path]) + "\n",
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::modules::files::tests::stat;
    use crate::setup::state::{parse_mounts, FileKind};

    const LINE: &str = "198.18.41.10:/srv/dffmpeg/work /srv/dffmpeg/work nfs rw,_netdev,nofail 0 0";

    fn a() -> MountArgs {
        MountArgs {
            src: "198.18.41.10:/srv/dffmpeg/work".into(),
            path: "/srv/dffmpeg/work".into(),
            fstype: "nfs".into(),
            opts: "rw,_netdev,nofail".into(),
            state: MountWanted::Mounted,
            fstab: "/etc/fstab".into(),
        }
    }

    fn st(fstab: &str, mounts: &str) -> NodeState {
        let mut s = NodeState { mounts: parse_mounts(mounts), ..NodeState::default() };
        s.files
            .insert("/etc/fstab".into(), stat(FileKind::File, 0o644, "root", "root", Some(fstab.as_bytes())));
        s
    }

    #[test]
    fn the_fstab_line() {
        assert_eq!(fstab_line(&a().src, &a().path, "nfs", &a().opts), LINE);
        assert_eq!(fstab_line("h:/a b", "/a b", "nfs", "ro"), "h:/a\\040b /a\\040b nfs ro 0 0");
    }

    fn with(text: &str) -> Option<String> {
        fstab_with(text.as_bytes(), "/srv/dffmpeg/work", LINE).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn fstab_editing() {
        let base = "# static\nUUID=1 / ext4 defaults 0 1\n";
        assert_eq!(with(base).unwrap(), format!("{base}{LINE}\n"));
        let done = format!("{base}{LINE}\n");
        assert_eq!(with(&done), None);
        // Same fields, other spacing: still equal.
        let spaced = format!("{base}{}\n", LINE.replace(' ', "\t"));
        assert_eq!(with(&spaced), None);
        // An old entry is replaced in place; duplicates go.
        let old =
            format!("old:/x /srv/dffmpeg/work nfs ro 0 0\n{base}old2:/y /srv/dffmpeg/work nfs ro 0 0\n");
        assert_eq!(with(&old).unwrap(), format!("{LINE}\n{base}"));
        // A commented-out entry is left alone.
        let commented = format!("#{LINE}\n");
        assert_eq!(with(&commented).unwrap(), format!("#{LINE}\n{LINE}\n"));
    }

    #[test]
    fn other_lines_survive_byte_for_byte() {
        let text = b"# caf\xe9 (latin-1)\r\nUUID=1 /d\xffata ext4 defaults 0 2\n";
        let new = fstab_with(text, "/srv/dffmpeg/work", LINE).unwrap();
        assert_eq!(new, [&text[..], LINE.as_bytes(), b"\n"].concat());
    }

    #[test]
    fn an_unread_fstab_is_refused() {
        let mut s = st("", "");
        if let Some(Some(f)) = s.files.get_mut("/etc/fstab") {
            f.content = None;
            f.size = 2 << 20;
        }
        let e = plan(&a(), &s).unwrap_err().to_string();
        assert!(e.contains("/etc/fstab was not read (2097152 bytes") && e.contains("refusing"), "{e}");
    }

    #[test]
    fn noop_when_in_fstab_and_mounted() {
        let s = st(&format!("{LINE}\n"), "x:/y /srv/dffmpeg/work nfs4 rw 0 0\n");
        assert!(plan(&a(), &s).unwrap().is_empty());
        // After a boot with x-systemd.automount: systemd's autofs mount holds the
        // path until the first access mounts NFS over it (both seen in a VM).
        let autofs = "systemd-1 /srv/dffmpeg/work autofs rw,relatime,fd=51,pgrp=1,timeout=0,minproto=5,maxproto=5,direct,pipe_ino=11963 0 0\n";
        assert!(plan(&a(), &st(&format!("{LINE}\n"), autofs)).unwrap().is_empty());
        let both = format!("{autofs}x:/y /srv/dffmpeg/work nfs4 rw 0 0\n");
        assert!(plan(&a(), &st(&format!("{LINE}\n"), &both)).unwrap().is_empty());
    }

    #[test]
    fn adds_line_and_mounts() {
        let c = plan(&a(), &st("", "")).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(String::from_utf8_lossy(&c[0].diff.as_ref().unwrap().after), format!("{LINE}\n"));
        assert_eq!(c[1].script, "mkdir -p -- /srv/dffmpeg/work\nmount /srv/dffmpeg/work\n");
        // In fstab but not mounted: mount only.
        let c = plan(&a(), &st(&format!("{LINE}\n"), "")).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].summary, "mount /srv/dffmpeg/work");
        // Mounted with an old line: rewrite and remount.
        let c = plan(
            &a(),
            &st("old:/x /srv/dffmpeg/work nfs ro 0 0\n", "old:/x /srv/dffmpeg/work nfs4 ro 0 0\n"),
        )
        .unwrap();
        assert_eq!(c[1].summary, "remount /srv/dffmpeg/work");
        // present: fstab only.
        let mut p = a();
        p.state = MountWanted::Present;
        assert_eq!(plan(&p, &st("", "")).unwrap().len(), 1);
    }
}
