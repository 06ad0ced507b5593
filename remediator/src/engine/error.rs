//! Why a run ended early, typed: a refusal before anything changed, a stop partway, or a stop
//! request. Each has a short stable kind (in the JSON report and the service's metrics) and
//! the sentence an operator reads; the outcome is derived from it in one place.

use std::time::Duration;

use etcdmedic_cluster::model::MemberId;

use super::etcd::CallError;
use crate::report::{MemberRef, Outcome};

/// Why a run ended before the end.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// Nothing was changed.
    #[error("refused: {0}")]
    Refused(Box<Refusal>),
    /// The run stopped partway.
    #[error(transparent)]
    Stopped(Box<Stop>),
    /// Stopped on request between two members.
    #[error("stopped on request; the member under way finished, no other was started")]
    Interrupted,
    /// This service may no longer change the cluster: another replica took the run over.
    #[error(
        "stopped: this service may no longer change the cluster ({0}); no further change was made"
    )]
    Fenced(String),
}

impl From<Refusal> for RunError {
    fn from(refusal: Refusal) -> Self {
        RunError::Refused(Box::new(refusal))
    }
}

impl From<Stop> for RunError {
    fn from(stop: Stop) -> Self {
        RunError::Stopped(Box::new(stop))
    }
}

pub(crate) use crate::refusal::Busy;
pub use crate::refusal::Refusal;

/// Why a run stopped partway (some members may be done).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Stop {
    #[error("compaction failed: {0}; nothing was defragmented")]
    CompactFailed(CallError),
    #[error("snapshot failed: {0}; no member was defragmented")]
    SnapshotFailed(String),
    #[error("{member}: Status: {error}")]
    StatusFailed { member: MemberRef, error: CallError },
    #[error("stopped before {member}: {detail}")]
    NoQuorum { member: MemberRef, detail: String },
    #[error("{member}: Defragment failed: {error}")]
    DefragFailed { member: MemberRef, error: CallError },
    #[error(
        "{member}: did not serve reads and catch up with the leader within {within:?} ({detail})"
    )]
    NotCaughtUp {
        member: MemberRef,
        within: Duration,
        detail: String,
    },
    #[error(
        "leadership could not be moved off {leader} ({reason}); the leader was not defragmented"
    )]
    LeaderMoveFailed {
        leader: MemberRef,
        reason: MoveFailure,
    },
    #[error("AlarmList failed after defragmenting; NOSPACE state unknown")]
    AlarmsUnknown,
    #[error(
        "NOSPACE left armed: {} (disarm_nospace_below {threshold}); delete or compact data, or \
         raise --quota-backend-bytes",
        .members.join(", ")
    )]
    NospaceArmed {
        members: Vec<String>,
        threshold: f64,
    },
    #[error("no agreed leader to disarm NOSPACE through")]
    NoLeaderToDisarm,
    #[error("disarming NOSPACE of {member}: {error}")]
    DisarmFailed { member: MemberId, error: CallError },
    #[error("writes are still refused after disarming NOSPACE: {0}")]
    WritesRefused(CallError),
    #[error("verification could not complete: {0}")]
    VerifyIncomplete(String),
    #[error("stopped before {member}: {busy}")]
    ClusterBusy { member: MemberRef, busy: Busy },
    #[error(
        "the members' keyspaces differ at revision {revision}: {hashes}. A human must look \
         (etcd's data corruption guide); the snapshot taken before the run is in the report"
    )]
    KeyspaceMismatch { revision: i64, hashes: String },
}

/// Why handing leadership over did not work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MoveFailure {
    #[error("the leader stopped answering")]
    LeaderGone,
    #[error("no follower answers and is caught up")]
    NoTarget,
    #[error("MoveLeader got no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("MoveLeader to {target}: {error}")]
    Refused { target: MemberRef, error: CallError },
    #[error("MoveLeader to {target} returned, but not every member followed it within {within:?}")]
    NotFollowed { target: MemberRef, within: Duration },
}

/// Every kind [`RunError::kind`] can return: the report's `error_kind`, the service's
/// `etcdmedic_remediation_failures_total{kind}`, and the table of refusals and stops in docs/remediator.md.
pub const KINDS: [&str; 27] = [
    "membership_unknown",
    "alarms_unknown",
    "corrupt_alarm",
    "member_down",
    "too_few_members",
    "no_agreed_leader",
    "member_lagging",
    "members_not_serving_reads",
    "snapshot_dir",
    "no_room",
    "locked",
    "compact_failed",
    "snapshot_failed",
    "no_quorum",
    "defrag_failed",
    "not_caught_up",
    "leader_move_failed",
    "nospace_armed",
    "disarm_failed",
    "writes_refused",
    "verify_incomplete",
    "keyspace_mismatch",
    "cluster_busy",
    "window_too_short",
    "downgrade_under_way",
    "interrupted",
    "fenced",
];

impl RunError {
    /// A short, stable name: the report's `error_kind` and the service's metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Interrupted => "interrupted",
            RunError::Fenced(_) => "fenced",
            RunError::Refused(refusal) => match refusal.as_ref() {
                Refusal::MembershipUnknown(_) => "membership_unknown",
                Refusal::AlarmsUnknown(_) => "alarms_unknown",
                Refusal::CorruptAlarm(_) => "corrupt_alarm",
                Refusal::MemberDown { .. } => "member_down",
                Refusal::TooFewMembers { .. } => "too_few_members",
                Refusal::NoAgreedLeader(_) | Refusal::LeaderNotAnswering(_) => "no_agreed_leader",
                Refusal::MemberLagging { .. } => "member_lagging",
                Refusal::MembersNotServingReads { .. } => "members_not_serving_reads",
                Refusal::StatusFailed { .. } => "member_down",
                Refusal::SnapshotDir(_) => "snapshot_dir",
                Refusal::NoRoom(_) => "no_room",
                Refusal::Locked(_) => "locked",
                Refusal::ClusterBusy(_) => "cluster_busy",
                Refusal::WindowTooShort { .. } => "window_too_short",
                Refusal::DowngradeUnderWay(_) => "downgrade_under_way",
            },
            RunError::Stopped(stop) => match stop.as_ref() {
                Stop::CompactFailed(_) => "compact_failed",
                Stop::SnapshotFailed(_) => "snapshot_failed",
                Stop::StatusFailed { .. } => "member_down",
                Stop::NoQuorum { .. } => "no_quorum",
                Stop::DefragFailed { .. } => "defrag_failed",
                Stop::NotCaughtUp { .. } => "not_caught_up",
                Stop::LeaderMoveFailed { .. } => "leader_move_failed",
                Stop::AlarmsUnknown => "alarms_unknown",
                Stop::NospaceArmed { .. } => "nospace_armed",
                Stop::NoLeaderToDisarm => "no_agreed_leader",
                Stop::DisarmFailed { .. } => "disarm_failed",
                Stop::WritesRefused(_) => "writes_refused",
                Stop::VerifyIncomplete(_) => "verify_incomplete",
                Stop::KeyspaceMismatch { .. } => "keyspace_mismatch",
                Stop::ClusterBusy { .. } => "cluster_busy",
            },
        }
    }

    /// The run's outcome: the one place that decides it. A refusal changed nothing
    /// (failed); a stop is partial once a member was defragmented; different keyspaces fail
    /// the run whatever was done, so that it is looked at.
    pub fn outcome(&self, any_defragmented: bool) -> Outcome {
        match self {
            RunError::Interrupted | RunError::Fenced(_) => Outcome::Interrupted,
            RunError::Refused(_) => Outcome::Failed,
            RunError::Stopped(stop) if matches!(**stop, Stop::KeyspaceMismatch { .. }) => {
                Outcome::Failed
            }
            RunError::Stopped(_) if any_defragmented => Outcome::Partial,
            RunError::Stopped(_) => Outcome::Failed,
        }
    }

    pub fn is_refusal(&self) -> bool {
        matches!(self, RunError::Refused(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcdmedic_cluster::model::ProbeError;

    fn one_of_each() -> Vec<RunError> {
        let probe = || ProbeError::Timeout(Duration::from_secs(1));
        let call = || CallError::Timeout(Duration::from_secs(1));
        let busy = || Busy {
            rate: 2.0,
            max: 1.0,
            waited: Duration::ZERO,
        };
        let member = || MemberRef {
            id: MemberId(1),
            name: "m1".into(),
            endpoint: "http://m1".into(),
        };
        let refusals = [
            Refusal::MembershipUnknown(probe()),
            Refusal::AlarmsUnknown(probe()),
            Refusal::CorruptAlarm("m1".into()),
            Refusal::MemberDown {
                member: member(),
                error: probe(),
            },
            Refusal::TooFewMembers { voting: 1 },
            Refusal::NoAgreedLeader("split".into()),
            Refusal::LeaderNotAnswering(MemberId(1)),
            Refusal::MemberLagging {
                member: member(),
                lag: 2,
                max: 1,
            },
            Refusal::MembersNotServingReads {
                waited: Duration::ZERO,
                detail: String::new(),
            },
            Refusal::StatusFailed {
                member: member(),
                error: call(),
            },
            Refusal::SnapshotDir(String::new()),
            Refusal::NoRoom(String::new()),
            Refusal::Locked(String::new()),
            Refusal::ClusterBusy(busy()),
            Refusal::WindowTooShort {
                predicted: Duration::from_secs(1),
                closes_in: Duration::ZERO,
            },
            Refusal::DowngradeUnderWay("3.5.0".into()),
        ];
        let stops = [
            Stop::CompactFailed(call()),
            Stop::SnapshotFailed(String::new()),
            Stop::StatusFailed {
                member: member(),
                error: call(),
            },
            Stop::NoQuorum {
                member: member(),
                detail: String::new(),
            },
            Stop::DefragFailed {
                member: member(),
                error: call(),
            },
            Stop::NotCaughtUp {
                member: member(),
                within: Duration::ZERO,
                detail: String::new(),
            },
            Stop::LeaderMoveFailed {
                leader: member(),
                reason: MoveFailure::NoTarget,
            },
            Stop::AlarmsUnknown,
            Stop::NospaceArmed {
                members: vec![],
                threshold: 0.9,
            },
            Stop::NoLeaderToDisarm,
            Stop::DisarmFailed {
                member: MemberId(1),
                error: call(),
            },
            Stop::WritesRefused(call()),
            Stop::VerifyIncomplete(String::new()),
            Stop::KeyspaceMismatch {
                revision: 1,
                hashes: String::new(),
            },
            Stop::ClusterBusy {
                member: member(),
                busy: busy(),
            },
        ];
        refusals
            .into_iter()
            .map(RunError::from)
            .chain(stops.into_iter().map(RunError::from))
            .chain([RunError::Interrupted, RunError::Fenced("lost".into())])
            .collect()
    }

    #[test]
    fn every_kind_is_listed_and_every_listed_kind_is_used() {
        let used: std::collections::BTreeSet<&str> =
            one_of_each().iter().map(RunError::kind).collect();
        let listed: std::collections::BTreeSet<&str> = KINDS.into_iter().collect();
        assert_eq!(used, listed);
        assert_eq!(listed.len(), KINDS.len(), "no kind listed twice");
    }

    #[test]
    fn the_book_explains_every_kind() {
        let chapter = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/remediator.md");
        let readme = std::fs::read_to_string(chapter).unwrap_or_default();
        let missing: Vec<&str> = KINDS
            .into_iter()
            .filter(|kind| !readme.contains(&format!("| `{kind}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/remediator.md's refusals and stops table lacks {missing:?}"
        );
    }

    #[test]
    fn the_outcome_follows_from_the_error_and_what_was_done() {
        let stop = RunError::from(Stop::AlarmsUnknown);
        assert_eq!(stop.outcome(false), Outcome::Failed);
        assert_eq!(stop.outcome(true), Outcome::Partial);
        let mismatch = RunError::from(Stop::KeyspaceMismatch {
            revision: 1,
            hashes: String::new(),
        });
        assert_eq!(mismatch.outcome(true), Outcome::Failed);
        let refused = RunError::from(Refusal::Locked("x".into()));
        assert_eq!(refused.outcome(true), Outcome::Failed);
        assert!(refused.is_refusal());
        assert_eq!(refused.to_string(), "refused: x");
        assert_eq!(RunError::Interrupted.outcome(true), Outcome::Interrupted);
    }
}
