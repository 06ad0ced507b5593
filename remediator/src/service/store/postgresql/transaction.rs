//! One PostgreSQL transaction, implementing the scheduler's [`Transaction`].

use std::time::SystemTime;

use super::super::{
    from_unix, to_json, unix, AlertRecord, NewRun, RunState, StoreError, StoreResult, Transaction,
};
use super::cached::Cached;
use crate::report::{RunReport, REPORT_FORMAT};

pub(super) struct PostgresTransaction<'a, 'b> {
    pub(super) tx: Cached<'a, postgres::Transaction<'b>>,
    pub(super) place: &'a str,
}

impl PostgresTransaction<'_, '_> {
    fn fail(&self, source: postgres::Error) -> StoreError {
        StoreError::Postgres {
            database: self.place.to_string(),
            source,
        }
    }
}

impl Transaction for PostgresTransaction<'_, '_> {
    fn set_not_before(&mut self, id: i64, at: Option<SystemTime>) -> StoreResult<()> {
        self.tx
            .execute(
                "UPDATE runs SET not_before = $2 WHERE id = $1 AND state = 'queued'",
                &[&id, &at.map(unix)],
            )
            .map(drop)
            .map_err(|err| self.fail(err))
    }

    fn insert_run(&mut self, run: &NewRun<'_>) -> StoreResult<i64> {
        self.tx
            .query_one(
                "INSERT INTO runs (cluster, state, source, dry_run, trigger, cooldown_until, \
                 created_at, not_before, retry_of) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 RETURNING id",
                &[
                    &run.cluster,
                    &RunState::Queued.as_str(),
                    &run.source.as_str(),
                    &run.dry_run,
                    &run.trigger,
                    &run.cooldown_until.map(unix),
                    &unix(SystemTime::now()),
                    &run.not_before.map(unix),
                    &run.retry_of,
                ],
            )
            .and_then(|row| row.try_get(0))
            .map_err(|err| self.fail(err))
    }

    fn insert_alert(&mut self, alert: &AlertRecord) -> StoreResult<()> {
        let labels = to_json("an alert's labels", &alert.labels)?;
        self.tx
            .execute(
                "INSERT INTO alerts (received_at, alertname, status, fingerprint, cluster, \
                 labels, starts_at, action, reason, run_id, generator_url) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &unix(SystemTime::now()),
                    &alert.alertname,
                    &alert.status,
                    &alert.fingerprint,
                    &alert.cluster,
                    &labels,
                    &alert.starts_at,
                    &alert.action,
                    &alert.reason,
                    &alert.run_id,
                    &alert.generator_url.as_deref().unwrap_or(""),
                ],
            )
            .map(drop)
            .map_err(|err| self.fail(err))
    }

    fn finish(&mut self, id: i64, report: &RunReport) -> StoreResult<()> {
        let json = to_json("a run report", report)?;
        let result = finish(&mut self.tx, id, report, &json);
        result.map_err(|err| self.fail(err))
    }

    fn last_work_finished(&mut self, cluster: &str) -> StoreResult<Option<SystemTime>> {
        self.tx
            .query_one(
                "SELECT max(finished_at) FROM runs WHERE cluster = $1 AND state = 'finished' \
                 AND NOT dry_run AND NOT refused \
                 AND outcome NOT IN ('skipped', 'cancelled', 'planned')",
                &[&cluster],
            )
            .and_then(|row| row.try_get::<_, Option<f64>>(0))
            .map(|seconds| seconds.map(from_unix))
            .map_err(|err| self.fail(err))
    }

    fn episode_run(
        &mut self,
        fingerprint: &str,
        starts_at: &str,
    ) -> StoreResult<Option<(i64, Option<SystemTime>)>> {
        let row = self
            .tx
            .query_opt(
                "SELECT runs.id, runs.finished_at FROM alerts \
                 JOIN runs ON runs.id = alerts.run_id \
                 WHERE alerts.fingerprint = $1 AND alerts.starts_at = $2 \
                 AND alerts.status = 'firing' AND alerts.action IN ('queued', 'joined') \
                 ORDER BY alerts.id DESC LIMIT 1",
                &[&fingerprint, &starts_at],
            )
            .map_err(|err| self.fail(err))?;
        row.map(|row| {
            Ok((
                row.try_get(0)?,
                row.try_get::<_, Option<f64>>(1)?.map(from_unix),
            ))
        })
        .transpose()
        .map_err(|err| self.fail(err))
    }
}

/// Records a run's end (also used outside a scheduler transaction).
fn finish(
    tx: &mut Cached<'_, impl postgres::GenericClient>,
    id: i64,
    report: &RunReport,
    json: &str,
) -> Result<(), postgres::Error> {
    tx.execute(
        "UPDATE runs SET state = 'finished', finished_at = $2, outcome = $3, reason = $4, \
         report = $5, report_format = $6, refused = $7, error_kind = $8, \
         started_at = coalesce(started_at, $2) WHERE id = $1",
        &[
            &id,
            &unix(report.finished_at),
            &report.outcome.as_str(),
            &report.reason,
            &json,
            &REPORT_FORMAT,
            &report.refused,
            &report.error_kind,
        ],
    )
    .map(drop)
}
