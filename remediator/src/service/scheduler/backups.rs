//! Backups beside runs: one backup per cluster at a time, asked for by `backup.schedule` or
//! the API, never while a run of that cluster is under way and no run starts while its
//! backup is (the ledger holds both, so the two cannot interleave; the cluster's file lock
//! still guards against a `run` or `backup` command started by hand). Pausing runs does not
//! pause backups: a paused service is exactly when a restorable backup matters.

use std::sync::Arc;
use std::time::Duration;

use super::super::backups::{BackupFilter, BackupRecord, BackupSource};
use super::super::store::StoreError;
use super::ledger::backups::{BackupDecision, BackupStart};
use super::{RequestError, Scheduler};
use crate::backup::BackupError;

/// How often a backup that found the cluster's lock held (a `run` started by hand) looks
/// again.
const LOCK_POLL: Duration = Duration::from_secs(2);

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
                ledger.request_backup(&name, BackupSource::Api, ledger.rules.clock.now())
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
                .call(|ledger| ledger.next_backup(ledger.rules.clock.now()))
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
        let started_at = self.clock.now();
        let result = match self.targets.get(&cluster) {
            Some(target) => {
                let settings = &target.config.backup;
                tracing::info!(%cluster, ?source, "backup started");
                let mut waited = false;
                loop {
                    match target.remediator.backup(settings, &self.stop).await {
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
