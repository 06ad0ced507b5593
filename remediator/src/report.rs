//! The record of one run: what was planned, every step with its duration, each member's
//! sizes before and after, the snapshot, and the outcome. Printed by `run -o json` and
//! stored by the webhook service. Its parts are written in the `vocabulary` every module
//! shares (re-exported here for the record's readers).

use std::time::{Duration, SystemTime};

use etcdmedic_cluster::model::Alarm;
use serde::{Deserialize, Serialize};

use crate::forecast::{History, LeaderChoice, Sample, HISTORY_RUNS};
use crate::plan::Plan;
use crate::vocabulary::timestamp;

pub use crate::vocabulary::{
    HashCheck, LeaderMove, MemberAction, MemberRef, MemberReport, Outcome, SnapshotReport,
    StepKind, StepRecord,
};

/// The version of a stored report's JSON: raised when a field changes meaning or goes, so
/// that an older build never misreads a newer report (new optional fields need no raise).
pub const REPORT_FORMAT: i64 = 1;

/// Everything about one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub cluster: String,
    /// What started the run: `cli`, or the alerts that asked for it.
    pub trigger: String,
    pub dry_run: bool,
    #[serde(with = "timestamp")]
    pub started_at: SystemTime,
    #[serde(with = "timestamp")]
    pub finished_at: SystemTime,
    pub outcome: Outcome,
    /// The run was refused before anything was changed (its outcome is `failed`, its reason
    /// starts with `refused:`): a member down, an election, no room for the snapshot...
    #[serde(default)]
    pub refused: bool,
    /// Why the run ended early, as a short stable name (`member_down`, `no_quorum`,
    /// `keyspace_mismatch`...): what alerts and tests match, rather than the reason's prose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Why the run ended the way it did, when not plainly successful.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plan: Option<Plan>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub snapshot: Option<SnapshotReport>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub compacted_at_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leader_move: Option<LeaderMove>,
    /// What was done with the leader at its turn, and the prediction that decided it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leader_choice: Option<LeaderChoice>,
    pub alarms_disarmed: Vec<Alarm>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hash_check: Option<HashCheck>,
    /// The run's snapshot kept as a backup in the backup destinations, after the run.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub backup: Option<crate::backup::RunBackup>,
    pub members: Vec<MemberReport>,
    pub steps: Vec<StepRecord>,
    /// Total across members.
    pub reclaimed_bytes: u64,
}

impl RunReport {
    /// The report of a run that ended before its first step (cooldown, cancelled, the
    /// service stopped), so every run has a report of the same shape.
    pub fn ended(
        cluster: &str,
        trigger: &str,
        dry_run: bool,
        outcome: Outcome,
        reason: String,
    ) -> RunReport {
        let now = SystemTime::now();
        RunReport {
            cluster: cluster.to_string(),
            trigger: trigger.to_string(),
            dry_run,
            started_at: now,
            finished_at: now,
            outcome,
            refused: false,
            error_kind: None,
            reason: Some(reason),
            plan: None,
            snapshot: None,
            compacted_at_revision: None,
            leader_move: None,
            leader_choice: None,
            alarms_disarmed: vec![],
            hash_check: None,
            backup: None,
            members: vec![],
            steps: vec![],
            reclaimed_bytes: 0,
        }
    }

    pub fn duration(&self) -> Duration {
        self.finished_at
            .duration_since(self.started_at)
            .unwrap_or_default()
    }
}

/// What earlier runs of the cluster measured, from their reports, newest first; only real
/// work counts (no dry run, no member whose call ended without an answer).
pub fn history<'a>(reports: impl IntoIterator<Item = &'a RunReport>) -> History {
    let mut history = History::default();
    for report in reports
        .into_iter()
        .filter(|r| !r.dry_run)
        .take(HISTORY_RUNS)
    {
        history.defrag.extend(report.defrag_samples());
        if let Some(snapshot) = &report.snapshot {
            history.snapshot.push(Sample {
                bytes: snapshot.size_bytes,
                took: snapshot.duration,
            });
        }
        if let Some(moved) = &report.leader_move {
            history.leader_moves.push(moved.duration);
        }
    }
    history
}

impl RunReport {
    /// The defragmentations this run measured: bytes in use before, and how long the call
    /// took.
    pub fn defrag_samples(&self) -> impl Iterator<Item = Sample> + '_ {
        self.members
            .iter()
            .filter(|m| m.action == MemberAction::Defragmented)
            .filter_map(|m| {
                Some(Sample {
                    bytes: m.db_size_in_use_before,
                    took: m.defrag_duration?,
                })
            })
    }
}
