//! The state in one SQLite file, locked for this process (a second service on the same file
//! refuses to start), with every row read back typed: a row that is not what this build
//! wrote (an unknown state or outcome, a report of a newer format or that does not parse) is
//! logged and counted in `etcdmedic_store_unreadable_rows_total`, never silently dropped or
//! read as something else.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    schema, to_json, unix, AlertRecord, RunDetail, RunFilter, RunSummary, StateStore, StoreError,
    StoreResult, Transaction,
};
use crate::lock::{FileLock, LockError};
use crate::report::{Outcome, RunReport};
use crate::service::backups::{BackupFilter, BackupRecord};

mod transaction;

use super::rows::{Columns, Rows, Unreadable, RUN_COLUMNS};
use super::statements::{self as sql, Statement};
use transaction::SqliteTransaction;

pub(crate) struct SqliteStore {
    connection: Connection,
    path: PathBuf,
    rows: Rows,
    _lock: FileLock,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens the state at `path`, creating the file (and its directory) when there is none
    /// and bringing an older schema up to date. Refused when another process holds the file
    /// (`<path>.lock`), and when it exists but holds no etcdmedic state, unless `init` says
    /// to initialise it (see `schema::open`). Unreadable rows are counted in `unreadable`.
    pub(crate) fn open(path: &Path, init: bool, unreadable: Counter) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|err| StoreError::NotOurs {
                place: path.display().to_string(),
                why: format!("cannot create the directory {}: {err}", dir.display()),
            })?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = FileLock::acquire(Path::new(&lock_path)).map_err(|err| match err {
            LockError::Held { holder, .. } => StoreError::InUse {
                place: path.display().to_string(),
                holder,
            },
            source => StoreError::Lock {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let connection = schema::open(path, init)?;
        Ok(SqliteStore {
            connection,
            path: path.to_path_buf(),
            rows: Rows { unreadable },
            _lock: lock,
        })
    }

    fn fail(&self, source: rusqlite::Error) -> StoreError {
        StoreError::sqlite(&self.path, source)
    }

    fn select_runs(
        &self,
        condition: Statement,
        parameters: impl rusqlite::Params,
    ) -> StoreResult<Vec<RunSummary>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs {}", condition.sqlite());
        let mut select = self
            .connection
            .prepare(&sql)
            .map_err(|err| self.fail(err))?;
        let rows = select
            .query_map(parameters, |row| Ok(self.rows.run(&SqliteRow(row))))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|err| self.fail(err))?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn select_reports(
        &self,
        condition: Statement,
        parameters: impl rusqlite::Params,
    ) -> StoreResult<Vec<RunReport>> {
        let sql = format!(
            "SELECT id, report, report_format FROM runs {}",
            condition.sqlite()
        );
        let mut select = self
            .connection
            .prepare(&sql)
            .map_err(|err| self.fail(err))?;
        let rows = select
            .query_map(parameters, |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<(i64, String, Option<i64>)>>>())
            .map_err(|err| self.fail(err))?;
        Ok(rows
            .iter()
            .filter_map(|(id, json, format)| self.rows.report(*id, *format, json))
            .collect())
    }

    fn alerts_of(&self, run_id: i64) -> StoreResult<Vec<AlertRecord>> {
        let mut select = self
            .connection
            .prepare(&sql::ALERTS_OF_RUN.sqlite())
            .map_err(|err| self.fail(err))?;
        let rows = select
            .query_map([run_id], |row| {
                let labels: String = row.get(4)?;
                let labels = serde_json::from_str(&labels).unwrap_or_else(|err| {
                    let id: i64 = row.get(9).unwrap_or_default();
                    self.rows
                        .unreadable("alerts", id, &format!("labels: {err}"));
                    Default::default()
                });
                Ok(AlertRecord {
                    alertname: row.get(0)?,
                    status: row.get(1)?,
                    fingerprint: row.get(2)?,
                    cluster: row.get(3)?,
                    labels,
                    starts_at: row.get(5)?,
                    action: row.get(6)?,
                    reason: row.get(7)?,
                    run_id: row.get(8)?,
                    generator_url: Some(row.get::<_, String>(10)?).filter(|u| !u.is_empty()),
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|err| self.fail(err))
    }
}

/// A SQLite row as [`Columns`]: flags are integers there.
struct SqliteRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl Columns for SqliteRow<'_, '_> {
    fn id(&self, i: usize) -> Result<i64, Unreadable> {
        self.0.get(i).map_err(|e| Unreadable::column(i, e))
    }
    fn optional_id(&self, i: usize) -> Result<Option<i64>, Unreadable> {
        self.0.get(i).map_err(|e| Unreadable::column(i, e))
    }
    fn text(&self, i: usize) -> Result<String, Unreadable> {
        self.0.get(i).map_err(|e| Unreadable::column(i, e))
    }
    fn optional_text(&self, i: usize) -> Result<Option<String>, Unreadable> {
        self.0.get(i).map_err(|e| Unreadable::column(i, e))
    }
    fn flag(&self, i: usize) -> Result<bool, Unreadable> {
        self.0.get(i).map_err(|e| Unreadable::column(i, e))
    }
    fn seconds(&self, i: usize) -> Result<Option<f64>, Unreadable> {
        self.0.get(i).map_err(|e| Unreadable::column(i, e))
    }
}

impl StoreError {
    pub(crate) fn sqlite(path: &Path, source: rusqlite::Error) -> Self {
        StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl StateStore for SqliteStore {
    fn transaction(
        &mut self,
        work: &mut dyn FnMut(&mut dyn Transaction) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let path = self.path.clone();
        let fail = |err| StoreError::sqlite(&path, err);
        let tx = self.connection.transaction().map_err(fail)?;
        work(&mut SqliteTransaction {
            tx: &tx,
            path: &path,
        })?;
        tx.commit().map_err(fail)
    }

    fn ping(&mut self) -> StoreResult<()> {
        self.connection
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(|err| self.fail(err))
    }

    fn running(&mut self) -> StoreResult<Vec<RunSummary>> {
        self.select_runs(sql::RUNNING, [])
    }

    fn queued(&mut self) -> StoreResult<Vec<RunSummary>> {
        self.select_runs(sql::QUEUED, [])
    }

    fn firing_fingerprints(&mut self, run_id: i64) -> StoreResult<Vec<String>> {
        let mut select = self
            .connection
            .prepare(&sql::FIRING_FINGERPRINTS.sqlite())
            .map_err(|err| self.fail(err))?;
        let rows = select
            .query_map([run_id], |row| row.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>());
        rows.map_err(|err| self.fail(err))
    }

    fn mark_running(&mut self, id: i64, at: SystemTime) -> StoreResult<()> {
        self.connection
            .execute(&sql::MARK_RUNNING.sqlite(), params![id, unix(at)])
            .map(drop)
            .map_err(|err| self.fail(err))
    }

    fn still_running(&mut self, id: i64) -> StoreResult<bool> {
        self.connection
            .query_row(&sql::STILL_RUNNING.sqlite(), [id], |row| {
                row.get::<_, bool>(0)
            })
            .optional()
            .map(|running| running == Some(true))
            .map_err(|err| self.fail(err))
    }

    fn append_reason(&mut self, id: i64, sentence: &str) -> StoreResult<()> {
        self.connection
            .execute(&sql::APPEND_REASON.sqlite(), params![id, sentence])
            .map(drop)
            .map_err(|err| self.fail(err))
    }

    fn paused(&mut self) -> StoreResult<bool> {
        self.connection
            .query_row(&sql::PAUSED.sqlite(), [], |row| row.get::<_, String>(0))
            .optional()
            .map(|value| value.as_deref() == Some("true"))
            .map_err(|err| self.fail(err))
    }

    fn set_paused(&mut self, paused: bool) -> StoreResult<()> {
        self.connection
            .execute(
                &sql::SET_PAUSED.sqlite(),
                params![paused.to_string(), unix(SystemTime::now())],
            )
            .map(drop)
            .map_err(|err| self.fail(err))
    }

    fn runs(&mut self, filter: &RunFilter) -> StoreResult<Vec<RunSummary>> {
        self.select_runs(
            sql::RUNS_PAGE,
            params![
                filter.cluster,
                filter.outcome.map(Outcome::as_str),
                filter.before,
                i64::try_from(filter.limit).unwrap_or(i64::MAX)
            ],
        )
    }

    fn run(&mut self, id: i64) -> StoreResult<Option<RunDetail>> {
        let Some(summary) = self.select_runs(sql::RUN_BY_ID, [id])?.into_iter().next() else {
            return Ok(None);
        };
        let stored: (Option<String>, Option<i64>) = self
            .connection
            .query_row(&sql::REPORT_OF_RUN.sqlite(), [id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(|err| self.fail(err))?;
        let alerts = self.alerts_of(id)?;
        Ok(Some(self.rows.detail(summary, alerts, stored)))
    }

    fn latest_finished(&mut self) -> StoreResult<Vec<RunReport>> {
        self.select_reports(sql::LATEST_FINISHED, params![])
    }

    fn recent_work(&mut self, cluster: &str, limit: usize) -> StoreResult<Vec<RunReport>> {
        self.select_reports(
            sql::RECENT_WORK,
            params![cluster, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    fn record_backup(&mut self, record: &BackupRecord) -> StoreResult<i64> {
        let json = to_json("a backup record", record)?;
        self.connection
            .query_row(
                &sql::INSERT_BACKUP.sqlite(),
                params![
                    record.cluster,
                    record.outcome.as_str(),
                    unix(record.finished_at),
                    json
                ],
                |row| row.get(0),
            )
            .map_err(|err| self.fail(err))
    }

    fn backups(&mut self, filter: &BackupFilter) -> StoreResult<Vec<BackupRecord>> {
        let mut statement = self
            .connection
            .prepare(&sql::BACKUPS_PAGE.sqlite())
            .map_err(|err| self.fail(err))?;
        let rows: Vec<(i64, String)> = statement
            .query_map(
                params![
                    filter.cluster,
                    i64::try_from(filter.limit).unwrap_or(i64::MAX)
                ],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .and_then(Iterator::collect)
            .map_err(|err| self.fail(err))?;
        drop(statement);
        Ok(rows
            .into_iter()
            .filter_map(|(id, json)| self.rows.backup(id, &json))
            .collect())
    }
}
