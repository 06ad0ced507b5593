//! What every backend of the store must do, run on each: the SQLite file always, and a fresh
//! PostgreSQL database when `ETCDMEDIC_TEST_POSTGRES` names a server (an administrator's
//! URL). `make unit` runs SQLite only; the end-to-end test `store_suite` starts the harness's
//! PostgreSQL and runs this suite against it too.

use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use tempfile::TempDir;

use super::*;

/// The server the suite also runs on, when set.
const POSTGRES_ENV: &str = "ETCDMEDIC_TEST_POSTGRES";

/// Where one test's store lives, on one backend. Opening it again (a restart) finds what the
/// last store there wrote.
enum Place {
    Sqlite(TempDir),
    Postgres(Box<crate::service::settings::PostgresSettings>),
}

impl Place {
    /// A place on each backend the suite runs on, fresh for the test `test`.
    fn each(test: &str) -> Vec<Place> {
        let mut places = vec![Place::Sqlite(
            tempfile::tempdir().unwrap_or_else(|err| panic!("tempdir: {err}")),
        )];
        if let Ok(url) = std::env::var(POSTGRES_ENV) {
            places.push(Place::postgres(&url, test));
        }
        places
    }

    /// A database of its own for `test` on the server at `url`.
    fn postgres(url: &str, test: &str) -> Place {
        let mut config: ::postgres::Config = url
            .parse()
            .unwrap_or_else(|err| panic!("{POSTGRES_ENV}: {err}"));
        let database = format!("store_suite_{test}");
        let mut admin = config
            .connect(::postgres::NoTls)
            .unwrap_or_else(|err| panic!("connecting to {POSTGRES_ENV}: {err}"));
        for statement in [
            format!("DROP DATABASE IF EXISTS {database}"),
            format!("CREATE DATABASE {database}"),
        ] {
            admin
                .simple_query(&statement)
                .unwrap_or_else(|err| panic!("{statement}: {err}"));
        }
        config.dbname(&database).application_name(&format!(
            "etcdmedic store suite (pid {})",
            std::process::id()
        ));
        // Seen by the end-to-end test, which counts the tests that ran on PostgreSQL.
        println!("store suite on PostgreSQL: {test}");
        Place::Postgres(Box::new(crate::service::settings::PostgresSettings {
            config,
            place: format!("postgres:///{database}"),
            tls: None,
        }))
    }

    fn try_open(&self) -> StoreResult<Box<dyn StateStore>> {
        let unreadable = Counter::default();
        match self {
            Place::Sqlite(dir) => open(
                Backend::Sqlite {
                    path: dir.path().join("state/state.sqlite"),
                    init: false,
                },
                unreadable,
            ),
            Place::Postgres(settings) => open(
                Backend::Postgres {
                    settings: settings.clone(),
                    announcement: None,
                },
                unreadable,
            ),
        }
    }

    fn open(&self) -> Box<dyn StateStore> {
        self.try_open()
            .unwrap_or_else(|err| panic!("opening the store: {err}"))
    }
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

pub(super) fn insert(store: &mut dyn StateStore, cluster: &str) -> i64 {
    in_transaction(store, |tx| tx.insert_run(&new_run(cluster))).unwrap()
}

pub(super) fn finish(store: &mut dyn StateStore, id: i64, report: &RunReport) {
    in_transaction(store, |tx| tx.finish(id, report)).unwrap()
}

fn last_work(store: &mut dyn StateStore, cluster: &str) -> Option<SystemTime> {
    in_transaction(store, |tx| tx.last_work_finished(cluster)).unwrap()
}

#[test]
fn runs_left_running_by_a_dead_process_come_back_interrupted() {
    for place in Place::each("interrupted") {
        let id = {
            let mut store = place.open();
            let id = insert(store.as_mut(), "a");
            store.mark_running(id, SystemTime::now()).unwrap();
            id
        };
        let mut store = place.open();
        assert_eq!(
            interrupt_unfinished(store.as_mut()).unwrap(),
            vec![InterruptedRun {
                id,
                cluster: "a".into()
            }]
        );
        let run = store.run(id).unwrap().unwrap();
        assert_eq!(run.summary.state, RunState::Finished);
        assert_eq!(run.summary.outcome, Some(Outcome::Interrupted));
        assert_eq!(
            last_work(store.as_mut(), "a").map(unix),
            run.summary.finished_at.map(unix)
        );
        assert!(interrupt_unfinished(store.as_mut()).unwrap().is_empty());
    }
}

#[test]
fn a_refusal_does_not_start_the_cooldown_and_its_kind_is_kept() {
    for place in Place::each("refusal") {
        let mut store = place.open();
        let id = insert(store.as_mut(), "a");
        let mut refused = RunReport::ended("a", "", false, Outcome::Failed, "refused: x".into());
        refused.refused = true;
        refused.error_kind = Some("member_down".into());
        finish(store.as_mut(), id, &refused);
        assert_eq!(last_work(store.as_mut(), "a"), None);
        let summary = store.run(id).unwrap().unwrap().summary;
        assert!(summary.refused);
        assert_eq!(summary.error_kind.as_deref(), Some("member_down"));
    }
}

#[test]
fn the_forecast_learns_from_the_latest_runs_that_did_work_newest_first() {
    for place in Place::each("recent_work") {
        let mut store = place.open();
        for (cluster, outcome, reason) in [
            ("a", Outcome::Succeeded, "first"),
            ("a", Outcome::Skipped, "nothing to do"),
            ("b", Outcome::Succeeded, "other cluster"),
            ("a", Outcome::Partial, "second"),
            ("a", Outcome::Failed, "refused"),
            ("a", Outcome::Succeeded, "third"),
        ] {
            let id = insert(store.as_mut(), cluster);
            let report = RunReport::ended(cluster, "", false, outcome, reason.into());
            finish(store.as_mut(), id, &report);
        }
        let mut reasons = |limit| -> Vec<String> {
            store
                .recent_work("a", limit)
                .unwrap()
                .into_iter()
                .filter_map(|r| r.reason)
                .collect()
        };
        assert_eq!(reasons(5), ["third", "second", "first"]);
        assert_eq!(reasons(2), ["third", "second"]);
        assert!(store.recent_work("c", 5).unwrap().is_empty());
    }
}

#[test]
fn the_cooldown_clock_ignores_runs_that_changed_nothing() {
    for place in Place::each("cooldown") {
        let mut store = place.open();
        for outcome in [Outcome::Skipped, Outcome::Cancelled, Outcome::Planned] {
            let id = insert(store.as_mut(), "a");
            let report = RunReport::ended("a", "", false, outcome, "x".into());
            finish(store.as_mut(), id, &report);
        }
        assert_eq!(last_work(store.as_mut(), "a"), None);
        let id = insert(store.as_mut(), "a");
        let failed = RunReport::ended("a", "", false, Outcome::Failed, "x".into());
        finish(store.as_mut(), id, &failed);
        assert!(last_work(store.as_mut(), "a").is_some());
        assert_eq!(last_work(store.as_mut(), "b"), None);
    }
}

#[test]
fn pages_of_runs_filter_by_cluster_and_outcome() {
    for place in Place::each("pages") {
        let mut store = place.open();
        let mut ids = Vec::new();
        for (cluster, outcome) in [
            ("a", Outcome::Succeeded),
            ("b", Outcome::Succeeded),
            ("a", Outcome::Succeeded),
            ("a", Outcome::Failed),
        ] {
            let id = insert(store.as_mut(), cluster);
            let report = RunReport::ended(cluster, "", false, outcome, "x".into());
            finish(store.as_mut(), id, &report);
            ids.push(id);
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
        assert_eq!(page(a(2, None)), vec![ids[3], ids[2]]);
        assert_eq!(page(a(2, Some(ids[2]))), vec![ids[0]]);
        let succeeded = RunFilter {
            outcome: Some(Outcome::Succeeded),
            limit: 10,
            ..RunFilter::default()
        };
        assert_eq!(page(succeeded), vec![ids[2], ids[1], ids[0]]);
    }
}

#[test]
fn the_pause_switch_is_persisted() {
    for place in Place::each("pause") {
        place.open().set_paused(true).unwrap();
        assert!(place.open().paused().unwrap());
    }
}

#[test]
fn a_transaction_that_fails_stores_nothing() {
    for place in Place::each("rollback") {
        let mut store = place.open();
        let failed: StoreResult<()> = in_transaction(store.as_mut(), |tx| {
            tx.insert_run(&new_run("a"))?;
            Err(StoreError::Gone(OwnerGone("test")))
        });
        assert!(failed.is_err());
        assert!(store.queued().unwrap().is_empty());
    }
}

#[test]
fn a_second_service_on_the_same_store_is_refused_and_names_the_holder() {
    for place in Place::each("second_service") {
        let first = place.open();
        let err = match place.try_open() {
            Ok(_) => panic!("a second store opened beside the first"),
            Err(err) => err,
        };
        let message = err.to_string();
        assert!(matches!(err, StoreError::InUse { .. }), "{message}");
        assert!(
            message.contains(&format!("(pid {})", std::process::id())),
            "{message}"
        );
        drop(first);
        place.open();
    }
}
