//! One PostgreSQL transaction, implementing the scheduler's [`Transaction`].

use std::time::SystemTime;

use super::super::statements::{
    EPISODE_RUN, FINISH_RUN, INSERT_ALERT, INSERT_RUN, LAST_WORK_FINISHED, SET_NOT_BEFORE,
};
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
            .execute(SET_NOT_BEFORE.postgres(), &[&id, &at.map(unix)])
            .map(drop)
            .map_err(|err| self.fail(err))
    }

    fn insert_run(&mut self, run: &NewRun<'_>) -> StoreResult<i64> {
        self.tx
            .query_one(
                INSERT_RUN.postgres(),
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
                INSERT_ALERT.postgres(),
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
            .query_one(LAST_WORK_FINISHED.postgres(), &[&cluster])
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
            .query_opt(EPISODE_RUN.postgres(), &[&fingerprint, &starts_at])
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
        FINISH_RUN.postgres(),
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
