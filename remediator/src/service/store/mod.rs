//! The service's memory, in one SQLite file: every alert received and what was done with it,
//! every run with its full report, the cooldown clocks (derived from the runs) and the pause
//! switch. A restart keeps all of it, and a run the process was in the middle of when it died
//! is marked interrupted.
//!
//! Calls are synchronous and short; the scheduler serialises them behind one lock and runs
//! them off the async threads.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::report::{Outcome, RunReport};

mod schema;

/// Why the state store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}", path = .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The file exists but is not etcdmedic's state: using it would silently lose the pause
    /// switch, the cooldowns and the run history, or someone else's data.
    #[error("state store {path}: {why}", path = .path.display())]
    NotOurs { path: PathBuf, why: String },
    #[error("state store {path}: written by a newer etcdmedic (schema version {found}; this one knows up to {known}); run that version, or point state_path elsewhere", path = .path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

impl StoreError {
    pub(crate) fn sqlite(path: &Path, source: rusqlite::Error) -> Self {
        StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A run a dead process left running, now marked interrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptedRun {
    pub id: i64,
    pub cluster: String,
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Finished,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Finished => "finished",
        }
    }

    fn parse(text: &str) -> RunState {
        match text {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            _ => RunState::Finished,
        }
    }
}

/// A new run, as queued.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub cluster: &'a str,
    pub source: &'a str,
    pub dry_run: bool,
    pub trigger: &'a str,
    pub cooldown_until: Option<SystemTime>,
    /// Not started before then: a retry after a refusal.
    pub not_before: Option<SystemTime>,
    /// The alert-started run this one retries (the first of the chain).
    pub retry_of: Option<i64>,
}

/// One received alert and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub alertname: String,
    pub status: String,
    pub fingerprint: String,
    pub cluster: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub starts_at: String,
    pub action: String,
    pub reason: String,
    pub run_id: Option<i64>,
}

/// A run as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub cluster: String,
    pub state: RunState,
    pub source: String,
    pub dry_run: bool,
    pub trigger: String,
    #[serde(serialize_with = "crate::report::timestamp::serialize")]
    pub created_at: SystemTime,
    #[serde(serialize_with = "option_rfc3339")]
    pub started_at: Option<SystemTime>,
    #[serde(serialize_with = "option_rfc3339")]
    pub finished_at: Option<SystemTime>,
    #[serde(
        serialize_with = "option_rfc3339",
        skip_serializing_if = "Option::is_none"
    )]
    pub cooldown_until: Option<SystemTime>,
    /// A retry after a refusal starts no earlier than this.
    #[serde(
        serialize_with = "option_rfc3339",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_before: Option<SystemTime>,
    /// The refused alert-started run this one retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<i64>,
    /// Refused before changing anything (outcome `failed`).
    pub refused: bool,
    pub outcome: Option<String>,
    pub reason: Option<String>,
}

/// A run with everything recorded about it.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub alerts: Vec<AlertRecord>,
    pub report: Option<RunReport>,
}

/// Which runs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub cluster: Option<String>,
    pub outcome: Option<String>,
    /// Only runs with a smaller id (the previous page's `next`).
    pub before: Option<i64>,
    pub limit: usize,
}

pub struct Store {
    connection: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the state at `path`, creating the file (and its directory) when there is none
    /// and bringing an older schema up to date. A file that exists but holds no etcdmedic
    /// state is an error, unless `init` says to initialise it (see [`schema::open`]).
    pub fn open(path: &Path, init: bool) -> StoreResult<Store> {
        let connection = schema::open(path, init)?;
        Ok(Store {
            connection,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self, source: rusqlite::Error) -> StoreError {
        StoreError::sqlite(&self.path, source)
    }

    /// Runs `work` in one transaction: all of it is stored, or none.
    pub fn transaction<T>(
        &mut self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let result = (|| {
            let transaction = self.connection.transaction()?;
            let value = work(&transaction)?;
            transaction.commit()?;
            Ok(value)
        })();
        result.map_err(|err| self.fail(err))
    }

    /// A cheap query, for readiness.
    pub fn ping(&self) -> StoreResult<()> {
        self.connection
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(|err| self.fail(err))
    }

    /// Marks runs that were under way when the process died as interrupted, and returns
    /// them (id, cluster).
    pub fn interrupt_unfinished(&mut self) -> StoreResult<Vec<InterruptedRun>> {
        self.transaction(|tx| {
            let mut select = tx.prepare("SELECT id, cluster FROM runs WHERE state = 'running'")?;
            let runs = select
                .query_map([], |row| {
                    Ok(InterruptedRun {
                        id: row.get(0)?,
                        cluster: row.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for InterruptedRun { id, cluster } in &runs {
                let report = RunReport::ended(
                    cluster,
                    "",
                    false,
                    Outcome::Interrupted,
                    INTERRUPTED_BY_EXIT.into(),
                );
                finish(tx, *id, &report)?;
            }
            Ok(runs)
        })
    }

    /// Runs still queued (from before a restart), oldest first.
    pub fn queued(&self) -> StoreResult<Vec<RunSummary>> {
        self.select_runs("WHERE state = 'queued' ORDER BY id", [])
    }

    /// The firing alerts (fingerprints) a queued run is waiting on: its own, or for a retry
    /// those of the run it retries.
    pub fn firing_fingerprints(&self, run_id: i64) -> StoreResult<Vec<String>> {
        let mut select = self
            .connection
            .prepare(
                "SELECT fingerprint FROM alerts WHERE run_id IN (?1, \
                 (SELECT retry_of FROM runs WHERE id = ?1)) AND status = 'firing' \
                 AND action IN ('queued', 'joined') GROUP BY fingerprint",
            )
            .map_err(|err| self.fail(err))?;
        let rows = select
            .query_map([run_id], |row| row.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>());
        rows.map_err(|err| self.fail(err))
    }

    pub fn mark_running(&mut self, id: i64, at: SystemTime) -> StoreResult<()> {
        self.transaction(|tx| {
            tx.execute(
                "UPDATE runs SET state = 'running', started_at = ?2 WHERE id = ?1",
                params![id, unix(at)],
            )
            .map(drop)
        })
    }

    pub fn finish(&mut self, id: i64, report: &RunReport) -> StoreResult<()> {
        self.transaction(|tx| finish(tx, id, report))
    }

    /// Adds a sentence to a finished run's reason (what happened after it ended).
    pub fn append_reason(&mut self, id: i64, sentence: &str) -> StoreResult<()> {
        self.transaction(|tx| {
            tx.execute(
                "UPDATE runs SET reason = coalesce(reason || ' ', '') || ?2 WHERE id = ?1",
                params![id, sentence],
            )
            .map(drop)
        })
    }

    pub fn paused(&self) -> StoreResult<bool> {
        self.connection
            .query_row(
                "SELECT value FROM switches WHERE name = 'paused'",
                [],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map(|value| value.as_deref() == Some("true"))
            .map_err(|err| self.fail(err))
    }

    pub fn set_paused(&mut self, paused: bool) -> StoreResult<()> {
        self.transaction(|tx| {
            tx.execute(
                "INSERT INTO switches (name, value, changed_at) VALUES ('paused', ?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = ?1, changed_at = ?2",
                params![paused.to_string(), unix(SystemTime::now())],
            )
            .map(drop)
        })
    }

    pub fn runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunSummary>> {
        self.select_runs(
            "WHERE (?1 IS NULL OR cluster = ?1) AND (?2 IS NULL OR outcome = ?2) \
             AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4",
            params![
                filter.cluster,
                filter.outcome,
                filter.before,
                i64::try_from(filter.limit).unwrap_or(i64::MAX)
            ],
        )
    }

    pub fn run(&self, id: i64) -> StoreResult<Option<RunDetail>> {
        let Some(summary) = self.select_runs("WHERE id = ?1", [id])?.into_iter().next() else {
            return Ok(None);
        };
        let report: Option<String> = self
            .connection
            .query_row("SELECT report FROM runs WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .map_err(|err| self.fail(err))?;
        let alerts = self.alerts_of(id)?;
        Ok(Some(RunDetail {
            summary,
            alerts,
            // A report this build cannot read (written by another version) is left out
            // rather than failing the whole answer.
            report: report.and_then(|json| serde_json::from_str(&json).ok()),
        }))
    }

    /// Every cluster's latest finished run per outcome, and latest successful snapshot
    /// time, to restore the gauges after a restart.
    pub fn latest_finished(&self) -> StoreResult<Vec<RunReport>> {
        let mut select = self
            .connection
            .prepare(
                "SELECT report FROM runs WHERE id IN (SELECT max(id) FROM runs \
                 WHERE state = 'finished' AND report IS NOT NULL GROUP BY cluster, outcome) \
                 ORDER BY id",
            )
            .map_err(|err| self.fail(err))?;
        let rows = select
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|err| self.fail(err))?;
        Ok(rows
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }

    fn alerts_of(&self, run_id: i64) -> StoreResult<Vec<AlertRecord>> {
        let mut select = self
            .connection
            .prepare(
                "SELECT alertname, status, fingerprint, cluster, labels, starts_at, action, \
                 reason, run_id FROM alerts WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(|err| self.fail(err))?;
        let rows = select
            .query_map([run_id], |row| {
                let labels: String = row.get(4)?;
                Ok(AlertRecord {
                    alertname: row.get(0)?,
                    status: row.get(1)?,
                    fingerprint: row.get(2)?,
                    cluster: row.get(3)?,
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                    starts_at: row.get(5)?,
                    action: row.get(6)?,
                    reason: row.get(7)?,
                    run_id: row.get(8)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|err| self.fail(err))
    }

    fn select_runs(
        &self,
        condition: &str,
        parameters: impl rusqlite::Params,
    ) -> StoreResult<Vec<RunSummary>> {
        let sql = format!(
            "SELECT id, cluster, state, source, dry_run, trigger, created_at, started_at, \
             finished_at, cooldown_until, outcome, reason, not_before, retry_of, refused \
             FROM runs {condition}"
        );
        let mut select = self
            .connection
            .prepare(&sql)
            .map_err(|err| self.fail(err))?;
        let rows = select
            .query_map(parameters, |row| {
                Ok(RunSummary {
                    id: row.get(0)?,
                    cluster: row.get(1)?,
                    state: RunState::parse(&row.get::<_, String>(2)?),
                    source: row.get(3)?,
                    dry_run: row.get(4)?,
                    trigger: row.get(5)?,
                    created_at: from_unix(row.get(6)?),
                    started_at: row.get::<_, Option<f64>>(7)?.map(from_unix),
                    finished_at: row.get::<_, Option<f64>>(8)?.map(from_unix),
                    cooldown_until: row.get::<_, Option<f64>>(9)?.map(from_unix),
                    outcome: row.get(10)?,
                    reason: row.get(11)?,
                    not_before: row.get::<_, Option<f64>>(12)?.map(from_unix),
                    retry_of: row.get(13)?,
                    refused: row.get(14)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|err| self.fail(err))
    }
}

/// Why a run found `running` at start-up is interrupted.
pub const INTERRUPTED_BY_EXIT: &str =
    "the service stopped during the run (killed or crashed); the run did not continue";

/// When the cluster's last run that did (or tried) work finished: the cooldown clock.
/// Dry runs, skips, cancellations and refusals changed nothing and do not count.
pub fn last_work_finished(tx: &Connection, cluster: &str) -> rusqlite::Result<Option<SystemTime>> {
    tx.query_row(
        "SELECT max(finished_at) FROM runs WHERE cluster = ?1 AND state = 'finished' \
         AND dry_run = 0 AND refused = 0 AND outcome NOT IN ('skipped', 'cancelled', 'planned')",
        [cluster],
        |row| row.get::<_, Option<f64>>(0),
    )
    .map(|seconds| seconds.map(from_unix))
}

/// The run an earlier delivery of the same alert episode (fingerprint and `startsAt`) led
/// to, with its finish time when it has finished.
pub fn episode_run(
    tx: &Connection,
    fingerprint: &str,
    starts_at: &str,
) -> rusqlite::Result<Option<(i64, Option<SystemTime>)>> {
    tx.query_row(
        "SELECT runs.id, runs.finished_at FROM alerts JOIN runs ON runs.id = alerts.run_id \
         WHERE alerts.fingerprint = ?1 AND alerts.starts_at = ?2 AND alerts.status = 'firing' \
         AND alerts.action IN ('queued', 'joined') ORDER BY alerts.id DESC LIMIT 1",
        [fingerprint, starts_at],
        |row| Ok((row.get(0)?, row.get::<_, Option<f64>>(1)?.map(from_unix))),
    )
    .optional()
}

pub fn insert_run(tx: &Connection, run: &NewRun<'_>) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO runs (cluster, state, source, dry_run, trigger, cooldown_until, created_at, \
         not_before, retry_of) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            run.cluster,
            RunState::Queued.as_str(),
            run.source,
            run.dry_run,
            run.trigger,
            run.cooldown_until.map(unix),
            unix(SystemTime::now()),
            run.not_before.map(unix),
            run.retry_of
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

pub fn insert_alert(tx: &Connection, alert: &AlertRecord) -> rusqlite::Result<()> {
    let labels = serde_json::to_string(&alert.labels).unwrap_or_else(|_| "{}".into());
    tx.execute(
        "INSERT INTO alerts (received_at, alertname, status, fingerprint, cluster, labels, \
         starts_at, action, reason, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            unix(SystemTime::now()),
            alert.alertname,
            alert.status,
            alert.fingerprint,
            alert.cluster,
            labels,
            alert.starts_at,
            alert.action,
            alert.reason,
            alert.run_id
        ],
    )
    .map(drop)
}

/// Records the end of a run: cancelled before it started, or finished with its report.
pub fn finish(tx: &Connection, id: i64, report: &RunReport) -> rusqlite::Result<()> {
    let json = serde_json::to_string(report)
        .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
    tx.execute(
        "UPDATE runs SET state = 'finished', finished_at = ?2, outcome = ?3, reason = ?4, \
         report = ?5, refused = ?6, started_at = coalesce(started_at, ?2) WHERE id = ?1",
        params![
            id,
            unix(report.finished_at),
            report.outcome.as_str(),
            report.reason,
            json,
            report.refused
        ],
    )
    .map(drop)
}

/// Seconds since the Unix epoch, as stored and as metrics carry them.
pub(crate) fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn from_unix(seconds: f64) -> SystemTime {
    UNIX_EPOCH + Duration::try_from_secs_f64(seconds).unwrap_or_default()
}

fn option_rfc3339<S: serde::Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => crate::report::timestamp::serialize(time, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_run(cluster: &str) -> NewRun<'_> {
        NewRun {
            cluster,
            source: "alertmanager",
            dry_run: false,
            trigger: "EtcdmedicNoSpaceAlarm",
            cooldown_until: None,
            not_before: None,
            retry_of: None,
        }
    }

    #[test]
    fn runs_left_running_by_a_dead_process_come_back_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/state.sqlite");
        let id = {
            let mut store = Store::open(&path, false).unwrap();
            let id = store
                .transaction(|tx| insert_run(tx, &new_run("a")))
                .unwrap();
            store.mark_running(id, SystemTime::now()).unwrap();
            id
        };
        let mut store = Store::open(&path, false).unwrap();
        assert_eq!(
            store.interrupt_unfinished().unwrap(),
            vec![InterruptedRun {
                id,
                cluster: "a".into()
            }]
        );
        let run = store.run(id).unwrap().unwrap();
        assert_eq!(run.summary.state, RunState::Finished);
        assert_eq!(run.summary.outcome.as_deref(), Some("interrupted"));
        assert_eq!(
            last_work_finished(&store.connection, "a")
                .unwrap()
                .map(super::unix),
            run.summary.finished_at.map(super::unix)
        );
        assert!(store.interrupt_unfinished().unwrap().is_empty());
    }

    #[test]
    fn a_refusal_does_not_start_the_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.sqlite"), false).unwrap();
        let id = store
            .transaction(|tx| insert_run(tx, &new_run("a")))
            .unwrap();
        let mut refused = RunReport::ended("a", "", false, Outcome::Failed, "refused: x".into());
        refused.refused = true;
        store.finish(id, &refused).unwrap();
        assert_eq!(last_work_finished(&store.connection, "a").unwrap(), None);
        assert!(store.run(id).unwrap().unwrap().summary.refused);
    }

    #[test]
    fn the_cooldown_clock_ignores_runs_that_changed_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.sqlite"), false).unwrap();
        for outcome in [Outcome::Skipped, Outcome::Cancelled, Outcome::Planned] {
            let id = store
                .transaction(|tx| insert_run(tx, &new_run("a")))
                .unwrap();
            let report = RunReport::ended("a", "", false, outcome, "x".into());
            store.finish(id, &report).unwrap();
        }
        assert_eq!(last_work_finished(&store.connection, "a").unwrap(), None);
        let id = store
            .transaction(|tx| insert_run(tx, &new_run("a")))
            .unwrap();
        store
            .finish(
                id,
                &RunReport::ended("a", "", false, Outcome::Failed, "x".into()),
            )
            .unwrap();
        assert!(last_work_finished(&store.connection, "a")
            .unwrap()
            .is_some());
        assert_eq!(last_work_finished(&store.connection, "b").unwrap(), None);
    }

    #[test]
    fn pages_of_runs_filter_by_cluster_and_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.sqlite"), false).unwrap();
        for cluster in ["a", "b", "a", "a"] {
            let id = store
                .transaction(|tx| insert_run(tx, &new_run(cluster)))
                .unwrap();
            let outcome = if id == 4 {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            };
            store
                .finish(
                    id,
                    &RunReport::ended(cluster, "", false, outcome, "x".into()),
                )
                .unwrap();
        }
        let page = |filter: RunFilter| -> Vec<i64> {
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
            outcome: Some("succeeded".into()),
            limit: 10,
            ..RunFilter::default()
        };
        assert_eq!(page(succeeded), vec![3, 2, 1]);
    }

    #[test]
    fn the_pause_switch_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        Store::open(&path, false).unwrap().set_paused(true).unwrap();
        assert!(Store::open(&path, false).unwrap().paused().unwrap());
    }
}
