//! Stop signals for the long-running commands (`node`, `devnet`).

/// Resolves on Ctrl-C (SIGINT), SIGTERM or SIGHUP, so a service manager's stop and a closed
/// terminal both shut down cleanly instead of killing the process mid-write.
pub async fn shutdown() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let other = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = hup.recv() => {},
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM/SIGHUP");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let other = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = other => {},
    }
}
