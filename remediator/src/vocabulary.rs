//! The words a run's record is written in, shared by everything that plans, forecasts,
//! carries out or keeps a run: which member (`MemberRef`), which step (`StepKind`) and what
//! became of it (`StepRecord`), what was done to a member (`MemberAction`, `MemberReport`),
//! how a run ended (`Outcome`), and how times are written. The record itself, `RunReport`,
//! is `report`'s; this module uses nothing else of the crate, so every module can use it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use etcdmedic_cluster::model::MemberId;
use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every member that needed it was defragmented and the cluster verified.
    Succeeded,
    /// Some members were defragmented, then the run stopped (see the reason).
    Partial,
    /// Nothing was defragmented (refused by preflight, snapshot failed...) or verification
    /// found the members disagree.
    Failed,
    /// The live status showed no member needing work.
    Skipped,
    /// Stopped on request between two members.
    Interrupted,
    /// A dry run: the plan was made, nothing was changed.
    Planned,
    /// The webhook service dropped a queued run before it started: its alerts resolved.
    Cancelled,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Succeeded,
        Outcome::Partial,
        Outcome::Failed,
        Outcome::Skipped,
        Outcome::Interrupted,
        Outcome::Planned,
        Outcome::Cancelled,
    ];

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Interrupted => "interrupted",
            Outcome::Planned => "planned",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// Whether the run did what was asked of it (a skip is a correct answer too).
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Outcome::Succeeded | Outcome::Skipped | Outcome::Planned
        )
    }
}

/// The steps of a run, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Preflight,
    /// The quiet-cluster gate, before the snapshot and before each member.
    QuietCheck,
    Compact,
    Snapshot,
    QuorumCheck,
    Defragment,
    MoveLeader,
    Disarm,
    VerifyWrite,
    Verify,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Preflight => "preflight",
            StepKind::QuietCheck => "quiet check",
            StepKind::Compact => "compact",
            StepKind::Snapshot => "snapshot",
            StepKind::QuorumCheck => "quorum check",
            StepKind::Defragment => "defragment",
            StepKind::MoveLeader => "move leader",
            StepKind::Disarm => "disarm",
            StepKind::VerifyWrite => "verify write",
            StepKind::Verify => "verify",
        }
    }
}

/// A member as a report names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRef {
    pub id: MemberId,
    pub name: String,
    pub endpoint: String,
}

impl MemberRef {
    /// How a report names `member`: its id from its own Status, else from MemberList.
    pub(crate) fn of(member: &etcdmedic_cluster::model::MemberStatus) -> MemberRef {
        MemberRef {
            id: member
                .reachable()
                .map(|s| s.member_id)
                .or(member.id)
                .unwrap_or(MemberId(0)),
            name: member.display_name(),
            endpoint: member.endpoint.clone(),
        }
    }
}

/// A member's HashKV answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    pub hash: u32,
    /// The revision the hash was computed at (the member's latest, when 0 was asked).
    pub revision: i64,
    pub compact_revision: i64,
}

impl std::fmt::Display for MemberRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.endpoint)
    }
}

/// One finished step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: StepKind,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub member: Option<MemberRef>,
    #[serde(with = "timestamp")]
    pub started_at: SystemTime,
    #[serde(with = "seconds")]
    pub duration: Duration,
    pub ok: bool,
    /// What happened, in a sentence: sizes, revisions, or the error.
    pub detail: String,
    /// What the plan's forecast said this step would take.
    #[serde(
        with = "option_seconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub predicted: Option<Duration>,
}

/// What happened to one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberAction {
    Defragmented,
    /// Did not match the rule, is a learner, or the leader policy said so.
    Skipped,
    /// Planned, but the run stopped first.
    NotReached,
    Failed,
}

impl MemberAction {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberAction::Defragmented => "defragmented",
            MemberAction::Skipped => "skipped",
            MemberAction::NotReached => "not reached",
            MemberAction::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    pub member: MemberRef,
    /// Whether it led the cluster when the run started.
    pub was_leader: bool,
    pub is_learner: bool,
    pub action: MemberAction,
    /// The rule's verdict, or why the member was skipped.
    pub reason: String,
    pub db_size_before: u64,
    pub db_size_in_use_before: u64,
    pub db_size_after: Option<u64>,
    pub db_size_in_use_after: Option<u64>,
    /// Whether the member followed another when its defragmentation began: the safety
    /// property of moving leadership first.
    pub follower_at_defrag: Option<bool>,
    #[serde(with = "option_seconds", default)]
    pub defrag_duration: Option<Duration>,
    /// Whether its gRPC service stopped while it defragmented (`StopGRPCServiceOnDefrag`);
    /// `None` when the member did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grpc_on_defrag: Option<bool>,
}

impl MemberReport {
    pub fn reclaimed_bytes(&self) -> Option<u64> {
        self.db_size_after
            .map(|after| self.db_size_before.saturating_sub(after))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotReport {
    pub path: PathBuf,
    pub size_bytes: u64,
    /// The member's revision when the snapshot began (the file holds at least this).
    pub revision: i64,
    /// etcd's sha256 of the database, verified against the trailer it appends.
    pub sha256: String,
    pub from: MemberRef,
    #[serde(with = "seconds")]
    pub duration: Duration,
    /// Older snapshots removed by retention.
    pub removed: Vec<PathBuf>,
    /// Not streamed: under NOSPACE the revision is frozen, and a verified backup at exactly
    /// this revision was found in a local backup destination (`path`), so it is the snapshot
    /// the run would have taken.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused_backup: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderMove {
    pub from: MemberRef,
    pub to: MemberRef,
    #[serde(with = "seconds")]
    pub duration: Duration,
}

/// HashKV of every member at one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashCheck {
    pub revision: i64,
    pub hashes: Vec<(MemberRef, u32)>,
    pub consistent: bool,
}

/// RFC 3339 UTC timestamps with milliseconds.
pub(crate) mod timestamp {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        time: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(*time))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// Durations as fractional seconds.
pub(crate) mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod option_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&duration.as_secs_f64()),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(deserializer)?
            .map(|seconds| Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom))
            .transpose()
    }
}
