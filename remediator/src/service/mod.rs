//! `etcdmedic-remediator serve`: the Alertmanager webhook receiver that turns alerts into
//! safe, deduplicated runs of the engine.
//!
//! # Layout
//! - [`payload`]: Alertmanager's webhook payload (version 4), parsed strictly.
//! - [`scheduler`]: alerts and requests to runs: coalescing, limits, cooldown, cancellation
//!   (`decide`), and carrying the runs out (`run`).
//! - [`store`]: SQLite state: alerts, runs and reports, the pause switch.
//! - `http`: the webhook, the runs API, metrics and probes.
//! - `auth`: bearer and basic credentials, compared in constant time.
//! - [`metrics`]: the service's metrics.
//! - `notify`: optional Alertmanager silences and Grafana annotations.

mod auth;
mod http;
pub mod metrics;
mod notify;
pub mod payload;
pub mod scheduler;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use etcdmedic_cluster::{ClusterConfig, RemediatorSettings};
use tokio_util::sync::CancellationToken;

pub use http::App;
use metrics::Metrics;
use scheduler::Scheduler;

/// How long open connections get to finish once the service is asked to stop.
const CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// Errors that stop the service from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Cluster(etcdmedic_cluster::Error),
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// A short, stable name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Store(_) => "store",
            Error::Cluster(_) => "cluster",
            Error::Serve(_) => "serve",
        }
    }
}

/// Serves the webhook and API on `listener` until `shutdown` resolves; then stops accepting,
/// lets each run under way finish its current member (recorded as interrupted), and returns.
pub async fn serve(
    clusters: &[ClusterConfig],
    settings: &RemediatorSettings,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let names: Vec<String> = clusters.iter().map(|c| c.name.to_string()).collect();
    let metrics = Arc::new(Metrics::new(&names));
    let stop = CancellationToken::new();
    let (scheduler, interrupted) =
        Scheduler::open(clusters, settings, metrics.clone(), stop.clone())?;
    if !interrupted.is_empty() {
        tracing::warn!(runs = ?interrupted, "runs were under way when the service last stopped; marked interrupted");
    }
    scheduler.recover(interrupted);
    let auth = auth::Authenticator::new(&settings.auth);
    if !auth.is_enabled() {
        tracing::warn!("no remediator.auth configured: anyone who reaches the listener can queue runs; configure bearer_token_file or basic_auth");
    }
    let app = App {
        scheduler: scheduler.clone(),
        metrics,
        auth,
        max_body_bytes: settings.max_body_bytes,
    };
    let router = http::router(app);
    let dispatcher = tokio::spawn(scheduler.clone().dispatch());

    let handle = axum_server::Handle::new();
    let on_shutdown = handle.clone();
    let stopping = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("stopping: no new connections or runs; the member under way finishes");
        stopping.cancel();
        on_shutdown.graceful_shutdown(Some(CONNECTION_GRACE));
    });

    listener.set_nonblocking(true).map_err(Error::Serve)?;
    let served = match &settings.tls {
        Some(tls) => {
            let config = RustlsConfig::from_config(tls.config.clone());
            axum_server::from_tcp_rustls(listener, config)
                .map_err(Error::Serve)?
                .handle(handle)
                .serve(router.into_make_service())
                .await
        }
        None => {
            axum_server::from_tcp(listener)
                .map_err(Error::Serve)?
                .handle(handle)
                .serve(router.into_make_service())
                .await
        }
    };
    // Whatever ended the server, runs must end cleanly before the process does.
    stop.cancel();
    let _ = dispatcher.await;
    scheduler.wait_for_runs().await;
    served.map_err(Error::Serve)
}
