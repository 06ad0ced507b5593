//! A run's snapshot and backups: kept as a backup after the run, and under NOSPACE a backup
//! at the frozen revision used instead of streaming another snapshot.

use std::path::Path;

use crate::config::RemediationSettings;
use crate::config::{BackupSettings, Destination, Target};
use etcdmedic_cluster::config::ClusterName;
use etcdmedic_cluster::model::AlarmKind;
use tokio_util::sync::CancellationToken;

use super::fake::{Call, FakeEtcd};
use super::remediator;
use crate::engine::{Remediator, RunOptions};
use crate::events::Events;
use crate::report::Outcome;

fn near(root: &Path) -> BackupSettings {
    BackupSettings {
        destinations: vec![Destination {
            name: ClusterName::new("near").unwrap_or_else(|err| panic!("{err}")),
            target: Target::Local {
                path: root.join("near"),
            },
            retention: Default::default(),
        }],
        ..BackupSettings::default()
    }
}

fn with_near(fake: FakeEtcd, root: &Path) -> Remediator<FakeEtcd> {
    let settings = RemediationSettings {
        snapshot_dir: root.join("snapshots"),
        ..RemediationSettings::default()
    };
    remediator(fake, settings).with_backup(near(root))
}

fn options() -> RunOptions {
    RunOptions {
        trigger: "test".into(),
        ..RunOptions::default()
    }
}

fn snapshots_streamed(remediator: &Remediator<FakeEtcd>) -> usize {
    remediator
        .etcd()
        .calls()
        .iter()
        .filter(|call| matches!(call, Call::Snapshot(_)))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_run_keeps_its_snapshot_as_a_backup() {
    let root = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let remediator = with_near(FakeEtcd::new(3, 2000, 100), root.path());
    let report = remediator
        .run(&options(), &Events::default(), &CancellationToken::new())
        .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.reason);
    let snapshot = report.snapshot.as_ref().expect("a snapshot");
    let backup = report.backup.as_ref().expect("kept as a backup");
    assert_eq!(backup.error, None);
    assert_eq!(backup.destinations.len(), 1);
    let kept = Path::new(&backup.destinations[0].location);
    assert_eq!(kept.file_name(), snapshot.path.file_name());
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(kept.with_extension("json")).unwrap_or_else(|err| panic!("{err}")),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(manifest["revision"], snapshot.revision);
    assert_eq!(manifest["sha256"], snapshot.sha256.as_str());
    assert!(
        report.finished_at <= std::time::SystemTime::now(),
        "the run's own end is recorded before the backup"
    );
}

#[tokio::test(start_paused = true)]
async fn under_nospace_a_backup_at_the_frozen_revision_replaces_the_snapshot() {
    let root = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let full = || FakeEtcd::new(3, 2000, 100).with(|c| c.alarm(1, AlarmKind::NoSpace));
    let remediator = with_near(full(), root.path());
    let backup = remediator
        .backup(&near(root.path()), None, &CancellationToken::new())
        .await
        .unwrap_or_else(|err| panic!("backup: {err}"));
    assert_eq!(snapshots_streamed(&remediator), 1);

    let report = remediator
        .run(&options(), &Events::default(), &CancellationToken::new())
        .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.reason);
    let snapshot = report.snapshot.as_ref().expect("a snapshot");
    assert!(snapshot.reused_backup, "{snapshot:?}");
    assert_eq!(
        snapshot.path.display().to_string(),
        backup.destinations[0].location
    );
    assert_eq!(snapshot.sha256, backup.manifest.sha256);
    assert_eq!(snapshots_streamed(&remediator), 1, "nothing streamed again");
    assert!(
        report.backup.is_none(),
        "a reused backup is a backup already"
    );
    assert!(report
        .alarms_disarmed
        .iter()
        .any(|a| a.alarm == AlarmKind::NoSpace));

    // A backup at another revision is not the snapshot the run needs.
    let manifest_path = Path::new(&backup.destinations[0].location).with_extension("json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    manifest["revision"] = serde_json::json!(backup.manifest.revision - 1);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let other = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let again = with_near(full(), other.path());
    std::fs::create_dir_all(other.path().join("near")).unwrap_or_else(|e| panic!("{e}"));
    copy_dir(&root.path().join("near"), &other.path().join("near"));
    let report = again
        .run(&options(), &Events::default(), &CancellationToken::new())
        .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.reason);
    assert!(!report.snapshot.as_ref().expect("snapshot").reused_backup);
    assert_eq!(snapshots_streamed(&again), 1, "streamed its own");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap_or_else(|e| panic!("{e}"));
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
