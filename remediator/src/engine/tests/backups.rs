//! `backup` against the scripted cluster: the source member, the lock shared with runs, a
//! damaged stream that leaves nothing behind, and copies in every destination.

use std::path::Path;

use crate::config::RemediationSettings;
use crate::config::{BackupSettings, Destination, Target};
use etcdmedic_cluster::config::ClusterName;
use tokio_util::sync::CancellationToken;

use super::fake::{FakeEtcd, SnapshotBehavior};
use crate::backup::BackupError;
use crate::engine::Remediator;
use crate::lock::RunLock;

fn destinations(root: &Path, names: &[&str]) -> BackupSettings {
    BackupSettings {
        destinations: names
            .iter()
            .map(|name| Destination {
                name: ClusterName::new(name).unwrap_or_else(|err| panic!("{err}")),
                target: Target::Local {
                    path: root.join(name),
                },
                retention: Default::default(),
            })
            .collect(),
        ..BackupSettings::default()
    }
}

fn saving_to(fake: FakeEtcd, snapshot_dir: &Path) -> Remediator<FakeEtcd> {
    let settings = RemediationSettings {
        snapshot_dir: snapshot_dir.to_path_buf(),
        ..RemediationSettings::default()
    };
    super::remediator(fake, settings)
}

/// Files in a destination's directory for the fake cluster.
fn files(root: &Path, destination: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(destination).join("fake"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(start_paused = true)]
async fn the_most_caught_up_follower_is_backed_up_to_every_destination() {
    let root = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let fake = FakeEtcd::new(3, 100, 40).member("m2", |m| m.behind(50));
    let remediator = saving_to(fake, &root.path().join("snapshots"));
    let settings = destinations(root.path(), &["near", "far"]);
    let report = remediator
        .backup(&settings, None, &CancellationToken::new())
        .await
        .unwrap_or_else(|err| panic!("backup: {err}"));
    assert_eq!(report.manifest.member.name, "m3", "m1 leads, m2 is behind");
    let recorded = report
        .manifest
        .hash_kv
        .as_ref()
        .expect("a HashKV is recorded");
    assert_eq!(recorded.revision, report.manifest.revision);
    assert_eq!(report.manifest.cluster, "fake");
    for name in ["near", "far"] {
        let found = files(root.path(), name);
        assert_eq!(found.len(), 2, "{name}: {found:?}");
        assert!(
            found[0].ends_with(".db") && found[1].ends_with(".json"),
            "{found:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_backup_is_refused_while_a_run_holds_the_cluster_lock() {
    let root = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let snapshots = root.path().join("snapshots");
    let lock_dir = snapshots.join("fake");
    std::fs::create_dir_all(&lock_dir).unwrap_or_else(|err| panic!("{err}"));
    let _run = RunLock::acquire(&lock_dir, "fake").unwrap_or_else(|err| panic!("{err}"));
    let remediator = saving_to(FakeEtcd::new(3, 100, 40), &snapshots);
    let err = remediator
        .backup(
            &destinations(root.path(), &["near"]),
            None,
            &CancellationToken::new(),
        )
        .await
        .expect_err("the lock is held");
    assert!(matches!(err, BackupError::Locked(_)), "{err}");
    assert!(files(root.path(), "near").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_damaged_stream_fails_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let fake = FakeEtcd::new(3, 100, 40).with(|s| s.snapshot(SnapshotBehavior::Damaged));
    let remediator = saving_to(fake, &root.path().join("snapshots"));
    let err = remediator
        .backup(
            &destinations(root.path(), &["near", "far"]),
            None,
            &CancellationToken::new(),
        )
        .await
        .expect_err("the trailer does not match");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert!(files(root.path(), "near").is_empty());
    assert!(files(root.path(), "far").is_empty());
}

/// An encrypted backup with drills on and no identity: it lands, encrypted, and its drill is
/// recorded as not drilled, never as passed (the drill's binaries are never started: there is
/// nothing here that could decrypt what it would have to restore).
#[tokio::test(start_paused = true)]
async fn an_encrypted_backup_without_an_identity_is_not_drilled_and_never_passed() {
    use crate::age_keys::Identities;
    use crate::config::{RestoreDrill, RestoreTool};
    let root = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let remediator = saving_to(FakeEtcd::new(3, 100, 40), &root.path().join("snapshots"));
    let keys = Identities::generated();
    let missing = root.path().join("no-such-binary");
    let settings = BackupSettings {
        encryption: Some(keys.public()),
        restore_drill: Some(RestoreDrill {
            etcd: missing.clone(),
            restore: RestoreTool::Etcdutl(missing),
            identity_file: None,
        }),
        ..destinations(root.path(), &["near"])
    };
    let report = remediator
        .backup(&settings, None, &CancellationToken::new())
        .await
        .unwrap_or_else(|err| panic!("backup: {err}"));
    let drill = report
        .manifest
        .restore_drill
        .as_ref()
        .expect("a drill record");
    assert!(!drill.passed, "{drill:?}");
    assert_eq!(drill.not_drilled.as_deref(), Some("no_identity"));
    let encryption = report.manifest.encryption.as_ref().expect("recorded");
    assert_eq!(encryption.recipients, keys.public());
    let found = files(root.path(), "near");
    assert!(found[0].ends_with(".db.age"), "{found:?}");
    let stored = std::fs::read(root.path().join("near/fake").join(&found[0]))
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    assert_eq!(report.destinations[0].verified_by, "sha256");
}
