//! `etcdmedic-remediator serve`: the Alertmanager webhook receiver that turns alerts into
//! safe, deduplicated runs of the engine.
//!
//! # Layout
//! - `settings`: the `remediator:` block resolved, its secrets read.
//! - `payload`: Alertmanager's webhook payload (version 4), parsed strictly.
//! - `scheduler`: alerts and requests to runs: coalescing, limits, cooldown, cancellation
//!   (`decide`), the store and the queues together (`ledger`), and carrying the runs out
//!   (`run`).
//! - `owner`: the one thread that holds the ledger; nothing else touches the database.
//! - `store`: the state behind a backend-neutral trait, in SQLite: alerts, runs and
//!   reports, the pause switch.
//! - `http`: the webhook, the runs API, metrics and probes.
//! - `listener`: TLS, header timeouts, the connection limit, client certificates.
//! - `auth`: bearer and basic credentials, compared in constant time.
//! - `metrics`: the service's metrics.
//! - `notify`: optional Alertmanager silences and Grafana annotations.
//! - `backups`: backups the service takes (scheduled or asked for), recorded and listed.

mod auth;
mod backups;
mod http;
mod listener;
mod metrics;
mod notify;
mod owner;
mod payload;
mod scheduler;
pub mod settings;
mod store;
mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcdmedic_cluster::ClusterConfig;
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
    #[error("starting the state store's thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl Error {
    /// The state file is not etcdmedic's, is newer, or another service uses it: nothing was
    /// started, and nothing will be until the configuration or the file changes (exit
    /// status 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Store(
                store::StoreError::NotOurs { .. }
                    | store::StoreError::TooNew { .. }
                    | store::StoreError::InUse { .. }
            )
        )
    }

    /// A short, stable name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Store(_) => "store",
            Error::Cluster(_) => "cluster",
            Error::Serve(_) => "serve",
            Error::Thread(_) => "thread",
        }
    }
}

/// Serves the webhook and API on `listener` until `shutdown` resolves; then stops accepting,
/// lets each run under way finish its current member (recorded as interrupted), and returns.
pub async fn serve(
    clusters: &[ClusterConfig],
    settings: &settings::ServiceSettings,
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
        metrics: metrics.clone(),
        auth,
        max_body_bytes: settings.max_body_bytes,
        read_body_timeout: settings.read_body_timeout,
        requires_client_certificate: settings
            .tls
            .as_ref()
            .is_some_and(|tls| tls.requires_client_certificate),
        sessions: ui::Sessions::default(),
        serves_tls: settings.tls.is_some(),
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

    let limits = listener::Limits {
        read_header_timeout: settings.read_header_timeout,
        max_connections: settings.max_connections,
    };
    let served = listener::serve(
        listener,
        settings.tls.as_ref(),
        limits,
        metrics,
        handle,
        router,
    )
    .await;
    // Whatever ended the server, runs must end cleanly before the process does.
    stop.cancel();
    let _ = dispatcher.await;
    scheduler.wait_for_runs().await;
    scheduler.close().await;
    served.map_err(Error::Serve)
}
