//! The signal that ends a server: SIGTERM (what Kubernetes and systemd send) or SIGINT
//! (Ctrl-C).

/// Resolves when the process is asked to stop.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; only Ctrl-C will stop the process");
            // If even this fails there is no signal to wait for; never resolving keeps the
            // server up rather than stopping it for no reason.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
