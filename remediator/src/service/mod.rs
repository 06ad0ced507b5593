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
//! - `store`: the state behind a backend-neutral trait, in SQLite or PostgreSQL: alerts,
//!   runs and reports, the pause switch.
//! - `standby`: replicas on one PostgreSQL database: the standbys wait, one is active.
//! - `http`: the webhook, the runs API, metrics and probes.
//! - `admission`: what a request must show before its body is read, and how much it may send.
//! - `auth`: each role's bearer or basic credential, compared in constant time.
//! - `origin`: whether a request that changes something came from another site's page.
//! - `metrics`: the service's metrics.
//! - `notify`: optional Alertmanager silences and Grafana annotations.
//! - `backups`: backups the service takes (scheduled or asked for), recorded and listed.

mod admission;
mod auth;
mod backups;
mod http;
mod metrics;
mod notify;
mod origin;
mod owner;
mod payload;
mod respond;
mod scheduler;
pub mod settings;
mod standby;
mod store;
mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ManagedCluster;
use etcdmedic_cluster::listener;
use tokio_util::sync::CancellationToken;

use admission::Admission;
use metrics::Metrics;
use scheduler::Scheduler;

/// What every request handler shares: the scheduler, the metrics, and who may do what.
#[derive(Clone)]
pub struct App {
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    /// Credentials, client certificates and body limits, checked before a body is read
    /// (the handshake asks for a client certificate without requiring it: probes and
    /// metrics do without).
    admission: Admission,
    /// The web pages' logins, and the wrong ones per address.
    sessions: ui::Sessions,
    login_throttle: ui::LoginThrottle,
    /// Reached over TLS (served here, or `public_url` is https): session cookies are `Secure`.
    secure_cookies: bool,
}

impl App {
    /// 404 for a cluster the configuration does not name, with the ones it does.
    fn unknown_cluster(&self, name: &str) -> axum::response::Response {
        respond::error(
            axum::http::StatusCode::NOT_FOUND,
            format!(
                "unknown cluster {name:?}; configured clusters: {}",
                self.scheduler.cluster_names().join(", ")
            ),
        )
    }
}

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
    /// The active replica lost the state store's lock: another may have taken over, so this
    /// one stopped its runs and exits (to come back as a standby).
    #[error("{0}")]
    LostState(String),
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
            Error::LostState(_) => "lost_state",
        }
    }
}

/// Serves the webhook and API on `listener` until `shutdown` resolves; then stops accepting,
/// lets each run under way finish its current member (recorded as interrupted), and returns.
pub async fn serve(
    clusters: &[ManagedCluster],
    settings: &settings::ServiceSettings,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let names: Vec<String> = clusters.iter().map(|c| c.name.to_string()).collect();
    let metrics = Arc::new(Metrics::new(&names));
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("stopping: no new connections or runs; the member under way finishes");
        stopping.cancel();
    });
    let Some((scheduler, interrupted)) =
        open_or_stand_by(clusters, settings, &listener, &metrics, &stop).await?
    else {
        return Ok(());
    };
    if !interrupted.is_empty() {
        tracing::warn!(runs = ?interrupted, "runs were under way when the service (or the replica active before) last stopped; marked interrupted");
    }
    scheduler.recover(interrupted);
    let lost = settings
        .postgres
        .is_some()
        .then(|| tokio::spawn(watch_the_lock(scheduler.clone(), stop.clone())));
    let auth = auth::Authenticator::new(&settings.auth);
    announce_auth(&auth, &settings.auth, settings.listen);
    let app = App {
        scheduler: scheduler.clone(),
        metrics: metrics.clone(),
        admission: admission::Admission::new(auth, settings),
        sessions: ui::Sessions::default(),
        login_throttle: ui::LoginThrottle::default(),
        secure_cookies: settings.tls.is_some()
            || settings
                .public_url
                .as_ref()
                .is_some_and(|url| url.scheme() == "https"),
    };
    let router = http::router(app);
    let dispatcher = tokio::spawn(scheduler.clone().dispatch());

    let handle = axum_server::Handle::new();
    let on_shutdown = handle.clone();
    let stopping = stop.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        on_shutdown.graceful_shutdown(Some(CONNECTION_GRACE));
    });

    let (limits, on_refused) = listening(settings, &metrics);
    let served = listener::serve(
        listener,
        settings.tls.as_ref(),
        limits,
        on_refused,
        handle,
        router,
    )
    .await;
    // Whatever ended the server, runs must end cleanly before the process does.
    stop.cancel();
    let _ = dispatcher.await;
    scheduler.wait_for_runs().await;
    scheduler.close().await;
    if let Some(lost) = lost {
        if let Ok(Some(why)) = lost.await {
            return Err(Error::LostState(why));
        }
    }
    served.map_err(Error::Serve)
}

/// The listener's limits, and the count of connections closed for being over them.
fn listening(
    settings: &settings::ServiceSettings,
    metrics: &Arc<Metrics>,
) -> (listener::Limits, listener::OnRefused) {
    let limits = listener::Limits {
        read_header_timeout: settings.read_header_timeout,
        max_connections: settings.max_connections,
    };
    let metrics = metrics.clone();
    (limits, Arc::new(move || metrics.connection_refused()))
}

/// Says at start who may do what: a listener anyone can act through is a warning, a role
/// nobody holds a line of its own.
fn announce_auth(
    auth: &auth::Authenticator,
    settings: &settings::ServiceAuth,
    listen: std::net::SocketAddr,
) {
    match settings {
        settings::ServiceAuth::Open { explicit: true } if !listen.ip().is_loopback() => {
            tracing::warn!(%listen, "remediator.auth is none: anyone who reaches the listener can pause remediation and start runs and backups");
        }
        settings::ServiceAuth::Open { .. } => {
            tracing::info!(%listen, "remediator.auth is not set: every request on this loopback listener is accepted");
        }
        settings::ServiceAuth::Roles { .. } => {
            for role in auth.unheld() {
                tracing::info!(
                    role = role.as_str(),
                    "remediator.auth.{} is not set: requests of that role are refused",
                    role.as_str()
                );
            }
        }
    }
}

/// Opens the state and the scheduler; with PostgreSQL held by another replica, serves the
/// standby's endpoints and waits until it is free (`None`: stopped while waiting).
async fn open_or_stand_by(
    clusters: &[ManagedCluster],
    settings: &settings::ServiceSettings,
    listener: &std::net::TcpListener,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<Option<(Arc<Scheduler>, Vec<store::InterruptedRun>)>, Error> {
    let standby = standby::Standby::new(standby::AnnouncementKey::of(&settings.auth));
    let mut server = None;
    let opened = loop {
        match Scheduler::open(clusters, settings, metrics.clone(), stop.clone()).await {
            Err(Error::Store(store::StoreError::InUse { holder, .. })) => {
                let Some(postgres) = &settings.postgres else {
                    break Err(Error::Store(store::StoreError::InUse {
                        place: settings.state_place(),
                        holder,
                    }));
                };
                if server.is_none() {
                    server = Some(standby.serve(listener, settings, metrics.clone())?);
                }
                match standby
                    .wait_until_free(store::lease(postgres), &holder, stop)
                    .await
                {
                    Ok(true) => continue,
                    Ok(false) => break Ok(None),
                    Err(err) => break Err(err),
                }
            }
            other => break other.map(Some),
        }
    };
    if let Some(server) = server {
        server.stop().await;
    }
    opened
}

/// How often the active replica confirms it still holds the state store's lock.
const LOCK_CHECK_EVERY: Duration = Duration::from_secs(2);
/// An active replica that cannot confirm its lock for this long stops its runs (between
/// members) and exits: a standby takes over once PostgreSQL ends the session, which its
/// keepalive probes do after about 11 s.
const LOCK_LOST_AFTER: Duration = Duration::from_secs(8);

/// While active on PostgreSQL: confirms the lock every [`LOCK_CHECK_EVERY`]; when another
/// replica holds it, or it cannot be confirmed for [`LOCK_LOST_AFTER`], stops the service and
/// says why.
async fn watch_the_lock(scheduler: Arc<Scheduler>, stop: CancellationToken) -> Option<String> {
    let mut confirmed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(LOCK_CHECK_EVERY) => {}
        }
        let why = match scheduler.ping().await {
            Ok(()) => {
                confirmed = tokio::time::Instant::now();
                continue;
            }
            Err(store::StoreError::InUse { holder, .. }) => format!(
                "another replica holds the state store now ({holder}); stopping this one's runs and exiting"
            ),
            Err(err) if confirmed.elapsed() >= LOCK_LOST_AFTER => format!(
                "cannot confirm this replica's lock on the state store for {}s ({err}); a standby may take over: stopping this one's runs and exiting",
                confirmed.elapsed().as_secs()
            ),
            Err(err) => {
                tracing::warn!(error = %err, "cannot confirm the state store's lock; trying again");
                continue;
            }
        };
        tracing::error!(reason = %why, "lost the state store");
        stop.cancel();
        return Some(why);
    }
}
