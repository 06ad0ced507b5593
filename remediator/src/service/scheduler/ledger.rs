//! The scheduler's books: the store and, beside it, each cluster's queued and running run.
//! Both live on the service's owner thread and change together, in plain synchronous code:
//! every decision is made and stored there, one at a time, so twenty copies of one payload
//! arriving at once give one run.

pub(super) mod backups;
mod schedule;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::config::when::{CronIn, Windows};

use self::backups::BackupQueue;
use super::super::store::{
    in_transaction, interrupt_unfinished, InterruptedRun, NewRun, RunDetail, RunSource, StateStore,
    StoreResult,
};
use super::clock::Clock;
use super::{ClusterQueue, DISPATCH_EVERY};
use crate::forecast::{History, HISTORY_RUNS};
use crate::report::{Outcome, RunReport};

/// What the scheduler decides by: the configuration, fixed while the service runs.
#[derive(Debug, Clone)]
pub(super) struct Rules {
    /// `remediator.mode: observe`: every run is queued as a dry run.
    pub observe: bool,
    /// The alerts that start runs.
    pub triggers: HashSet<String>,
    /// Each cluster's `alert_labels`.
    pub clusters: BTreeMap<String, BTreeMap<String, String>>,
    pub cooldown: Duration,
    pub retry_after_refusal: Duration,
    pub max_concurrent_runs: usize,
    /// Each cluster's maintenance windows (empty: always open).
    pub windows: BTreeMap<String, Windows>,
    /// Triggers that act at once, outside the windows.
    pub urgent: HashSet<String>,
    /// Each scheduled cluster's `remediation.schedule`.
    pub schedules: BTreeMap<String, CronIn>,
    /// Each cluster's `backup.schedule`.
    pub backup_schedules: BTreeMap<String, CronIn>,
    /// What "now" is to every decision.
    pub clock: Clock,
}

impl Rules {
    /// When a non-urgent run of `cluster` may start, if not now: the next window's opening.
    pub(super) fn window_wait(&self, cluster: &str, now: SystemTime) -> Option<SystemTime> {
        let windows = self.windows.get(cluster).filter(|w| !w.is_empty())?;
        windows.next_open(now).filter(|open| *open > now)
    }

    /// Whether an alert named `alertname` acts at once, outside the windows.
    pub(super) fn is_urgent(&self, alertname: Option<&str>) -> bool {
        alertname.is_some_and(|name| self.urgent.contains(name))
    }

    /// [`Rules::is_urgent`] for a stored run, by its trigger (`alertmanager: <alertname>`).
    fn is_urgent_trigger(&self, trigger: &str) -> bool {
        self.is_urgent(trigger.strip_prefix("alertmanager: "))
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct Slot {
    pub queued: Option<Queued>,
    pub running: Option<Running>,
    /// After a restart that interrupted a run: waiting for the members to serve reads.
    pub recovering: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Queued {
    pub id: i64,
    pub dry_run: bool,
    /// Only alert-started runs are cancelled by resolved alerts, and only they keep their
    /// alerts' retries; API requests ignore maintenance windows.
    pub source: RunSource,
    /// Firing alerts that keep it queued.
    pub firing: BTreeSet<String>,
    pub alertnames: BTreeSet<String>,
    pub cooldown_until: Option<SystemTime>,
    /// A retry after a refusal waits until then.
    pub not_before: Option<SystemTime>,
    /// The alert-started run a retry retries (the first of the chain).
    pub retry_of: Option<i64>,
    pub trigger: String,
    /// Started by an urgent trigger (or joined by one): maintenance windows do not apply.
    pub urgent: bool,
    /// `not_before` is the opening of the next maintenance window.
    pub for_window: bool,
}

impl Queued {
    fn is_due(&self, now: SystemTime) -> bool {
        self.not_before.is_none_or(|at| at <= now)
    }

    /// Whether maintenance windows apply: not to urgent runs, nor to runs asked for through
    /// the API (an operator asking now means now).
    pub(super) fn keeps_windows(&self) -> bool {
        !self.urgent && self.source != RunSource::Api
    }

    /// Whether resolved alerts cancel it while queued: not a run someone or a schedule asked for.
    pub(super) fn started_by_alerts(&self) -> bool {
        self.source == RunSource::Alertmanager
    }
}

#[derive(Debug, Clone)]
pub(super) struct Running {
    /// The run as it was queued; resolved alerts still leave its `firing` set, which decides
    /// whether a refusal is retried.
    pub run: Queued,
    /// The latest progress line, for the API.
    pub progress: Option<String>,
}

pub(super) struct Ledger {
    pub store: Box<dyn StateStore>,
    pub slots: HashMap<String, Slot>,
    pub running: usize,
    pub paused: bool,
    pub rules: Rules,
    /// Each scheduled cluster's next scheduled run.
    pub next_scheduled: BTreeMap<String, SystemTime>,
    pub backups: BackupQueue,
}

/// What the ledger found when it opened: runs a dead process left under way, and the latest
/// reports to restore the gauges from.
pub(super) struct Opened {
    pub interrupted: Vec<InterruptedRun>,
    pub latest: Vec<RunReport>,
}

/// A queued run the dispatcher may start now.
#[derive(Debug)]
pub(super) struct Start {
    pub cluster: String,
    pub queued: Queued,
    /// When the maintenance window the run starts in closes.
    pub finish_by: Option<SystemTime>,
}

impl Ledger {
    /// Marks runs a dead process left running as interrupted, and restores the queue and the
    /// pause switch.
    pub(super) fn open(
        mut store: Box<dyn StateStore>,
        rules: Rules,
    ) -> StoreResult<(Ledger, Opened)> {
        let interrupted = interrupt_unfinished(store.as_mut())?;
        let paused = store.paused()?;
        let latest = store.latest_finished()?;
        let mut slots: HashMap<String, Slot> = HashMap::new();
        for run in store.queued()? {
            if !rules.clusters.contains_key(&run.cluster) {
                let report = RunReport::ended(
                    &run.cluster,
                    &run.trigger,
                    run.dry_run,
                    Outcome::Cancelled,
                    "the cluster is no longer in the configuration".into(),
                );
                in_transaction(store.as_mut(), |tx| tx.finish(run.id, &report))?;
                continue;
            }
            let firing = store.firing_fingerprints(run.id)?;
            slots.entry(run.cluster.clone()).or_default().queued = Some(Queued {
                id: run.id,
                dry_run: run.dry_run,
                source: run.source,
                firing: firing.into_iter().collect(),
                alertnames: BTreeSet::new(),
                cooldown_until: run.cooldown_until,
                not_before: run.not_before,
                retry_of: run.retry_of,
                urgent: rules.is_urgent_trigger(&run.trigger),
                for_window: run.not_before.is_some()
                    && rules
                        .windows
                        .get(&run.cluster)
                        .is_some_and(|w| !w.is_empty()),
                trigger: run.trigger,
            });
        }
        for InterruptedRun { cluster, .. } in &interrupted {
            if rules.clusters.contains_key(cluster) {
                slots.entry(cluster.clone()).or_default().recovering = true;
            }
        }
        let next_scheduled = schedule::first_times(&rules.schedules, rules.clock.now());
        let ledger = Ledger {
            store,
            slots,
            running: 0,
            paused,
            rules,
            next_scheduled,
            backups: BackupQueue::default(),
        };
        Ok((
            ledger,
            Opened {
                interrupted,
                latest,
            },
        ))
    }

    pub(super) fn set_paused(&mut self, paused: bool) -> StoreResult<()> {
        self.store.set_paused(paused)?;
        self.paused = paused;
        Ok(())
    }

    /// The oldest due queued run, now marked running, unless paused or at the limit. A run
    /// that keeps maintenance windows and finds none open waits for the next one.
    pub(super) fn next_start(&mut self, now: SystemTime) -> Option<Start> {
        self.fire_schedules(now);
        if self.paused || self.running >= self.rules.max_concurrent_runs {
            return None;
        }
        self.defer_to_windows(now);
        let (cluster, queued) = self
            .slots
            .iter()
            .filter(|(cluster, slot)| {
                slot.running.is_none() && !slot.recovering && !self.backups.is_running(cluster)
            })
            .filter_map(|(cluster, slot)| slot.queued.as_ref().map(|q| (cluster, q)))
            .filter(|(_, queued)| queued.is_due(now))
            .min_by_key(|(_, queued)| queued.id)
            .map(|(cluster, queued)| (cluster.clone(), queued.clone()))?;
        if let Err(err) = self.store.mark_running(queued.id, now) {
            tracing::error!(run = queued.id, %cluster, error = %err, "cannot start the run; retrying later");
            return None;
        }
        self.running += 1;
        let finish_by = match queued.keeps_windows() {
            true => self.rules.windows.get(&cluster).and_then(|w| w.closes(now)),
            false => None,
        };
        let slot = self.slots.entry(cluster.clone()).or_default();
        slot.queued = None;
        slot.running = Some(Running {
            run: queued.clone(),
            progress: None,
        });
        Some(Start {
            cluster,
            queued,
            finish_by,
        })
    }

    /// Due runs that keep windows while none is open: due again when the next opens.
    fn defer_to_windows(&mut self, now: SystemTime) {
        for (cluster, slot) in &mut self.slots {
            let Some(queued) = slot.queued.as_mut() else {
                continue;
            };
            if !queued.is_due(now) || !queued.keeps_windows() {
                continue;
            }
            let Some(open) = self.rules.window_wait(cluster, now) else {
                continue;
            };
            let id = queued.id;
            match in_transaction(self.store.as_mut(), |tx| tx.set_not_before(id, Some(open))) {
                Ok(()) => {
                    tracing::info!(run = queued.id, %cluster, opens = %humantime::format_rfc3339_seconds(open), "no maintenance window open: the run waits for the next");
                    queued.not_before = Some(open);
                    queued.for_window = true;
                }
                Err(err) => {
                    tracing::error!(run = queued.id, %cluster, error = %err, "cannot defer the run to its window")
                }
            }
        }
    }

    /// How long the dispatcher may sleep: until the next retry is due or scheduled run, at
    /// most [`DISPATCH_EVERY`].
    pub(super) fn next_look(&self, now: SystemTime) -> Duration {
        self.slots
            .values()
            .filter_map(|slot| slot.queued.as_ref()?.not_before)
            .chain(self.next_scheduled.values().copied())
            .chain(self.backups.next_scheduled.values().copied())
            .map(|at| at.duration_since(now).unwrap_or_default())
            .fold(DISPATCH_EVERY, Duration::min)
    }

    pub(super) fn set_progress(&mut self, cluster: &str, id: i64, line: String) {
        if let Some(running) = self
            .slots
            .get_mut(cluster)
            .and_then(|slot| slot.running.as_mut())
            .filter(|running| running.run.id == id)
        {
            running.progress = Some(line);
        }
    }

    /// Records how a run ended and frees its slot; a refused run from alerts is queued again
    /// (see [`Ledger::retry_later`]).
    pub(super) fn finish(&mut self, cluster: &str, id: i64, report: &RunReport) {
        if let Err(err) = in_transaction(self.store.as_mut(), |tx| tx.finish(id, report)) {
            // The run is over either way; what is lost is its record, which the log keeps.
            tracing::error!(run = id, %cluster, error = %err, report = %serde_json::to_string(report).unwrap_or_default(), "cannot record the run's report");
        }
        self.running = self.running.saturating_sub(1);
        let finished = self
            .slots
            .get_mut(cluster)
            .and_then(|slot| slot.running.take());
        if let Some(Running { run, .. }) = finished.filter(|_| report.refused) {
            self.retry_later(cluster, run);
        }
    }

    /// After a refusal, which changed nothing and starts no cooldown: while the alerts that
    /// asked for the run still fire, it runs again `retry_after_refusal` later. Alertmanager
    /// would only repeat them after its repeat_interval (hours), with NOSPACE perhaps active.
    fn retry_later(&mut self, cluster: &str, refused: Queued) {
        let slot = self.slots.entry(cluster.to_string()).or_default();
        if !refused.started_by_alerts()
            || refused.dry_run
            || refused.firing.is_empty()
            || slot.queued.is_some()
        {
            return;
        }
        let now = self.rules.clock.now();
        let at = now + self.rules.retry_after_refusal;
        let retry_of = refused.retry_of.unwrap_or(refused.id);
        let cooldown = self.rules.cooldown;
        let recorded = in_transaction(self.store.as_mut(), |tx| {
            let cooldown_until = cooldown_until(tx.last_work_finished(cluster)?, cooldown, now);
            let run = NewRun {
                cluster,
                source: RunSource::Alertmanager,
                dry_run: false,
                trigger: &refused.trigger,
                cooldown_until,
                not_before: Some(at),
                retry_of: Some(retry_of),
            };
            Ok((tx.insert_run(&run)?, cooldown_until))
        });
        let (id, cooldown_until) = match recorded {
            Ok(recorded) => recorded,
            Err(err) => {
                tracing::error!(run = refused.id, %cluster, error = %err, "cannot queue the retry of a refused run");
                return;
            }
        };
        let sentence = format!(
            "Retried as run {id} at {}, since its alerts still fire (retry_after_refusal).",
            humantime::format_rfc3339_seconds(at)
        );
        let refused_id = refused.id;
        self.slots.entry(cluster.to_string()).or_default().queued = Some(Queued {
            id,
            not_before: Some(at),
            retry_of: Some(retry_of),
            cooldown_until,
            for_window: false,
            ..refused
        });
        tracing::info!(run = refused_id, %cluster, retry_at = %humantime::format_rfc3339_seconds(at), "refused; retrying later while its alerts fire");
        if let Err(err) = self.store.append_reason(refused_id, &sentence) {
            tracing::error!(run = refused_id, error = %err, "cannot record the retry");
        }
    }

    /// The wait after a restart that interrupted run `id` is over: `sentence` says how.
    pub(super) fn recovered(&mut self, id: i64, cluster: &str, sentence: &str) {
        if let Err(err) = self.store.append_reason(id, sentence) {
            tracing::error!(run = id, error = %err, "cannot record the recovery");
        }
        if let Some(slot) = self.slots.get_mut(cluster) {
            slot.recovering = false;
        }
    }

    /// What the cluster's latest runs measured, for the next run's forecast. A store that
    /// cannot be read costs the forecast its history, never the run.
    pub(super) fn history(&mut self, cluster: &str) -> History {
        match self.store.recent_work(cluster, HISTORY_RUNS) {
            Ok(reports) => crate::report::history(&reports),
            Err(err) => {
                tracing::warn!(%cluster, error = %err, "cannot read earlier runs; the forecast uses this run's measurements only");
                History::default()
            }
        }
    }

    /// A run with everything recorded, and its latest progress line while it runs.
    pub(super) fn run(&mut self, id: i64) -> StoreResult<Option<(RunDetail, Option<String>)>> {
        let detail = self.store.run(id)?;
        let progress = detail.as_ref().and_then(|detail| {
            self.slots
                .get(&detail.summary.cluster)
                .and_then(|slot| slot.running.as_ref())
                .filter(|running| running.run.id == id)
                .and_then(|running| running.progress.clone())
        });
        Ok(detail.map(|detail| (detail, progress)))
    }

    pub(super) fn queues(&self) -> Vec<ClusterQueue> {
        let now = self.rules.clock.now();
        self.rules
            .clusters
            .keys()
            .map(|cluster| {
                let slot = self.slots.get(cluster).cloned().unwrap_or_default();
                ClusterQueue {
                    cluster: cluster.clone(),
                    queued_run: slot.queued.as_ref().map(|q| q.id),
                    running_run: slot.running.as_ref().map(|r| r.run.id),
                    queued_not_before: slot
                        .queued
                        .as_ref()
                        .and_then(|q| q.not_before)
                        .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
                    waiting_for_window: slot.queued.as_ref().is_some_and(|q| q.for_window),
                    next_window: self
                        .rules
                        .windows
                        .get(cluster)
                        .and_then(|w| w.next_open(now))
                        .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
                    next_scheduled_run: self
                        .next_scheduled
                        .get(cluster)
                        .map(|at| humantime::format_rfc3339_seconds(*at).to_string()),
                    progress: slot.running.and_then(|r| r.progress),
                    recovering: slot.recovering,
                    backup: self.backups.state(cluster),
                    next_scheduled_backup: self
                        .backups
                        .next_scheduled
                        .get(cluster)
                        .map(|at| humantime::format_rfc3339_seconds(*at).to_string()),
                }
            })
            .collect()
    }
}

/// Until when a new run of a cluster is inside its cooldown, given when its last run that did
/// work finished.
pub(super) fn cooldown_until(
    last_work_finished: Option<SystemTime>,
    cooldown: Duration,
    now: SystemTime,
) -> Option<SystemTime> {
    last_work_finished
        .map(|finished| finished + cooldown)
        .filter(|until| *until > now)
}
