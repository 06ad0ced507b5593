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

use tokio::net::TcpListener;

pub use reload::LiveTargets;
pub use targets::Targets;

/// Serves the exporter on an already bound `listener` until `shutdown` resolves, then lets
/// in-flight scrapes finish.
pub async fn serve(
    listener: TcpListener,
    targets: Arc<LiveTargets>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, http::router(targets))
        .with_graceful_shutdown(shutdown)
        .await
}
