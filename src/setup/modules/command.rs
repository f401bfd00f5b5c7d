//! `command`: run a command unless `creates` exists / `removes` is missing.
//!
//! `argv` (preferred) is joined with the one quoting function; `cmd` is a
//! shell line written by the playbook's author, run as is (like Ansible's
//! `shell`). `changed_when` (a bool or an expression over `rc` and
//! `stdout`) is applied by the engine after the command ran.

use serde::Deserialize;
use serde_json::Value as Json;

use crate::quote::join;
use crate::setup::state::NodeState;

use super::{check_path, Change, Effect, ModuleError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandArgs {
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub creates: Option<String>,
    #[serde(default)]
    pub removes: Option<String>,
    #[serde(default)]
    pub changed_when: Option<Json>,
}

impl CommandArgs {
    /// The shell line to run.
    pub fn line(&self) -> Result<String, ModuleError> {
        match (&self.argv, &self.cmd) {
            (Some(argv), None) if !argv.is_empty() => Ok(join(argv)),
            (None, Some(cmd)) if !cmd.trim().is_empty() => Ok(cmd.clone()),
            _ => Err(ModuleError::Invalid(
                "command needs exactly one of `argv` (a list) or `cmd` (a shell line)".into(),
            )),
        }
    }
}

pub fn plan(a: &CommandArgs, st: &NodeState) -> Result<Vec<Change>, ModuleError> {
    let line = a.line()?;
    if let Some(c) = &a.creates {
        check_path("creates", c)?;
        if st.file(c).is_some() {
            return Ok(Vec::new());
        }
    }
    if let Some(r) = &a.removes {
        check_path("removes", r)?;
        if st.file(r).is_none() {
            return Ok(Vec::new());
        }
    }
    let mut c = Change::new(format!("run {line}"), line + "\n");
    if let Some(p) = &a.creates {
        c = c.with(Effect::File { path: p.clone(), content: None, owner: None, group: None, mode: 0o644 });
    }
    if let Some(p) = &a.removes {
        c = c.with(Effect::Gone(p.clone()));
    }
    Ok(vec![c])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::modules::files::tests::stat;
    use crate::setup::state::FileKind;

    fn a(creates: Option<&str>, removes: Option<&str>) -> CommandArgs {
        CommandArgs {
            argv: Some(vec!["mv".into(), "/a b".into(), "/c".into()]),
            cmd: None,
            creates: creates.map(Into::into),
            removes: removes.map(Into::into),
            changed_when: None,
        }
    }

    #[test]
    fn creates_and_removes() {
        let mut st = NodeState::default();
        st.files.insert("/there".into(), stat(FileKind::File, 0o644, "root", "root", Some(b"")));
        st.files.insert("/gone".into(), None);
        assert!(plan(&a(Some("/there"), None), &st).unwrap().is_empty());
        assert_eq!(plan(&a(Some("/gone"), None), &st).unwrap()[0].script, "mv '/a b' /c\n");
        assert!(plan(&a(None, Some("/gone")), &st).unwrap().is_empty());
        assert_eq!(plan(&a(None, Some("/there")), &st).unwrap().len(), 1);
        assert_eq!(plan(&a(None, None), &st).unwrap().len(), 1);
    }

    #[test]
    fn needs_one_of_argv_or_cmd() {
        let mut both = a(None, None);
        both.cmd = Some("ls".into());
        assert!(plan(&both, &NodeState::default()).is_err());
        both.argv = None;
        assert_eq!(plan(&both, &NodeState::default()).unwrap()[0].script, "ls\n");
    }
}
