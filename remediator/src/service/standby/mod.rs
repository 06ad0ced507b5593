//! Replicas on one PostgreSQL database: one is active (it holds the database's advisory lock
//! and does everything), the others wait as standbys and take over when the lock is free —
//! at once when the active one's process dies (PostgreSQL ends its session), within the
//! keepalive probes when its host vanishes.
//!
//! A standby answers `/healthz` and `/metrics` itself and forwards everything else (the
//! webhook, the API, the web pages) to the active replica at the URL it announced
//! (`serve --advertise-url`), so any replica behind a Service takes requests. Without that URL,
//! or while the active one does not answer (a takeover under way), it answers 503 naming the
//! active one, and is not ready; Alertmanager retries a 503. Taking over is what a restart
//! does today: runs the old holder left running are recorded interrupted, and the members
//! must serve reads (a defragmentation it started may still be going on) before any new run.

mod announcement;
pub(super) mod forward;

pub(crate) use announcement::{seal, AnnouncementKey};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::admission::Admission;
use super::auth::Authenticator;
use super::metrics::Metrics;
use super::respond::error;
use super::settings::ServiceSettings;
use super::store::{Holder, Lease, StoreError};
use super::Error;

/// How often a standby asks who holds the lock: at most this long between the active
/// replica's death and the takeover's start.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// A standby's view of the active replica, shown on its `/readyz` and used to forward.
#[derive(Clone)]
pub(super) struct Standby {
    /// The active replica, its address only when sealed with this service's key.
    active: Arc<Mutex<Option<Holder>>>,
    /// What the active replica's announcement must be sealed with (see `announcement`).
    key: Option<AnnouncementKey>,
}

impl Standby {
    pub(super) fn new(key: Option<AnnouncementKey>) -> Standby {
        Standby {
            active: Arc::default(),
            key,
        }
    }

    /// Takes `holder` as the active replica; its announced address is kept only when a
    /// replica with this service's credentials sealed it.
    fn show(&self, mut holder: Holder) {
        let mut refused = None;
        holder.url = holder.url.and_then(|announced| {
            match announcement::open(&announced, self.key.as_ref()) {
                Ok(url) => Some(url),
                Err(why) => {
                    refused = Some(why);
                    None
                }
            }
        });
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.as_ref() != Some(&holder) {
            if let Some(why) = refused {
                tracing::error!(active = %holder.description, reason = %why, "standby: the address the active replica announced in the database is not one to forward to; answering 503 instead of forwarding credentials there");
            }
            tracing::warn!(active = %holder.description, url = holder.url.as_deref().unwrap_or("none to forward to"), "standby: another replica holds the state store; forwarding requests to it and waiting to take over");
            *active = Some(holder);
        }
    }

    fn active(&self) -> Option<Holder> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until nobody holds the lock (`true`), or until `stop` (`false`).
    pub(super) async fn wait_until_free(
        &self,
        lease: Box<dyn Lease>,
        holder: &str,
        stop: &CancellationToken,
    ) -> Result<bool, Error> {
        self.wait_until_free_asking(lease, STANDBY_POLL, holder, stop)
            .await
    }

    /// [`wait_until_free`](Self::wait_until_free), asking `lease` every `every`.
    async fn wait_until_free_asking(
        &self,
        lease: Box<dyn Lease>,
        every: Duration,
        holder: &str,
        stop: &CancellationToken,
    ) -> Result<bool, Error> {
        if self
            .active()
            .is_none_or(|known| known.description != holder)
        {
            self.show(Holder {
                description: holder.to_string(),
                url: None,
            });
        }
        let (sender, mut answers) = tokio::sync::watch::channel(Ok(self.active()));
        std::thread::Builder::new()
            .name("etcdmedic-standby".into())
            .spawn(move || watch(lease, every, sender))
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
                Ok(Some(holder)) => self.show(holder),
                Err(err) => {
                    tracing::warn!(error = %err, "standby: cannot ask the state store who holds it");
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
        let forwarder = forward::Forwarder::new(settings)?;
        // Authenticated and read here before anything is forwarded, as the active one
        // would: a standby holds no more for a client than the active replica does.
        let admission = Admission::new(Authenticator::new(&settings.auth), settings);
        let router = router(self.clone(), admission, forwarder, metrics.clone());
        let (limits, on_refused) = super::listening(settings, &metrics);
        let tls = settings.tls.clone();
        let serving = handle.clone();
        let task = tokio::spawn(async move {
            let tls = tls.as_ref();
            etcdmedic_cluster::listener::serve(listener, tls, limits, on_refused, serving, router)
                .await
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

fn router(
    standby: Standby,
    admission: Admission,
    forwarder: forward::Forwarder,
    metrics: Arc<Metrics>,
) -> Router {
    let readiness = standby.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let active = readiness.active();
                async move {
                    // Ready when requests can be forwarded: a Service may send them here.
                    let status = match active.as_ref().and_then(|a| a.url.as_ref()) {
                        Some(_) => StatusCode::OK,
                        None => StatusCode::SERVICE_UNAVAILABLE,
                    };
                    let body = json!({
                        "status": "standby",
                        "active": active.as_ref().map(|a| a.description.clone()),
                        "forwarding_to": active.and_then(|a| a.url),
                    });
                    (status, Json(body))
                }
            }),
        )
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let metrics = metrics.clone();
                async move { super::metrics::response(&metrics, &headers) }
            }),
        )
        .fallback(move |request: axum::extract::Request| {
            let active = standby.active();
            let forwarder = forwarder.clone();
            let admission = admission.clone();
            async move {
                let request = match admission.admit(request).await {
                    Ok(request) => request,
                    Err(refused) => return *refused,
                };
                let description = active
                    .as_ref()
                    .map_or("unknown", |a| a.description.as_str())
                    .to_string();
                let Some(url) = active.and_then(|a| a.url) else {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "this replica is a standby and the active one ({description}) \
                             announced no --advertise-url to forward to; retry"
                        ),
                    );
                };
                match forwarder.forward(&url, request).await {
                    Ok(response) => response,
                    Err(why) => error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "this replica is a standby; forwarding to the active one \
                             ({description}, {url}) failed: {why}; retry"
                        ),
                    )
                    .into_response(),
                }
            }
        })
}

/// Asks `lease` who holds it every `every`, each answer sent on `holder`, until nobody holds
/// it or nobody listens. Runs on a thread of its own: PostgreSQL's client is blocking.
fn watch(
    mut lease: Box<dyn Lease>,
    every: Duration,
    holder: tokio::sync::watch::Sender<Result<Option<Holder>, Arc<StoreError>>>,
) {
    loop {
        let answer = lease.holder().map_err(Arc::new);
        let free = matches!(answer, Ok(None));
        if holder.send(answer).is_err() || free {
            return;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::service::owner::OwnerGone;

    /// A lease that answers as scripted, then "nobody holds it".
    struct Scripted(VecDeque<Result<Option<Holder>, StoreError>>);

    impl Lease for Scripted {
        fn holder(&mut self) -> Result<Option<Holder>, StoreError> {
            self.0.pop_front().unwrap_or(Ok(None))
        }
    }

    fn holder(name: &str, url: &str) -> Holder {
        Holder {
            description: name.into(),
            url: Some(url.into()),
        }
    }

    #[tokio::test]
    async fn a_standby_follows_the_holder_through_errors_and_takes_over_once_the_lease_is_free() {
        let standby = Standby::new(None);
        let next = holder("replica b", "http://127.0.0.1:9380");
        let mut script: VecDeque<_> = [
            Ok(Some(holder("replica a", "http://127.0.0.1:9381"))),
            Err(StoreError::Gone(OwnerGone("database"))),
        ]
        .into();
        // Long enough for the waiting task to see it, however the two threads interleave.
        script.extend((0..20).map(|_| Ok(Some(next.clone()))));
        let lease = Box::new(Scripted(script));
        let every = Duration::from_millis(1);
        let stop = CancellationToken::new();
        let free = standby
            .wait_until_free_asking(lease, every, "replica a", &stop)
            .await;
        assert!(matches!(free, Ok(true)), "{free:?}");
        assert_eq!(standby.active(), Some(next), "the last holder it saw");
    }

    #[tokio::test]
    async fn a_standby_asked_to_stop_stops_waiting() {
        let standby = Standby::new(None);
        let always: VecDeque<_> = (0..1000)
            .map(|_| Ok(Some(holder("replica a", "http://127.0.0.1:9381"))))
            .collect();
        let stop = CancellationToken::new();
        stop.cancel();
        let waited = standby
            .wait_until_free_asking(
                Box::new(Scripted(always)),
                Duration::from_millis(1),
                "replica a",
                &stop,
            )
            .await;
        assert!(matches!(waited, Ok(false)), "{waited:?}");
    }
}
