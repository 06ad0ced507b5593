//! A remediator's backups: the procedures are `backup/`'s, over the cluster this engine
//! reaches through its `Etcd`. A run keeps its snapshot as a backup with them
//! (`keep_snapshot`), and `backup`, `drill` and the service's scheduled backups go through
//! the two verbs here.

use tokio_util::sync::CancellationToken;

use super::etcd::Etcd;
use super::Remediator;
use crate::backup::cluster::Backups;
use crate::backup::drill_taken::DrillReport;
use crate::backup::{BackupError, BackupReport};
use crate::config::BackupSettings;

impl<E: Etcd> Remediator<E> {
    pub(super) fn backups(&self) -> Backups<'_, E> {
        Backups {
            cluster: &self.etcd,
            settings: &self.settings,
        }
    }

    /// Takes a backup to every destination of `backup` (or only `only`).
    pub async fn backup(
        &self,
        backup: &BackupSettings,
        only: Option<&str>,
        stop: &CancellationToken,
    ) -> Result<BackupReport, BackupError> {
        self.backups().backup(backup, only, stop).await
    }

    /// Drills the backup `file` (default: the newest) in the destination `only`, and records
    /// the outcome in its manifest (see [`Backups::drill`]).
    pub async fn drill(
        &self,
        backup: &BackupSettings,
        only: Option<&str>,
        file: Option<&str>,
        identity: Option<&std::path::Path>,
        stop: &CancellationToken,
    ) -> Result<DrillReport, BackupError> {
        self.backups()
            .drill(backup, only, file, identity, stop)
            .await
    }
}
