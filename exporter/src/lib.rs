//! `etcdmedic-exporter`: asks every member of every configured etcd cluster for its status
//! and publishes the maintenance view as Prometheus metrics.
//!
//! # Layout
//! - [`cli`]: command-line arguments.
//! - [`targets`]: the configured clusters, collected concurrently and bounded at scrape time.
//! - [`metrics`]: cluster status written as OpenMetrics text.
//! - [`http`]: the HTTP endpoints.
//! - [`reload`]: the clusters served now, replaced on SIGHUP or `POST /-/reload`.
//! - [`status`]: the one-shot `status` command (table or JSON).

pub mod cli;
pub mod http;
pub mod metrics;
pub mod reload;
pub mod status;
pub mod targets;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcdmedic_cluster::listener::{self, Limits};

pub use reload::LiveTargets;
pub use targets::Targets;

/// How the exporter's HTTP server treats its clients.
#[derive(Debug, Clone, Copy)]
pub struct Serving {
    /// `POST /-/reload` from any address, not only loopback.
    pub remote_reload: bool,
    /// The head's deadline and the connections open at once (as the remediator's).
    pub limits: Limits,
}

/// How long scrapes under way get to finish once the exporter is asked to stop.
const CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// Serves the exporter on an already bound `listener` until `shutdown` resolves, then lets
/// in-flight scrapes finish.
pub async fn serve(
    listener: std::net::TcpListener,
    targets: Arc<LiveTargets>,
    serving: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = http::router(targets, serving.remote_reload);
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.graceful_shutdown(Some(CONNECTION_GRACE));
    });
    listener::serve(
        listener,
        None,
        serving.limits,
        warn_when_full(),
        handle,
        app,
    )
    .await
}

/// A warning when connections are closed for being over `max_connections`, at most once a
/// minute: a flood of them must not become a flood of log lines.
fn warn_when_full() -> listener::OnRefused {
    let last = std::sync::Mutex::new(None::<std::time::Instant>);
    Arc::new(move || {
        let mut last = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!(
                "--max-connections connections are open: new ones are closed on arrival"
            );
        }
    })
}
