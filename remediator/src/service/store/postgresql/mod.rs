//! The state in a PostgreSQL database, for services that must not depend on one node's disk.
//! The service holds a session advisory lock on the database for as long as it runs: a second
//! service on the same database is refused and told who holds it, exactly like the SQLite
//! file's lock, and the lock goes with the holder's connection when it dies (PostgreSQL ends
//! the session), so a replacement can start at once. Rows are read back typed, as from SQLite.
//!
//! The client is the synchronous one: it runs its own small runtime and must be used (and
//! dropped) on a thread that is not async, which the service's owner thread is.

use std::time::{Duration, Instant};

use postgres::{Client, Row};
use prometheus_client::metrics::counter::Counter;

use super::rows::{Columns, Rows, Unreadable, RUN_COLUMNS};
use super::statements::{self, Statement};
use super::{AlertRecord, RunSummary, StoreError, StoreResult};
use crate::report::RunReport;
use crate::service::settings::PostgresSettings;

mod cached;
mod lock;
mod schema;
mod state_store;
mod transaction;

use cached::{Cached, Statements};
use lock::{announce, connect};
pub(crate) use lock::{Holder, PostgresLease};

/// A connection unused for longer is checked before it is used.
const IDLE_BEFORE_CHECK: Duration = Duration::from_secs(1);

/// Whether a statement may be sent again after its connection was lost (see
/// [`PostgresStore::with_client`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    Safe,
    Never,
}

/// A PostgreSQL error with what the server said: the client's own text for a server error
/// is only "db error".
pub(crate) fn describe(err: &postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => etcdmedic_cluster::member_client::with_sources(&err.to_string(), err),
    }
}

pub(crate) struct PostgresStore {
    client: Client,
    /// When the connection last answered (or was made).
    last_used: Instant,
    settings: PostgresSettings,
    /// Where standbys reach this replica while it holds the lock.
    advertise: Option<String>,
    /// The connection's prepared statements.
    statements: Statements,
    place: String,
    rows: Rows,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.place)
            .finish()
    }
}

impl PostgresStore {
    /// Connects, takes the service's advisory lock (refused when another service holds it)
    /// and brings the schema up to date. Must not be called on an async thread.
    /// `advertise`: what this replica announces to standbys (its sealed address).
    pub(crate) fn open(
        settings: &PostgresSettings,
        advertise: Option<String>,
        unreadable: Counter,
    ) -> StoreResult<PostgresStore> {
        let mut client = connect(settings)?;
        schema::prepare(&mut client, &settings.place)?;
        announce(&mut client, advertise.as_deref()).map_err(|source| StoreError::Postgres {
            database: settings.place.clone(),
            source,
        })?;
        Ok(PostgresStore {
            client,
            last_used: Instant::now(),
            advertise,
            statements: Statements::default(),
            settings: settings.clone(),
            place: settings.place.clone(),
            rows: Rows { unreadable },
        })
    }

    /// The connection, made again (and the lock taken again) when PostgreSQL closed the
    /// last one, as it does when restarted: the lock went with the old session, so a
    /// service that cannot take it back has lost the database to another and says so.
    /// `check`: ask the connection first even if it looks open (before a statement that must
    /// not be sent twice); a connection idle for a while is always asked.
    fn client(&mut self, check: bool) -> StoreResult<&mut Client> {
        let timeout = self
            .settings
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(5));
        let ask = check || self.last_used.elapsed() > IDLE_BEFORE_CHECK;
        if self.client.is_closed() || (ask && self.client.is_valid(timeout).is_err()) {
            tracing::warn!(database = %self.place, "the connection to the state store was lost; connecting again");
            self.client = connect(&self.settings)?;
            self.statements.clear();
            announce(&mut self.client, self.advertise.as_deref()).map_err(|err| self.fail(err))?;
            tracing::info!(database = %self.place, "connected to the state store again, its lock held");
        }
        self.last_used = Instant::now();
        Ok(&mut self.client)
    }

    /// Runs `statement`; `again` says whether it may be sent a second time, on a new
    /// connection, when the first turned out closed: a read, or a write that sets a value,
    /// may; a write that adds (a row, a sentence) may not, as the first may have been carried
    /// out before the connection went, so it is sent only on a connection just asked.
    fn with_client<T>(
        &mut self,
        again: Again,
        mut statement: impl FnMut(&mut Cached<'_, Client>) -> Result<T, postgres::Error>,
    ) -> StoreResult<T> {
        let first = statement(&mut self.cached(again == Again::Never)?);
        match first {
            Err(_) if again == Again::Safe && self.client.is_closed() => {
                statement(&mut self.cached(false)?).map_err(|err| self.fail(err))
            }
            other => other.map_err(|err| self.fail(err)),
        }
    }

    /// [`PostgresStore::client`] with its prepared statements.
    fn cached(&mut self, check: bool) -> StoreResult<Cached<'_, Client>> {
        self.client(check)?;
        Ok(Cached {
            client: &mut self.client,
            statements: &mut self.statements,
        })
    }

    fn fail(&self, source: postgres::Error) -> StoreError {
        StoreError::Postgres {
            database: self.place.clone(),
            source,
        }
    }

    fn select_runs(
        &mut self,
        condition: Statement,
        parameters: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<RunSummary>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs {}", condition.postgres());
        let rows = self.with_client(Again::Safe, |client| client.query(&sql, parameters))?;
        Ok(rows
            .iter()
            .filter_map(|row| self.rows.run(&PostgresRow(row)))
            .collect())
    }

    fn select_reports(
        &mut self,
        condition: Statement,
        parameters: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<RunReport>> {
        let sql = format!(
            "SELECT id, report, report_format FROM runs {}",
            condition.postgres()
        );
        let rows = self.with_client(Again::Safe, |client| client.query(&sql, parameters))?;
        let mut reports = Vec::new();
        for row in &rows {
            let (id, json, format): (i64, String, Option<i64>) =
                (|| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))()
                    .map_err(|err| self.fail(err))?;
            reports.extend(self.rows.report(id, format, &json));
        }
        Ok(reports)
    }

    fn alerts_of(&mut self, run_id: i64) -> StoreResult<Vec<AlertRecord>> {
        let rows = self.with_client(Again::Safe, |client| {
            client.query(statements::ALERTS_OF_RUN.postgres(), &[&run_id])
        })?;
        rows.iter()
            .map(|row| self.alert(row))
            .collect::<Result<_, _>>()
            .map_err(|err| self.fail(err))
    }

    fn alert(&self, row: &Row) -> Result<AlertRecord, postgres::Error> {
        let labels: String = row.try_get(4)?;
        let labels = serde_json::from_str(&labels).unwrap_or_else(|err| {
            let id: i64 = row.try_get(9).unwrap_or_default();
            self.rows
                .unreadable("alerts", id, &format!("labels: {err}"));
            Default::default()
        });
        Ok(AlertRecord {
            alertname: row.try_get(0)?,
            status: row.try_get(1)?,
            fingerprint: row.try_get(2)?,
            cluster: row.try_get(3)?,
            labels,
            starts_at: row.try_get(5)?,
            action: row.try_get(6)?,
            reason: row.try_get(7)?,
            run_id: row.try_get(8)?,
            generator_url: Some(row.try_get::<_, String>(10)?).filter(|u| !u.is_empty()),
        })
    }
}

/// A PostgreSQL row as [`Columns`].
struct PostgresRow<'a>(&'a Row);

impl Columns for PostgresRow<'_> {
    fn id(&self, i: usize) -> Result<i64, Unreadable> {
        self.0.try_get(i).map_err(|e| Unreadable::column(i, e))
    }
    fn optional_id(&self, i: usize) -> Result<Option<i64>, Unreadable> {
        self.0.try_get(i).map_err(|e| Unreadable::column(i, e))
    }
    fn text(&self, i: usize) -> Result<String, Unreadable> {
        self.0.try_get(i).map_err(|e| Unreadable::column(i, e))
    }
    fn optional_text(&self, i: usize) -> Result<Option<String>, Unreadable> {
        self.0.try_get(i).map_err(|e| Unreadable::column(i, e))
    }
    fn flag(&self, i: usize) -> Result<bool, Unreadable> {
        self.0.try_get(i).map_err(|e| Unreadable::column(i, e))
    }
    fn seconds(&self, i: usize) -> Result<Option<f64>, Unreadable> {
        self.0.try_get(i).map_err(|e| Unreadable::column(i, e))
    }
}

fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
