//! Rows read back typed, whichever database holds them; what this build cannot read is
//! counted and left out.

use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;

use super::{from_unix, AlertRecord, RunDetail, RunSource, RunState, RunSummary};
use crate::report::{Outcome, RunReport, REPORT_FORMAT};

/// Why this build cannot read a stored row back.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unreadable {
    /// The database's value does not convert to the column's type here.
    #[error("column {column}: {source}")]
    Column {
        column: usize,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A state, source or outcome a newer build wrote.
    #[error("unknown {what} {value:?}")]
    Unknown { what: &'static str, value: String },
}

impl Unreadable {
    pub(super) fn column(
        column: usize,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Unreadable::Column {
            column,
            source: Box::new(source),
        }
    }

    fn unknown(what: &'static str, value: &str) -> Self {
        Unreadable::Unknown {
            what,
            value: value.to_owned(),
        }
    }
}

/// A run's columns, in the order of [`RUN_COLUMNS`], as a backend reads them: each
/// database's types differ (SQLite's integers for flags, PostgreSQL's booleans), what they mean
/// does not.
pub(super) trait Columns {
    fn id(&self, i: usize) -> Result<i64, Unreadable>;
    fn optional_id(&self, i: usize) -> Result<Option<i64>, Unreadable>;
    fn text(&self, i: usize) -> Result<String, Unreadable>;
    fn optional_text(&self, i: usize) -> Result<Option<String>, Unreadable>;
    fn flag(&self, i: usize) -> Result<bool, Unreadable>;
    /// Seconds since the Unix epoch.
    fn seconds(&self, i: usize) -> Result<Option<f64>, Unreadable>;
}

pub(super) const RUN_COLUMNS: &str = "id, cluster, state, source, dry_run, trigger, created_at, \
    started_at, finished_at, cooldown_until, outcome, reason, not_before, retry_of, refused, \
    error_kind";

/// Reads rows back, counting those it cannot.
pub(super) struct Rows {
    pub(super) unreadable: Counter,
}

impl Rows {
    pub(super) fn unreadable(&self, table: &str, id: i64, why: &str) {
        self.unreadable.inc();
        tracing::error!(
            table,
            id,
            why,
            "a row of the state store cannot be read by this build; it is left out"
        );
    }

    /// A run row, or `None` (counted) when its state, source or outcome is not one this build
    /// knows.
    pub(super) fn run(&self, row: &dyn Columns) -> Option<RunSummary> {
        let id: i64 = row.id(0).ok()?;
        let read = || -> Result<RunSummary, Unreadable> {
            let text = |i: usize| row.text(i);
            let state = text(2)?;
            let source = text(3)?;
            let outcome: Option<String> = row.optional_text(10)?;
            let time = |i: usize| -> Result<Option<SystemTime>, Unreadable> {
                Ok(row.seconds(i)?.map(from_unix))
            };
            Ok(RunSummary {
                id,
                cluster: text(1)?,
                state: RunState::parse(&state)
                    .ok_or_else(|| Unreadable::unknown("state", &state))?,
                source: RunSource::parse(&source)
                    .ok_or_else(|| Unreadable::unknown("source", &source))?,
                dry_run: row.flag(4)?,
                trigger: text(5)?,
                created_at: time(6)?.unwrap_or(SystemTime::UNIX_EPOCH),
                started_at: time(7)?,
                finished_at: time(8)?,
                cooldown_until: time(9)?,
                outcome: match outcome {
                    None => None,
                    Some(text) => Some(
                        Outcome::parse(&text)
                            .ok_or_else(|| Unreadable::unknown("outcome", &text))?,
                    ),
                },
                reason: row.optional_text(11)?,
                not_before: time(12)?,
                retry_of: row.optional_id(13)?,
                refused: row.flag(14)?,
                error_kind: row.optional_text(15)?,
            })
        };
        read()
            .map_err(|why| self.unreadable("runs", id, &why.to_string()))
            .ok()
    }

    /// A stored report, or `None` (counted) when it is of a newer format or does not parse.
    pub(super) fn report(&self, id: i64, format: Option<i64>, json: &str) -> Option<RunReport> {
        let format = format.unwrap_or(1);
        if format > REPORT_FORMAT {
            let why = format!("report format {format}; this build reads up to {REPORT_FORMAT}");
            self.unreadable("runs", id, &why);
            return None;
        }
        serde_json::from_str(json)
            .map_err(|err| self.unreadable("runs", id, &format!("report: {err}")))
            .ok()
    }

    /// A run with its alerts and its stored report (`report`, `report_format` as read from
    /// its row), the report left out (and counted) when it cannot be read.
    pub(super) fn detail(
        &self,
        summary: RunSummary,
        alerts: Vec<AlertRecord>,
        (json, format): (Option<String>, Option<i64>),
    ) -> RunDetail {
        let report = json.and_then(|json| self.report(summary.id, format, &json));
        RunDetail {
            summary,
            alerts,
            report,
        }
    }

    /// A stored backup record, or `None` (counted) when it does not parse.
    pub(super) fn backup(
        &self,
        id: i64,
        json: &str,
    ) -> Option<crate::service::backups::BackupRecord> {
        let mut record: crate::service::backups::BackupRecord = serde_json::from_str(json)
            .map_err(|err| self.unreadable("backups", id, &err.to_string()))
            .ok()?;
        record.id = id;
        Some(record)
    }
}
