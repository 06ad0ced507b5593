//! Steps 2 and 3: room for the snapshot and the cluster's lock (both before anything
//! changes), the optional compaction, and the verified snapshot itself.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::time::Instant;

use etcdmedic_cluster::table::human_bytes;

use super::error::{Refusal, RunError, Stop};
use super::etcd::Etcd;
use super::step::done;
use super::Run;
use crate::lock::RunLock;
use crate::plan::Plan;
use crate::report::{SnapshotReport, StepKind};
use crate::snapshot::{self, RoomError};

/// Room left beside the snapshot on its disk, as a fraction of the snapshot.
const SNAPSHOT_SPACE_MARGIN: f64 = 0.1;

impl<E: Etcd> Run<'_, E> {
    /// The cluster's snapshot directory, once there is room in it for a snapshot of the
    /// source member's database. Creates nothing, so a refusal leaves nothing behind.
    pub(super) async fn room_for_snapshot(&self, plan: &Plan) -> Result<PathBuf, RunError> {
        let dir = snapshot::cluster_dir(&self.settings.snapshot_dir, self.etcd.cluster());
        let source = self
            .etcd
            .member_status(&plan.snapshot_from.endpoint)
            .await
            .map_err(|error| Refusal::StatusFailed {
                member: plan.snapshot_from.clone(),
                error,
            })?;
        let needed = (source.db_size_bytes as f64 * (1.0 + SNAPSHOT_SPACE_MARGIN)) as u64;
        snapshot::check_room(&dir, needed, self.free_space).map_err(|err| match err {
            RoomError::Directory(reason) => Refusal::SnapshotDir(reason),
            RoomError::Space(reason) => Refusal::NoRoom(reason),
        })?;
        Ok(dir)
    }

    /// Creates the directory and takes the cluster's run lock, clearing what a killed run
    /// left behind.
    pub(super) fn lock(&self, dir: &Path) -> Result<RunLock, RunError> {
        snapshot::create_dir(dir).map_err(|err| Refusal::SnapshotDir(err.to_string()))?;
        let lock = RunLock::acquire(dir, self.etcd.cluster())
            .map_err(|err| Refusal::Locked(err.to_string()))?;
        for leftover in snapshot::remove_leftover_parts(dir, self.etcd.cluster()) {
            self.warn(format!(
                "removed {} left by an interrupted run",
                leftover.display()
            ));
        }
        Ok(lock)
    }

    pub(super) async fn compact(&mut self, plan: &Plan) -> Result<(), RunError> {
        self.confirm_still_ours().await?;
        let step = self.begin(StepKind::Compact, Some(plan.leader.clone()));
        let result = async {
            let endpoint = &plan.leader.endpoint;
            let revision = self
                .etcd
                .member_status(endpoint)
                .await
                .map_err(Stop::CompactFailed)?
                .revision;
            self.etcd
                .compact(endpoint, revision)
                .await
                .map_err(Stop::CompactFailed)?;
            Ok(done(revision, format!("compacted to revision {revision}")))
        }
        .await;
        self.report.compacted_at_revision = self.end(step, result).map(Some)?;
        Ok(())
    }

    pub(super) async fn snapshot(&mut self, plan: &Plan, dir: &Path) -> Result<(), RunError> {
        let source = plan.snapshot_from.clone();
        let step = self.begin(StepKind::Snapshot, Some(source.clone()));
        let result = self.save_snapshot(plan, dir).await.map(|report| {
            let reused = match report.reused_backup {
                true => "reused backup (NOSPACE holds the revision) ",
                false => "",
            };
            let detail = format!(
                "{reused}{} at revision {}, {}, sha256 {} verified",
                report.path.display(),
                report.revision,
                human_bytes(report.size_bytes),
                report.sha256,
            );
            done(report, detail)
        });
        self.report.snapshot = Some(self.end(step, result)?);
        Ok(())
    }

    async fn save_snapshot(&self, plan: &Plan, dir: &Path) -> Result<SnapshotReport, RunError> {
        let source = &plan.snapshot_from;
        let failed = |reason: String| RunError::from(Stop::SnapshotFailed(reason));
        let status = self
            .etcd
            .member_status(&source.endpoint)
            .await
            .map_err(|err| failed(format!("{source}: Status: {err}")))?;
        if plan.nospace {
            if let Some(reused) = self.reusable_backup(source, status.revision).await {
                return Ok(reused);
            }
        }
        let name = snapshot::file_name(self.etcd.cluster(), SystemTime::now(), status.revision);
        let stream = self
            .etcd
            .snapshot(&source.endpoint)
            .await
            .map_err(|err| failed(format!("streaming from the member failed: {err}")))?;
        let started = Instant::now();
        let progress = |received: u64, remaining: u64| {
            let detail = format!(
                "{} received, {} to go",
                human_bytes(received),
                human_bytes(remaining)
            );
            self.progress(StepKind::Snapshot, Some(source), started.elapsed(), detail);
        };
        let saved = snapshot::save(
            stream,
            dir,
            &name,
            self.settings.snapshot_timeout,
            self.stop,
            progress,
        )
        .await
        .map_err(|err| match err {
            snapshot::SnapshotError::Stopped => RunError::Interrupted,
            err => failed(err.to_string()),
        })?;
        let removed =
            snapshot::apply_retention(dir, self.etcd.cluster(), self.settings.snapshot_retention)
                .unwrap_or_else(|err| {
                    self.warn(format!("snapshot retention in {}: {err}", dir.display()));
                    vec![]
                });
        Ok(SnapshotReport {
            path: saved.path,
            size_bytes: saved.size_bytes,
            revision: status.revision,
            sha256: saved.sha256,
            from: source.clone(),
            duration: saved.duration,
            removed,
            reused_backup: false,
        })
    }
}
