//! Why a run refused to start: nothing was changed. The checks of `plan` (the members, their
//! leader, their alarms) and the engine's own (locks, room for the snapshot, client load,
//! windows) both refuse with these; the engine's `RunError` carries them.

use std::time::Duration;

use etcdmedic_cluster::model::{MemberId, ProbeError};

use crate::call::CallError;
use crate::vocabulary::MemberRef;

/// Why a run changed nothing at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("no member answered MemberList ({0}); check the endpoints and that etcd runs")]
    MembershipUnknown(ProbeError),
    #[error("AlarmList failed ({0}); a CORRUPT alarm cannot be ruled out")]
    AlarmsUnknown(ProbeError),
    #[error(
        "CORRUPT alarm raised by member {0}: the members' data differ. This needs a human (see \
         etcd's data corruption guide); etcdmedic does not act on a corrupt cluster"
    )]
    CorruptAlarm(String),
    #[error(
        "member {member} is not answering ({error}); every voting member must be up before a \
         defragmentation, which takes one more out of service"
    )]
    MemberDown {
        member: MemberRef,
        error: ProbeError,
    },
    #[error(
        "the cluster has {voting} voting member{}: defragmenting takes a member out of service \
         and there is no quorum without it, so every request waits until it ends. Set \
         remediation.allow_single_member: true or pass --force to accept that",
        if *.voting == 1 { "" } else { "s" }
    )]
    TooFewMembers { voting: usize },
    #[error("the members do not agree on a leader ({0}); try again once the election settles")]
    NoAgreedLeader(String),
    #[error("the leader {0} is not among the members that answered; try again")]
    LeaderNotAnswering(MemberId),
    #[error(
        "member {member} has applied {lag} entries fewer than the leader (max_applied_lag \
         {max}); wait until it catches up"
    )]
    MemberLagging {
        member: MemberRef,
        lag: u64,
        max: u64,
    },
    #[error("gave up after {waited:?}: waiting until every member serves reads again (a member may still be defragmenting): {detail}")]
    MembersNotServingReads { waited: Duration, detail: String },
    #[error("{member}: Status: {error}")]
    StatusFailed { member: MemberRef, error: CallError },
    #[error("{0}; no snapshot, so nothing was changed")]
    SnapshotDir(String),
    #[error("{0}; no snapshot, so nothing was changed")]
    NoRoom(String),
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    ClusterBusy(Busy),
    #[error(
        "the run is predicted to take {}, and its maintenance window closes in {}; it waits \
         for a longer window",
        humantime::format_duration(*predicted),
        humantime::format_duration(*closes_in)
    )]
    WindowTooShort {
        predicted: Duration,
        closes_in: Duration,
    },
    #[error(
        "a downgrade to {0} is enabled (`downgrade status` shows where it stands): members may \
         run different etcd releases, and each defragmentation takes one out of service while \
         the cluster is mid-procedure. Finish or cancel the downgrade first, or pass \
         --during-downgrade to defragment anyway"
    )]
    DowngradeUnderWay(String),
}

/// The quiet-cluster gate's verdict on a cluster that kept writing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "the cluster writes {rate:.1} raft entries/s, above max_write_rate {max}{}",
    if waited.is_zero() { " (on_busy: defer)".to_string() } else {
        format!(" after waiting {} (quiet_wait)", humantime::format_duration(*waited))
    }
)]
pub struct Busy {
    pub rate: f64,
    pub max: f64,
    pub waited: Duration,
}
