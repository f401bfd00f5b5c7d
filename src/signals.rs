//! SIGINT and SIGTERM: the first stops a command cleanly (`transcode`
//! stops its attempts and keeps the job resumable; `setup` and `facts` drop
//! their work and close their SSH masters; each exits 1 saying so); a
//! second one exits at once, whatever the first is still waiting for.

/// Wait for SIGINT (Ctrl-C) or SIGTERM; the name of the one that came.
/// From then on, the next SIGINT or SIGTERM ends dffmpeg at once (see
/// [`exit_on_next`]).
pub async fn wait() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        // Without signal handling the default actions stay: never return.
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    exit_on_next();
    name
}

/// Run `work` to its end, unless SIGINT or SIGTERM comes first: then the
/// work is dropped (what it started locally dies with it) and the signal's
/// name is the error, for the command to clean up and say so.
pub async fn unless_stopped<F: std::future::Future>(work: F) -> Result<F::Output, &'static str> {
    tokio::select! {
        r = work => Ok(r),
        s = wait() => Err(s),
    }
}

/// The next SIGINT or SIGTERM exits the process at once with status 130
/// (a plain handler, run even when every task is stuck): the programs
/// dffmpeg started die with it (`PR_SET_PDEATHSIG`, see `process.rs`), SSH
/// masters are closed by their watchers, and a job resumes from its
/// verified chunks.
pub fn exit_on_next() {
    extern "C" fn now(_: libc::c_int) {
        const MSG: &[u8] =
            b"\ndffmpeg: stopped at once (second signal); run the same command again to resume\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(130);
        }
    }
    // SAFETY: a zeroed sigaction with a handler that only calls
    // async-signal-safe functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = now as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_the_first_signal_the_next_one_exits_at_once() {
        // In a child process (this test binary, the helper below): the
        // handler exits it with 130 whatever it is doing.
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["--exact", "signals::tests::second_signal_helper", "--ignored", "--nocapture"])
            .env("DFFMPEG_TEST_SECOND_SIGNAL", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("stopped at once"));
    }

    /// The child of the test above: stuck (as on a blocking read) when
    /// the signal comes.
    #[test]
    #[ignore]
    fn second_signal_helper() {
        if std::env::var_os("DFFMPEG_TEST_SECOND_SIGNAL").is_none() {
            return;
        }
        super::exit_on_next();
        // SAFETY: raising a signal in this process.
        unsafe { libc::raise(libc::SIGTERM) };
        std::thread::sleep(std::time::Duration::from_secs(30));
    }
}
