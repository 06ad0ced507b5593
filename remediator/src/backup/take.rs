//! `etcdmedic-remediator backup`: one verified snapshot of a cluster now, proven by a restore
//! drill, written to each of its backup destinations with a manifest beside it, under the
//! same per-cluster lock as a run, so a backup and a remediation never overlap. Older backups
//! beyond the retention are removed only once the new one is verified in that destination.

use std::time::SystemTime;

use crate::config::{BackupSettings, Destination};
use etcdmedic_cluster::config::ClusterName;
use etcdmedic_cluster::model::ClusterStatus;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cluster::{BackupCluster, Backups};
use crate::backup::bucket::{Bucket, StreamError, Streamed};
use crate::backup::sealing::Sealing;
use crate::backup::{BackupError, BackupReport, Manifest, RecordedHash};
use crate::lock::RunLock;
use crate::snapshot;
use crate::vocabulary::MemberRef;

impl<C: BackupCluster> Backups<'_, C> {
    /// The cluster's snapshot directory, created, with the cluster's run lock held on it and
    /// what an interrupted backup or drill left there removed: what backups and drills work
    /// under.
    pub(crate) fn lock_for_backups(&self) -> Result<(std::path::PathBuf, RunLock), BackupError> {
        let cluster = self.cluster.cluster();
        let dir = snapshot::cluster_dir(&self.settings.snapshot_dir, cluster);
        snapshot::create_dir(&dir)?;
        let lock =
            RunLock::acquire(&dir, cluster).map_err(|err| BackupError::Locked(err.to_string()))?;
        for leftover in snapshot::remove_leftover_parts(&dir, cluster) {
            tracing::warn!(
                path = %leftover.display(),
                "removed what an interrupted backup or drill left"
            );
        }
        Ok((dir, lock))
    }

    /// Takes a backup to every destination of `backup` (or only `only`).
    pub(crate) async fn backup(
        &self,
        backup: &BackupSettings,
        only: Option<&str>,
        stop: &CancellationToken,
    ) -> Result<BackupReport, BackupError> {
        let cluster = self.cluster.cluster().clone();
        let destinations = chosen(backup, only, &cluster)?;
        let sealing = Sealing::of(backup)?;
        let (lock_dir, _lock) = self.lock_for_backups()?;
        let started = Instant::now();

        let collected = self.cluster.collect().await;
        let (member, status) = source(&collected).ok_or(BackupError::NoMember)?;
        // The snapshot streams into the first local destination asked for; with none (or
        // when the copies are compressed or encrypted), into the cluster's snapshot
        // directory, and that copy goes once every copy is made.
        let streamed_into = destinations
            .iter()
            .filter(|_| sealing.form.is_plain())
            .find_map(|d| d.local_path())
            .map(|path| snapshot::cluster_dir(path, &cluster));
        let staged = streamed_into.is_none();
        let stream_dir = streamed_into.unwrap_or_else(|| lock_dir.clone());
        snapshot::create_dir(&stream_dir)?;
        if !staged {
            // The snapshot directory was swept when it was locked; a destination's is not.
            snapshot::remove_leftover_parts(&stream_dir, &cluster);
        }
        let created_at = SystemTime::now();
        let name = snapshot::file_name(&cluster, created_at, status.revision);
        let stored_name = sealing.form.stored_name(&name);
        let stream = self
            .cluster
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
                    sealing.clone(),
                    stop.clone(),
                ));
                (Some(sender), Some((destination, upload)))
            }
            None => (None, None),
        };
        // The member hashes its keyspace at the revision while it streams the snapshot: the
        // recorded HashKV costs the backup no time of its own.
        let (saved, hash_kv) = tokio::join!(
            snapshot::save_teed(
                stream,
                &stream_dir,
                &name,
                self.settings.snapshot_timeout,
                stop,
                progress,
                tee,
            ),
            self.recorded_hash(&member, status.revision)
        );
        let saved = match saved {
            Ok(saved) => saved,
            Err(err) => {
                if let Some((_, streamed)) = finish_upload(receiving, &cluster).await {
                    streamed.discard().await;
                }
                return Err(err.into());
            }
        };
        tracing::info!(%cluster, size_bytes = saved.size_bytes, seconds = started.elapsed().as_secs_f64(), "backup: snapshot received and checked");
        let mut manifest = Manifest {
            cluster: cluster.to_string(),
            hash_kv,
            member,
            revision: status.revision,
            etcd_version: status.version.clone(),
            size_bytes: saved.size_bytes,
            sha256: saved.sha256,
            file: stored_name,
            compression: None,
            encryption: None,
            created_at,
            etcdmedic_version: etcdmedic_cluster::build_info::VERSION.to_string(),
            restore_drill: None,
            cluster_id: crate::backup::cluster_id(&collected),
            members: crate::backup::Topology::of(&collected),
        };
        sealing.record(&mut manifest);
        // The drill runs on the saved file while the bucket completes the upload.
        let (streamed, proven) = tokio::join!(
            finish_upload(receiving, &cluster),
            self.prove(backup, &saved.path, &mut manifest, &sealing, stop)
        );
        let landing = match proven {
            Ok(()) => {
                self.land_all(
                    backup,
                    &destinations,
                    &saved.path,
                    manifest,
                    (&sealing, streamed),
                    stop,
                )
                .await
            }
            Err(err) => {
                if let Some((_, streamed)) = &streamed {
                    streamed.discard().await;
                }
                Err(err)
            }
        };
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
    pub(crate) async fn recorded_hash(
        &self,
        member: &MemberRef,
        revision: i64,
    ) -> Option<RecordedHash> {
        match self.cluster.hash_kv(&member.endpoint, revision).await {
            Ok(answer) => Some(RecordedHash {
                revision,
                hash: answer.hash,
                compact_revision: answer.compact_revision,
            }),
            Err(err) => {
                tracing::warn!(cluster = %self.cluster.cluster(), revision, error = %err, "no HashKV recorded with the backup");
                None
            }
        }
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

/// Waits for the upload beside the stream to complete: the object, not yet counted, or
/// `None` when there was none or it failed (the saved file is uploaded instead).
async fn finish_upload(
    receiving: Option<(
        String,
        tokio::task::JoinHandle<Result<Streamed, StreamError>>,
    )>,
    cluster: &ClusterName,
) -> Option<(String, Streamed)> {
    let (destination, upload) = receiving?;
    match upload.await {
        Ok(Ok(streamed)) => Some((destination, streamed)),
        Ok(Err(reason)) => {
            tracing::warn!(%cluster, %destination, %reason, "backup: the upload beside the stream failed; uploading the saved file instead");
            None
        }
        Err(err) => {
            tracing::warn!(%cluster, %destination, error = %err, "backup: the upload beside the stream ended; uploading the saved file instead");
            None
        }
    }
}

pub(crate) fn chosen<'a>(
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
    Some((MemberRef::of(best.0), best.1.clone()))
}
