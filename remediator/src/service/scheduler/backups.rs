//! Backups beside runs: one backup per cluster at a time, asked for by `backup.schedule` or
//! the API, never while a run of that cluster is under way and no run starts while its
//! backup is (the ledger holds both, so the two cannot interleave; the cluster's file lock
//! still guards against a `run` or `backup` command started by hand). Pausing runs does not
//! pause backups: a paused service is exactly when a restorable backup matters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::super::backups::{BackupFilter, BackupRecord, BackupSource};
use super::super::store::StoreError;
use super::ledger::Ledger;
use super::{RequestError, Scheduler};
use crate::backup::BackupError;

/// How often a backup that found the cluster's lock held (a `run` started by hand) looks
/// again.
const LOCK_POLL: Duration = Duration::from_secs(2);

/// The ledger's side: backups asked for and under way, and each schedule's next time.
#[derive(Debug, Default)]
pub(super) struct BackupQueue {
    /// Asked for, waiting for the cluster's run to end: what asked, and when.
    wanted: BTreeMap<String, (BackupSource, SystemTime)>,
    running: BTreeSet<String>,
    pub(super) next_scheduled: BTreeMap<String, SystemTime>,
}

impl BackupQueue {
    pub(super) fn is_running(&self, cluster: &str) -> bool {
        self.running.contains(cluster)
    }

    pub(super) fn state(&self, cluster: &str) -> Option<&'static str> {
        match (
            self.running.contains(cluster),
            self.wanted.contains_key(cluster),
        ) {
            (true, _) => Some("running"),
            (false, true) => Some("queued"),
            (false, false) => None,
        }
    }
}

/// What became of a request for a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupDecision {
    /// `queued`, or `joined` when the cluster already has one asked for or under way.
    pub action: &'static str,
    pub reason: String,
}

/// A backup the dispatcher may start now.
#[derive(Debug)]
pub(super) struct BackupStart {
    cluster: String,
    source: BackupSource,
    requested_at: SystemTime,
}

impl Ledger {
    pub(super) fn request_backup(
        &mut self,
        cluster: &str,
        source: BackupSource,
        now: SystemTime,
    ) -> BackupDecision {
        if self.backups.running.contains(cluster) || self.backups.wanted.contains_key(cluster) {
            return BackupDecision {
                action: "joined",
                reason: format!("a backup of {cluster} is already asked for or under way"),
            };
        }
        self.backups
            .wanted
            .insert(cluster.to_string(), (source, now));
        let waits = self
            .slots
            .get(cluster)
            .is_some_and(|slot| slot.running.is_some() || slot.recovering);
        BackupDecision {
            action: "queued",
            reason: match waits {
                true => format!("a run of {cluster} is under way; the backup follows it"),
                false => format!("backing {cluster} up now"),
            },
        }
    }

    /// Asks for a backup of each cluster whose scheduled time has come (times missed while
    /// the service was down are not made up), and moves its schedule on.
    fn fire_backup_schedules(&mut self, now: SystemTime) {
        let due = super::schedule::take_due(
            &mut self.backups.next_scheduled,
            &self.rules.backup_schedules,
            now,
        );
        for (cluster, _) in due {
            let decision = self.request_backup(&cluster, BackupSource::Schedule, now);
            tracing::info!(%cluster, action = decision.action, reason = %decision.reason, "scheduled backup");
        }
    }

    /// A backup asked for whose cluster has no run under way (or recovering), now marked
    /// running.
    pub(super) fn next_backup(&mut self, now: SystemTime) -> Option<BackupStart> {
        self.fire_backup_schedules(now);
        let cluster = self
            .backups
            .wanted
            .keys()
            .find(|cluster| {
                self.slots
                    .get(*cluster)
                    .is_none_or(|slot| slot.running.is_none() && !slot.recovering)
            })?
            .clone();
        let (source, requested_at) = self.backups.wanted.remove(&cluster)?;
        self.backups.running.insert(cluster.clone());
        Some(BackupStart {
            cluster,
            source,
            requested_at,
        })
    }

    /// Records the backup and frees the cluster for runs; the stored id.
    pub(super) fn backup_finished(&mut self, record: &BackupRecord) -> Result<i64, StoreError> {
        self.backups.running.remove(&record.cluster);
        self.store.record_backup(record)
    }

    pub(super) fn first_backup_times(&mut self, now: SystemTime) {
        self.backups.next_scheduled =
            super::schedule::first_times(&self.rules.backup_schedules, now);
    }
}

impl Scheduler {
    /// `POST /api/v1/clusters/{name}/backup`.
    pub async fn request_backup(&self, cluster: &str) -> Result<BackupDecision, RequestError> {
        let target = self
            .targets
            .get(cluster)
            .ok_or_else(|| RequestError::UnknownCluster(cluster.to_string()))?;
        if target.config.backup.destinations.is_empty() {
            return Err(RequestError::NoBackupDestination(cluster.to_string()));
        }
        let name = cluster.to_string();
        let decision = self
            .on_ledger(move |ledger| {
                ledger.request_backup(&name, BackupSource::Api, SystemTime::now())
            })
            .await?;
        self.wake.notify_one();
        Ok(decision)
    }

    pub async fn backups(&self, filter: BackupFilter) -> Result<Vec<BackupRecord>, StoreError> {
        self.on_ledger(move |ledger| ledger.store.backups(&filter))
            .await?
    }

    /// Starts every backup that may start now.
    pub(super) async fn start_backups(self: &Arc<Self>) {
        loop {
            let start = self
                .ledger
                .call(|ledger| ledger.next_backup(SystemTime::now()))
                .await;
            let Ok(Some(start)) = start else { return };
            let scheduler = self.clone();
            self.tasks
                .spawn(async move { scheduler.take_backup(start).await });
        }
    }

    async fn take_backup(self: Arc<Self>, start: BackupStart) {
        let BackupStart {
            cluster,
            source,
            requested_at,
        } = start;
        let started_at = SystemTime::now();
        let result = match self.targets.get(&cluster) {
            Some(target) => {
                let settings = &target.config.backup;
                tracing::info!(%cluster, ?source, "backup started");
                let mut waited = false;
                loop {
                    match target.remediator.backup(settings, None, &self.stop).await {
                        Err(BackupError::Locked(holder)) if !self.stop.is_cancelled() => {
                            if !waited {
                                tracing::info!(%cluster, %holder, "backup waits for the cluster's lock");
                                waited = true;
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(LOCK_POLL) => {}
                                _ = self.stop.cancelled() => {}
                            }
                        }
                        other => break other,
                    }
                }
            }
            None => Err(BackupError::Config(format!(
                "cluster {cluster} is not in the configuration"
            ))),
        };
        let record = BackupRecord::new(&cluster, source, requested_at, started_at, result);
        self.metrics
            .backup_finished(&record, self.destinations_of(&cluster));
        tracing::info!(
            %cluster, outcome = record.outcome.as_str(),
            reason = record.reason.as_deref().unwrap_or(""), "backup finished"
        );
        let stored = {
            let record = record.clone();
            self.ledger
                .call(move |ledger| ledger.backup_finished(&record))
                .await
        };
        let stored = match stored {
            Ok(inner) => inner.map(drop),
            Err(gone) => Err(StoreError::from(gone)),
        };
        if let Err(err) = stored {
            tracing::error!(%cluster, error = %err, record = %serde_json::to_string(&record).unwrap_or_default(), "cannot record the backup");
        }
        self.wake.notify_one();
    }

    /// The configured destination names of `cluster`.
    pub(super) fn destinations_of(&self, cluster: &str) -> Vec<String> {
        self.targets
            .get(cluster)
            .map(|t| {
                t.config
                    .backup
                    .destinations
                    .iter()
                    .map(|d| d.name.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}
