//! Turns alerts and API requests into runs: at most one queued or running run per cluster
//! (every further alert for it joins that run), a global limit on runs at once, cooldowns,
//! cancellation by resolved alerts, and the pause switch.
//!
//! Every decision is made under one lock and written to the store in the same transaction
//! as the alerts that caused it, so twenty copies of one payload arriving at once give one
//! run, and a decision the store could not record is not made at all.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use etcdmedic_cluster::model::AlarmKind;
use etcdmedic_cluster::{ClusterConfig, RemediatorSettings};
use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::Metrics;
use super::notify::Notifier;
use super::payload::{Alert, AlertStatus, Payload};
use super::store::InterruptedRun;
use super::store::{
    self, AlertRecord, NewRun, RunDetail, RunFilter, RunSummary, Store, StoreError,
};
use crate::events::Events;
use crate::output::TextProgress;
use crate::report::{Outcome, RunReport};
use crate::{Remediator, RunOptions};

/// How often the dispatcher looks at the queue even when nothing woke it (a store that was
/// unavailable may be back).
const DISPATCH_EVERY: Duration = Duration::from_secs(5);

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
    trigger: String,
}

#[derive(Debug, Clone)]
struct Running {
    id: i64,
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
    pub running_run: Option<i64>,
    pub progress: Option<String>,
    pub recovering: bool,
}

pub struct Scheduler {
    state: Mutex<State>,
    targets: BTreeMap<String, Target>,
    triggers: HashSet<String>,
    cooldown: Duration,
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
        let mut store = Store::open(&settings.state_path)?;
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
                cluster.name.clone(),
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
                manual: run.source == "api",
                firing: firing.into_iter().collect(),
                alertnames: BTreeSet::new(),
                cooldown_until: run.cooldown_until,
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

    // ---- decisions ---------------------------------------------------------------------

    /// Decides what every alert of a webhook payload does, and records it all.
    pub fn accept(&self, payload: &Payload) -> Result<Vec<AlertDecision>, StoreError> {
        let mut state = self.lock();
        let paused = state.paused;
        let mut slots = state.slots.clone();
        let mut cancelled = Vec::new();
        let decisions = state.store.transaction(|tx| {
            let mut decisions = Vec::with_capacity(payload.alerts.len());
            for alert in &payload.alerts {
                let (cluster, decision) =
                    self.decide(tx, &mut slots, paused, alert, &mut cancelled)?;
                store::insert_alert(
                    tx,
                    &AlertRecord {
                        alertname: alert.name().unwrap_or("").to_string(),
                        status: alert.status.as_str().into(),
                        fingerprint: alert.identity(),
                        cluster: cluster.clone(),
                        labels: alert.labels.clone(),
                        starts_at: alert.starts_at.clone(),
                        action: decision.action.as_str().into(),
                        reason: decision.reason.clone(),
                        run_id: decision.run_id,
                    },
                )?;
                decisions.push(AlertDecision {
                    alertname: alert.name().map(str::to_string),
                    fingerprint: alert.identity(),
                    status: alert.status,
                    cluster,
                    decision,
                });
            }
            Ok(decisions)
        })?;
        state.slots = slots;
        drop(state);
        // Counted once the store has them: a failed transaction cancelled nothing.
        for report in &cancelled {
            self.metrics.run_finished(report);
        }
        for decision in &decisions {
            self.metrics.webhook_alert(
                decision.decision.action.as_str(),
                decision.decision.ignored_because.unwrap_or(""),
            );
        }
        self.wake.notify_one();
        Ok(decisions)
    }

    fn decide(
        &self,
        tx: &Connection,
        slots: &mut HashMap<String, Slot>,
        paused: bool,
        alert: &Alert,
        cancelled: &mut Vec<RunReport>,
    ) -> rusqlite::Result<(Option<String>, Decision)> {
        let Some(name) = alert.name() else {
            return Ok((
                None,
                ignored("not_a_trigger", "the alert has no alertname label".into()),
            ));
        };
        if !self.triggers.contains(name) {
            return Ok((
                None,
                ignored(
                    "not_a_trigger",
                    format!("{name} is not one of the configured triggers"),
                ),
            ));
        }
        let cluster = match self.cluster_of(alert) {
            Ok(cluster) => cluster,
            Err((code, reason)) => return Ok((None, ignored(code, reason))),
        };
        let slot = slots.entry(cluster.clone()).or_default();
        let decision = match alert.status {
            AlertStatus::Firing if paused => ignored(
                "paused",
                "runs are paused (POST /api/v1/resume to resume)".into(),
            ),
            AlertStatus::Firing => self.firing(tx, &cluster, slot, alert)?,
            AlertStatus::Resolved => self.resolved(tx, &cluster, slot, alert, cancelled)?,
        };
        Ok((Some(cluster), decision))
    }

    /// The one configured cluster whose alert labels the alert carries.
    fn cluster_of(&self, alert: &Alert) -> Result<String, (&'static str, String)> {
        let matches: Vec<&str> = self
            .targets
            .values()
            .filter(|target| {
                target
                    .config
                    .alert_labels
                    .iter()
                    .all(|(label, value)| alert.labels.get(label) == Some(value))
            })
            .map(|target| target.config.name.as_str())
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err((
                "unknown_cluster",
                format!(
                    "no configured cluster matches the alert's labels; configured: {}",
                    self.targets
                        .values()
                        .map(|t| format!("{} {:?}", t.config.name, t.config.alert_labels))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            several => Err((
                "ambiguous_cluster",
                format!(
                    "the alert's labels match several clusters ({}); make their alert_labels \
                     more specific",
                    several.join(", ")
                ),
            )),
        }
    }

    fn firing(
        &self,
        tx: &Connection,
        cluster: &str,
        slot: &mut Slot,
        alert: &Alert,
    ) -> rusqlite::Result<Decision> {
        if let Some(running) = &slot.running {
            return Ok(joined(
                running.id,
                format!("run {} of {cluster} is under way", running.id),
            ));
        }
        if let Some(queued) = &mut slot.queued {
            queued.firing.insert(alert.identity());
            if let Some(name) = alert.name() {
                queued.alertnames.insert(name.to_string());
            }
            return Ok(joined(
                queued.id,
                format!("run {} of {cluster} is already queued", queued.id),
            ));
        }
        // Alertmanager repeats an alert (HA peers, retries, repeat_interval); one episode of
        // an alert is handled once per cooldown.
        if !alert.starts_at.is_empty() {
            if let Some((run, Some(finished))) =
                store::episode_run(tx, &alert.identity(), &alert.starts_at)?
            {
                if finished + self.cooldown > SystemTime::now() {
                    return Ok(ignored(
                        "duplicate",
                        format!(
                            "this alert (firing since {}) already led to run {run}; repeats are \
                             ignored until {}",
                            alert.starts_at,
                            humantime::format_rfc3339_seconds(finished + self.cooldown)
                        ),
                    ));
                }
            }
        }
        let cooldown_until = self.cooldown_until(tx, cluster)?;
        let trigger = format!("alertmanager: {}", alert.name().unwrap_or(""));
        let id = store::insert_run(
            tx,
            &NewRun {
                cluster,
                source: "alertmanager",
                dry_run: false,
                trigger: &trigger,
                cooldown_until,
            },
        )?;
        slot.queued = Some(Queued {
            id,
            dry_run: false,
            manual: false,
            firing: BTreeSet::from([alert.identity()]),
            alertnames: alert.name().map(str::to_string).into_iter().collect(),
            cooldown_until,
            trigger,
        });
        Ok(queued(id, cooldown_until))
    }

    fn resolved(
        &self,
        tx: &Connection,
        cluster: &str,
        slot: &mut Slot,
        alert: &Alert,
        cancelled: &mut Vec<RunReport>,
    ) -> rusqlite::Result<Decision> {
        let identity = alert.identity();
        if let Some(queued) = slot.queued.as_mut().filter(|q| !q.manual) {
            if queued.firing.remove(&identity) {
                let id = queued.id;
                if !queued.firing.is_empty() {
                    return Ok(ignored(
                        "resolved",
                        format!(
                            "resolved; run {id} stays queued for {} other firing alert(s)",
                            queued.firing.len()
                        ),
                    ));
                }
                let report = RunReport::ended(
                    cluster,
                    &queued.trigger,
                    queued.dry_run,
                    Outcome::Cancelled,
                    "every alert that queued the run resolved before it started".into(),
                );
                store::finish(tx, id, &report)?;
                slot.queued = None;
                cancelled.push(report);
                return Ok(Decision {
                    action: Action::Cancelled,
                    run_id: Some(id),
                    ignored_because: None,
                    reason: format!("resolved before run {id} started; the run is cancelled"),
                });
            }
        }
        let reason = match &slot.running {
            Some(running) => format!(
                "resolved; run {} has started and goes on (it re-checked the live status)",
                running.id
            ),
            None => "resolved; no queued run to cancel".into(),
        };
        Ok(ignored("resolved", reason))
    }

    fn cooldown_until(
        &self,
        tx: &Connection,
        cluster: &str,
    ) -> rusqlite::Result<Option<SystemTime>> {
        let last = store::last_work_finished(tx, cluster)?;
        Ok(last
            .map(|finished| finished + self.cooldown)
            .filter(|until| *until > SystemTime::now()))
    }

    /// `POST /api/v1/clusters/{name}/remediate`: the same queue, cooldown and pause rules.
    pub fn request(&self, cluster: &str, dry_run: bool) -> Result<Decision, RequestError> {
        if !self.knows(cluster) {
            return Err(RequestError::UnknownCluster(cluster.into()));
        }
        let mut state = self.lock();
        if state.paused {
            return Err(RequestError::Paused);
        }
        let mut slot = state.slots.get(cluster).cloned().unwrap_or_default();
        let decision = state.store.transaction(|tx| {
            if let Some(running) = &slot.running {
                return Ok(joined(
                    running.id,
                    format!("run {} is under way", running.id),
                ));
            }
            if let Some(queued) = &slot.queued {
                return Ok(joined(
                    queued.id,
                    format!("run {} is already queued", queued.id),
                ));
            }
            // A dry run changes nothing, so a cooldown has nothing to protect.
            let cooldown_until = if dry_run {
                None
            } else {
                self.cooldown_until(tx, cluster)?
            };
            let trigger = "api".to_string();
            let id = store::insert_run(
                tx,
                &NewRun {
                    cluster,
                    source: "api",
                    dry_run,
                    trigger: &trigger,
                    cooldown_until,
                },
            )?;
            slot.queued = Some(Queued {
                id,
                dry_run,
                manual: true,
                firing: BTreeSet::new(),
                alertnames: BTreeSet::new(),
                cooldown_until,
                trigger,
            });
            Ok(queued(id, cooldown_until))
        })?;
        state.slots.insert(cluster.to_string(), slot);
        drop(state);
        self.wake.notify_one();
        Ok(decision)
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
                .filter(|running| running.id == id)
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
                    running_run: slot.running.as_ref().map(|r| r.id),
                    progress: slot.running.and_then(|r| r.progress),
                    recovering: slot.recovering,
                }
            })
            .collect()
    }

    // ---- running -----------------------------------------------------------------------

    /// Starts queued runs as the limits allow, until `stop`.
    pub async fn dispatch(self: Arc<Self>) {
        loop {
            while let Some(start) = self.next_start() {
                let scheduler = self.clone();
                self.tasks
                    .spawn(async move { scheduler.execute(start).await });
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(DISPATCH_EVERY) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// Waits for the runs under way (each stops after its current member) and recovery
    /// waits to finish.
    pub async fn wait_for_runs(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn next_start(&self) -> Option<Start> {
        if self.stop.is_cancelled() {
            return None;
        }
        let mut state = self.lock();
        if state.paused || state.running >= self.max_concurrent_runs {
            return None;
        }
        let (cluster, queued) = state
            .slots
            .iter()
            .filter(|(_, slot)| slot.running.is_none() && !slot.recovering)
            .filter_map(|(cluster, slot)| slot.queued.as_ref().map(|q| (cluster, q)))
            .min_by_key(|(_, queued)| queued.id)
            .map(|(cluster, queued)| (cluster.clone(), queued.clone()))?;
        if let Err(err) = state.store.mark_running(queued.id, SystemTime::now()) {
            tracing::error!(run = queued.id, %cluster, error = %err, "cannot start the run; retrying later");
            return None;
        }
        state.running += 1;
        let slot = state.slots.entry(cluster.clone()).or_default();
        slot.queued = None;
        slot.running = Some(Running {
            id: queued.id,
            progress: None,
        });
        Some(Start { cluster, queued })
    }

    async fn execute(self: Arc<Self>, start: Start) {
        let Start { cluster, queued } = start;
        let Some(target) = self.targets.get(&cluster) else {
            // Queued runs of unknown clusters are cancelled at start-up, so this is a bug;
            // the slot must still be given back.
            let report = RunReport::ended(
                &cluster,
                &queued.trigger,
                queued.dry_run,
                Outcome::Failed,
                "the cluster is not in the configuration".into(),
            );
            self.finish(&cluster, queued.id, &report);
            return;
        };
        let remediator = target.remediator.clone();
        self.metrics.set_in_progress(&cluster, true);
        tracing::info!(run = queued.id, %cluster, trigger = %queued.trigger, dry_run = queued.dry_run, "run started");
        let silences = if queued.dry_run {
            Vec::new()
        } else {
            self.notifier
                .silence(
                    queued.id,
                    &cluster,
                    &target.config.alert_labels,
                    &queued.alertnames,
                )
                .await
        };

        let (events, mut received) = Events::channel();
        let progress_scheduler = self.clone();
        let run_id = queued.id;
        let progress_cluster = cluster.clone();
        let printer = tokio::spawn(async move {
            let text = TextProgress::default();
            while let Some(event) = received.recv().await {
                if let Some(line) = text.line(&event) {
                    tracing::info!(run = run_id, cluster = %progress_cluster, "{line}");
                    progress_scheduler.set_progress(&progress_cluster, run_id, line);
                }
            }
        });

        let report = match queued.cooldown_until {
            Some(until) => match self.live_nospace(&remediator).await {
                true => {
                    tracing::warn!(run = queued.id, %cluster, "inside the cooldown, but the cluster has an active NOSPACE alarm: running");
                    self.run_engine(&remediator, &queued, &events).await
                }
                false => RunReport::ended(
                    &cluster,
                    &queued.trigger,
                    queued.dry_run,
                    Outcome::Skipped,
                    format!(
                        "cooldown: an earlier run finished less than {} ago (cooldown until {}), \
                         and the live status shows no NOSPACE alarm",
                        humantime::format_duration(self.cooldown),
                        humantime::format_rfc3339_seconds(until)
                    ),
                ),
            },
            None => self.run_engine(&remediator, &queued, &events).await,
        };
        drop(events);
        let _ = printer.await;

        self.notifier.expire(&silences).await;
        self.notifier.annotate(queued.id, &report).await;
        self.finish(&cluster, queued.id, &report);
        tracing::info!(
            run = queued.id,
            %cluster,
            outcome = report.outcome.as_str(),
            reason = report.reason.as_deref().unwrap_or(""),
            reclaimed_bytes = report.reclaimed_bytes,
            "run finished"
        );
    }

    async fn run_engine(
        &self,
        remediator: &Remediator,
        queued: &Queued,
        events: &Events,
    ) -> RunReport {
        let options = RunOptions {
            dry_run: queued.dry_run,
            force: false,
            trigger: format!("run {}: {}", queued.id, queued.trigger),
        };
        remediator.run(&options, events, &self.stop).await
    }

    async fn live_nospace(&self, remediator: &Remediator) -> bool {
        remediator.live_status().await.has_alarm(AlarmKind::NoSpace)
    }

    fn set_progress(&self, cluster: &str, id: i64, line: String) {
        let mut state = self.lock();
        if let Some(running) = state
            .slots
            .get_mut(cluster)
            .and_then(|slot| slot.running.as_mut())
            .filter(|running| running.id == id)
        {
            running.progress = Some(line);
        }
    }

    fn finish(&self, cluster: &str, id: i64, report: &RunReport) {
        let mut state = self.lock();
        if let Err(err) = state.store.finish(id, report) {
            // The run is over either way; what is lost is its record, which the log keeps.
            tracing::error!(run = id, %cluster, error = %err, report = %serde_json::to_string(report).unwrap_or_default(), "cannot record the run's report");
        }
        state.running = state.running.saturating_sub(1);
        if let Some(slot) = state.slots.get_mut(cluster) {
            slot.running = None;
        }
        drop(state);
        self.metrics.set_in_progress(cluster, false);
        self.metrics.run_finished(report);
        self.wake.notify_one();
    }

    /// After a restart that interrupted runs: wait until each such cluster's members serve
    /// reads again (one may still be defragmenting), before any new run of it starts.
    pub fn recover(self: &Arc<Self>, interrupted: Vec<InterruptedRun>) {
        for InterruptedRun { id, cluster } in interrupted {
            let Some(target) = self.targets.get(&cluster) else {
                continue;
            };
            let remediator = target.remediator.clone();
            let scheduler = self.clone();
            self.tasks.spawn(async move {
                tracing::warn!(run = id, %cluster, "the service stopped during this run; waiting until every member serves reads before anything else touches the cluster");
                let sentence = match remediator
                    .wait_until_members_serve_reads(&Events::default(), &scheduler.stop)
                    .await
                {
                    Ok(waited) => {
                        tracing::info!(run = id, %cluster, waited_seconds = waited.as_secs_f64(), "every member serves reads again");
                        format!(
                            "After the restart the service waited {:.1}s until every member served reads again (no member left defragmenting).",
                            waited.as_secs_f64()
                        )
                    }
                    Err(err) => {
                        tracing::error!(run = id, %cluster, error = %err, "members still do not serve reads; new runs will refuse until they do");
                        format!("After the restart: {err}.")
                    }
                };
                let mut state = scheduler.lock();
                if let Err(err) = state.store.append_reason(id, &sentence) {
                    tracing::error!(run = id, error = %err, "cannot record the recovery");
                }
                if let Some(slot) = state.slots.get_mut(&cluster) {
                    slot.recovering = false;
                }
                drop(state);
                scheduler.wake.notify_one();
            });
        }
    }
}

struct Start {
    cluster: String,
    queued: Queued,
}

fn ignored(code: &'static str, reason: String) -> Decision {
    Decision {
        action: Action::Ignored,
        run_id: None,
        ignored_because: Some(code),
        reason,
    }
}

fn joined(id: i64, reason: String) -> Decision {
    Decision {
        action: Action::Joined,
        run_id: Some(id),
        ignored_because: None,
        reason,
    }
}

fn queued(id: i64, cooldown_until: Option<SystemTime>) -> Decision {
    let reason = match cooldown_until {
        Some(until) => format!(
            "queued as run {id}, inside the cooldown (until {}): it goes ahead only if the live \
             status shows NOSPACE, otherwise it is recorded as skipped",
            humantime::format_rfc3339_seconds(until)
        ),
        None => format!("queued as run {id}"),
    };
    Decision {
        action: Action::Queued,
        run_id: Some(id),
        ignored_because: None,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcdmedic_cluster::Config;
    use serde_json::json;

    /// A scheduler over two never-contacted clusters; nothing dispatches, so runs stay queued.
    fn scheduler(dir: &std::path::Path) -> Arc<Scheduler> {
        std::fs::write(dir.join("token"), "t").unwrap();
        let yaml = format!(
            "remediator:\n  state_path: {}\n  auth: {{bearer_token_file: token}}\nclusters:\n  \
             - name: a\n    endpoints: [http://127.0.0.1:1]\n  - name: b\n    endpoints: \
             [http://127.0.0.1:1]\n    alert_labels: {{job: kube-etcd}}\n",
            dir.join("state.sqlite").display()
        );
        let config = Config::from_yaml(&yaml, &dir.join("c.yaml")).unwrap();
        let settings = config.remediator().unwrap();
        let metrics = Arc::new(Metrics::new(
            &config
                .cluster_names()
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        ));
        Scheduler::open(
            &config.clusters,
            &settings,
            metrics,
            CancellationToken::new(),
        )
        .unwrap()
        .0
    }

    fn alert(status: &str, labels: serde_json::Value, fingerprint: &str) -> serde_json::Value {
        json!({"status": status, "labels": labels, "startsAt": "2026-11-21T07:00:00Z", "fingerprint": fingerprint})
    }

    fn send(scheduler: &Scheduler, alerts: Vec<serde_json::Value>) -> Vec<Decision> {
        let body = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r", "alerts": alerts});
        let payload = super::super::payload::parse(body.to_string().as_bytes()).unwrap();
        scheduler
            .accept(&payload)
            .unwrap()
            .into_iter()
            .map(|d| d.decision)
            .collect()
    }

    fn fragmentation(cluster: &str) -> serde_json::Value {
        json!({"alertname": "EtcdmedicDatabaseHighFragmentation", "etcd_cluster": cluster})
    }

    #[test]
    fn alerts_for_one_cluster_coalesce_and_resolving_them_all_cancels_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let scheduler = scheduler(dir.path());
        let first = send(
            &scheduler,
            vec![
                alert("firing", fragmentation("a"), "f1"),
                alert(
                    "firing",
                    json!({"alertname": "EtcdmedicNoSpaceAlarm", "etcd_cluster": "a"}),
                    "f2",
                ),
            ],
        );
        assert_eq!(first[0].action, Action::Queued);
        assert_eq!(first[1].action, Action::Joined);
        let id = first[0].run_id;
        assert_eq!(first[1].run_id, id);

        let partly = send(
            &scheduler,
            vec![alert("resolved", fragmentation("a"), "f1")],
        );
        assert_eq!(partly[0].action, Action::Ignored);
        assert!(partly[0].reason.contains("stays queued"), "{:?}", partly[0]);

        let all = send(
            &scheduler,
            vec![alert(
                "resolved",
                json!({"alertname": "EtcdmedicNoSpaceAlarm", "etcd_cluster": "a"}),
                "f2",
            )],
        );
        assert_eq!(all[0].action, Action::Cancelled);
        assert_eq!(all[0].run_id, id);
        let run = scheduler.run(id.unwrap()).unwrap().unwrap().0;
        assert_eq!(run.summary.outcome.as_deref(), Some("cancelled"));

        let again = send(
            &scheduler,
            vec![alert("resolved", fragmentation("a"), "f1")],
        );
        assert_eq!(again[0].ignored_because, Some("resolved"));
    }

    #[test]
    fn clusters_are_found_by_their_alert_labels() {
        let dir = tempfile::tempdir().unwrap();
        let scheduler = scheduler(dir.path());
        let decisions = send(
            &scheduler,
            vec![
                alert(
                    "firing",
                    json!({"alertname": "etcdDatabaseQuotaLowSpace", "job": "kube-etcd"}),
                    "m",
                ),
                alert("firing", fragmentation("zzz"), "u"),
                alert(
                    "firing",
                    json!({"alertname": "etcdDatabaseQuotaLowSpace", "job": "kube-etcd", "etcd_cluster": "a"}),
                    "amb",
                ),
                alert(
                    "firing",
                    json!({"alertname": "Watchdog", "etcd_cluster": "a"}),
                    "w",
                ),
                alert("firing", json!({"etcd_cluster": "a"}), "n"),
            ],
        );
        let because: Vec<_> = decisions.iter().map(|d| d.ignored_because).collect();
        assert_eq!(decisions[0].action, Action::Queued);
        assert_eq!(
            because[1..],
            [
                Some("unknown_cluster"),
                Some("ambiguous_cluster"),
                Some("not_a_trigger"),
                Some("not_a_trigger")
            ]
        );
        let queues = scheduler.queues();
        assert_eq!(queues[1].cluster, "b");
        assert_eq!(queues[1].queued_run, decisions[0].run_id);
        assert_eq!(queues[0].queued_run, None);
    }

    #[test]
    fn manual_runs_ignore_resolved_alerts_and_pausing_refuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let scheduler = scheduler(dir.path());
        let manual = scheduler.request("a", false).unwrap();
        assert_eq!(manual.action, Action::Queued);
        let joined = send(&scheduler, vec![alert("firing", fragmentation("a"), "f1")]);
        assert_eq!(joined[0].action, Action::Joined);
        let resolved = send(
            &scheduler,
            vec![alert("resolved", fragmentation("a"), "f1")],
        );
        assert_eq!(resolved[0].ignored_because, Some("resolved"));
        assert_eq!(scheduler.queues()[0].queued_run, manual.run_id);

        scheduler.set_paused(true).unwrap();
        assert!(matches!(
            scheduler.request("b", true),
            Err(RequestError::Paused)
        ));
        let paused = send(&scheduler, vec![alert("firing", fragmentation("a"), "f3")]);
        assert_eq!(paused[0].ignored_because, Some("paused"));
        assert!(matches!(
            scheduler.request("nope", true),
            Err(RequestError::UnknownCluster(_))
        ));
    }

    #[test]
    fn the_queue_and_the_pause_switch_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let scheduler = scheduler(dir.path());
            let decided = send(&scheduler, vec![alert("firing", fragmentation("a"), "f1")]);
            scheduler.set_paused(true).unwrap();
            decided[0].run_id
        };
        let scheduler = scheduler(dir.path());
        assert!(scheduler.paused());
        assert_eq!(scheduler.queues()[0].queued_run, id);
        // The restored run still knows its alert: resolving it cancels the run.
        let resolved = send(
            &scheduler,
            vec![alert("resolved", fragmentation("a"), "f1")],
        );
        assert_eq!(resolved[0].action, Action::Cancelled);
    }
}
