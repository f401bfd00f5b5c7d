//! `service`: a systemd unit started, stopped or restarted, and/or
//! enabled. Nodes without a running systemd (containers, the test hosts)
//! skip the task: there is no service manager to ask, and starting daemons
//! by hand would not survive a reboot anyway — unless the task names the
//! daemon's command line (`daemon:`, a forking daemon) and `pidfile:`:
//! then the daemon is started (or killed and started again) directly,
//! its pidfile telling whether it runs. `enabled` means nothing there.

use serde::Deserialize;

use crate::quote::join;
use crate::setup::state::NodeState;

use super::{check_path, Change, Effect, ModuleError, Plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceWanted {
    Started,
    Stopped,
    /// Restarted every time (for handlers: the config changed).
    Restarted,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceArgs {
    pub name: String,
    #[serde(default)]
    pub state: Option<ServiceWanted>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Without systemd: the command that starts the daemon (it forks).
    #[serde(default)]
    pub daemon: Option<Vec<String>>,
    /// Without systemd: where the daemon writes its pid.
    #[serde(default)]
    pub pidfile: Option<String>,
}

pub fn plan(a: &ServiceArgs, st: &NodeState) -> Result<Plan, ModuleError> {
    if a.name.is_empty() || a.name.starts_with('-') {
        return Err(ModuleError::Invalid(format!("bad service name {:?}", a.name)));
    }
    if !st.systemd {
        return match (&a.daemon, &a.pidfile) {
            (Some(argv), Some(pidfile)) if !argv.is_empty() => plan_daemon(a, argv, pidfile, st),
            (None, None) => Ok(Plan::Skip("systemd is not running on this node".into())),
            _ => Err(ModuleError::Invalid("`daemon` (a command line) and `pidfile` go together".into())),
        };
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
        Some(ServiceWanted::Restarted) => ctl("restart"),
        _ => {}
    }
    Ok(Plan::Changes(out))
}

/// The shell lines stopping the daemon of `pidfile`, if it runs: SIGTERM,
/// up to 10 s to exit, then SIGKILL.
fn stop_script(pidfile: &str) -> String {
    format!(
        "p=$(cat -- {f} 2>/dev/null) || p=\ncase $p in '' | *[!0-9]*) p= ;; esac\n\
         if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then\n  kill \"$p\"\n  i=0\n  \
         while kill -0 \"$p\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done\n  \
         kill -9 \"$p\" 2>/dev/null || true\nfi\n",
        f = crate::quote::quote(pidfile)
    )
}

/// A daemon without systemd: started when its pidfile names no live
/// process, restarted when asked, stopped.
fn plan_daemon(a: &ServiceArgs, argv: &[String], pidfile: &str, st: &NodeState) -> Result<Plan, ModuleError> {
    check_path("pidfile", pidfile)?;
    let alive =
        *st.daemons.get(pidfile).ok_or_else(|| ModuleError::NotProbed(format!("pidfile {pidfile}")))?;
    // Its output goes nowhere: the batch's session must not wait for it.
    let start = format!("{} </dev/null >/dev/null 2>&1\n", join(argv));
    let started = |verb: &str, script: String| {
        Change::new(format!("{verb} {} (no systemd: {})", a.name, argv.join(" ")), script)
            .with(Effect::Running(pidfile.to_string()))
    };
    let out = match a.state {
        Some(ServiceWanted::Started) if !alive => vec![started("start", start)],
        Some(ServiceWanted::Restarted) => vec![started("restart", stop_script(pidfile) + &start)],
        Some(ServiceWanted::Stopped) if alive => {
            vec![Change::new(format!("stop {}", a.name), stop_script(pidfile))]
        }
        _ => Vec::new(),
    };
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
        ServiceArgs {
            name: "nfs-server".into(),
            state: Some(ServiceWanted::Started),
            enabled: Some(true),
            daemon: None,
            pidfile: None,
        }
    }

    fn daemon(state: ServiceWanted) -> ServiceArgs {
        ServiceArgs {
            name: "munge".into(),
            state: Some(state),
            enabled: Some(true),
            daemon: Some(vec!["/usr/sbin/munged".into()]),
            pidfile: Some("/run/munge/munged.pid".into()),
        }
    }

    fn with_daemon(alive: bool) -> NodeState {
        let mut s = NodeState::default();
        s.daemons.insert("/run/munge/munged.pid".into(), alive);
        s
    }

    #[test]
    fn without_systemd_a_daemon_is_started_from_its_command_line() {
        let Ok(Plan::Changes(c)) = plan(&daemon(ServiceWanted::Started), &with_daemon(false)) else {
            panic!()
        };
        assert_eq!(c.len(), 1);
        assert!(c[0].script.starts_with("/usr/sbin/munged </dev/null"), "{}", c[0].script);
        assert_eq!(c[0].effects, [Effect::Running("/run/munge/munged.pid".into())]);
        assert_eq!(plan(&daemon(ServiceWanted::Started), &with_daemon(true)), Ok(Plan::Changes(vec![])));
        let Ok(Plan::Changes(r)) = plan(&daemon(ServiceWanted::Restarted), &with_daemon(true)) else {
            panic!()
        };
        assert!(r[0].script.contains("kill \"$p\"") && r[0].script.ends_with("2>&1\n"), "{}", r[0].script);
        let Ok(Plan::Changes(s)) = plan(&daemon(ServiceWanted::Stopped), &with_daemon(true)) else {
            panic!()
        };
        assert!(s[0].summary == "stop munge" && !s[0].script.contains("/usr/sbin/munged"));
        let half = ServiceArgs { pidfile: None, ..daemon(ServiceWanted::Started) };
        assert!(plan(&half, &with_daemon(false)).is_err());
        let unprobed = plan(&daemon(ServiceWanted::Started), &NodeState::default());
        assert!(matches!(unprobed, Err(ModuleError::NotProbed(_))));
    }

    #[test]
    fn the_stop_script_stops_a_real_process() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("d.pid");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(&pidfile, format!("{}\n", child.id())).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &stop_script(pidfile.to_str().unwrap())])
            .status()
            .unwrap();
        assert!(out.success());
        assert!(child.wait().is_ok());
        // No pidfile, or garbage in it: nothing to stop, no error.
        std::fs::write(&pidfile, "x; rm -rf /\n").unwrap();
        assert!(std::process::Command::new("sh")
            .args(["-c", &stop_script(pidfile.to_str().unwrap())])
            .status()
            .unwrap()
            .success());
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
