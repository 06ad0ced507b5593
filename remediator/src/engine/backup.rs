//! `etcdmedic-remediator backup`: one verified snapshot of a cluster now, proven by a restore
//! drill, written to each of its backup destinations with a manifest beside it, under the
//! same per-cluster lock as a run, so a backup and a remediation never overlap. Older backups
//! beyond the retention are removed only once the new one is verified in that destination.

use std::path::Path;
use std::time::SystemTime;

use etcdmedic_cluster::config::{BackupSettings, ClusterName, Compression, Destination, Target};
use etcdmedic_cluster::model::ClusterStatus;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::etcd::Etcd;
use super::Remediator;
use crate::backup::bucket::{Bucket, Streamed};
use crate::backup::{drill, local, BackupError, BackupReport, Landed, Manifest, RecordedHash};
use crate::lock::RunLock;
use crate::plan::member_ref;
use crate::report::MemberRef;
use crate::snapshot;

/// A destination the backup did not reach, and why.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
        // The snapshot streams into the first local destination asked for; with none (or
        // when the copies are compressed), into the cluster's snapshot directory, and that
        // copy goes once every copy is made.
        let compressed = backup.compression == Compression::Zstd;
        let streamed_into = destinations
            .iter()
            .filter(|_| !compressed)
            .find_map(|d| d.local_path())
            .map(|path| snapshot::cluster_dir(path, &cluster));
        let staged = streamed_into.is_none();
        let stream_dir = streamed_into.unwrap_or_else(|| lock_dir.clone());
        snapshot::create_dir(&stream_dir)?;
        snapshot::remove_leftover_parts(&stream_dir, &cluster);
        let created_at = SystemTime::now();
        let name = snapshot::file_name(&cluster, created_at, status.revision);
        let stored_name = stored_name(&name, compressed);
        let stream = self
            .etcd
            .snapshot(&member.endpoint)
            .await
            .map_err(|err| BackupError::Snapshot(format!("streaming from {member}: {err}")))?;
        let progress = |received: u64, remaining: u64| {
            tracing::info!(%cluster, received, remaining, "backup: streaming the snapshot");
        };
        // The first bucket asked for receives the snapshot as it arrives, rather than once it
        // is saved; it counts only after the same checks as any other copy.
        let (tee, receiving) = match streaming_destination(&destinations, &cluster) {
            Some((destination, bucket)) => {
                let (sender, chunks) = tokio::sync::mpsc::channel(TEE_CHUNKS);
                let upload = tokio::spawn(bucket.receive(
                    chunks,
                    stored_name.clone(),
                    compressed,
                    stop.clone(),
                ));
                (Some(sender), Some((destination, upload)))
            }
            None => (None, None),
        };
        let saved = snapshot::save_teed(
            stream,
            &stream_dir,
            &name,
            self.settings.snapshot_timeout,
            stop,
            progress,
            tee,
        )
        .await;
        let streamed = match receiving {
            Some((destination, upload)) => match upload.await {
                Ok(Ok(streamed)) => Some((destination, streamed)),
                Ok(Err(reason)) => {
                    tracing::warn!(%cluster, %destination, %reason, "backup: the upload beside the stream failed; uploading the saved file instead");
                    None
                }
                Err(err) => {
                    tracing::warn!(%cluster, %destination, error = %err, "backup: the upload beside the stream ended; uploading the saved file instead");
                    None
                }
            },
            None => None,
        };
        let saved = match saved {
            Ok(saved) => saved,
            Err(err) => {
                if let Some((_, streamed)) = &streamed {
                    streamed.discard().await;
                }
                return Err(err.into());
            }
        };
        let manifest = Manifest {
            cluster: cluster.to_string(),
            hash_kv: self.recorded_hash(&member, status.revision).await,
            member,
            revision: status.revision,
            etcd_version: status.version.clone(),
            size_bytes: saved.size_bytes,
            sha256: saved.sha256,
            file: stored_name,
            compression: compressed.then(|| "zstd".to_string()),
            created_at,
            etcdmedic_version: etcdmedic_cluster::build_info::VERSION.to_string(),
            restore_drill: None,
        };
        let landing = self
            .prove_and_land(backup, &destinations, &saved.path, manifest, streamed, stop)
            .await;
        if staged || matches!(landing, Err(BackupError::Drill(_))) {
            // Staged: every copy is made. Failed its drill: not a backup, kept nowhere.
            let _ = tokio::fs::remove_file(&saved.path).await;
        }
        let (manifest, landed, missed) = landing?;
        Ok(BackupReport {
            manifest,
            destinations: landed,
            missed,
            duration: started.elapsed(),
        })
    }

    /// The member's HashKV at `revision`: what a member restored from a snapshot at that
    /// revision must answer. `None` when it cannot say (the revision compacted meanwhile).
    pub(super) async fn recorded_hash(
        &self,
        member: &MemberRef,
        revision: i64,
    ) -> Option<RecordedHash> {
        match self.etcd.hash_kv(&member.endpoint, revision).await {
            Ok(answer) => Some(RecordedHash {
                revision,
                hash: answer.hash,
                compact_revision: answer.compact_revision,
            }),
            Err(err) => {
                tracing::warn!(cluster = %self.etcd.cluster(), revision, error = %err, "no HashKV recorded with the backup");
                None
            }
        }
    }

    /// Proves the verified snapshot `db` by its restore drill (when drills are on), then puts
    /// it with its manifest in every destination; the destinations it could not reach are
    /// reported, not fatal. Called with the cluster's lock held.
    pub(super) async fn prove_and_land(
        &self,
        backup: &BackupSettings,
        destinations: &[&Destination],
        db: &Path,
        mut manifest: Manifest,
        streamed: Option<(String, Streamed)>,
        stop: &CancellationToken,
    ) -> Result<(Manifest, Vec<Landed>, Vec<Missed>), BackupError> {
        let cluster = self.etcd.cluster().clone();
        if let Some(settings) = &backup.restore_drill {
            let scratch = snapshot::cluster_dir(&self.settings.snapshot_dir, &cluster);
            let record = drill::run(settings, db, &manifest, &scratch, stop).await;
            let failed = (!record.passed).then(|| record.reason.clone().unwrap_or_default());
            manifest.restore_drill = Some(record);
            if let Some(reason) = failed {
                if let Some((_, streamed)) = &streamed {
                    streamed.discard().await;
                }
                return Err(BackupError::Drill(reason));
            }
        }
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
            let result = match already {
                Some(streamed) => {
                    match record_streamed(destination, streamed, &manifest, backup, stop).await {
                        Ok(done) => Ok(done),
                        Err(reason) => {
                            tracing::warn!(%cluster, destination = %destination.name, %reason, "backup: the object uploaded beside the stream did not check out; uploading the saved file");
                            land(destination, db, &cluster, &manifest, backup, stop).await
                        }
                    }
                }
                None => land(destination, db, &cluster, &manifest, backup, stop).await,
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

/// The name of a stored copy of the snapshot `name`.
pub(super) fn stored_name(name: &str, compressed: bool) -> String {
    match compressed {
        true => format!("{name}{}", snapshot::ZSTD_SUFFIX),
        false => name.to_string(),
    }
}

/// Chunks of the snapshot (32 KiB each from etcd) on their way to the bucket at once.
const TEE_CHUNKS: usize = 64;

/// The first bucket among `destinations`, opened; `None` when there is none or it cannot be
/// opened (its landing then reports why).
fn streaming_destination(
    destinations: &[&Destination],
    cluster: &ClusterName,
) -> Option<(String, Bucket)> {
    destinations
        .iter()
        .filter(|d| d.local_path().is_none())
        .find_map(|d| {
            Bucket::open(d, cluster)
                .ok()
                .map(|bucket| (d.name.to_string(), bucket))
        })
}

/// Records the object uploaded while the snapshot streamed, then applies the retention.
async fn record_streamed(
    destination: &Destination,
    streamed: &Streamed,
    manifest: &Manifest,
    backup: &BackupSettings,
    stop: &CancellationToken,
) -> Result<Landed, String> {
    let verified_by = streamed.record(manifest, stop).await?;
    let bucket = streamed.bucket();
    let removed = bucket.retention(backup).await.map_err(|e| e.to_string())?;
    Ok(Landed {
        destination: destination.name.to_string(),
        kind: destination.kind().into(),
        location: bucket.url(&manifest.file),
        verified_by: verified_by.into(),
        streamed: true,
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
                streamed: false,
                removed,
            })
        }
        Target::S3(_) | Target::Gcs(_) | Target::Azure(_) => {
            let bucket = Bucket::open(destination, cluster)?;
            let verified_by = bucket.upload(db, manifest, stop).await?;
            let removed = bucket.retention(backup).await?;
            Ok(Landed {
                destination: name,
                kind: destination.kind().into(),
                location: bucket.url(&manifest.file),
                verified_by: verified_by.into(),
                streamed: false,
                removed,
            })
        }
    }
}

pub(super) fn chosen<'a>(
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
