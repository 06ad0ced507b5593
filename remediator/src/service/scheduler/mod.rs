//! Turns alerts and API requests into runs: at most one queued or running run per cluster
//! (every further alert for it joins that run), a global limit on runs at once, cooldowns,
//! cancellation by resolved alerts, and the pause switch.
//!
//! Every decision is made under one lock and written to the store in the same transaction
//! as the alerts that caused it, so twenty copies of one payload arriving at once give one
//! run, and a decision the store could not record is not made at all.
//!
//! # Layout
//! - this file: the scheduler's state, opening it from the store, read-only views.
//! - `decide`: alerts and requests to queued, joined, cancelled or ignored.
//! - `run`: dispatching, carrying out and recording runs; recovery after a restart.

mod decide;
mod run;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use etcdmedic_cluster::{ClusterConfig, RemediatorSettings};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::Metrics;
use super::notify::Notifier;
use super::payload::AlertStatus;
use super::store::{InterruptedRun, RunDetail, RunFilter, RunSummary, Store, StoreError};
use crate::report::{Outcome, RunReport};
use crate::Remediator;

/// How often the dispatcher looks at the queue even when nothing woke it (a store that was
/// unavailable may be back).
const DISPATCH_EVERY: Duration = Duration::from_secs(5);

/// Where a run came from, as the store records it.
const SOURCE_ALERTMANAGER: &str = "alertmanager";
const SOURCE_API: &str = "api";

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cluster the service remediates.
struct Target {
    config: ClusterConfig,
    remediator: Arc<Remediator>,
}

#[derive(Debug, Default, Clone)]
struct Slot {
    queued: Option<Queued>,
    running: Option<Running>,
    /// After a restart that interrupted a run: waiting for the members to serve reads.
    recovering: bool,
}

#[derive(Debug, Clone)]
struct Queued {
    id: i64,
    dry_run: bool,
    /// Requested through the API: resolved alerts do not cancel it.
    manual: bool,
    /// Firing alerts that keep it queued.
    firing: BTreeSet<String>,
    alertnames: BTreeSet<String>,
    cooldown_until: Option<SystemTime>,
    /// A retry after a refusal waits until then.
    not_before: Option<SystemTime>,
    /// The alert-started run a retry retries (the first of the chain).
    retry_of: Option<i64>,
    trigger: String,
}

impl Queued {
    fn is_due(&self, now: SystemTime) -> bool {
        self.not_before.is_none_or(|at| at <= now)
    }
}

#[derive(Debug, Clone)]
struct Running {
    /// The run as it was queued; resolved alerts still leave its `firing` set, which decides
    /// whether a refusal is retried.
    run: Queued,
    /// The latest progress line, for the API.
    progress: Option<String>,
}

struct State {
    store: Store,
    slots: HashMap<String, Slot>,
    running: usize,
    paused: bool,
}

/// A cluster's queue and run, as `GET /api/v1/status` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterQueue {
    pub cluster: String,
    pub queued_run: Option<i64>,
    /// The queued run is a retry after a refusal, due then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_not_before: Option<String>,
    pub running_run: Option<i64>,
    pub progress: Option<String>,
    pub recovering: bool,
}

pub struct Scheduler {
    state: Mutex<State>,
    targets: BTreeMap<String, Target>,
    triggers: HashSet<String>,
    cooldown: Duration,
    retry_after_refusal: Duration,
    max_concurrent_runs: usize,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    wake: Notify,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Scheduler {
    /// Opens the store, marks runs a dead process left running as interrupted, and restores
    /// the queue, the pause switch and the gauges.
    pub fn open(
        clusters: &[ClusterConfig],
        settings: &RemediatorSettings,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<(Arc<Scheduler>, Vec<InterruptedRun>), super::Error> {
        let mut store = Store::open(&settings.state_path, settings.init_state)?;
        let interrupted = store.interrupt_unfinished()?;
        let paused = store.paused()?;
        metrics.set_paused(paused);
        for report in store.latest_finished()? {
            metrics.restore(&report);
        }
        let mut targets = BTreeMap::new();
        for cluster in clusters {
            let remediator = Remediator::new(cluster.clone()).map_err(super::Error::Cluster)?;
            targets.insert(
                cluster.name.to_string(),
                Target {
                    config: cluster.clone(),
                    remediator: Arc::new(remediator),
                },
            );
        }

        let mut slots: HashMap<String, Slot> = HashMap::new();
        for run in store.queued()? {
            if !targets.contains_key(&run.cluster) {
                let report = RunReport::ended(
                    &run.cluster,
                    &run.trigger,
                    run.dry_run,
                    Outcome::Cancelled,
                    "the cluster is no longer in the configuration".into(),
                );
                store.finish(run.id, &report)?;
                continue;
            }
            let firing = store.firing_fingerprints(run.id)?;
            slots.entry(run.cluster.clone()).or_default().queued = Some(Queued {
                id: run.id,
                dry_run: run.dry_run,
                manual: run.source == SOURCE_API,
                firing: firing.into_iter().collect(),
                alertnames: BTreeSet::new(),
                cooldown_until: run.cooldown_until,
                not_before: run.not_before,
                retry_of: run.retry_of,
                trigger: run.trigger,
            });
        }
        for InterruptedRun { cluster, .. } in &interrupted {
            if targets.contains_key(cluster) {
                slots.entry(cluster.clone()).or_default().recovering = true;
            }
        }
        let scheduler = Arc::new(Scheduler {
            state: Mutex::new(State {
                store,
                slots,
                running: 0,
                paused,
            }),
            targets,
            triggers: settings.triggers.iter().cloned().collect(),
            cooldown: settings.cooldown,
            retry_after_refusal: settings.retry_after_refusal,
            max_concurrent_runs: settings.max_concurrent_runs,
            metrics,
            notifier: Notifier::new(settings),
            wake: Notify::new(),
            stop,
            tasks: TaskTracker::new(),
        });
        Ok((scheduler, interrupted))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, still consistent with the
        // store (which only commits whole decisions): carry on with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn cluster_names(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }

    pub fn knows(&self, cluster: &str) -> bool {
        self.targets.contains_key(cluster)
    }

    pub fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.store.set_paused(paused)?;
        state.paused = paused;
        drop(state);
        self.metrics.set_paused(paused);
        tracing::warn!(paused, "pause switch changed");
        self.wake.notify_one();
        Ok(())
    }

    pub fn paused(&self) -> bool {
        self.lock().paused
    }

    pub fn ping(&self) -> Result<(), StoreError> {
        self.lock().store.ping()
    }

    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        self.lock().store.runs(filter)
    }

    pub fn run(&self, id: i64) -> Result<Option<(RunDetail, Option<String>)>, StoreError> {
        let state = self.lock();
        let detail = state.store.run(id)?;
        let progress = detail.as_ref().and_then(|detail| {
            state
                .slots
                .get(&detail.summary.cluster)
                .and_then(|slot| slot.running.as_ref())
                .filter(|running| running.run.id == id)
                .and_then(|running| running.progress.clone())
        });
        Ok(detail.map(|detail| (detail, progress)))
    }

    pub fn queues(&self) -> Vec<ClusterQueue> {
        let state = self.lock();
        self.targets
            .keys()
            .map(|cluster| {
                let slot = state.slots.get(cluster).cloned().unwrap_or_default();
                ClusterQueue {
                    cluster: cluster.clone(),
                    queued_run: slot.queued.as_ref().map(|q| q.id),
                    running_run: slot.running.as_ref().map(|r| r.run.id),
                    queued_not_before: slot
                        .queued
                        .as_ref()
                        .and_then(|q| q.not_before)
                        .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
                    progress: slot.running.and_then(|r| r.progress),
                    recovering: slot.recovering,
                }
            })
            .collect()
    }
}
