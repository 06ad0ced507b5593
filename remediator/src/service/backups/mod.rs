//! Backups in the service: taken by `backup.schedule` or `POST /api/v1/clusters/{name}/backup`,
//! never at the same time as a run of the same cluster (each waits for the other), recorded
//! in the state store, listed by `GET /api/v1/backups` and counted in the backup metrics.
//!
//! # Layout
//! - this file: what is recorded of one backup.
//! - `api`: the two endpoints.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::backup::{BackupError, BackupReport};
use crate::vocabulary::timestamp;

/// What asked for a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupSource {
    Api,
    /// `backup.schedule`.
    Schedule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupOutcome {
    /// Proven by its drill (when drills are on) and verified in every destination.
    Succeeded,
    /// Verified in some destinations; others missed it (`report.missed` says why).
    Partial,
    /// No backup: the snapshot, the drill or every destination failed, or it was stopped.
    Failed,
}

impl BackupOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupOutcome::Succeeded => "succeeded",
            BackupOutcome::Partial => "partial",
            BackupOutcome::Failed => "failed",
        }
    }
}

/// One backup the service took (or tried to), as stored and as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    /// 0 until stored.
    pub id: i64,
    pub cluster: String,
    pub source: BackupSource,
    #[serde(with = "timestamp")]
    pub requested_at: SystemTime,
    #[serde(with = "timestamp")]
    pub started_at: SystemTime,
    #[serde(with = "timestamp")]
    pub finished_at: SystemTime,
    pub outcome: BackupOutcome,
    /// Why it failed or was partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the restore drill failed (the backup existed but did not restore).
    #[serde(default)]
    pub drill_failed: bool,
    /// The backup itself: manifest (with the drill's outcome) and where it landed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<BackupReport>,
}

impl BackupRecord {
    pub(super) fn new(
        cluster: &str,
        source: BackupSource,
        requested_at: SystemTime,
        started_at: SystemTime,
        result: Result<BackupReport, BackupError>,
    ) -> BackupRecord {
        let (outcome, reason, drill_failed, report) = match result {
            Ok(report) if report.missed.is_empty() => {
                (BackupOutcome::Succeeded, None, false, Some(report))
            }
            Ok(report) if report.destinations.is_empty() => {
                let reason = missed_reasons(&report);
                (BackupOutcome::Failed, Some(reason), false, Some(report))
            }
            Ok(report) => (
                BackupOutcome::Partial,
                Some(missed_reasons(&report)),
                false,
                Some(report),
            ),
            Err(err) => {
                let drill_failed = matches!(err, BackupError::Drill(_));
                (
                    BackupOutcome::Failed,
                    Some(err.to_string()),
                    drill_failed,
                    None,
                )
            }
        };
        BackupRecord {
            id: 0,
            cluster: cluster.to_string(),
            source,
            requested_at,
            started_at,
            // As stored (milliseconds), so a gauge set now equals the one restored later.
            finished_at: to_millis(SystemTime::now()),
            outcome,
            reason,
            drill_failed,
            report,
        }
    }
}

fn to_millis(at: SystemTime) -> SystemTime {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(since.as_millis() as u64)
}

fn missed_reasons(report: &BackupReport) -> String {
    report
        .missed
        .iter()
        .map(|m| format!("{}: {}", m.destination, m.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which backups to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct BackupFilter {
    pub cluster: Option<String>,
    pub limit: usize,
}
