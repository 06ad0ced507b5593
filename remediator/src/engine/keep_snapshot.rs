//! A run's snapshot and backups, both ways. Under NOSPACE writes are refused and the revision
//! is frozen, so a verified backup at the cluster's current revision is exactly the snapshot
//! the run would stream: the run uses it instead, and the outage is shorter by the snapshot.
//! After a run, its snapshot (the state before the defragmentation) is kept as a backup in
//! the backup destinations, proven by a restore drill like any other.

use std::time::SystemTime;

use crate::config::Destination;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::etcd::Etcd;
use super::{Remediator, Run};
use crate::backup::sealing::Sealing;
use crate::backup::{local, BackupError, Manifest, RunBackup};
use crate::lock::RunLock;
use crate::report::{MemberRef, SnapshotReport};
use crate::snapshot;

impl<E: Etcd> Run<'_, E> {
    /// The newest backup in the first local destination, when it is at `revision`, passed
    /// its drill (when drills are on) and is still the file its manifest describes.
    pub(super) async fn reusable_backup(
        &self,
        source: &MemberRef,
        revision: i64,
    ) -> Option<SnapshotReport> {
        let started = Instant::now();
        let cluster = self.etcd.cluster();
        let dir = self
            .backup
            .destinations
            .iter()
            .find_map(|d| d.local_path())
            .map(|path| snapshot::cluster_dir(path, cluster))?;
        let db = local::newest(&dir, cluster)?;
        let manifest = local::read_manifest(&db).await.ok()?;
        let proven = self.backup.restore_drill.is_none()
            || manifest.restore_drill.as_ref().is_some_and(|d| d.passed);
        // A compressed or encrypted copy would have to be decoded first: no shorter than
        // streaming.
        if manifest.cluster != cluster.as_str()
            || manifest.revision != revision
            || !proven
            || !manifest.form().is_plain()
        {
            return None;
        }
        // Read in full and checked when it was taken, and proven by its drill: here only that
        // it is still that file (size and trailer), so the outage does not pay a second read
        // of the whole database.
        if !snapshot::trailer_matches(&db, manifest.size_bytes, &manifest.sha256).await {
            self.warn(format!(
                "backup {} no longer matches its manifest (size or sha256 trailer); streaming a \
                 snapshot instead",
                db.display()
            ));
            return None;
        }
        let sha256 = manifest.sha256.clone();
        Some(SnapshotReport {
            path: db,
            size_bytes: manifest.size_bytes,
            revision,
            sha256,
            from: source.clone(),
            duration: started.elapsed(),
            removed: vec![],
            reused_backup: true,
        })
    }
}

impl<E: Etcd> Remediator<E> {
    /// Keeps the run's snapshot as a backup in every backup destination.
    pub(super) async fn keep_run_snapshot(
        &self,
        taken: &SnapshotReport,
        stop: &CancellationToken,
    ) -> RunBackup {
        let kept = async {
            let cluster = self.etcd.cluster().clone();
            let lock_dir = snapshot::cluster_dir(&self.settings.snapshot_dir, &cluster);
            let _lock = RunLock::acquire(&lock_dir, &cluster)
                .map_err(|err| BackupError::Locked(err.to_string()))?;
            let file = taken
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| BackupError::Snapshot("the run's snapshot has no name".into()))?
                .to_string();
            // One collection gives the manifest the source's version and the topology.
            let collected = self.etcd.collect().await;
            let version = collected
                .members
                .iter()
                .find(|m| m.endpoint == taken.from.endpoint)
                .and_then(|m| m.reachable())
                .map(|status| status.version.clone())
                .unwrap_or_default();
            let created_at = std::fs::metadata(&taken.path)
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| SystemTime::now());
            let sealing = Sealing::of(&self.backup)?;
            let mut manifest = Manifest {
                cluster: cluster.to_string(),
                member: taken.from.clone(),
                revision: taken.revision,
                etcd_version: version,
                size_bytes: taken.size_bytes,
                sha256: taken.sha256.clone(),
                file: sealing.form.stored_name(&file),
                compression: None,
                encryption: None,
                created_at,
                etcdmedic_version: etcdmedic_cluster::build_info::VERSION.to_string(),
                hash_kv: self
                    .backups()
                    .recorded_hash(&taken.from, taken.revision)
                    .await,
                restore_drill: None,
                cluster_id: crate::backup::cluster_id(&collected),
                members: crate::backup::Topology::of(&collected),
            };
            sealing.record(&mut manifest);
            let destinations: Vec<&Destination> = self.backup.destinations.iter().collect();
            self.backups()
                .prove_and_land(
                    &self.backup,
                    &destinations,
                    &taken.path,
                    manifest,
                    &sealing,
                    stop,
                )
                .await
        }
        .await;
        match kept {
            Ok((manifest, destinations, missed)) => RunBackup {
                destinations,
                missed,
                restore_drill: manifest.restore_drill,
                error: None,
            },
            Err(err) => {
                tracing::error!(cluster = %self.etcd.cluster(), error = %err, "the run's snapshot was not kept as a backup");
                RunBackup {
                    destinations: vec![],
                    missed: vec![],
                    restore_drill: None,
                    error: Some(err.to_string()),
                }
            }
        }
    }
}
