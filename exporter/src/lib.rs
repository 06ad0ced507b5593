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
/// in-flight scrapes finish. `remote_reload`: `POST /-/reload` from any address, not only
/// loopback.
pub async fn serve(
    listener: TcpListener,
    targets: Arc<LiveTargets>,
    remote_reload: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = http::router(targets, remote_reload);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
