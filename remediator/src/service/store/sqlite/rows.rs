//! Rows read back typed; what this build cannot read is counted and left out.

use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use rusqlite::Row;

use super::super::{from_unix, RunSource, RunState, RunSummary};
use crate::report::{Outcome, RunReport, REPORT_FORMAT};

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
    pub(super) fn run(&self, row: &Row<'_>) -> Option<RunSummary> {
        let id: i64 = row.get(0).ok()?;
        let read = || -> Result<RunSummary, String> {
            let text = |i: usize| row.get::<_, String>(i).map_err(|e| e.to_string());
            let state = text(2)?;
            let source = text(3)?;
            let outcome: Option<String> = row.get(10).map_err(|e| e.to_string())?;
            let time = |i: usize| -> Result<Option<SystemTime>, String> {
                let seconds: Option<f64> = row.get(i).map_err(|e| e.to_string())?;
                Ok(seconds.map(from_unix))
            };
            Ok(RunSummary {
                id,
                cluster: text(1)?,
                state: RunState::parse(&state).ok_or(format!("unknown state {state:?}"))?,
                source: RunSource::parse(&source).ok_or(format!("unknown source {source:?}"))?,
                dry_run: row.get(4).map_err(|e| e.to_string())?,
                trigger: text(5)?,
                created_at: time(6)?.unwrap_or(SystemTime::UNIX_EPOCH),
                started_at: time(7)?,
                finished_at: time(8)?,
                cooldown_until: time(9)?,
                outcome: match outcome {
                    None => None,
                    Some(text) => {
                        Some(Outcome::parse(&text).ok_or(format!("unknown outcome {text:?}"))?)
                    }
                },
                reason: row.get(11).map_err(|e| e.to_string())?,
                not_before: time(12)?,
                retry_of: row.get(13).map_err(|e| e.to_string())?,
                refused: row.get(14).map_err(|e| e.to_string())?,
                error_kind: row.get(15).map_err(|e| e.to_string())?,
            })
        };
        read().map_err(|why| self.unreadable("runs", id, &why)).ok()
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
