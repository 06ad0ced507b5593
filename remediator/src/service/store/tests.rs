use std::path::Path;

use prometheus_client::metrics::counter::Counter;

use super::*;

fn open(path: &Path) -> (SqliteStore, Counter) {
    let unreadable = Counter::default();
    let store = SqliteStore::open(path, false, unreadable.clone()).unwrap();
    (store, unreadable)
}

fn new_run(cluster: &str) -> NewRun<'_> {
    NewRun {
        cluster,
        source: RunSource::Alertmanager,
        dry_run: false,
        trigger: "EtcdmedicNoSpaceAlarm",
        cooldown_until: None,
        not_before: None,
        retry_of: None,
    }
}

fn insert(store: &mut SqliteStore, cluster: &str) -> i64 {
    in_transaction(store, |tx| tx.insert_run(&new_run(cluster))).unwrap()
}

fn finish(store: &mut SqliteStore, id: i64, report: &RunReport) {
    in_transaction(store, |tx| tx.finish(id, report)).unwrap()
}

fn last_work(store: &mut SqliteStore, cluster: &str) -> Option<SystemTime> {
    in_transaction(store, |tx| tx.last_work_finished(cluster)).unwrap()
}

#[test]
fn runs_left_running_by_a_dead_process_come_back_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/state.sqlite");
    let id = {
        let (mut store, _) = open(&path);
        let id = insert(&mut store, "a");
        store.mark_running(id, SystemTime::now()).unwrap();
        id
    };
    let (mut store, _) = open(&path);
    assert_eq!(
        interrupt_unfinished(&mut store).unwrap(),
        vec![InterruptedRun {
            id,
            cluster: "a".into()
        }]
    );
    let run = store.run(id).unwrap().unwrap();
    assert_eq!(run.summary.state, RunState::Finished);
    assert_eq!(run.summary.outcome, Some(Outcome::Interrupted));
    assert_eq!(
        last_work(&mut store, "a").map(unix),
        run.summary.finished_at.map(unix)
    );
    assert!(interrupt_unfinished(&mut store).unwrap().is_empty());
}

#[test]
fn a_refusal_does_not_start_the_cooldown_and_its_kind_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(&dir.path().join("s.sqlite"));
    let id = insert(&mut store, "a");
    let mut refused = RunReport::ended("a", "", false, Outcome::Failed, "refused: x".into());
    refused.refused = true;
    refused.error_kind = Some("member_down".into());
    finish(&mut store, id, &refused);
    assert_eq!(last_work(&mut store, "a"), None);
    let summary = store.run(id).unwrap().unwrap().summary;
    assert!(summary.refused);
    assert_eq!(summary.error_kind.as_deref(), Some("member_down"));
}

#[test]
fn the_forecast_learns_from_the_latest_runs_that_did_work_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(&dir.path().join("s.sqlite"));
    for (cluster, outcome, reason) in [
        ("a", Outcome::Succeeded, "first"),
        ("a", Outcome::Skipped, "nothing to do"),
        ("b", Outcome::Succeeded, "other cluster"),
        ("a", Outcome::Partial, "second"),
        ("a", Outcome::Failed, "refused"),
        ("a", Outcome::Succeeded, "third"),
    ] {
        let id = insert(&mut store, cluster);
        finish(
            &mut store,
            id,
            &RunReport::ended(cluster, "", false, outcome, reason.into()),
        );
    }
    let reasons = |store: &mut SqliteStore, limit| -> Vec<String> {
        store
            .recent_work("a", limit)
            .unwrap()
            .into_iter()
            .filter_map(|r| r.reason)
            .collect()
    };
    assert_eq!(reasons(&mut store, 5), ["third", "second", "first"]);
    assert_eq!(reasons(&mut store, 2), ["third", "second"]);
    assert!(store.recent_work("c", 5).unwrap().is_empty());
}

#[test]
fn the_cooldown_clock_ignores_runs_that_changed_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(&dir.path().join("s.sqlite"));
    for outcome in [Outcome::Skipped, Outcome::Cancelled, Outcome::Planned] {
        let id = insert(&mut store, "a");
        finish(
            &mut store,
            id,
            &RunReport::ended("a", "", false, outcome, "x".into()),
        );
    }
    assert_eq!(last_work(&mut store, "a"), None);
    let id = insert(&mut store, "a");
    let failed = RunReport::ended("a", "", false, Outcome::Failed, "x".into());
    finish(&mut store, id, &failed);
    assert!(last_work(&mut store, "a").is_some());
    assert_eq!(last_work(&mut store, "b"), None);
}

#[test]
fn pages_of_runs_filter_by_cluster_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(&dir.path().join("s.sqlite"));
    for cluster in ["a", "b", "a", "a"] {
        let id = insert(&mut store, cluster);
        let outcome = if id == 4 {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        };
        finish(
            &mut store,
            id,
            &RunReport::ended(cluster, "", false, outcome, "x".into()),
        );
    }
    let mut page = |filter: RunFilter| -> Vec<i64> {
        store.runs(&filter).unwrap().iter().map(|r| r.id).collect()
    };
    let a = |limit, before| RunFilter {
        cluster: Some("a".into()),
        limit,
        before,
        ..RunFilter::default()
    };
    assert_eq!(page(a(2, None)), vec![4, 3]);
    assert_eq!(page(a(2, Some(3))), vec![1]);
    let succeeded = RunFilter {
        outcome: Some(Outcome::Succeeded),
        limit: 10,
        ..RunFilter::default()
    };
    assert_eq!(page(succeeded), vec![3, 2, 1]);
}

#[test]
fn the_pause_switch_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    open(&path).0.set_paused(true).unwrap();
    assert!(open(&path).0.paused().unwrap());
}

#[test]
fn a_transaction_that_fails_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(&dir.path().join("s.sqlite"));
    let failed: StoreResult<()> = in_transaction(&mut store, |tx| {
        tx.insert_run(&new_run("a"))?;
        Err(StoreError::Gone(OwnerGone("test")))
    });
    assert!(failed.is_err());
    assert!(store.queued().unwrap().is_empty());
}

#[test]
fn a_second_service_on_the_same_file_is_refused_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let (first, _) = open(&path);
    let err = SqliteStore::open(&path, false, Counter::default()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::InUse { .. }), "{message}");
    assert!(
        message.contains(&format!(
            "state store {} is in use by another etcdmedic-remediator serve (pid {})",
            path.display(),
            std::process::id()
        )),
        "{message}"
    );
    drop(first);
    open(&path);
}

/// A state file written by the release before schema version 3 (runs of each kind, alerts,
/// the pause switch on), kept as a fixture: it opens, is migrated, and reads back whole.
#[test]
fn a_state_file_of_schema_version_2_is_migrated_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/service/store/fixtures/state-v2.sqlite"
    );
    std::fs::copy(fixture, &path).unwrap();
    let before = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = before
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 2, "the fixture is of schema version 2");
    drop(before);

    let (mut store, unreadable) = open(&path);
    assert!(store.paused().unwrap());
    let all = RunFilter {
        limit: 10,
        ..RunFilter::default()
    };
    let runs = store.runs(&all).unwrap();
    let seen: Vec<(i64, RunState, Option<Outcome>, bool)> = runs
        .iter()
        .map(|r| (r.id, r.state, r.outcome, r.refused))
        .collect();
    assert_eq!(
        seen,
        vec![
            (4, RunState::Finished, Some(Outcome::Planned), false),
            (3, RunState::Queued, None, false),
            (2, RunState::Finished, Some(Outcome::Failed), true),
            (1, RunState::Finished, Some(Outcome::Succeeded), false),
        ]
    );
    let first = store.run(1).unwrap().unwrap();
    assert_eq!(first.alerts.len(), 1);
    assert_eq!(
        first.alerts[0]
            .labels
            .get("etcd_cluster")
            .map(String::as_str),
        Some("prod-a")
    );
    let report = first.report.expect("the stored report reads back");
    assert_eq!(report.reclaimed_bytes, 734_003_200);
    let queued = store.queued().unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].retry_of, Some(2));
    assert_eq!(store.firing_fingerprints(3).unwrap(), Vec::<String>::new());
    assert_eq!(store.latest_finished().unwrap().len(), 3);
    assert_eq!(unreadable.get(), 0);
    // New runs continue the numbering.
    assert_eq!(insert(&mut store, "prod-a"), 5);
}

#[test]
fn rows_this_build_cannot_read_are_counted_not_dropped_in_silence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let (mut store, unreadable) = open(&path);
    let newer = insert(&mut store, "a");
    let broken = insert(&mut store, "a");
    for id in [newer, broken] {
        finish(
            &mut store,
            id,
            &RunReport::ended("a", "", false, Outcome::Succeeded, "x".into()),
        );
    }
    in_transaction(&mut store, |tx| {
        tx.insert_alert(&AlertRecord {
            alertname: "A".into(),
            status: "firing".into(),
            fingerprint: "f".into(),
            cluster: Some("a".into()),
            labels: Default::default(),
            starts_at: String::new(),
            action: "queued".into(),
            reason: String::new(),
            run_id: Some(broken),
            generator_url: None,
        })
    })
    .unwrap();
    // What another build (or a hand) might leave: a report of a newer format, one that does
    // not parse, labels that are not JSON.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE runs SET report_format = 99 WHERE id = ?1", [newer])
        .unwrap();
    raw.execute("UPDATE runs SET report = '{' WHERE id = ?1", [broken])
        .unwrap();
    raw.execute("UPDATE alerts SET labels = 'x'", []).unwrap();
    // Typed columns: a state or outcome this build does not know cannot be written at all.
    let unknown = raw.execute(
        "UPDATE runs SET outcome = 'exploded' WHERE id = ?1",
        [newer],
    );
    assert!(unknown.is_err(), "{unknown:?}");
    let unknown = raw.execute("UPDATE runs SET state = 'paused' WHERE id = ?1", [newer]);
    assert!(unknown.is_err(), "{unknown:?}");
    drop(raw);

    let newer_detail = store.run(newer).unwrap().unwrap();
    assert!(newer_detail.report.is_none());
    assert_eq!(newer_detail.summary.outcome, Some(Outcome::Succeeded));
    assert_eq!(unreadable.get(), 1);
    let broken_detail = store.run(broken).unwrap().unwrap();
    assert!(broken_detail.report.is_none());
    assert!(broken_detail.alerts[0].labels.is_empty());
    assert_eq!(unreadable.get(), 3);
    assert!(store.latest_finished().unwrap().is_empty());
    assert_eq!(
        unreadable.get(),
        4,
        "the newest report per outcome is unreadable"
    );
}
