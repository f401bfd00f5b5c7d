//! What a change will have done, applied to the planning copy of the node's
//! state: tasks later in the same play (several mounts editing one fstab,
//! the same package in two playbooks) plan against the state as it will be,
//! not as it was when the round trip read it.

use crate::setup::state::{FileKind, FileStat, GroupEntry, MountEntry, NodeState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `path` is a regular file with this content, owner and mode.
    File {
        path: String,
        content: Option<Vec<u8>>,
        owner: Option<String>,
        group: Option<String>,
        mode: u32,
    },
    /// `path` is a directory.
    Dir {
        path: String,
        owner: Option<String>,
        group: Option<String>,
        mode: u32,
    },
    /// Owner/group/mode of an existing path.
    Attrs {
        path: String,
        owner: Option<String>,
        group: Option<String>,
        mode: Option<u32>,
    },
    Gone(String),
    Installed(Vec<String>),
    Group {
        name: String,
        gid: Option<u32>,
    },
    Member {
        group: String,
        user: String,
    },
    Mounted(String),
    /// The daemon of this pidfile runs.
    Running(String),
}

fn set_owner(stat: &mut FileStat, owner: &Option<String>, group: &Option<String>) {
    if let Some(o) = owner {
        match o.parse::<u32>() {
            Ok(uid) => stat.uid = uid,
            Err(_) => stat.owner = o.clone(),
        }
    }
    if let Some(g) = group {
        match g.parse::<u32>() {
            Ok(gid) => stat.gid = gid,
            Err(_) => stat.group = g.clone(),
        }
    }
}

fn blank(kind: FileKind) -> FileStat {
    FileStat {
        kind,
        mode: 0,
        uid: 0,
        gid: 0,
        owner: "root".into(),
        group: "root".into(),
        size: 0,
        content: None,
    }
}

impl Effect {
    pub fn apply(&self, st: &mut NodeState) {
        match self {
            Effect::File { path, content, owner, group, mode } => {
                let mut s = st.file(path).cloned().unwrap_or_else(|| blank(FileKind::File));
                s.kind = FileKind::File;
                s.size = content.as_ref().map(|c| c.len() as u64).unwrap_or(0);
                s.content = content.clone();
                s.mode = *mode;
                set_owner(&mut s, owner, group);
                st.files.insert(path.clone(), Some(s));
            }
            Effect::Dir { path, owner, group, mode } => {
                let mut s = blank(FileKind::Dir);
                s.mode = *mode;
                set_owner(&mut s, owner, group);
                st.files.insert(path.clone(), Some(s));
            }
            Effect::Attrs { path, owner, group, mode } => {
                if let Some(Some(s)) = st.files.get_mut(path) {
                    set_owner(s, owner, group);
                    if let Some(m) = mode {
                        s.mode = *m;
                    }
                }
            }
            Effect::Gone(path) => {
                st.files.insert(path.clone(), None);
            }
            Effect::Installed(pkgs) => {
                st.packages.get_or_insert_with(Default::default).extend(pkgs.iter().cloned());
            }
            Effect::Group { name, gid } => match st.groups.iter_mut().find(|g| &g.name == name) {
                Some(g) => {
                    if let Some(id) = gid {
                        g.gid = *id;
                    }
                }
                None => st.groups.push(GroupEntry {
                    name: name.clone(),
                    gid: gid.unwrap_or(u32::MAX),
                    members: Vec::new(),
                }),
            },
            Effect::Member { group, user } => {
                if let Some(g) = st.groups.iter_mut().find(|g| &g.name == group) {
                    if !g.members.contains(user) {
                        g.members.push(user.clone());
                    }
                }
            }
            Effect::Running(pidfile) => {
                st.daemons.insert(pidfile.clone(), true);
            }
            Effect::Mounted(path) => {
                if !st.mounts.iter().any(|m| &m.target == path) {
                    st.mounts.push(MountEntry {
                        source: String::new(),
                        target: path.clone(),
                        fstype: String::new(),
                        options: String::new(),
                    });
                }
            }
        }
    }
}
