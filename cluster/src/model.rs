//! What a status collection found: the one view of a cluster that the exporter's metrics,
//! the status table and the remediator all read.

use std::fmt;
use std::time::Duration;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An etcd member ID, shown as etcd shows it: 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for MemberId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemberId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        u64::from_str_radix(&text, 16)
            .map(MemberId)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a hex member ID")))
    }
}

/// The alarms etcd raises. `NOSPACE`: the backend reached its quota and writes are refused.
/// `CORRUPT`: members disagree on their data; only a human should act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlarmKind {
    #[serde(rename = "NOSPACE")]
    NoSpace,
    #[serde(rename = "CORRUPT")]
    Corrupt,
}

impl AlarmKind {
    pub const ALL: [AlarmKind; 2] = [AlarmKind::NoSpace, AlarmKind::Corrupt];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::NoSpace => "NOSPACE",
            AlarmKind::Corrupt => "CORRUPT",
        }
    }
}

impl fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An active alarm and the member that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    pub member_id: MemberId,
    pub alarm: AlarmKind,
}

/// Why one call to one member did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {}", seconds_text(*.0))]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{0}")]
    Rpc(String),
}

/// `5s`, or `4.997s` for a remainder of a timeout: millisecond precision is all a reader needs.
fn seconds_text(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{}.{:03}s", millis / 1000, millis % 1000)
    }
}

impl ProbeError {
    /// A short, stable name for metric labels, log fields and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeError::Timeout(_) => "timeout",
            ProbeError::Unreachable(_) => "unreachable",
            ProbeError::Auth(_) => "auth",
            ProbeError::Rpc(_) => "rpc",
        }
    }
}

impl Serialize for ProbeError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("ProbeError", 2)?;
        s.serialize_field("kind", self.kind())?;
        s.serialize_field("message", &self.to_string())?;
        s.end()
    }
}

/// Where a member's quota figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaSource {
    /// The member reported `dbSizeQuota` in Status (etcd 3.6 and later).
    Status,
    /// The member's own `/metrics` gauge `etcd_server_quota_backend_bytes` (etcd 3.4, 3.5).
    Metrics,
    /// `quota_backend_bytes` from the config: the member reported it nowhere.
    Config,
    /// etcd's default, 2 GiB: reported nowhere and not configured.
    Default,
}

impl QuotaSource {
    pub const ALL: [QuotaSource; 4] = [
        QuotaSource::Status,
        QuotaSource::Metrics,
        QuotaSource::Config,
        QuotaSource::Default,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuotaSource::Status => "status",
            QuotaSource::Metrics => "metrics",
            QuotaSource::Config => "config",
            QuotaSource::Default => "default",
        }
    }

    /// Not reported by the member itself.
    pub fn is_assumed(self) -> bool {
        matches!(self, QuotaSource::Config | QuotaSource::Default)
    }
}

/// One member's answer to Maintenance Status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStatus {
    /// The ID of the member that answered (from the response header).
    pub member_id: MemberId,
    /// Written as 16 hex digits, like member IDs: as a JSON number it would lose precision
    /// above 2^53 in jq and JavaScript.
    #[serde(serialize_with = "hex_id")]
    pub cluster_id: u64,
    pub revision: i64,
    pub version: String,
    /// Reported by etcd 3.6 and later.
    pub storage_version: Option<String>,
    /// Whether a downgrade is enabled, and to which version: reported by etcd 3.6 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade: Option<Downgrade>,
    /// Why this member's release should be patched before the next minor upgrade, when an
    /// etcd upgrade guide asks for it ([`crate::upgrade`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_advice: Option<String>,
    pub db_size_bytes: u64,
    pub db_size_in_use_bytes: u64,
    pub quota_bytes: u64,
    pub quota_source: QuotaSource,
    /// Whether the member stops its gRPC service (health `NOT_SERVING`) while it
    /// defragments, so health-checking clients move to another member: etcd 3.6's
    /// `StopGRPCServiceOnDefrag` gate. `None` when the member does not say.
    pub stop_grpc_on_defrag: Option<bool>,
    /// The leader this member follows, `None` while it has none.
    pub leader: Option<MemberId>,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub is_learner: bool,
    /// etcd's own error strings (alarms as it describes them).
    pub errors: Vec<String>,
}

/// A cluster's downgrade state as a member reports it in Status (etcd 3.6+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downgrade {
    pub enabled: bool,
    /// The version the cluster is being downgraded to (`3.5.0`); empty when not enabled.
    pub target_version: String,
}

impl EndpointStatus {
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.member_id)
    }

    /// in-use / allocated, 0..=1. An empty file counts as fully used: nothing to reclaim.
    pub fn in_use_ratio(&self) -> f64 {
        if self.db_size_bytes == 0 {
            1.0
        } else {
            self.db_size_in_use_bytes as f64 / self.db_size_bytes as f64
        }
    }

    /// Bytes a defragmentation would give back.
    pub fn free_bytes(&self) -> u64 {
        self.db_size_bytes.saturating_sub(self.db_size_in_use_bytes)
    }

    /// db size / quota: NOSPACE is raised at 1.
    pub fn quota_usage(&self) -> f64 {
        self.db_size_bytes as f64 / self.quota_bytes.max(1) as f64
    }
}

/// One member as seen in one collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberStatus {
    /// The client URL this member was asked at.
    pub endpoint: String,
    /// Known from MemberList or from the member's own answer; unknown only when a configured
    /// endpoint never answered and MemberList did not mention it.
    pub id: Option<MemberId>,
    pub name: Option<String>,
    pub is_learner: bool,
    /// Its peer URLs from MemberList (empty when MemberList did not list it); kept for the
    /// backups' manifests, not shown.
    #[serde(skip)]
    pub peer_urls: Vec<String>,
    /// Active alarms raised by this member (see [`crate::alarm_source`]).
    pub alarms: Vec<AlarmKind>,
    /// How long Status took to answer or fail.
    #[serde(serialize_with = "seconds")]
    pub probe_latency: Duration,
    #[serde(serialize_with = "ok_or_error")]
    pub status: Result<EndpointStatus, ProbeError>,
}

impl MemberStatus {
    pub fn reachable(&self) -> Option<&EndpointStatus> {
        self.status.as_ref().ok()
    }

    /// The name to show: the member's name, else its ID, else nothing.
    pub fn display_name(&self) -> String {
        match (&self.name, self.id) {
            (Some(name), _) if !name.is_empty() => name.clone(),
            (_, Some(id)) => id.to_string(),
            _ => String::new(),
        }
    }

    pub fn has_alarm(&self, alarm: AlarmKind) -> bool {
        self.alarms.contains(&alarm)
    }
}

/// Membership as MemberList reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    #[serde(serialize_with = "hex_id")]
    pub cluster_id: u64,
    pub voting_members: usize,
    pub learners: usize,
}

/// Everything one collection learned about one cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStatus {
    pub cluster: String,
    /// Sorted by name, then endpoint.
    pub members: Vec<MemberStatus>,
    /// Configured endpoints that MemberList does not list and that did not answer: a typo, or
    /// a member removed from the cluster but not from the config. Not members, so the
    /// remediator never waits for them; shown so that they are seen.
    pub unlisted_endpoints: Vec<MemberStatus>,
    #[serde(serialize_with = "ok_or_error")]
    pub membership: Result<Membership, ProbeError>,
    /// Every active alarm in the cluster, from the members' Status or from AlarmList
    /// ([`crate::alarm_source`]).
    #[serde(serialize_with = "ok_or_error")]
    pub alarms: Result<Vec<Alarm>, ProbeError>,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

impl ClusterStatus {
    /// True when any member answered MemberList.
    pub fn is_up(&self) -> bool {
        self.membership.is_ok()
    }

    pub fn all_members_reachable(&self) -> bool {
        !self.members.is_empty() && self.members.iter().all(|m| m.status.is_ok())
    }

    /// Every member, then every unlisted endpoint: the rows of the table and the metrics.
    pub fn rows(&self) -> impl Iterator<Item = &MemberStatus> {
        self.members.iter().chain(&self.unlisted_endpoints)
    }

    /// The leader every reachable member names, if they all name the same one.
    pub fn agreed_leader(&self) -> Option<MemberId> {
        let mut leaders = self
            .members
            .iter()
            .filter_map(MemberStatus::reachable)
            .map(|s| s.leader);
        let first = leaders.next()??;
        leaders.all(|l| l == Some(first)).then_some(first)
    }

    pub fn has_alarm(&self, alarm: AlarmKind) -> bool {
        matches!(&self.alarms, Ok(alarms) if alarms.iter().any(|a| a.alarm == alarm))
    }
}

fn hex_id<S: Serializer>(id: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{id:016x}"))
}

fn seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// `{"ok": value}` or `{"error": {"kind": ..., "message": ...}}`: explicit for JSON readers
/// in other languages, unlike serde's default `{"Ok": ...}`.
fn ok_or_error<T: Serialize, S: Serializer>(
    value: &Result<T, ProbeError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut s = serializer.serialize_struct("Outcome", 1)?;
    match value {
        Ok(value) => s.serialize_field("ok", value)?,
        Err(err) => s.serialize_field("error", err)?,
    }
    s.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(member: u64, leader: Option<u64>) -> MemberStatus {
        MemberStatus {
            endpoint: format!("http://127.0.0.1:{member}"),
            id: Some(MemberId(member)),
            name: Some(format!("m{member}")),
            is_learner: false,
            peer_urls: Vec::new(),
            alarms: vec![],
            probe_latency: Duration::from_millis(1),
            status: Ok(EndpointStatus {
                member_id: MemberId(member),
                cluster_id: 7,
                revision: 1,
                version: "3.5.1".into(),
                storage_version: None,
                downgrade: None,
                upgrade_advice: None,
                db_size_bytes: 100,
                db_size_in_use_bytes: 25,
                quota_bytes: 1000,
                quota_source: QuotaSource::Config,
                stop_grpc_on_defrag: None,
                leader: leader.map(MemberId),
                raft_term: 2,
                raft_index: 10,
                raft_applied_index: 10,
                is_learner: false,
                errors: vec![],
            }),
        }
    }

    fn cluster(members: Vec<MemberStatus>) -> ClusterStatus {
        ClusterStatus {
            cluster: "c".into(),
            members,
            unlisted_endpoints: vec![],
            membership: Err(ProbeError::Timeout(Duration::from_secs(1))),
            alarms: Ok(vec![]),
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn timeouts_print_in_seconds_to_the_millisecond() {
        let after = |d| ProbeError::Timeout(d).to_string();
        assert_eq!(after(Duration::from_secs(5)), "no answer within 5s");
        assert_eq!(
            after(Duration::from_nanos(4_997_396_926)),
            "no answer within 4.997s"
        );
        assert_eq!(after(Duration::from_millis(250)), "no answer within 0.250s");
    }

    #[test]
    fn member_ids_print_as_sixteen_hex_digits() {
        assert_eq!(MemberId(0xabc).to_string(), "0000000000000abc");
    }

    #[test]
    fn ratios_follow_etcd_status_fields() {
        let s = status(1, Some(1));
        let got = s.reachable().unwrap();
        assert_eq!(got.in_use_ratio(), 0.25);
        assert_eq!(got.free_bytes(), 75);
        assert_eq!(got.quota_usage(), 0.1);
        assert!(got.is_leader());
    }

    #[test]
    fn leader_agreement_needs_every_reachable_member_to_name_the_same_leader() {
        assert_eq!(
            cluster(vec![status(1, Some(1)), status(2, Some(1))]).agreed_leader(),
            Some(MemberId(1))
        );
        assert_eq!(
            cluster(vec![status(1, Some(1)), status(2, Some(2))]).agreed_leader(),
            None
        );
        assert_eq!(
            cluster(vec![status(1, None), status(2, None)]).agreed_leader(),
            None
        );
        let mut down = status(3, None);
        down.status = Err(ProbeError::Unreachable("refused".into()));
        assert_eq!(
            cluster(vec![status(1, Some(2)), down]).agreed_leader(),
            Some(MemberId(2))
        );
    }

    #[test]
    fn cluster_ids_serialise_as_sixteen_hex_digits_like_member_ids() {
        let mut status = status(1, Some(1));
        if let Ok(answer) = &mut status.status {
            answer.cluster_id = 0xfedc_ba98_7654_3210;
        }
        let mut cluster = cluster(vec![status]);
        cluster.membership = Ok(Membership {
            cluster_id: 0xfedc_ba98_7654_3210,
            voting_members: 1,
            learners: 0,
        });
        let json = serde_json::to_value(&cluster).unwrap();
        assert_eq!(json["membership"]["ok"]["cluster_id"], "fedcba9876543210");
        assert_eq!(
            json["members"][0]["status"]["ok"]["cluster_id"],
            "fedcba9876543210"
        );
        assert_eq!(
            json["members"][0]["status"]["ok"]["member_id"],
            "0000000000000001"
        );
    }

    #[test]
    fn outcomes_serialise_as_ok_or_error_objects() {
        let json = serde_json::to_value(cluster(vec![])).unwrap();
        assert_eq!(json["membership"]["error"]["kind"], "timeout");
        assert_eq!(
            json["membership"]["error"]["message"],
            "no answer within 1s"
        );
        assert_eq!(json["alarms"]["ok"], serde_json::json!([]));
    }
}
