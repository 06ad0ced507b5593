//! One SQLite transaction, implementing the scheduler's [`Transaction`].

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension};

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
            .execute(
                "UPDATE runs SET not_before = ?2 WHERE id = ?1 AND state = 'queued'",
                params![id, at.map(unix)],
            )
            .map(drop)
            .map_err(|err| self.fail(err))
    }

    fn insert_run(&mut self, run: &NewRun<'_>) -> StoreResult<i64> {
        self.tx
            .execute(
                "INSERT INTO runs (cluster, state, source, dry_run, trigger, cooldown_until, \
                 created_at, not_before, retry_of) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
            )
            .map_err(|err| self.fail(err))?;
        Ok(self.tx.last_insert_rowid())
    }

    fn insert_alert(&mut self, alert: &AlertRecord) -> StoreResult<()> {
        let labels = to_json("an alert's labels", &alert.labels)?;
        self.tx
            .execute(
                "INSERT INTO alerts (received_at, alertname, status, fingerprint, cluster, \
                 labels, starts_at, action, reason, run_id, generator_url) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
            .query_row(
                "SELECT max(finished_at) FROM runs WHERE cluster = ?1 AND state = 'finished' \
                 AND dry_run = 0 AND refused = 0 \
                 AND outcome NOT IN ('skipped', 'cancelled', 'planned')",
                [cluster],
                |row| row.get::<_, Option<f64>>(0),
            )
            .map(|seconds| seconds.map(from_unix))
            .map_err(|err| self.fail(err))
    }

    fn episode_run(
        &mut self,
        fingerprint: &str,
        starts_at: &str,
    ) -> StoreResult<Option<(i64, Option<SystemTime>)>> {
        self.tx
            .query_row(
                "SELECT runs.id, runs.finished_at FROM alerts \
                 JOIN runs ON runs.id = alerts.run_id \
                 WHERE alerts.fingerprint = ?1 AND alerts.starts_at = ?2 \
                 AND alerts.status = 'firing' AND alerts.action IN ('queued', 'joined') \
                 ORDER BY alerts.id DESC LIMIT 1",
                [fingerprint, starts_at],
                |row| Ok((row.get(0)?, row.get::<_, Option<f64>>(1)?.map(from_unix))),
            )
            .optional()
            .map_err(|err| self.fail(err))
    }
}

/// Records run `id` as finished with `report`, whose JSON is `json`.
fn finish(tx: &Connection, id: i64, report: &RunReport, json: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE runs SET state = 'finished', finished_at = ?2, outcome = ?3, reason = ?4, \
         report = ?5, report_format = ?6, refused = ?7, error_kind = ?8, \
         started_at = coalesce(started_at, ?2) WHERE id = ?1",
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
