//! `etcdmedic-remediator backup`: one verified snapshot of a cluster now, written to each of
//! its backup destinations with a manifest beside it (what a restore needs to know), under the
//! same per-cluster lock as a run, so a backup and a remediation never overlap. Older backups
//! beyond the retention are removed only once the new one is verified in that destination.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use etcdmedic_cluster::config::{BackupSettings, Destination};
use etcdmedic_cluster::model::ClusterStatus;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::etcd::Etcd;
use super::Remediator;
use crate::lock::RunLock;
use crate::plan::member_ref;
use crate::report::{timestamp, MemberRef};
use crate::snapshot::{self, SnapshotError};

/// What a backup holds, written beside it as `<snapshot name minus .db>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub cluster: String,
    /// The member the snapshot was streamed from.
    pub member: MemberRef,
    /// The member's revision just before the snapshot began.
    pub revision: i64,
    pub etcd_version: String,
    pub size_bytes: u64,
    /// sha256 of the database (etcd's trailer, checked while streaming).
    pub sha256: String,
    pub file: String,
    #[serde(with = "timestamp")]
    pub created_at: SystemTime,
    pub etcdmedic_version: String,
    /// The source member's HashKV at `revision`, taken right after the snapshot: what a
    /// member restored from this backup must answer for the same revision. Absent when the
    /// member could not compute it (the revision compacted meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_kv: Option<RecordedHash>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedHash {
    pub revision: i64,
    pub hash: u32,
    pub compact_revision: i64,
}

/// One backup: its manifest and where it landed.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub manifest: Manifest,
    pub destinations: Vec<Landed>,
    #[serde(with = "crate::report::seconds")]
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Landed {
    pub destination: String,
    pub path: PathBuf,
    /// Older backups the retention removed there.
    pub removed: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no backup destination is configured for cluster {0} (backup.destinations)")]
    NoDestination(String),
    #[error("unknown destination {name:?}; configured: {known}")]
    UnknownDestination { name: String, known: String },
    #[error("cannot take the cluster's lock (a run or a backup holds it): {0}")]
    Locked(String),
    #[error("no voting member answered Status; nothing to take a snapshot from")]
    NoMember,
    #[error("the snapshot failed: {0}")]
    Snapshot(String),
    #[error("{path}: {source}", path = .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped on request; nothing partial was left")]
    Stopped,
}

impl From<SnapshotError> for BackupError {
    fn from(err: SnapshotError) -> Self {
        match err {
            SnapshotError::Stopped => BackupError::Stopped,
            err => BackupError::Snapshot(err.to_string()),
        }
    }
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
        let (first, others) = destinations
            .split_first()
            .ok_or_else(|| BackupError::NoDestination(cluster.to_string()))?;
        let first_dir = snapshot::cluster_dir(&first.path, &cluster);
        snapshot::create_dir(&first_dir)?;
        snapshot::remove_leftover_parts(&first_dir, &cluster);
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
            &first_dir,
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
        let manifest = Manifest {
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
        };
        let mut landed = vec![finish(first, &saved.path, &manifest, backup).await?];
        for destination in others {
            if stop.is_cancelled() {
                return Err(BackupError::Stopped);
            }
            let path = copy_verified(&saved.path, destination, &cluster, &manifest).await?;
            landed.push(finish(destination, &path, &manifest, backup).await?);
        }
        Ok(BackupReport {
            manifest,
            destinations: landed,
            duration: started.elapsed(),
        })
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

/// Writes the manifest beside the verified snapshot at `path`, then applies the retention.
async fn finish(
    destination: &Destination,
    path: &Path,
    manifest: &Manifest,
    backup: &BackupSettings,
) -> Result<Landed, BackupError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let manifest_path = path.with_extension("json");
    let write_error = |source| BackupError::Write {
        path: manifest_path.clone(),
        source,
    };
    let json = serde_json::to_vec_pretty(manifest).map_err(|err| write_error(err.into()))?;
    let part = manifest_path.with_extension("json.part");
    tokio::fs::write(&part, json).await.map_err(write_error)?;
    sync_file(&part).await.map_err(write_error)?;
    tokio::fs::rename(&part, &manifest_path)
        .await
        .map_err(write_error)?;
    snapshot::sync_dir(dir).await.map_err(write_error)?;
    let removed =
        retention(dir, &manifest.cluster, backup, SystemTime::now()).map_err(|source| {
            BackupError::Write {
                path: dir.to_path_buf(),
                source,
            }
        })?;
    Ok(Landed {
        destination: destination.name.to_string(),
        path: path.to_path_buf(),
        removed,
    })
}

/// Copies the verified snapshot into another destination and checks the copy against etcd's
/// trailer again before it counts.
async fn copy_verified(
    from: &Path,
    destination: &Destination,
    cluster: &etcdmedic_cluster::config::ClusterName,
    manifest: &Manifest,
) -> Result<PathBuf, BackupError> {
    let dir = snapshot::cluster_dir(&destination.path, cluster);
    snapshot::create_dir(&dir)?;
    let path = dir.join(&manifest.file);
    let part = dir.join(format!("{}.part", manifest.file));
    let write_error = |source| BackupError::Write {
        path: part.clone(),
        source,
    };
    let copied = async {
        tokio::fs::copy(from, &part).await.map_err(write_error)?;
        sync_file(&part).await.map_err(write_error)?;
        let sha256 = snapshot::verify_file(&part).await?;
        if sha256 != manifest.sha256 {
            return Err(BackupError::Snapshot(format!(
                "the copy in {} has sha256 {sha256}, not {}",
                part.display(),
                manifest.sha256
            )));
        }
        Ok(())
    }
    .await;
    if let Err(err) = copied {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(err);
    }
    tokio::fs::rename(&part, &path).await.map_err(write_error)?;
    snapshot::sync_dir(&dir).await.map_err(write_error)?;
    Ok(path)
}

async fn sync_file(path: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(path).await?.sync_all().await
}

/// Removes backups beyond the newest `keep`, and those older than `max_age` except the
/// newest, each with its manifest. Only backups with a manifest count: a snapshot a run left
/// in the same directory is not a backup.
fn retention(
    dir: &Path,
    cluster: &str,
    backup: &BackupSettings,
    now: SystemTime,
) -> std::io::Result<Vec<PathBuf>> {
    let backups: Vec<PathBuf> = snapshot::snapshots_of(dir, cluster)?
        .into_iter()
        .filter(|path| path.with_extension("json").exists())
        .collect();
    let newest_first = backups.iter().rev().enumerate();
    let mut removed = Vec::new();
    for (index, path) in newest_first {
        let too_many = index >= backup.keep;
        let too_old = index > 0
            && backup.max_age.is_some_and(|max_age| {
                std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|modified| {
                        now.duration_since(modified).unwrap_or_default() > max_age
                    })
            });
        if too_many || too_old {
            std::fs::remove_file(path)?;
            std::fs::remove_file(path.with_extension("json"))?;
            removed.push(path.clone());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_settings(keep: usize, max_age: Option<Duration>) -> BackupSettings {
        BackupSettings {
            destinations: vec![],
            keep,
            max_age,
        }
    }

    /// A backup (snapshot and manifest) written `age` before `now`; `manifest: false` for a
    /// snapshot a run left, which is not a backup.
    fn write(dir: &Path, name: &str, age: Duration, now: SystemTime, manifest: bool) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"db").unwrap();
        if manifest {
            std::fs::write(path.with_extension("json"), b"{}").unwrap();
        }
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(now - age).unwrap();
        path
    }

    #[test]
    fn retention_keeps_the_newest_and_never_removes_the_last_or_a_run_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let names = [
            "prod-20261101T000000.000Z-rev1.db",
            "prod-20261110T000000.000Z-rev2.db",
            "prod-20261120T000000.000Z-rev3.db",
            "prod-20261128T000000.000Z-rev4.db",
        ];
        let ages = [28, 19, 9, 1];
        let paths: Vec<PathBuf> = names
            .iter()
            .zip(ages)
            .map(|(name, age)| write(dir.path(), name, day * age, now, true))
            .collect();
        let run_snapshot = write(
            dir.path(),
            "prod-20261001T000000.000Z-rev0.db",
            day * 60,
            now,
            false,
        );

        let removed = retention(dir.path(), "prod", &backup_settings(3, None), now).unwrap();
        assert_eq!(removed, vec![paths[0].clone()]);
        assert!(!paths[0].with_extension("json").exists());
        assert!(
            run_snapshot.exists(),
            "a snapshot without a manifest is not a backup"
        );

        let removed =
            retention(dir.path(), "prod", &backup_settings(3, Some(day * 10)), now).unwrap();
        assert_eq!(removed, vec![paths[1].clone()], "older than 10 days");

        let removed =
            retention(dir.path(), "prod", &backup_settings(5, Some(day / 2)), now).unwrap();
        assert_eq!(
            removed,
            vec![paths[2].clone()],
            "all too old, but the newest stays"
        );
        assert!(paths[3].exists());
    }
}
