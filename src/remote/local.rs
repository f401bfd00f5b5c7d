//! This machine as a node: argv runs directly, no shell, no SSH.

use super::Transport;

#[derive(Debug)]
pub struct Local {
    name: String,
}

impl Local {
    pub fn new(name: impl Into<String>) -> Self {
        Local { name: name.into() }
    }
}

impl Transport for Local {
    fn name(&self) -> &str {
        &self.name
    }

    fn command(&self, argv: &[String]) -> tokio::process::Command {
        // Dies with dffmpeg, whatever ends it.
        let mut cmd = crate::process::command(&argv[0]);
        cmd.args(&argv[1..]);
        // Own process group: a terminal Ctrl-C reaches dffmpeg only, which
        // then stops its children itself and keeps the job resumable.
        cmd.process_group(0);
        cmd
    }

    async fn kill(&self, pid: u32) {
        // The child leads its own process group (`command`): the group
        // first, so that what it started goes too, then the pid itself.
        // SAFETY: plain kill(2) on a pid we spawned and its group.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }

    fn reports_pid(&self) -> bool {
        false
    }

    fn under_shell(&self, argv: Vec<String>) -> Vec<String> {
        // The program is one more process on this machine.
        crate::process::count_started(1);
        // The shell has PR_SET_PDEATHSIG, but its children do not inherit
        // it: without this an encoder outlives a SIGKILLed dffmpeg.
        static SETPRIV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let has = *SETPRIV.get_or_init(|| {
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("setpriv").is_file()))
        });
        match has {
            true => {
                ["setpriv", "--pdeathsig", "KILL", "--"].iter().map(|s| s.to_string()).chain(argv).collect()
            }
            false => argv,
        }
    }
}
