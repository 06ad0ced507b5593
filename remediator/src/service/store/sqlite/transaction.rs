//! One SQLite transaction, implementing the scheduler's [`Transaction`].

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension};

use super::super::statements::{
    EPISODE_RUN, FINISH_RUN, INSERT_ALERT, INSERT_RUN, LAST_WORK_FINISHED, SET_NOT_BEFORE,
};
use super::super::{
    from_unix, to_json, unix, AlertRecord, NewRun, RunState, StoreError, StoreResult, Transaction,
};
use crate::report::{RunReport, REPORT_FORMAT};

/// One SQLite transaction, as the scheduler sees it.
pub(super) struct SqliteTransaction<'a> {
    pub(super) tx: &'a rusqlite::Transaction<'a>,
    pub(super) path: &'a Path,
}

impl SqliteTransaction<'_> {
    fn fail(&self, source: rusqlite::Error) -> StoreError {
        StoreError::sqlite(self.path, source)
    }
}

impl Transaction for SqliteTransaction<'_> {
    fn set_not_before(&mut self, id: i64, at: Option<SystemTime>) -> StoreResult<()> {
        self.tx
            .execute(&SET_NOT_BEFORE.sqlite(), params![id, at.map(unix)])
            .map(drop)
            .map_err(|err| self.fail(err))
    }

    fn insert_run(&mut self, run: &NewRun<'_>) -> StoreResult<i64> {
        self.tx
            .query_row(
                &INSERT_RUN.sqlite(),
                params![
                    run.cluster,
                    RunState::Queued.as_str(),
                    run.source.as_str(),
                    run.dry_run,
                    run.trigger,
                    run.cooldown_until.map(unix),
                    unix(SystemTime::now()),
                    run.not_before.map(unix),
                    run.retry_of
                ],
                |row| row.get(0),
            )
            .map_err(|err| self.fail(err))
    }

    fn insert_alert(&mut self, alert: &AlertRecord) -> StoreResult<()> {
        let labels = to_json("an alert's labels", &alert.labels)?;
        self.tx
            .execute(
                &INSERT_ALERT.sqlite(),
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
                    alert.run_id,
                    alert.generator_url.as_deref().unwrap_or("")
                ],
            )
            .map(drop)
            .map_err(|err| self.fail(err))
    }

    fn finish(&mut self, id: i64, report: &RunReport) -> StoreResult<()> {
        let json = to_json("a run report", report)?;
        finish(self.tx, id, report, &json).map_err(|err| self.fail(err))
    }

    fn last_work_finished(&mut self, cluster: &str) -> StoreResult<Option<SystemTime>> {
        self.tx
            .query_row(&LAST_WORK_FINISHED.sqlite(), [cluster], |row| {
                row.get::<_, Option<f64>>(0)
            })
            .map(|seconds| seconds.map(from_unix))
            .map_err(|err| self.fail(err))
    }

    fn episode_run(
        &mut self,
        fingerprint: &str,
        starts_at: &str,
    ) -> StoreResult<Option<(i64, Option<SystemTime>)>> {
        self.tx
            .query_row(&EPISODE_RUN.sqlite(), [fingerprint, starts_at], |row| {
                Ok((row.get(0)?, row.get::<_, Option<f64>>(1)?.map(from_unix)))
            })
            .optional()
            .map_err(|err| self.fail(err))
    }
}

/// Records run `id` as finished with `report`, whose JSON is `json`.
fn finish(tx: &Connection, id: i64, report: &RunReport, json: &str) -> rusqlite::Result<()> {
    tx.execute(
        &FINISH_RUN.sqlite(),
        params![
            id,
            unix(report.finished_at),
            report.outcome.as_str(),
            report.reason,
            json,
            REPORT_FORMAT,
            report.refused,
            report.error_kind,
        ],
    )
    .map(drop)
}
