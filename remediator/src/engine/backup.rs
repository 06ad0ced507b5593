//! `etcdmedic-remediator backup`: one verified snapshot of a cluster now, proven by a restore
//! drill, written to each of its backup destinations with a manifest beside it, under the
//! same per-cluster lock as a run, so a backup and a remediation never overlap. Older backups
//! beyond the retention are removed only once the new one is verified in that destination.

use std::path::Path;
use std::time::SystemTime;

use etcdmedic_cluster::config::{BackupSettings, ClusterName, Destination, Target};
use etcdmedic_cluster::model::ClusterStatus;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::etcd::Etcd;
use super::Remediator;
use crate::backup::bucket::Bucket;
use crate::backup::{drill, local, BackupError, BackupReport, Landed, Manifest, RecordedHash};
use crate::lock::RunLock;
use crate::plan::member_ref;
use crate::report::MemberRef;
use crate::snapshot;

/// A destination the backup did not reach, and why.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Missed {
    pub destination: String,
    pub reason: String,
}

impl<E: Etcd> Remediator<E> {
    /// Takes a backup to every destination of `backup` (or only `only`).
    pub async fn backup(
        &self,
        backup: &BackupSettings,
        only: Option<&str>,
        stop: &CancellationToken,
    ) -> Result<BackupReport, BackupError> {
        let cluster = self.etcd.cluster().clone();
        let destinations = chosen(backup, only, &cluster)?;
        let lock_dir = snapshot::cluster_dir(&self.settings.snapshot_dir, &cluster);
        snapshot::create_dir(&lock_dir)?;
        let _lock = RunLock::acquire(&lock_dir, &cluster).map_err(BackupError::Locked)?;
        let started = Instant::now();

        let (member, status) = source(&self.etcd.collect().await).ok_or(BackupError::NoMember)?;
        // The snapshot streams into the first local destination asked for; with none, into
        // the cluster's snapshot directory, and that copy goes once every upload is done.
        let streamed_into = destinations.iter().find_map(|d| match &d.target {
            Target::Local { path } => Some(snapshot::cluster_dir(path, &cluster)),
            Target::S3(_) => None,
        });
        let staged = streamed_into.is_none();
        let stream_dir = streamed_into.unwrap_or_else(|| lock_dir.clone());
        snapshot::create_dir(&stream_dir)?;
        snapshot::remove_leftover_parts(&stream_dir, &cluster);
        let created_at = SystemTime::now();
        let name = snapshot::file_name(&cluster, created_at, status.revision);
        let stream = self
            .etcd
            .snapshot(&member.endpoint)
            .await
            .map_err(|err| BackupError::Snapshot(format!("streaming from {member}: {err}")))?;
        let progress = |received: u64, remaining: u64| {
            tracing::info!(%cluster, received, remaining, "backup: streaming the snapshot");
        };
        let saved = snapshot::save(
            stream,
            &stream_dir,
            &name,
            self.settings.snapshot_timeout,
            stop,
            progress,
        )
        .await?;
        let hash_kv = match self.etcd.hash_kv(&member.endpoint, status.revision).await {
            Ok(answer) => Some(RecordedHash {
                revision: status.revision,
                hash: answer.hash,
                compact_revision: answer.compact_revision,
            }),
            Err(err) => {
                tracing::warn!(%cluster, revision = status.revision, error = %err, "no HashKV recorded with the backup");
                None
            }
        };
        let mut manifest = Manifest {
            cluster: cluster.to_string(),
            member,
            revision: status.revision,
            etcd_version: status.version.clone(),
            size_bytes: saved.size_bytes,
            sha256: saved.sha256,
            file: name.clone(),
            created_at,
            etcdmedic_version: etcdmedic_cluster::build_info::VERSION.to_string(),
            hash_kv,
            restore_drill: None,
        };
        if let Some(settings) = &backup.restore_drill {
            let record = drill::run(settings, &saved.path, &manifest, &lock_dir, stop).await;
            let failed = (!record.passed).then(|| record.reason.clone().unwrap_or_default());
            manifest.restore_drill = Some(record);
            if let Some(reason) = failed {
                // Not a backup: nothing that failed its drill is kept or uploaded.
                let _ = tokio::fs::remove_file(&saved.path).await;
                return Err(BackupError::Drill(reason));
            }
        }
        let mut landed = Vec::new();
        let mut missed = Vec::new();
        for destination in destinations {
            if stop.is_cancelled() {
                return Err(BackupError::Stopped);
            }
            match land(destination, &saved.path, &cluster, &manifest, backup, stop).await {
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
        if staged {
            let _ = tokio::fs::remove_file(&saved.path).await;
        }
        Ok(BackupReport {
            manifest,
            destinations: landed,
            missed,
            duration: started.elapsed(),
        })
    }
}

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

/// Puts the verified snapshot at `db` into `destination` with its manifest, then applies the
/// retention there.
async fn land(
    destination: &Destination,
    db: &Path,
    cluster: &ClusterName,
    manifest: &Manifest,
    backup: &BackupSettings,
    stop: &CancellationToken,
) -> Result<Landed, BackupError> {
    let name = destination.name.to_string();
    match &destination.target {
        Target::Local { path } => {
            let dir = snapshot::cluster_dir(path, cluster);
            let db = if db.parent() == Some(dir.as_path()) {
                db.to_path_buf()
            } else {
                local::copy_verified(db, &dir, manifest).await?
            };
            let removed = local::finish(&db, manifest, backup).await?;
            Ok(Landed {
                destination: name,
                kind: "local".into(),
                location: db.display().to_string(),
                verified_by: "trailer".into(),
                removed,
            })
        }
        Target::S3(target) => {
            let bucket = Bucket::open(&name, target, cluster)?;
            bucket.upload(db, manifest, stop).await?;
            let removed = bucket.retention(backup).await?;
            Ok(Landed {
                destination: name,
                kind: "s3".into(),
                location: bucket.url(&manifest.file),
                verified_by: "read_back".into(),
                removed,
            })
        }
    }
}

fn chosen<'a>(
    backup: &'a BackupSettings,
    only: Option<&str>,
    cluster: &str,
) -> Result<Vec<&'a Destination>, BackupError> {
    if backup.destinations.is_empty() {
        return Err(BackupError::NoDestination(cluster.to_string()));
    }
    match only {
        None => Ok(backup.destinations.iter().collect()),
        Some(name) => backup
            .destinations
            .iter()
            .find(|d| d.name.as_str() == name)
            .map(|d| vec![d])
            .ok_or_else(|| BackupError::UnknownDestination {
                name: name.to_string(),
                known: backup
                    .destinations
                    .iter()
                    .map(|d| d.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
    }
}

/// The most caught-up voting follower, so the leader keeps its disk for clients; the leader
/// when no follower answered.
fn source(status: &ClusterStatus) -> Option<(MemberRef, etcdmedic_cluster::model::EndpointStatus)> {
    let voting = status
        .members
        .iter()
        .filter_map(|m| m.reachable().filter(|s| !s.is_learner).map(|s| (m, s)));
    let best = voting
        .clone()
        .filter(|(_, s)| !s.is_leader())
        .max_by_key(|(_, s)| s.raft_applied_index)
        .or_else(|| voting.clone().find(|(_, s)| s.is_leader()))?;
    Some((member_ref(best.0), best.1.clone()))
}
