//! `etcdmedic-remediator drill`: proves a backup already taken, in a directory or a bucket,
//! and records the outcome in its manifest.

use crate::config::{BackupSettings, RestoreDrill};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::cluster::{BackupCluster, Backups};
use super::take::chosen;
use crate::age_keys::Identities;
use crate::backup::bucket::Bucket;
use crate::backup::local::blocking;
use crate::backup::stored::{self, Form};
use crate::backup::{drill, local, BackupError};
use crate::snapshot;

/// A restore drill of a backup already taken, and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub destination: String,
    pub location: String,
    pub drill: crate::backup::drill::DrillRecord,
}

impl<C: BackupCluster> Backups<'_, C> {
    /// Drills the backup `file` (default: the newest) in the destination `only` (default:
    /// the first local one, else the first bucket), and records the outcome in its manifest.
    /// An encrypted backup is decrypted with `identity` (default: the drill's identity file).
    /// Takes the cluster's lock, so the retention cannot remove the backup meanwhile.
    pub(crate) async fn drill(
        &self,
        backup: &BackupSettings,
        only: Option<&str>,
        file: Option<&str>,
        identity: Option<&std::path::Path>,
        stop: &CancellationToken,
    ) -> Result<DrillReport, BackupError> {
        let cluster = self.cluster.cluster().clone();
        let settings = backup.restore_drill.as_ref().ok_or_else(|| {
            BackupError::Config(format!(
                "restore drills are off for cluster {cluster} (backup.restore_drill.enabled: false)"
            ))
        })?;
        let identities = match identity.or(settings.identity_file.as_deref()) {
            Some(path) => {
                Some(Identities::read(path).map_err(|err| BackupError::Config(err.to_string()))?)
            }
            None => None,
        };
        let identities = identities.as_ref();
        let chosen = chosen(backup, only, &cluster)?;
        // A local copy when there is one (no download); a bucket when asked or the only one.
        let destination = chosen
            .iter()
            .find(|d| d.local_path().is_some())
            .or(chosen.first())
            .copied()
            .ok_or_else(|| BackupError::NoDestination(cluster.to_string()))?;
        if let Some(name) = file.filter(|name| !snapshot::is_snapshot_of(name, &cluster)) {
            return Err(BackupError::Config(format!(
                "{name:?} is not a backup file name of cluster {cluster} \
                 (<cluster>-<time>-rev<N>.db)"
            )));
        }
        let Some(path) = destination.local_path() else {
            let bucket = Bucket::open(destination, &cluster)?;
            return self
                .drill_in_bucket(settings, &destination.name, bucket, file, identities, stop)
                .await;
        };
        let dir = snapshot::cluster_dir(path, &cluster);
        let (lock_dir, _lock) = self.lock_for_backups()?;
        let no_backup = || BackupError::NoBackup {
            cluster: cluster.to_string(),
            destination: destination.name.to_string(),
        };
        let db = match file {
            Some(name) => dir.join(name),
            None => local::newest(&dir, &cluster).ok_or_else(no_backup)?,
        };
        if !snapshot::manifest_path(&db).exists() {
            return Err(no_backup());
        }
        let mut manifest = local::read_manifest(&db).await?;
        let form = manifest.form();
        // An encrypted copy without an identity: the check itself says NoIdentity.
        let checked = {
            let (db, identities) = (db.clone(), identities.cloned());
            blocking(move || stored::check_file(&db, form, identities.as_ref())).await
        };
        let record = match checked {
            Err(stored::StoredError::NoIdentity) => drill::not_drilled_no_identity(),
            Ok(sha256) if sha256 == manifest.sha256 => {
                self.drill_stored(settings, &db, &manifest, identities, &lock_dir, stop)
                    .await
            }
            Ok(sha256) => drill::failed(format!(
                "the file's sha256 is {sha256}, its manifest says {}",
                manifest.sha256
            )),
            Err(err) => drill::failed(format!("{}: {err}", db.display())),
        };
        manifest.restore_drill = Some(record.clone());
        local::write_manifest(&snapshot::manifest_path(&db), &manifest).await?;
        Ok(DrillReport {
            destination: destination.name.to_string(),
            location: db.display().to_string(),
            drill: record,
        })
    }

    /// [`Remediator::drill`] of a backup in a bucket: downloaded to the cluster's snapshot
    /// directory (checked against etcd's trailer and its manifest on the way), drilled,
    /// removed; the outcome goes into the manifest in the bucket.
    async fn drill_in_bucket(
        &self,
        settings: &RestoreDrill,
        destination: &str,
        bucket: Bucket,
        file: Option<&str>,
        identities: Option<&Identities>,
        stop: &CancellationToken,
    ) -> Result<DrillReport, BackupError> {
        let cluster = self.cluster.cluster().clone();
        let (lock_dir, _lock) = self.lock_for_backups()?;
        let file = match file {
            Some(file) => file.to_string(),
            None => bucket
                .newest()
                .await?
                .ok_or_else(|| BackupError::NoBackup {
                    cluster: cluster.to_string(),
                    destination: destination.to_string(),
                })?,
        };
        let mut manifest = bucket.manifest(&file).await?;
        let downloaded = lock_dir.join(format!("{}{file}", snapshot::DRILL_DOWNLOAD));
        let record = if manifest.form().encrypted && identities.is_none() {
            drill::not_drilled_no_identity()
        } else {
            match bucket
                .download(&manifest, identities, &downloaded, stop)
                .await
            {
                Ok(sha256) if sha256 == manifest.sha256 => {
                    self.drill_stored(
                        settings,
                        &downloaded,
                        &manifest,
                        identities,
                        &lock_dir,
                        stop,
                    )
                    .await
                }
                Ok(sha256) => drill::failed(format!(
                    "the object's sha256 is {sha256}, its manifest says {}",
                    manifest.sha256
                )),
                Err(BackupError::Stopped) => return Err(BackupError::Stopped),
                Err(err) => drill::failed(err.to_string()),
            }
        };
        let _ = tokio::fs::remove_file(&downloaded).await;
        manifest.restore_drill = Some(record.clone());
        bucket.put_manifest(&manifest).await?;
        Ok(DrillReport {
            destination: destination.to_string(),
            location: bucket.url(&file),
            drill: record,
        })
    }

    /// Drills the stored copy `stored`, decoded first into `scratch` when it is compressed
    /// or encrypted.
    async fn drill_stored(
        &self,
        settings: &RestoreDrill,
        stored: &std::path::Path,
        manifest: &crate::backup::Manifest,
        identities: Option<&Identities>,
        scratch: &std::path::Path,
        stop: &CancellationToken,
    ) -> drill::DrillRecord {
        let form: Form = manifest.form();
        if form.is_plain() {
            return drill::run(settings, stored, manifest, scratch, stop).await;
        }
        let plain = scratch.join(format!(
            "{}{}.db",
            snapshot::DRILL_DECODED,
            manifest.revision
        ));
        let decoded = {
            let (from, to, identities) = (stored.to_path_buf(), plain.clone(), identities.cloned());
            blocking(move || stored::decode_file(&from, &to, form, identities.as_ref())).await
        };
        let record = match decoded {
            Ok(()) => drill::run(settings, &plain, manifest, scratch, stop).await,
            Err(reason) => drill::failed(format!("decoding {}: {reason}", stored.display())),
        };
        let _ = tokio::fs::remove_file(&plain).await;
        record
    }
}
