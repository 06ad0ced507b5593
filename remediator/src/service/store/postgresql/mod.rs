//! The state in a PostgreSQL database, for services that must not depend on one node's disk.
//! The service holds a session advisory lock on the database for as long as it runs: a second
//! service on the same database is refused and told who holds it, exactly like the SQLite
//! file's lock, and the lock goes with the holder's connection when it dies (PostgreSQL ends
//! the session), so a replacement can start at once. Rows are read back typed, as from SQLite.
//!
//! The client is the synchronous one: it runs its own small runtime and must be used (and
//! dropped) on a thread that is not async, which the service's owner thread is.

use std::time::{Duration, Instant, SystemTime};

use postgres::{Client, NoTls, Row};
use prometheus_client::metrics::counter::Counter;

use super::rows::{Columns, Rows, RUN_COLUMNS};
use super::{
    in_transaction, unix, AlertRecord, InterruptedRun, RunDetail, RunFilter, RunSummary,
    StateStore, StoreError, StoreResult, Transaction, INTERRUPTED_BY_EXIT,
};
use crate::report::{Outcome, RunReport};
use crate::service::backups::{BackupFilter, BackupRecord};
use crate::service::settings::PostgresSettings;

mod cached;
mod schema;
mod transaction;

use cached::{Cached, Statements};

use transaction::PostgresTransaction;

/// The advisory lock a service holds on its database ("etmd"): one key for every
/// etcdmedic database, as each service has a database of its own.
const SERVICE_LOCK: i64 = 0x6574_6d64;

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
        None => match std::error::Error::source(err) {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        },
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
    pub(crate) fn open(
        settings: &PostgresSettings,
        advertise: Option<&url::Url>,
        unreadable: Counter,
    ) -> StoreResult<PostgresStore> {
        let mut client = connect(settings)?;
        schema::prepare(&mut client, &settings.place)?;
        let advertise = advertise.map(|url| url.as_str().trim_end_matches('/').to_string());
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
        condition: &str,
        parameters: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<RunSummary>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs {condition}");
        let rows = self.with_client(Again::Safe, |client| client.query(&sql, parameters))?;
        Ok(rows
            .iter()
            .filter_map(|row| self.rows.run(&PostgresRow(row)))
            .collect())
    }

    fn select_reports(
        &mut self,
        condition: &str,
        parameters: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<RunReport>> {
        let sql = format!("SELECT id, report, report_format FROM runs {condition}");
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
            client.query(
                "SELECT alertname, status, fingerprint, cluster, labels, starts_at, action, \
                 reason, run_id, id, generator_url FROM alerts WHERE run_id = $1 ORDER BY id",
                &[&run_id],
            )
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

/// Says where this replica (the lock's holder, by its session) is reached, for standbys;
/// rows of sessions that are gone are removed.
fn announce(client: &mut Client, url: Option<&str>) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute(
        "DELETE FROM replicas WHERE pid = pg_backend_pid() \
         OR pid NOT IN (SELECT pid FROM pg_stat_activity)",
        &[],
    )?;
    if let Some(url) = url {
        tx.execute(
            "INSERT INTO replicas (pid, url, announced_at) VALUES (pg_backend_pid(), $1, $2)",
            &[&url, &unix(SystemTime::now())],
        )?;
    }
    tx.commit()
}

/// The replica holding the lock, as a standby sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// `etcdmedic-remediator on <host> (pid N) connected from <address>`.
    pub(crate) description: String,
    /// Where it said it is reached (`serve --advertise-url`).
    pub(crate) url: Option<String>,
}

/// Who holds the service's lock, asked every `every` on a connection of a standby replica
/// (which takes no lock), each answer sent on `holder` (`None`: nobody holds it) until nobody
/// does or nobody listens. Runs on a thread of its own, never an async one.
pub(crate) fn watch_holder(
    settings: &PostgresSettings,
    every: Duration,
    holder: tokio::sync::watch::Sender<Result<Option<Holder>, String>>,
) {
    let mut client: Option<Client> = None;
    loop {
        let answer = match client.as_mut().filter(|c| !c.is_closed()) {
            Some(client) => holder_if_any(client).map_err(|err| describe(&err)),
            None => match settings.config.connect(NoTls) {
                Ok(connected) => {
                    holder_if_any(client.insert(connected)).map_err(|err| describe(&err))
                }
                Err(err) => Err(describe(&err)),
            },
        };
        let free = matches!(answer, Ok(None));
        if holder.send(answer).is_err() || free {
            return;
        }
        std::thread::sleep(every);
    }
}

/// A connection holding the service's advisory lock.
fn connect(settings: &PostgresSettings) -> StoreResult<Client> {
    let fail = |source| StoreError::Postgres {
        database: settings.place.clone(),
        source,
    };
    let mut client = settings.config.connect(NoTls).map_err(fail)?;
    // PostgreSQL ends the session of a holder whose host vanished (and so frees the lock for
    // a standby) after these probes fail, not after the kernel's two hours.
    client
        .batch_execute(
            "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
             SET tcp_keepalives_count = 3",
        )
        .map_err(fail)?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SERVICE_LOCK])
        .and_then(|row| row.try_get(0))
        .map_err(fail)?;
    if !locked {
        let holder = holder(&mut client).map_err(fail)?;
        return Err(StoreError::InUse {
            place: settings.place.clone(),
            holder,
        });
    }
    Ok(client)
}

/// Who holds the service's lock, as PostgreSQL knows the session: its application name
/// (`etcdmedic-remediator on <host> (pid N)`) and address.
fn holder(client: &mut Client) -> Result<String, postgres::Error> {
    Ok(holder_if_any(client)?
        .map(|holder| holder.description)
        // Released between the two queries.
        .unwrap_or_else(|| "a service that has just stopped; start again".to_string()))
}

fn holder_if_any(client: &mut Client) -> Result<Option<Holder>, postgres::Error> {
    // Before the first service has set the database up, `replicas` is missing and this
    // fails: a standby asks again a second later.
    let row = client.query_opt(
        "SELECT a.application_name, coalesce(host(a.client_addr), 'a local socket'), \
         (SELECT r.url FROM replicas r WHERE r.pid = l.pid) \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 \
         AND l.objid::bigint = $1 AND l.objsubid = 1 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[&SERVICE_LOCK],
    )?;
    row.map(|row| {
        let name: String = row.try_get(0)?;
        let address: String = row.try_get(1)?;
        Ok(Holder {
            description: format!("{name} connected from {address}"),
            url: row.try_get(2)?,
        })
    })
    .transpose()
}

/// A PostgreSQL row as [`Columns`].
struct PostgresRow<'a>(&'a Row);

impl Columns for PostgresRow<'_> {
    fn id(&self, i: usize) -> Result<i64, String> {
        self.0.try_get(i).map_err(|e| e.to_string())
    }
    fn optional_id(&self, i: usize) -> Result<Option<i64>, String> {
        self.0.try_get(i).map_err(|e| e.to_string())
    }
    fn text(&self, i: usize) -> Result<String, String> {
        self.0.try_get(i).map_err(|e| e.to_string())
    }
    fn optional_text(&self, i: usize) -> Result<Option<String>, String> {
        self.0.try_get(i).map_err(|e| e.to_string())
    }
    fn flag(&self, i: usize) -> Result<bool, String> {
        self.0.try_get(i).map_err(|e| e.to_string())
    }
    fn seconds(&self, i: usize) -> Result<Option<f64>, String> {
        self.0.try_get(i).map_err(|e| e.to_string())
    }
}

fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

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

    fn interrupt_unfinished(&mut self) -> StoreResult<Vec<InterruptedRun>> {
        let runs: Vec<InterruptedRun> = self
            .select_runs("WHERE state = 'running'", &[])?
            .into_iter()
            .map(|run| InterruptedRun {
                id: run.id,
                cluster: run.cluster,
            })
            .collect();
        in_transaction(self, |tx| {
            for InterruptedRun { id, cluster } in &runs {
                let report = RunReport::ended(
                    cluster,
                    "",
                    false,
                    Outcome::Interrupted,
                    INTERRUPTED_BY_EXIT.into(),
                );
                tx.finish(*id, &report)?;
            }
            Ok(())
        })?;
        Ok(runs)
    }

    fn queued(&mut self) -> StoreResult<Vec<RunSummary>> {
        self.select_runs("WHERE state = 'queued' ORDER BY id", &[])
    }

    fn firing_fingerprints(&mut self, run_id: i64) -> StoreResult<Vec<String>> {
        self.with_client(Again::Safe, |client| {
            client
                .query(
                    "SELECT fingerprint FROM alerts WHERE run_id IN ($1, \
                 (SELECT retry_of FROM runs WHERE id = $1)) AND status = 'firing' \
                 AND action IN ('queued', 'joined') GROUP BY fingerprint",
                    &[&run_id],
                )
                .and_then(|rows| rows.iter().map(|row| row.try_get(0)).collect())
        })
    }

    fn mark_running(&mut self, id: i64, at: SystemTime) -> StoreResult<()> {
        self.with_client(Again::Safe, |client| {
            client
                .execute(
                    "UPDATE runs SET state = 'running', started_at = $2 WHERE id = $1",
                    &[&id, &unix(at)],
                )
                .map(drop)
        })
    }

    fn still_running(&mut self, id: i64) -> StoreResult<bool> {
        // On a connection just asked: a reconnection takes the lock again, or says who has it.
        self.client(true)?;
        self.with_client(Again::Safe, |client| {
            client
                .query_opt("SELECT state = 'running' FROM runs WHERE id = $1", &[&id])
                .and_then(|row| row.map(|row| row.try_get::<_, bool>(0)).transpose())
                .map(|running| running == Some(true))
        })
    }

    fn append_reason(&mut self, id: i64, sentence: &str) -> StoreResult<()> {
        self.with_client(Again::Never, |client| {
            client
                .execute(
                    "UPDATE runs SET reason = coalesce(reason || ' ', '') || $2 WHERE id = $1",
                    &[&id, &sentence],
                )
                .map(drop)
        })
    }

    fn paused(&mut self) -> StoreResult<bool> {
        self.with_client(Again::Safe, |client| {
            client
                .query_opt("SELECT value FROM switches WHERE name = 'paused'", &[])
                .and_then(|row| row.map(|row| row.try_get::<_, String>(0)).transpose())
                .map(|value| value.as_deref() == Some("true"))
        })
    }

    fn set_paused(&mut self, paused: bool) -> StoreResult<()> {
        self.with_client(Again::Safe, |client| {
            client
                .execute(
                    "INSERT INTO switches (name, value, changed_at) VALUES ('paused', $1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = $1, changed_at = $2",
                    &[&paused.to_string(), &unix(SystemTime::now())],
                )
                .map(drop)
        })
    }

    fn runs(&mut self, filter: &RunFilter) -> StoreResult<Vec<RunSummary>> {
        self.select_runs(
            "WHERE ($1::text IS NULL OR cluster = $1) AND ($2::text IS NULL OR outcome = $2) \
             AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
            &[
                &filter.cluster,
                &filter.outcome.map(Outcome::as_str),
                &filter.before,
                &limit(filter.limit),
            ],
        )
    }

    fn run(&mut self, id: i64) -> StoreResult<Option<RunDetail>> {
        let Some(summary) = self
            .select_runs("WHERE id = $1", &[&id])?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let row = self.with_client(Again::Safe, |client| {
            client.query_one(
                "SELECT report, report_format FROM runs WHERE id = $1",
                &[&id],
            )
        })?;
        let stored: (Option<String>, Option<i64>) =
            (|| Ok((row.try_get(0)?, row.try_get(1)?)))().map_err(|err| self.fail(err))?;
        let report = match stored {
            (Some(json), format) => self.rows.report(id, format, &json),
            (None, _) => None,
        };
        let alerts = self.alerts_of(id)?;
        Ok(Some(RunDetail {
            summary,
            alerts,
            report,
        }))
    }

    fn latest_finished(&mut self) -> StoreResult<Vec<RunReport>> {
        self.select_reports(
            "WHERE id IN (SELECT max(id) FROM runs WHERE state = 'finished' AND report IS NOT \
             NULL GROUP BY cluster, outcome) ORDER BY id",
            &[],
        )
    }

    fn recent_work(&mut self, cluster: &str, limit_to: usize) -> StoreResult<Vec<RunReport>> {
        self.select_reports(
            "WHERE cluster = $1 AND state = 'finished' AND report IS NOT NULL AND NOT dry_run \
             AND outcome IN ('succeeded', 'partial') ORDER BY id DESC LIMIT $2",
            &[&cluster, &limit(limit_to)],
        )
    }

    fn record_backup(&mut self, record: &BackupRecord) -> StoreResult<i64> {
        // A record always serialises (plain data); see `transaction::finish`.
        let json = serde_json::to_string(record).unwrap_or_else(|_| "{}".to_string());
        self.with_client(Again::Never, |client| {
            client
                .query_one(
                    "INSERT INTO backups (cluster, outcome, finished_at, record) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
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
                "SELECT id, record FROM backups WHERE ($1::text IS NULL OR cluster = $1) \
                 ORDER BY id DESC LIMIT $2",
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
