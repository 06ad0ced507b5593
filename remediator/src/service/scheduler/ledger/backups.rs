//! The ledger's books of backups: asked for, under way, and each schedule's next time. A
//! backup waits for the cluster's run and a run for the cluster's backup (see
//! `scheduler/backups.rs` for the service's side).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::Serialize;

use super::Ledger;
use crate::service::backups::{BackupRecord, BackupSource};
use crate::service::store::StoreError;

/// The ledger's side: backups asked for and under way, and each schedule's next time.
#[derive(Debug, Default)]
pub(in crate::service::scheduler) struct BackupQueue {
    /// Asked for, waiting for the cluster's run to end: what asked, and when.
    wanted: BTreeMap<String, (BackupSource, SystemTime)>,
    running: BTreeSet<String>,
    pub(in crate::service::scheduler) next_scheduled: BTreeMap<String, SystemTime>,
}

impl BackupQueue {
    pub(in crate::service::scheduler) fn is_running(&self, cluster: &str) -> bool {
        self.running.contains(cluster)
    }

    pub(in crate::service::scheduler) fn state(&self, cluster: &str) -> Option<&'static str> {
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
pub(in crate::service::scheduler) struct BackupStart {
    pub(in crate::service::scheduler) cluster: String,
    pub(in crate::service::scheduler) source: BackupSource,
    pub(in crate::service::scheduler) requested_at: SystemTime,
}

impl Ledger {
    pub(in crate::service::scheduler) fn request_backup(
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
    pub(in crate::service::scheduler) fn next_backup(
        &mut self,
        now: SystemTime,
    ) -> Option<BackupStart> {
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
    pub(in crate::service::scheduler) fn backup_finished(
        &mut self,
        record: &BackupRecord,
    ) -> Result<i64, StoreError> {
        self.backups.running.remove(&record.cluster);
        self.store.record_backup(record)
    }

    pub(in crate::service::scheduler) fn first_backup_times(&mut self, now: SystemTime) {
        self.backups.next_scheduled =
            super::schedule::first_times(&self.rules.backup_schedules, now);
    }
}
