//! The service's memory: every alert received and what was done with it, every run with its
//! full report, every backup the service took, the cooldown clocks (derived from the runs)
//! and the pause switch. A restart keeps all of it, and a run the process was in the middle
//! of when it died is marked interrupted.
//!
//! The scheduler sees the store only through [`StateStore`] and [`Transaction`], implemented
//! twice: [`sqlite`] (a file, one service per file, held by its lock) and [`postgresql`] (a
//! database that replicas of the service share: the active one holds its advisory lock, the
//! standbys watch it, and a run is confirmed still running under that lock before each change
//! it makes, so a replica that lost the lock is fenced). Calls are synchronous: the store lives
//! on the service's owner thread (see `service::owner`), never on an async one.
//!
//! # Layout
//! - this file: what is stored and read, and the two traits.
//! - `sqlite`: the SQLite file, its lock, its transactions.
//! - `postgresql`: the database, its advisory lock, prepared statements, its transactions.
//! - `statements`: every statement both backends run, written once.
//! - `schema`: the SQLite file's identity, the schema versions and their migrations
//!   (PostgreSQL's are in `postgresql/schema.rs`).
//! - `rows`: reading rows back, typed, unreadable ones counted.
//! - `suite` (tests): what every backend must do, run on SQLite and, in `make test`, on
//!   PostgreSQL; `tests`: SQLite's own (its file's migrations, unreadable rows).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::backups::{BackupFilter, BackupRecord};
use super::owner::OwnerGone;
use crate::report::{Outcome, RunReport};

pub(super) mod postgresql;
mod rows;
mod schema;
pub(super) mod sqlite;
mod statements;
#[cfg(test)]
mod suite;
#[cfg(test)]
mod tests;

pub(super) use postgresql::Holder;
pub(super) use sqlite::SqliteStore;

/// The lock the replicas of a service share, as a standby waiting to take over sees it: who
/// holds it now (`None`: nobody). Asked again and again on a thread of its own.
pub(super) trait Lease: Send {
    fn holder(&mut self) -> StoreResult<Option<Holder>>;
}

/// The lease of the PostgreSQL database `settings` name (only PostgreSQL is shared).
pub(super) fn lease(settings: &super::settings::PostgresSettings) -> Box<dyn Lease> {
    Box::new(postgresql::PostgresLease::new(settings.clone()))
}

/// Where the state lives, as the settings say: PostgreSQL when `remediator.postgres` is set
/// (with the address this replica announces to standbys, sealed), else the SQLite file.
pub(super) enum Backend {
    Sqlite {
        path: PathBuf,
        init: bool,
    },
    Postgres {
        settings: Box<super::settings::PostgresSettings>,
        announcement: Option<String>,
    },
}

impl Backend {
    pub(super) fn of(
        settings: &super::settings::ServiceSettings,
        announcement: Option<String>,
    ) -> Backend {
        match &settings.postgres {
            Some(postgres) => Backend::Postgres {
                settings: Box::new(postgres.clone()),
                announcement,
            },
            None => Backend::Sqlite {
                path: settings.state_path.clone(),
                init: settings.init_state,
            },
        }
    }
}

/// Opens the store `backend` names: on the thread that will own it (see `service::owner`),
/// never an async one. `unreadable` counts rows that cannot be read back.
pub(super) fn open(
    backend: Backend,
    unreadable: prometheus_client::metrics::counter::Counter,
) -> StoreResult<Box<dyn StateStore>> {
    Ok(match backend {
        Backend::Postgres {
            settings,
            announcement,
        } => Box::new(postgresql::PostgresStore::open(
            &settings,
            announcement,
            unreadable,
        )?),
        Backend::Sqlite { path, init } => Box::new(SqliteStore::open(&path, init, unreadable)?),
    })
}

/// Why the state store cannot be used. `place` is the SQLite file or the PostgreSQL database
/// (its URL without the password).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}", path = .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state store {database}: {}", postgresql::describe(.source))]
    Postgres {
        database: String,
        #[source]
        source: ::postgres::Error,
    },
    /// The file or database exists but is not etcdmedic's state: using it would silently
    /// lose the pause switch, the cooldowns and the run history, or someone else's data.
    #[error("state store {place}: {why}")]
    NotOurs { place: String, why: String },
    #[error("state store {place}: written by a newer etcdmedic (schema version {found}; this one knows up to {known}); run that version, or point the service at other state")]
    TooNew {
        place: String,
        found: i64,
        known: i64,
    },
    /// Another service uses the state: two would each take the other's live run for one a
    /// dead process left behind.
    #[error("state store {place} is in use by another etcdmedic-remediator serve ({holder}); two services on one state would rewrite each other's runs: stop the other one, or give this one state of its own")]
    InUse { place: String, holder: String },
    #[error("state store {path}: cannot take its lock: {source}", path = .path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: crate::lock::LockError,
    },
    #[error("state store: {0}")]
    Gone(#[from] OwnerGone),
    #[error("state store: cannot write {what} as JSON: {why}; nothing was written")]
    Unwritable { what: &'static str, why: String },
}

pub(super) type StoreResult<T> = Result<T, StoreError>;

/// `value` as the JSON the store keeps, on both backends: a value that cannot be written is an
/// error, never a placeholder that would read back as an empty record.
pub(super) fn to_json(what: &'static str, value: &impl Serialize) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|err| StoreError::Unwritable {
        what,
        why: err.to_string(),
    })
}

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
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Finished => "finished",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        [RunState::Queued, RunState::Running, RunState::Finished]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// What asked for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunSource {
    Alertmanager,
    Api,
    /// `remediation.schedule`.
    Schedule,
}

impl RunSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RunSource::Alertmanager => "alertmanager",
            RunSource::Api => "api",
            RunSource::Schedule => "schedule",
        }
    }

    pub fn parse(text: &str) -> Option<RunSource> {
        [RunSource::Alertmanager, RunSource::Api, RunSource::Schedule]
            .into_iter()
            .find(|source| source.as_str() == text)
    }
}

/// A new run, as queued.
#[derive(Debug, Clone)]
pub(super) struct NewRun<'a> {
    pub cluster: &'a str,
    pub source: RunSource,
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
    /// Alertmanager's `generatorURL`: the alert's expression in Prometheus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// A run as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub cluster: String,
    pub state: RunState,
    pub source: RunSource,
    pub dry_run: bool,
    pub trigger: String,
    #[serde(serialize_with = "crate::vocabulary::timestamp::serialize")]
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
    pub outcome: Option<Outcome>,
    /// Why the run ended early, as the report's `error_kind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
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
    pub outcome: Option<Outcome>,
    /// Only runs with a smaller id (the previous page's `next`).
    pub before: Option<i64>,
    pub limit: usize,
}

/// What one transaction of the scheduler reads and writes: a decision and the alerts that
/// caused it are stored together or not at all.
pub(super) trait Transaction {
    fn insert_run(&mut self, run: &NewRun<'_>) -> StoreResult<i64>;
    fn insert_alert(&mut self, alert: &AlertRecord) -> StoreResult<()>;
    /// When a queued run becomes due (`None`: now).
    fn set_not_before(&mut self, id: i64, at: Option<SystemTime>) -> StoreResult<()>;
    /// Records the end of a run: cancelled before it started, or finished with its report.
    fn finish(&mut self, id: i64, report: &RunReport) -> StoreResult<()>;
    /// When the cluster's last run that did (or tried) work finished: the cooldown clock.
    /// Dry runs, skips, cancellations and refusals changed nothing and do not count.
    fn last_work_finished(&mut self, cluster: &str) -> StoreResult<Option<SystemTime>>;
    /// The run an earlier delivery of the same alert episode (fingerprint and `startsAt`)
    /// led to, with its finish time when it has finished.
    fn episode_run(
        &mut self,
        fingerprint: &str,
        starts_at: &str,
    ) -> StoreResult<Option<(i64, Option<SystemTime>)>>;
}

/// The service's state, whatever keeps it.
pub(super) trait StateStore: Send {
    /// Runs `work` in one transaction: all of it is stored, or none (an `Err` from `work`
    /// rolls it back).
    fn transaction(
        &mut self,
        work: &mut dyn FnMut(&mut dyn Transaction) -> StoreResult<()>,
    ) -> StoreResult<()>;
    /// A cheap query, for readiness.
    fn ping(&mut self) -> StoreResult<()>;
    /// Runs recorded running.
    fn running(&mut self) -> StoreResult<Vec<RunSummary>>;
    /// Runs still queued (from before a restart), oldest first.
    fn queued(&mut self) -> StoreResult<Vec<RunSummary>>;
    /// The firing alerts (fingerprints) a queued run is waiting on: its own, or for a retry
    /// those of the run it retries.
    fn firing_fingerprints(&mut self, run_id: i64) -> StoreResult<Vec<String>>;
    fn mark_running(&mut self, id: i64, at: SystemTime) -> StoreResult<()>;
    /// Whether run `id` is still recorded running (not taken over and marked interrupted by
    /// another replica), asked on a connection that holds the store's lock.
    fn still_running(&mut self, id: i64) -> StoreResult<bool>;
    /// Adds a sentence to a finished run's reason (what happened after it ended).
    fn append_reason(&mut self, id: i64, sentence: &str) -> StoreResult<()>;
    fn paused(&mut self) -> StoreResult<bool>;
    fn set_paused(&mut self, paused: bool) -> StoreResult<()>;
    fn runs(&mut self, filter: &RunFilter) -> StoreResult<Vec<RunSummary>>;
    fn run(&mut self, id: i64) -> StoreResult<Option<RunDetail>>;
    /// Every cluster's latest finished report per outcome, to restore the gauges after a
    /// restart.
    fn latest_finished(&mut self) -> StoreResult<Vec<RunReport>>;
    /// The cluster's latest runs that defragmented something, newest first: what the
    /// forecast learns from.
    fn recent_work(&mut self, cluster: &str, limit: usize) -> StoreResult<Vec<RunReport>>;
    /// Stores a finished backup's record; its id.
    fn record_backup(&mut self, record: &BackupRecord) -> StoreResult<i64>;
    /// Backups, newest first.
    fn backups(&mut self, filter: &BackupFilter) -> StoreResult<Vec<BackupRecord>>;
}

/// [`StateStore::transaction`] for work that returns a value.
pub(super) fn in_transaction<T>(
    store: &mut dyn StateStore,
    work: impl FnOnce(&mut dyn Transaction) -> StoreResult<T>,
) -> StoreResult<T> {
    let mut work = Some(work);
    let mut value = None;
    store.transaction(&mut |tx| {
        let work = work.take().ok_or_else(|| {
            // Only reachable if a backend called the work twice.
            StoreError::Gone(OwnerGone("transaction"))
        })?;
        value = Some(work(tx)?);
        Ok(())
    })?;
    value.ok_or(StoreError::Gone(OwnerGone("transaction")))
}

/// Marks runs that were under way when the process (or the replica active before) died as
/// interrupted, and returns them.
pub(super) fn interrupt_unfinished(store: &mut dyn StateStore) -> StoreResult<Vec<InterruptedRun>> {
    let runs: Vec<InterruptedRun> = store
        .running()?
        .into_iter()
        .map(|run| InterruptedRun {
            id: run.id,
            cluster: run.cluster,
        })
        .collect();
    in_transaction(store, |tx| {
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

/// Why a run found `running` at start-up is interrupted.
pub(super) const INTERRUPTED_BY_EXIT: &str =
    "the service stopped during the run (killed or crashed); the run did not continue";

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
        Some(time) => crate::vocabulary::timestamp::serialize(time, serializer),
        None => serializer.serialize_none(),
    }
}
