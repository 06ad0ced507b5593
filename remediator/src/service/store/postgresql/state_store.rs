//! [`StateStore`] over PostgreSQL: the same queries as SQLite's, in PostgreSQL's dialect.

use std::time::SystemTime;

use super::super::statements::{self as sql};
use super::super::{
    to_json, unix, RunDetail, RunFilter, RunSummary, StateStore, StoreError, StoreResult,
    Transaction,
};
use super::cached::Cached;
use super::transaction::PostgresTransaction;
use super::{limit, Again, PostgresStore};
use crate::report::{Outcome, RunReport};
use crate::service::backups::{BackupFilter, BackupRecord};

impl StateStore for PostgresStore {
    fn transaction(
        &mut self,
        work: &mut dyn FnMut(&mut dyn Transaction) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let place = self.place.clone();
        let fail = |source| StoreError::Postgres {
            database: place.clone(),
            source,
        };
        // The work runs once (the scheduler's decisions are not repeatable), so only a BEGIN
        // that failed on a connection found closed is tried again, on a new one: nothing was
        // done yet.
        let mut began_again = false;
        loop {
            self.client(false)?;
            let err = match self.client.transaction() {
                Ok(mut tx) => {
                    work(&mut PostgresTransaction {
                        tx: Cached {
                            client: &mut tx,
                            statements: &mut self.statements,
                        },
                        place: &place,
                    })?;
                    return tx.commit().map_err(fail);
                }
                Err(err) => err,
            };
            // A restarted server says why it ends the session before it closes it; either
            // way the connection is gone.
            if began_again || !self.client.is_closed() {
                return Err(fail(err));
            }
            began_again = true;
        }
    }

    fn ping(&mut self) -> StoreResult<()> {
        self.with_client(Again::Safe, |client| {
            client.query_one("SELECT 1", &[]).map(drop)
        })
    }

    fn running(&mut self) -> StoreResult<Vec<RunSummary>> {
        self.select_runs(sql::RUNNING, &[])
    }

    fn queued(&mut self) -> StoreResult<Vec<RunSummary>> {
        self.select_runs(sql::QUEUED, &[])
    }

    fn firing_fingerprints(&mut self, run_id: i64) -> StoreResult<Vec<String>> {
        self.with_client(Again::Safe, |client| {
            client
                .query(sql::FIRING_FINGERPRINTS.postgres(), &[&run_id])
                .and_then(|rows| rows.iter().map(|row| row.try_get(0)).collect())
        })
    }

    fn mark_running(&mut self, id: i64, at: SystemTime) -> StoreResult<()> {
        self.with_client(Again::Safe, |client| {
            client
                .execute(sql::MARK_RUNNING.postgres(), &[&id, &unix(at)])
                .map(drop)
        })
    }

    fn still_running(&mut self, id: i64) -> StoreResult<bool> {
        // On a connection just asked: a reconnection takes the lock again, or says who has it.
        self.client(true)?;
        self.with_client(Again::Safe, |client| {
            client
                .query_opt(sql::STILL_RUNNING.postgres(), &[&id])
                .and_then(|row| row.map(|row| row.try_get::<_, bool>(0)).transpose())
                .map(|running| running == Some(true))
        })
    }

    fn append_reason(&mut self, id: i64, sentence: &str) -> StoreResult<()> {
        self.with_client(Again::Never, |client| {
            client
                .execute(sql::APPEND_REASON.postgres(), &[&id, &sentence])
                .map(drop)
        })
    }

    fn paused(&mut self) -> StoreResult<bool> {
        self.with_client(Again::Safe, |client| {
            client
                .query_opt(sql::PAUSED.postgres(), &[])
                .and_then(|row| row.map(|row| row.try_get::<_, String>(0)).transpose())
                .map(|value| value.as_deref() == Some("true"))
        })
    }

    fn set_paused(&mut self, paused: bool) -> StoreResult<()> {
        self.with_client(Again::Safe, |client| {
            client
                .execute(
                    sql::SET_PAUSED.postgres(),
                    &[&paused.to_string(), &unix(SystemTime::now())],
                )
                .map(drop)
        })
    }

    fn runs(&mut self, filter: &RunFilter) -> StoreResult<Vec<RunSummary>> {
        self.select_runs(
            sql::RUNS_PAGE,
            &[
                &filter.cluster,
                &filter.outcome.map(Outcome::as_str),
                &filter.before,
                &limit(filter.limit),
            ],
        )
    }

    fn run(&mut self, id: i64) -> StoreResult<Option<RunDetail>> {
        let Some(summary) = self.select_runs(sql::RUN_BY_ID, &[&id])?.into_iter().next() else {
            return Ok(None);
        };
        let row = self.with_client(Again::Safe, |client| {
            client.query_one(sql::REPORT_OF_RUN.postgres(), &[&id])
        })?;
        let stored: (Option<String>, Option<i64>) =
            (|| Ok((row.try_get(0)?, row.try_get(1)?)))().map_err(|err| self.fail(err))?;
        let alerts = self.alerts_of(id)?;
        Ok(Some(self.rows.detail(summary, alerts, stored)))
    }

    fn latest_finished(&mut self) -> StoreResult<Vec<RunReport>> {
        self.select_reports(sql::LATEST_FINISHED, &[])
    }

    fn recent_work(&mut self, cluster: &str, limit_to: usize) -> StoreResult<Vec<RunReport>> {
        self.select_reports(sql::RECENT_WORK, &[&cluster, &limit(limit_to)])
    }

    fn record_backup(&mut self, record: &BackupRecord) -> StoreResult<i64> {
        let json = to_json("a backup record", record)?;
        self.with_client(Again::Never, |client| {
            client
                .query_one(
                    sql::INSERT_BACKUP.postgres(),
                    &[
                        &record.cluster,
                        &record.outcome.as_str(),
                        &unix(record.finished_at),
                        &json,
                    ],
                )
                .and_then(|row| row.try_get(0))
        })
    }

    fn backups(&mut self, filter: &BackupFilter) -> StoreResult<Vec<BackupRecord>> {
        let rows = self.with_client(Again::Safe, |client| {
            client.query(
                sql::BACKUPS_PAGE.postgres(),
                &[&filter.cluster, &limit(filter.limit)],
            )
        })?;
        let mut records = Vec::new();
        for row in &rows {
            let (id, json): (i64, String) =
                (|| Ok((row.try_get(0)?, row.try_get(1)?)))().map_err(|err| self.fail(err))?;
            records.extend(self.rows.backup(id, &json));
        }
        Ok(records)
    }
}
