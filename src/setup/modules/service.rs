//! `service`: a systemd unit started and/or enabled. Nodes without a
//! running systemd (containers, the test hosts) skip the task: there is no
//! service manager to ask, and starting daemons by hand would not survive a
//! reboot anyway.

use serde::Deserialize;

use crate::quote::join;
use crate::setup::state::NodeState;

use super::{Change, ModuleError, Plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceWanted {
    Started,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceArgs {
    pub name: String,
    #[serde(default)]
    pub state: Option<ServiceWanted>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

pub fn plan(a: &ServiceArgs, st: &NodeState) -> Result<Plan, ModuleError> {
    if a.name.is_empty() || a.name.starts_with('-') {
        return Err(ModuleError::Invalid(format!("bad service name {:?}", a.name)));
    }
    if !st.systemd {
        return Ok(Plan::Skip("systemd is not running on this node".into()));
    }
    let cur = st
        .services
        .get(&a.name)
        .copied()
        .ok_or_else(|| ModuleError::NotProbed(format!("service {}", a.name)))?;
    let mut out = Vec::new();
    let mut ctl = |verb: &str| {
        out.push(Change::new(format!("{verb} {}", a.name), join(&["systemctl", verb, &a.name]) + "\n"))
    };
    match a.enabled {
        Some(true) if !cur.enabled => ctl("enable"),
        Some(false) if cur.enabled => ctl("disable"),
        _ => {}
    }
    match a.state {
        Some(ServiceWanted::Started) if !cur.active => ctl("start"),
        Some(ServiceWanted::Stopped) if cur.active => ctl("stop"),
        _ => {}
    }
    Ok(Plan::Changes(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::state::ServiceState;

    fn st(systemd: bool, active: bool, enabled: bool) -> NodeState {
        let mut s = NodeState { systemd, ..NodeState::default() };
        s.services.insert("nfs-server".into(), ServiceState { active, enabled });
        s
    }

    fn a() -> ServiceArgs {
        ServiceArgs { name: "nfs-server".into(), state: Some(ServiceWanted::Started), enabled: Some(true) }
    }

    #[test]
    fn skips_without_systemd_and_noops_when_running() {
        assert!(matches!(plan(&a(), &st(false, false, false)), Ok(Plan::Skip(_))));
        assert_eq!(plan(&a(), &st(true, true, true)), Ok(Plan::Changes(vec![])));
        let Ok(Plan::Changes(c)) = plan(&a(), &st(true, false, false)) else { panic!() };
        assert_eq!(c[0].script, "systemctl enable nfs-server\n");
        assert_eq!(c[1].script, "systemctl start nfs-server\n");
    }
}
