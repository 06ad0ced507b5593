//! Turns alerts and API requests into runs: at most one queued or running run per cluster
//! (every further alert for it joins that run), a global limit on runs at once, cooldowns,
//! cancellation by resolved alerts, and the pause switch.
//!
//! Every decision is made on the service's owner thread, which holds the store and the
//! queues together (the [`ledger`]), and is written to the store in the same transaction as
//! the alerts that caused it: twenty copies of one payload arriving at once give one run, and
//! a decision the store could not record is not made at all. The async side ([`Scheduler`])
//! only asks the owner thread and waits for the answer; it never touches the database.
//!
//! # Layout
//! - this file: the async face of the scheduler, opening it, read-only views.
//! - `ledger`: the store and the queues, and what happens to them as runs start and end.
//! - `decide`: alerts and requests to queued, joined, cancelled or ignored.
//! - `run`: dispatching, carrying out and recording runs; recovery after a restart.
//! - `schedule`: runs `remediation.schedule` starts by itself.
//! - `backups`: backups beside runs, never overlapping them.

#[cfg(test)]
mod backup_tests;
mod backups;
mod clock;
mod decide;
mod engine;
mod guard;
mod ledger;
mod run;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ManagedCluster, ServiceMode};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backups::BackupFilter;
use super::metrics::Metrics;
use super::notify::Notifier;
use super::owner::Owner;
use super::payload::{AlertStatus, Payload};
use super::settings::ServiceSettings;
use super::store::{self, InterruptedRun, RunDetail, RunFilter, RunSummary, StoreError};
use crate::Remediator;
use clock::Clock;
use engine::ClusterEngine;
use ledger::{Ledger, Rules};

/// How often the dispatcher looks at the queue even when nothing woke it (a store that was
/// unavailable may be back).
const DISPATCH_EVERY: Duration = Duration::from_secs(5);
/// Backups read back at start-up to restore the backup metrics from.
const RESTORED_BACKUPS: usize = 1000;

/// What became of one alert or request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    /// Why, for `ignored`: a short stable code (also the metric's `reason` label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored_because: Option<&'static str>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Queued,
    Joined,
    Cancelled,
    Ignored,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Queued => "queued",
            Action::Joined => "joined",
            Action::Cancelled => "cancelled",
            Action::Ignored => "ignored",
        }
    }
}

/// One alert of a payload and its decision, as the webhook answers it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertDecision {
    pub alertname: Option<String>,
    pub fingerprint: String,
    pub status: AlertStatus,
    pub cluster: Option<String>,
    #[serde(flatten)]
    pub decision: Decision,
}

/// Why a manual request was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("unknown cluster {0:?}")]
    UnknownCluster(String),
    #[error("runs are paused (POST /api/v1/resume to resume)")]
    Paused,
    #[error("cluster {0:?} has no backup destination (backup.destinations)")]
    NoBackupDestination(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cluster the service remediates.
struct Target {
    config: ManagedCluster,
    remediator: Arc<dyn ClusterEngine>,
}

/// A cluster's queue and run, as `GET /api/v1/status` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterQueue {
    pub cluster: String,
    pub queued_run: Option<i64>,
    /// The queued run is due then: a retry after a refusal, or a window's opening.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_not_before: Option<String>,
    pub running_run: Option<i64>,
    /// The queued run waits for the maintenance window opening at `queued_not_before`.
    pub waiting_for_window: bool,
    /// When a maintenance window is next open (now, if one is); absent without windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_window: Option<String>,
    /// When `remediation.schedule` next starts a run; absent without a schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_scheduled_run: Option<String>,
    pub progress: Option<String>,
    pub recovering: bool,
    /// `queued` (waiting for the run under way) or `running`; absent when neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<&'static str>,
    /// When `backup.schedule` next takes a backup; absent without a schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_scheduled_backup: Option<String>,
}

pub struct Scheduler {
    ledger: Owner<Ledger>,
    targets: BTreeMap<String, Target>,
    cooldown: Duration,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    wake: Notify,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Replicas share the store: each run is confirmed still this service's before each
    /// change (see `guard`).
    guarded: bool,
    /// `remediator.mode`; in `observe` no run changes etcd, whenever it was queued.
    mode: ServiceMode,
    clock: Clock,
}

impl Scheduler {
    /// Whether runs remediate or are only planned (`remediator.mode`).
    pub fn mode(&self) -> ServiceMode {
        self.mode
    }

    /// Opens the store on its owner thread, marks runs a dead process left running as
    /// interrupted, and restores the queue, the pause switch and the gauges.
    pub async fn open(
        clusters: &[ManagedCluster],
        settings: &ServiceSettings,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<(Arc<Scheduler>, Vec<InterruptedRun>), super::Error> {
        let engine_of = |cluster: &ManagedCluster| -> Result<Arc<dyn ClusterEngine>, _> {
            let remediator = Remediator::new(cluster.clone()).map_err(super::Error::Cluster)?;
            Ok(Arc::new(remediator))
        };
        Self::open_with(clusters, settings, metrics, stop, Clock::System, engine_of).await
    }

    /// [`open`](Self::open) on `clock` with each cluster's engine made by `engine_of` (a
    /// scripted one on tokio's paused clock in the scheduler's scenario tests).
    async fn open_with(
        clusters: &[ManagedCluster],
        settings: &ServiceSettings,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        clock: Clock,
        engine_of: impl Fn(&ManagedCluster) -> Result<Arc<dyn ClusterEngine>, super::Error>,
    ) -> Result<(Arc<Scheduler>, Vec<InterruptedRun>), super::Error> {
        // Before the store: PostgreSQL's client dropped on this (async) thread would panic.
        let mut targets = BTreeMap::new();
        for cluster in clusters {
            targets.insert(
                cluster.name.to_string(),
                Target {
                    config: cluster.clone(),
                    remediator: engine_of(cluster)?,
                },
            );
        }
        let rules = Rules {
            observe: settings.mode.observes(),
            triggers: settings.triggers.iter().cloned().collect(),
            clusters: clusters
                .iter()
                .map(|c| (c.name.to_string(), c.alert_labels.clone()))
                .collect(),
            cooldown: settings.cooldown,
            retry_after_refusal: settings.retry_after_refusal,
            max_concurrent_runs: settings.max_concurrent_runs,
            windows: clusters
                .iter()
                .map(|c| (c.name.to_string(), c.remediation.windows.clone()))
                .collect(),
            urgent: settings.urgent_triggers.iter().cloned().collect(),
            schedules: clusters
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.remediation.schedule.clone()?)))
                .collect(),
            backup_schedules: clusters
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.backup.schedule.clone()?)))
                .collect(),
            clock: clock.clone(),
        };
        let now = clock.now();
        let unreadable = metrics.store_unreadable();
        // Where standbys forward to, sealed so that they trust it (see `standby`).
        let key = super::standby::AnnouncementKey::of(&settings.auth);
        let announcement = settings
            .advertise_url
            .as_ref()
            .map(|url| super::standby::seal(url.as_str().trim_end_matches('/'), key.as_ref()));
        // Opened on the owner's thread: PostgreSQL's client must never run (or be dropped) on
        // an async thread, and the runtime goes on serving (a standby taking over still
        // answers its probes) while the store connects and migrates.
        let backend = store::Backend::of(settings, announcement);
        let started = Owner::start("etcdmedic-state", move || -> Result<_, StoreError> {
            let store = store::open(backend, unreadable)?;
            let (mut ledger, opened) = Ledger::open(store, rules)?;
            ledger.first_backup_times(now);
            let history = ledger.store.backups(&BackupFilter {
                cluster: None,
                limit: RESTORED_BACKUPS,
            })?;
            let shown = (ledger.paused, ledger.next_scheduled.clone());
            Ok((ledger, (opened, history, shown)))
        });
        let (ledger, (opened, history, (paused, next_scheduled))) =
            started.await.map_err(super::Error::Thread)??;
        for cluster in clusters {
            let destinations: Vec<String> = cluster
                .backup
                .destinations
                .iter()
                .map(|d| d.name.to_string())
                .collect();
            metrics.backup_destinations(&cluster.name, &destinations);
            if let Some(schedule) = &cluster.backup.schedule {
                metrics.set_backup_interval(&cluster.name, schedule, now);
            }
        }
        metrics.restore_backups(&history, |name| {
            clusters
                .iter()
                .find(|c| c.name.as_str() == name)
                .map(|c| {
                    c.backup
                        .destinations
                        .iter()
                        .map(|d| d.name.to_string())
                        .collect()
                })
                .unwrap_or_default()
        });
        metrics.set_paused(paused);
        for (cluster, at) in &next_scheduled {
            metrics.set_next_scheduled_run(cluster, *at);
        }
        for report in &opened.latest {
            metrics.restore(report);
        }
        let scheduler = Arc::new(Scheduler {
            ledger,
            targets,
            cooldown: settings.cooldown,
            metrics,
            notifier: Notifier::new(settings),
            wake: Notify::new(),
            stop,
            tasks: TaskTracker::new(),
            guarded: settings.postgres.is_some(),
            mode: settings.mode,
            clock,
        });
        Ok((scheduler, opened.interrupted))
    }

    /// Runs `work` on the owner thread.
    async fn on_ledger<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Ledger) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        Ok(self.ledger.call(work).await?)
    }

    pub fn cluster_names(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }

    /// Every configured cluster's members as they answer now, asked at once (each call
    /// bounded by the cluster's `call_timeout`), by name.
    pub async fn live_statuses(&self) -> Vec<etcdmedic_cluster::model::ClusterStatus> {
        futures::future::join_all(
            self.targets
                .values()
                .map(|target| target.remediator.live_status()),
        )
        .await
    }

    pub fn knows(&self, cluster: &str) -> bool {
        self.targets.contains_key(cluster)
    }

    /// Decides what every alert of a webhook payload does, and records it all.
    pub async fn accept(&self, payload: Payload) -> Result<Vec<AlertDecision>, StoreError> {
        let accepted = self
            .on_ledger(move |ledger| ledger.accept(&payload))
            .await??;
        // Counted once the store has them: a failed transaction cancelled nothing.
        for report in &accepted.cancelled {
            self.metrics.run_finished(report);
        }
        for decision in &accepted.decisions {
            self.metrics.webhook_alert(
                decision.decision.action.as_str(),
                decision.decision.ignored_because.unwrap_or(""),
            );
        }
        self.wake.notify_one();
        Ok(accepted.decisions)
    }

    /// `POST /api/v1/clusters/{name}/remediate`: the same queue, cooldown and pause rules.
    pub async fn request(&self, cluster: &str, dry_run: bool) -> Result<Decision, RequestError> {
        let cluster = cluster.to_string();
        let decision = self
            .on_ledger(move |ledger| ledger.request(&cluster, dry_run))
            .await??;
        self.wake.notify_one();
        Ok(decision)
    }

    pub async fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        self.on_ledger(move |ledger| ledger.set_paused(paused))
            .await??;
        self.metrics.set_paused(paused);
        tracing::warn!(paused, "pause switch changed");
        self.wake.notify_one();
        Ok(())
    }

    /// Whether runs are paused, and each cluster's queue, as one view.
    pub async fn status(&self) -> Result<(bool, Vec<ClusterQueue>), StoreError> {
        self.on_ledger(|ledger| (ledger.paused, ledger.queues()))
            .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.on_ledger(|ledger| ledger.store.ping()).await?
    }

    pub async fn runs(&self, filter: RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        self.on_ledger(move |ledger| ledger.store.runs(&filter))
            .await?
    }

    pub async fn run(&self, id: i64) -> Result<Option<(RunDetail, Option<String>)>, StoreError> {
        self.on_ledger(move |ledger| ledger.run(id)).await?
    }

    #[cfg(test)]
    async fn queues(&self) -> Result<Vec<ClusterQueue>, StoreError> {
        Ok(self.status().await?.1)
    }

    /// Closes the store (releasing its file for the next service) once everything asked of
    /// it is done.
    pub async fn close(&self) {
        self.ledger.close().await;
    }
}
