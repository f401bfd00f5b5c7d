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
