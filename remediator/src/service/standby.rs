//! Replicas on one PostgreSQL database: one is active (it holds the database's advisory lock
//! and does everything), the others wait as standbys and take over when the lock is free —
//! at once when the active one's process dies (PostgreSQL ends its session), within the
//! keepalive probes when its host vanishes.
//!
//! A standby answers `/healthz` (alive) and `/metrics`, but `/readyz`, the webhook and the API
//! with 503 naming the active replica: behind a Kubernetes Service only the ready, active
//! replica receives traffic, and Alertmanager retries a 503. Taking over is what a restart
//! does today: runs the old holder left running are recorded interrupted, and the members
//! must serve reads (a defragmentation it started may still be going on) before any new run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::http::{error, metrics_response};
use super::listener::{self, Limits};
use super::metrics::Metrics;
use super::settings::{PostgresSettings, ServiceSettings};
use super::store::postgresql::watch_holder;
use super::Error;

/// How often a standby asks whether the lock is free: at most this long between the active
/// replica's death and the takeover's start.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// A standby's view of who is active, shown on its `/readyz` and errors.
#[derive(Clone, Default)]
pub(super) struct Standby {
    active: Arc<Mutex<String>>,
}

impl Standby {
    fn show(&self, holder: &str) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if *active != holder {
            tracing::warn!(
                active = holder,
                "standby: another replica holds the state store; waiting to take over"
            );
            *active = holder.to_string();
        }
    }

    fn active(&self) -> String {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until nobody holds the lock (`true`), or until `stop` (`false`).
    pub(super) async fn wait_until_free(
        &self,
        postgres: &PostgresSettings,
        holder: &str,
        stop: &CancellationToken,
    ) -> Result<bool, Error> {
        self.show(holder);
        let (sender, mut answers) = tokio::sync::watch::channel(Ok(Some(holder.to_string())));
        let settings = postgres.clone();
        std::thread::Builder::new()
            .name("etcdmedic-standby".into())
            .spawn(move || watch_holder(&settings, STANDBY_POLL, sender))
            .map_err(Error::Thread)?;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(false),
                changed = answers.changed() => {
                    if changed.is_err() {
                        // The watcher is gone without saying the lock is free: try to take it,
                        // which tells.
                        return Ok(true);
                    }
                }
            }
            let answer = answers.borrow_and_update().clone();
            match answer {
                Ok(None) => {
                    tracing::info!("standby: the state store is free; taking over");
                    return Ok(true);
                }
                Ok(Some(holder)) => self.show(&holder),
                Err(err) => {
                    tracing::warn!(error = %err, "standby: cannot ask the state store who holds it");
                    self.show(&format!("unknown: the state store does not answer ({err})"));
                }
            }
        }
    }

    /// Serves the standby's endpoints on `listener` (a copy of the service's) until the
    /// returned handle shuts them down.
    pub(super) fn serve(
        &self,
        listener: &std::net::TcpListener,
        settings: &ServiceSettings,
        metrics: Arc<Metrics>,
    ) -> Result<StandbyServer, Error> {
        let listener = listener.try_clone().map_err(Error::Serve)?;
        let handle = axum_server::Handle::new();
        let router = router(self.clone(), metrics.clone());
        let limits = Limits {
            read_header_timeout: settings.read_header_timeout,
            max_connections: settings.max_connections,
        };
        let tls = settings.tls.clone();
        let serving = handle.clone();
        let task = tokio::spawn(async move {
            listener::serve(listener, tls.as_ref(), limits, metrics, serving, router).await
        });
        Ok(StandbyServer { handle, task })
    }
}

/// The standby's endpoints, served until [`StandbyServer::stop`].
pub(super) struct StandbyServer {
    handle: axum_server::Handle<std::net::SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl StandbyServer {
    /// Stops accepting and lets requests under way finish (briefly), so the active service
    /// can take the listener.
    pub(super) async fn stop(self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(2)));
        match self.task.await {
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "the standby's endpoints stopped with an error")
            }
            Err(err) => tracing::warn!(error = %err, "the standby's endpoints stopped abnormally"),
            Ok(Ok(())) => {}
        }
    }
}

fn router(standby: Standby, metrics: Arc<Metrics>) -> Router {
    let readiness = standby.clone();
    let elsewhere = standby;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let active = readiness.active();
                async move {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({"status": "standby", "active": active})),
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let metrics = metrics.clone();
                async move { metrics_response(&metrics, &headers) }
            }),
        )
        .fallback(move || {
            let active = elsewhere.active();
            async move {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "this replica is a standby; the active one is {active}: it alone is ready, \
                         so a Service in front sends requests there (retry)"
                    ),
                )
            }
        })
}
