//! SIGINT and SIGTERM, for the commands that stop cleanly on them (`setup`
//! and `facts`: their work is dropped, SSH masters closed, exit 1 with a
//! line saying so).

/// Wait for SIGINT (Ctrl-C) or SIGTERM; the name of the one that came.
pub async fn wait() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        // Without signal handling the default actions stay: never return.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
