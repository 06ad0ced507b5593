//! Where a backup goes once its snapshot is saved and checked: the restore drill proves it,
//! then it lands in every destination (the object already uploaded beside the stream is
//! recorded instead of uploaded again), each destination's retention applied once the new
//! copy is verified there.

use std::path::Path;

use crate::config::{BackupSettings, Destination, Target};
use etcdmedic_cluster::config::ClusterName;
use tokio_util::sync::CancellationToken;

use super::cluster::{BackupCluster, Backups};
use super::Missed;
use crate::backup::bucket::{Bucket, StreamError, Streamed};
use crate::backup::sealing::Sealing;
use crate::backup::{drill, local, BackupError, Landed, Manifest};
use crate::snapshot;

impl<C: BackupCluster> Backups<'_, C> {
    /// Proves the verified snapshot `db` by its restore drill (when drills are on), then puts
    /// it with its manifest in every destination. Called with the cluster's lock held.
    pub(crate) async fn prove_and_land(
        &self,
        backup: &BackupSettings,
        destinations: &[&Destination],
        db: &Path,
        mut manifest: Manifest,
        sealing: &Sealing,
        stop: &CancellationToken,
    ) -> Result<(Manifest, Vec<Landed>, Vec<Missed>), BackupError> {
        self.prove(backup, db, &mut manifest, sealing, stop).await?;
        self.land_all(backup, destinations, db, manifest, (sealing, None), stop)
            .await
    }

    /// The restore drill of `db` (when drills are on), its record put in the manifest; `Err`
    /// when it failed: then the snapshot is not a backup. An encrypted backup with no
    /// identity to decrypt its copies is recorded as not drilled, never as passed: drilling
    /// the database here would prove nothing about the copies a restore will have to open.
    pub(crate) async fn prove(
        &self,
        backup: &BackupSettings,
        db: &Path,
        manifest: &mut Manifest,
        sealing: &Sealing,
        stop: &CancellationToken,
    ) -> Result<(), BackupError> {
        let Some(settings) = &backup.restore_drill else {
            return Ok(());
        };
        if sealing.form.encrypted && sealing.identities.is_none() {
            manifest.restore_drill = Some(drill::not_drilled_no_identity());
            return Ok(());
        }
        let scratch = snapshot::cluster_dir(&self.settings.snapshot_dir, self.cluster.cluster());
        let record = drill::run(settings, db, manifest, &scratch, stop).await;
        let failed = (!record.passed).then(|| record.reason.clone().unwrap_or_default());
        manifest.restore_drill = Some(record);
        match failed {
            Some(reason) => Err(BackupError::Drill(reason)),
            None => Ok(()),
        }
    }

    /// Puts the proven snapshot `db` with its manifest in every destination in the form
    /// `sealing` writes (recording the object `streamed` uploaded beside the stream where it
    /// went); the destinations it could not reach are reported, not fatal.
    pub(crate) async fn land_all(
        &self,
        backup: &BackupSettings,
        destinations: &[&Destination],
        db: &Path,
        manifest: Manifest,
        (sealing, streamed): (&Sealing, Option<(String, Streamed)>),
        stop: &CancellationToken,
    ) -> Result<(Manifest, Vec<Landed>, Vec<Missed>), BackupError> {
        let cluster = self.cluster.cluster().clone();
        let mut landed = Vec::new();
        let mut missed = Vec::new();
        for destination in destinations {
            if stop.is_cancelled() {
                return Err(BackupError::Stopped);
            }
            let already = streamed
                .as_ref()
                .filter(|(name, _)| name == destination.name.as_str())
                .map(|(_, streamed)| streamed);
            let recorded = match already {
                Some(streamed) => {
                    match record_streamed(destination, streamed, &manifest, backup, stop).await {
                        Ok(done) => Some(done),
                        Err(reason) => {
                            tracing::warn!(%cluster, destination = %destination.name, %reason, "backup: the object uploaded beside the stream did not check out; uploading the saved file");
                            None
                        }
                    }
                }
                None => None,
            };
            let result = match recorded {
                Some(done) => Ok(done),
                None => {
                    let settings = (backup, sealing);
                    land(destination, db, &cluster, &manifest, settings, stop).await
                }
            };
            match result {
                Ok(done) => landed.push(done),
                Err(BackupError::Stopped) => return Err(BackupError::Stopped),
                Err(err) => {
                    tracing::error!(%cluster, destination = %destination.name, error = %err, "backup: a destination failed");
                    missed.push(Missed {
                        destination: destination.name.to_string(),
                        reason: err.to_string(),
                    });
                }
            }
        }
        Ok((manifest, landed, missed))
    }
}

/// Records the object uploaded while the snapshot streamed, then applies the retention.
async fn record_streamed(
    destination: &Destination,
    streamed: &Streamed,
    manifest: &Manifest,
    backup: &BackupSettings,
    stop: &CancellationToken,
) -> Result<Landed, StreamError> {
    let verified_by = streamed.record(manifest, stop).await?;
    let bucket = streamed.bucket();
    Ok(landed_in_bucket(bucket, destination, manifest, backup, verified_by, true).await?)
}

/// A copy of `manifest`'s backup in `bucket`, verified by `verified_by` (and `streamed` there
/// or uploaded from a file): its stored size read back and the destination's retention
/// applied.
async fn landed_in_bucket(
    bucket: &Bucket,
    destination: &Destination,
    manifest: &Manifest,
    backup: &BackupSettings,
    verified_by: &str,
    streamed: bool,
) -> Result<Landed, BackupError> {
    let stored_bytes = bucket.stored_size(&manifest.file).await?;
    let removed = bucket.retention(backup.kept_in(destination)).await?;
    Ok(Landed {
        destination: destination.name.to_string(),
        kind: destination.kind().into(),
        location: bucket.url(&manifest.file),
        verified_by: verified_by.into(),
        streamed,
        stored_bytes,
        removed,
    })
}

/// Puts the verified snapshot at `db` into `destination` with its manifest, then applies the
/// retention there.
async fn land(
    destination: &Destination,
    db: &Path,
    cluster: &ClusterName,
    manifest: &Manifest,
    (backup, sealing): (&BackupSettings, &Sealing),
    stop: &CancellationToken,
) -> Result<Landed, BackupError> {
    let name = destination.name.to_string();
    match &destination.target {
        Target::Local { path } => {
            let dir = snapshot::cluster_dir(path, cluster);
            let (db, verified_by) = if db.parent() == Some(dir.as_path()) {
                (db.to_path_buf(), "trailer")
            } else {
                local::copy_verified(db, &dir, manifest, sealing).await?
            };
            let removed = local::finish(&db, manifest, backup.kept_in(destination)).await?;
            let stored_bytes = std::fs::metadata(&db)
                .map_err(|source| BackupError::Write {
                    path: db.clone(),
                    source,
                })?
                .len();
            Ok(Landed {
                destination: name,
                kind: "local".into(),
                location: db.display().to_string(),
                verified_by: verified_by.into(),
                streamed: false,
                stored_bytes,
                removed,
            })
        }
        Target::S3(_) | Target::Gcs(_) | Target::Azure(_) => {
            let bucket = Bucket::open(destination, cluster)?;
            let verified_by = bucket.upload(db, manifest, sealing, stop).await?;
            landed_in_bucket(&bucket, destination, manifest, backup, verified_by, false).await
        }
    }
}
