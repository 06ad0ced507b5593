//! Backups beside runs in the ledger: each waits for the other on the same cluster, a second
//! request joins the first, pausing runs does not pause backups, and a schedule fires once
//! per time.

use super::super::backups::{BackupRecord, BackupSource};
use super::*;
use crate::report::{Outcome, RunReport};
use std::time::SystemTime;

/// Two never-contacted clusters with a backup destination and `backup:` extras.
fn scheduler(dir: &std::path::Path, backup_extra: &str) -> Arc<Scheduler> {
    super::tests::scheduler_from(
        dir,
        &format!(
            "backup:\n  destinations: [{{name: near, kind: local, path: backups}}]\n  \
             restore_drill: {{enabled: false}}\n{backup_extra}"
        ),
    )
}

/// The backup the ledger would start now, if any (debug text).
async fn next(scheduler: &Scheduler) -> Result<Option<String>, StoreError> {
    scheduler
        .on_ledger(|l| l.next_backup(SystemTime::now()).map(|s| format!("{s:?}")))
        .await
}

fn failed_backup(cluster: &str) -> BackupRecord {
    let now = SystemTime::now();
    BackupRecord::new(
        cluster,
        BackupSource::Api,
        now,
        now,
        Err(crate::backup::BackupError::NoMember),
    )
}

#[tokio::test]
async fn a_backup_and_a_run_of_one_cluster_wait_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(dir.path(), "");
    let run = scheduler.request("a", false).await.unwrap().run_id.unwrap();
    let started = scheduler
        .on_ledger(|l| l.next_start(SystemTime::now()).map(|s| s.queued.id))
        .await
        .unwrap();
    assert_eq!(started, Some(run));

    let asked = scheduler.request_backup("a").await.unwrap();
    assert_eq!(asked.action, "queued");
    assert!(asked.reason.contains("the backup follows it"), "{asked:?}");
    let again = scheduler.request_backup("a").await.unwrap();
    assert_eq!(again.action, "joined", "one backup per cluster at a time");
    assert_eq!(
        next(&scheduler).await.unwrap(),
        None,
        "the run is under way"
    );

    let report = RunReport::ended("a", "test", false, Outcome::Skipped, "done".into());
    scheduler
        .on_ledger(move |l| l.finish("a", run, &report))
        .await
        .unwrap();
    let backup = next(&scheduler).await.unwrap().expect("the run ended");
    assert!(backup.contains("\"a\""), "{backup}");

    let second_run = scheduler.request("a", false).await.unwrap().run_id;
    let blocked = scheduler
        .on_ledger(|l| l.next_start(SystemTime::now()).map(|s| s.queued.id))
        .await
        .unwrap();
    assert_eq!(
        blocked, None,
        "no run while the cluster's backup is under way"
    );
    let id = scheduler
        .on_ledger(|l| l.backup_finished(&failed_backup("a")))
        .await
        .unwrap()
        .unwrap();
    let listed = scheduler
        .backups(BackupFilter {
            cluster: Some("a".into()),
            limit: 5,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].outcome.as_str()), (id, "failed"));
    let freed = scheduler
        .on_ledger(|l| l.next_start(SystemTime::now()).map(|s| s.queued.id))
        .await
        .unwrap();
    assert_eq!(freed, second_run);

    scheduler.set_paused(true).await.unwrap();
    assert_eq!(
        scheduler.request_backup("b").await.unwrap().action,
        "queued"
    );
    assert!(
        next(&scheduler).await.unwrap().is_some(),
        "paused runs do not pause backups"
    );
}

#[tokio::test]
async fn a_backup_schedule_fires_once_per_time_and_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(dir.path(), "  schedule: '0 3 * * *'\n");
    let first = scheduler
        .on_ledger(|l| l.backups.next_scheduled.clone())
        .await
        .unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    let at = first["a"];
    let fired = scheduler
        .on_ledger(move |l| {
            let started: Vec<String> = std::iter::from_fn(|| l.next_backup(at))
                .map(|s| format!("{s:?}"))
                .collect();
            (started, l.backups.next_scheduled.clone())
        })
        .await
        .unwrap();
    assert_eq!(
        fired.0.len(),
        2,
        "both clusters' backups start: {:?}",
        fired.0
    );
    assert!(
        fired.0.iter().all(|s| s.contains("Schedule")),
        "{:?}",
        fired.0
    );
    assert_eq!(
        fired.1["a"].duration_since(at).unwrap().as_secs(),
        86400,
        "the next time is a day later"
    );
    let again = scheduler
        .on_ledger(move |l| l.next_backup(at).is_some())
        .await
        .unwrap();
    assert!(!again, "the same time fires once");
}

#[tokio::test]
async fn a_cluster_without_destinations_cannot_ask_for_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = super::tests::scheduler_from(dir.path(), "");
    assert!(matches!(
        scheduler.request_backup("a").await,
        Err(RequestError::NoBackupDestination(_))
    ));
    assert!(matches!(
        scheduler.request_backup("zz").await,
        Err(RequestError::UnknownCluster(_))
    ));
}
