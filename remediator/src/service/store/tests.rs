use std::path::Path;

use prometheus_client::metrics::counter::Counter;

use super::suite::{finish, insert};
use super::*;

fn open(path: &Path) -> (SqliteStore, Counter) {
    let unreadable = Counter::default();
    let store = SqliteStore::open(path, false, unreadable.clone()).unwrap();
    (store, unreadable)
}

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

#[test]
fn a_value_that_cannot_be_written_as_json_is_an_error_not_a_placeholder() {
    // JSON objects need string keys: this map has none to give.
    let unwritable: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let err = super::to_json("a test record", &unwritable).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unwritable {
                what: "a test record",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was written"), "{err}");
}
