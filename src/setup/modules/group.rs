//! `group`: a local group with a fixed gid (the same on every node, so that
//! NFS permission checks by number agree) and its member users.

use serde::Deserialize;

use crate::quote::join;
use crate::setup::state::NodeState;

use super::{opt_string, string_list, Change, Effect, ModuleError};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupArgs {
    pub name: String,
    #[serde(default, deserialize_with = "opt_string")]
    pub gid: Option<String>,
    #[serde(default, deserialize_with = "string_list")]
    pub members: Vec<String>,
}

fn valid(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub fn plan(a: &GroupArgs, st: &NodeState) -> Result<Vec<Change>, ModuleError> {
    for n in std::iter::once(&a.name).chain(a.members.iter()) {
        if !valid(n) {
            return Err(ModuleError::Invalid(format!("not a user or group name: {n:?}")));
        }
    }
    let gid = a
        .gid
        .as_deref()
        .map(|g| g.parse::<u32>().map_err(|_| ModuleError::Invalid(format!("bad gid {g:?}"))))
        .transpose()?;
    let mut out = Vec::new();
    let cur = st.group(&a.name);
    match (cur, gid) {
        (None, _) => {
            let mut argv = vec!["groupadd".to_string()];
            if let Some(g) = gid {
                argv.extend(["--gid".to_string(), g.to_string()]);
            }
            argv.push(a.name.clone());
            out.push(Change::new(format!("add group {}", a.name), join(&argv) + "\n"));
        }
        (Some(g), Some(want)) if g.gid != want => {
            if let Some(other) = st.groups.iter().find(|o| o.gid == want) {
                return Err(ModuleError::Invalid(format!(
                    "gid {want} wanted for {} is taken by group {}",
                    a.name, other.name
                )));
            }
            out.push(
                Change::new(
                    format!("gid of {} {} -> {want}", a.name, g.gid),
                    join(&["groupmod", "--gid", &want.to_string(), &a.name]) + "\n",
                )
                .with(Effect::Group { name: a.name.clone(), gid: Some(want) }),
            );
        }
        _ => {}
    }
    for m in &a.members {
        if !cur.map(|g| g.members.contains(m)).unwrap_or(false) {
            out.push(
                Change::new(
                    format!("add {m} to group {}", a.name),
                    join(&["usermod", "-a", "-G", &a.name, m]) + "\n",
                )
                .with(Effect::Member { group: a.name.clone(), user: m.clone() }),
            );
        }
    }
    if cur.is_none() {
        if let Some(other) = gid.and_then(|w| st.groups.iter().find(|o| o.gid == w)) {
            return Err(ModuleError::Invalid(format!(
                "gid {} wanted for {} is taken by group {}",
                other.gid, a.name, other.name
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::state::parse_groups;

    fn st(group: &str) -> NodeState {
        NodeState { groups: parse_groups(group), ..NodeState::default() }
    }

    fn a() -> GroupArgs {
        GroupArgs { name: "dffmpeg".into(), gid: Some("2775".into()), members: vec!["pi".into()] }
    }

    #[test]
    fn noop_when_group_and_members_match() {
        assert!(plan(&a(), &st("dffmpeg:x:2775:bob,pi\n")).unwrap().is_empty());
    }

    #[test]
    fn adds_group_members_and_fixes_gid() {
        let c = plan(&a(), &st("users:x:100:\n")).unwrap();
        assert_eq!(c[0].script, "groupadd --gid 2775 dffmpeg\n");
        assert_eq!(c[1].script, "usermod -a -G dffmpeg pi\n");
        let c = plan(&a(), &st("dffmpeg:x:999:pi\n")).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].script, "groupmod --gid 2775 dffmpeg\n");
        assert!(plan(&a(), &st("other:x:2775:\n")).unwrap_err().to_string().contains("taken"));
        let mut bad = a();
        bad.members = vec!["-o".into()];
        assert!(plan(&bad, &st("")).is_err());
    }
}
