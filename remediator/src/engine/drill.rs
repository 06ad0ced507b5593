//! `etcdmedic-remediator drill`: proves a backup already taken in a local destination, and
//! records the outcome in its manifest.

use etcdmedic_cluster::config::{BackupSettings, Target};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::backup::chosen;
use super::etcd::Etcd;
use super::Remediator;
use crate::backup::{drill, local, BackupError};
use crate::lock::RunLock;
use crate::snapshot;

/// A restore drill of a backup already taken, and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub destination: String,
    pub location: String,
    pub drill: crate::backup::drill::DrillRecord,
}

impl<E: Etcd> Remediator<E> {
    /// Drills the backup `file` (default: the newest) in the local destination `only`
    /// (default: the first local one), and records the outcome in its manifest. Takes the
    /// cluster's lock, so the retention cannot remove the backup meanwhile.
    pub async fn drill(
        &self,
        backup: &BackupSettings,
        only: Option<&str>,
        file: Option<&str>,
        stop: &CancellationToken,
    ) -> Result<DrillReport, BackupError> {
        let cluster = self.etcd.cluster().clone();
        let settings = backup.restore_drill.as_ref().ok_or_else(|| {
            BackupError::Config(format!(
                "restore drills are off for cluster {cluster} (backup.restore_drill.enabled: false)"
            ))
        })?;
        let destination = chosen(backup, only, &cluster)?
            .into_iter()
            .find(|d| matches!(d.target, Target::Local { .. }))
            .ok_or_else(|| {
                BackupError::Config(
                    "the drill reads a local destination's backups; drilling an s3 \
                     destination's is not available in this version yet"
                        .to_string(),
                )
            })?;
        let Target::Local { path } = &destination.target else {
            unreachable!("found as local above")
        };
        let dir = snapshot::cluster_dir(path, &cluster);
        let lock_dir = snapshot::cluster_dir(&self.settings.snapshot_dir, &cluster);
        snapshot::create_dir(&lock_dir)?;
        let _lock = RunLock::acquire(&lock_dir, &cluster).map_err(BackupError::Locked)?;
        let no_backup = || BackupError::NoBackup {
            cluster: cluster.to_string(),
            destination: destination.name.to_string(),
        };
        let db = match file {
            Some(name) if snapshot::is_snapshot_of(name, &cluster) => dir.join(name),
            Some(name) => {
                return Err(BackupError::Config(format!(
                    "{name:?} is not a backup file name of cluster {cluster} \
                     (<cluster>-<time>-rev<N>.db)"
                )))
            }
            None => local::newest(&dir, &cluster).ok_or_else(no_backup)?,
        };
        if !db.with_extension("json").exists() {
            return Err(no_backup());
        }
        let mut manifest = local::read_manifest(&db).await?;
        let record = match snapshot::verify_file(&db).await {
            Ok(sha256) if sha256 == manifest.sha256 => {
                drill::run(settings, &db, &manifest, &lock_dir, stop).await
            }
            Ok(sha256) => drill::failed(format!(
                "the file's sha256 is {sha256}, its manifest says {}",
                manifest.sha256
            )),
            Err(err) => drill::failed(format!("{}: {err}", db.display())),
        };
        manifest.restore_drill = Some(record.clone());
        local::write_manifest(&db.with_extension("json"), &manifest).await?;
        Ok(DrillReport {
            destination: destination.name.to_string(),
            location: db.display().to_string(),
            drill: record,
        })
    }
}
