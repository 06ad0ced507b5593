//! Preflight and planning: from one live [`ClusterStatus`], either a refusal that says why
//! nothing may be done, or the plan (which members, in which order, why). Pure: the same
//! status always gives the same answer, which is what `--dry-run` prints.

use std::path::PathBuf;

use crate::config::LeaderPolicy;
use crate::config::RemediationSettings;
use crate::defrag_rule::Verdict;
use etcdmedic_cluster::model::{AlarmKind, ClusterStatus, EndpointStatus, MemberStatus};
use etcdmedic_cluster::table::human_bytes;
use serde::{Deserialize, Serialize};

use crate::forecast::Forecast;
use crate::refusal::Refusal;
use crate::vocabulary::{MemberRef, StepKind};

pub mod downgrade;
mod in_use;
mod predict;

pub use predict::forecast;

/// A member the plan names, with the figures that decided its place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedMember {
    pub member: MemberRef,
    pub is_leader: bool,
    pub is_learner: bool,
    pub db_size: u64,
    /// As the member reported it.
    pub db_size_in_use: u64,
    /// The figure the member was judged at instead, when its own lags (see `in_use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_in_use: Option<u64>,
    /// The rule's verdict, or why the member is left alone.
    pub reason: String,
    /// Whether its gRPC service stops while it defragments (`StopGRPCServiceOnDefrag`), so
    /// health-checking clients move to other members; `None` when the member does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grpc_on_defrag: Option<bool>,
}

impl PlannedMember {
    /// Bytes a defragmentation should give back, by the figure the member was judged at.
    pub fn free_bytes(&self) -> u64 {
        self.db_size
            .saturating_sub(self.judged_in_use.unwrap_or(self.db_size_in_use))
    }
}

/// What a run will do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub leader: MemberRef,
    pub voting_members: usize,
    /// Defragmented in this order: followers most fragmented first, the leader last.
    pub defragment: Vec<PlannedMember>,
    /// Left alone, each with its reason.
    pub skip: Vec<PlannedMember>,
    /// Applies when the leader is in `defragment`.
    pub leader_policy: LeaderPolicy,
    /// The follower the snapshot is streamed from (the leader on a one-member cluster).
    pub snapshot_from: MemberRef,
    pub snapshot_dir: PathBuf,
    pub compact_first: bool,
    /// A NOSPACE alarm is active: it is disarmed once every member is below the threshold.
    pub nospace: bool,
    pub rule: String,
    /// Each step's predicted duration (made by the run, which knows the measured rates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.defragment.is_empty()
    }
}

/// Which members a run may defragment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Selection<'a> {
    /// Those the defragmentation rule selects.
    #[default]
    Rule,
    /// The one member named (by name, endpoint or ID), whatever the rule says: an operator's
    /// `defrag --member`.
    Member(&'a str),
}

/// Whether `member` is the one `name` names: its name, its endpoint or its ID.
pub fn names(member: &MemberStatus, name: &str) -> bool {
    member.display_name() == name
        || member.endpoint == name
        || member.id.is_some_and(|id| id.to_string() == name)
}

/// A voting member that answered Status, with its answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answered<'a> {
    pub member: &'a MemberStatus,
    pub status: &'a EndpointStatus,
}

/// The live status of a cluster that passed preflight: every voting member answered.
#[derive(Debug, Clone)]
pub(crate) struct Healthy<'a> {
    pub leader: Answered<'a>,
    pub voting: Vec<Answered<'a>>,
    pub learners: Vec<&'a MemberStatus>,
}

pub(crate) fn member_ref(member: &MemberStatus) -> MemberRef {
    MemberRef::of(member)
}

/// The checks that must all pass before anything is changed. `Err` says which failed and
/// what to do about it.
pub(crate) fn preflight<'a>(
    status: &'a ClusterStatus,
    settings: &RemediationSettings,
    force: bool,
) -> Result<Healthy<'a>, Refusal> {
    if let Err(err) = &status.membership {
        return Err(Refusal::MembershipUnknown(err.clone()));
    }
    let alarms = status
        .alarms
        .as_ref()
        .map_err(|err| Refusal::AlarmsUnknown(err.clone()))?;
    if let Some(corrupt) = alarms.iter().find(|a| a.alarm == AlarmKind::Corrupt) {
        let raised_by = status
            .members
            .iter()
            .find(|m| m.id == Some(corrupt.member_id))
            .map_or(corrupt.member_id.to_string(), MemberStatus::display_name);
        return Err(Refusal::CorruptAlarm(raised_by));
    }

    let (learners, voting_members): (Vec<&MemberStatus>, Vec<&MemberStatus>) =
        status.members.iter().partition(|m| m.is_learner);
    let mut voting = Vec::with_capacity(voting_members.len());
    for member in voting_members {
        match &member.status {
            Ok(answer) => voting.push(Answered {
                member,
                status: answer,
            }),
            Err(err) => {
                return Err(Refusal::MemberDown {
                    member: member_ref(member),
                    error: err.clone(),
                })
            }
        }
    }
    if voting.len() < 3 && !(settings.allow_single_member || force) {
        return Err(Refusal::TooFewMembers {
            voting: voting.len(),
        });
    }

    let Some(leader_id) = status.agreed_leader() else {
        let views: Vec<String> = voting
            .iter()
            .map(|m| {
                let leader = m
                    .status
                    .leader
                    .map_or("none".to_string(), |l| l.to_string());
                format!("{} follows {leader}", m.member.display_name())
            })
            .collect();
        return Err(Refusal::NoAgreedLeader(views.join(", ")));
    };
    let Some(leader) = voting
        .iter()
        .copied()
        .find(|m| m.status.member_id == leader_id)
    else {
        return Err(Refusal::LeaderNotAnswering(leader_id));
    };
    let leader_applied = leader.status.raft_applied_index;
    for member in &voting {
        let lag = leader_applied.saturating_sub(member.status.raft_applied_index);
        if lag > settings.max_applied_lag {
            return Err(Refusal::MemberLagging {
                member: member_ref(member.member),
                lag,
                max: settings.max_applied_lag,
            });
        }
    }
    Ok(Healthy {
        leader,
        voting,
        learners,
    })
}

/// Decides, from the live figures, which members to defragment and in which order.
pub(crate) fn make_plan(
    status: &ClusterStatus,
    healthy: &Healthy<'_>,
    settings: &RemediationSettings,
    selection: Selection<'_>,
) -> Plan {
    let nospace = status.has_alarm(AlarmKind::NoSpace);
    let leader_id = healthy.leader.status.member_id;
    let mut followers = Vec::new();
    let mut leader = None;
    let mut skip = Vec::new();

    let voting: Vec<&EndpointStatus> = healthy.voting.iter().map(|m| m.status).collect();
    for answered in &healthy.voting {
        let figures = answered.status;
        let (verdict, judged_in_use) = match (selection, in_use::judged(figures, &voting)) {
            (Selection::Member(name), _) => {
                let matches = names(answered.member, name);
                let reason = if matches {
                    "asked for by name (--member)".to_string()
                } else {
                    format!("not the member asked for (--member {name})")
                };
                (Verdict { matches, reason }, None)
            }
            (Selection::Rule, Some((judged, note))) => {
                let verdict = settings.defrag_rule.verdict(&judged, nospace);
                let reason = format!("{note}: {}", verdict.reason);
                let judged_in_use = Some(judged.db_size_in_use_bytes);
                (Verdict { reason, ..verdict }, judged_in_use)
            }
            (Selection::Rule, None) => (settings.defrag_rule.verdict(figures, nospace), None),
        };
        let planned = PlannedMember {
            member: member_ref(answered.member),
            is_leader: figures.member_id == leader_id,
            is_learner: false,
            db_size: figures.db_size_bytes,
            db_size_in_use: figures.db_size_in_use_bytes,
            judged_in_use,
            reason: verdict.reason,
            stop_grpc_on_defrag: figures.stop_grpc_on_defrag,
        };
        match (verdict.matches, planned.is_leader) {
            (false, _) => skip.push(planned),
            (true, false) => followers.push(planned),
            (true, true) if settings.leader == LeaderPolicy::Skip => skip.push(PlannedMember {
                reason: format!(
                    "{}; the leader is left alone (leader: skip)",
                    planned.reason
                ),
                ..planned
            }),
            (true, true) => leader = Some(planned),
        }
    }
    for learner in &healthy.learners {
        let figures = learner.reachable();
        skip.push(PlannedMember {
            member: member_ref(learner),
            is_leader: false,
            is_learner: true,
            db_size: figures.map_or(0, |s| s.db_size_bytes),
            db_size_in_use: figures.map_or(0, |s| s.db_size_in_use_bytes),
            judged_in_use: None,
            reason: "learner: etcd does not defragment a learner".into(),
            stop_grpc_on_defrag: figures.and_then(|s| s.stop_grpc_on_defrag),
        });
    }

    // Most reclaimable first: if the run has to stop early, the biggest win is already in.
    followers.sort_by(|a, b| {
        b.free_bytes()
            .cmp(&a.free_bytes())
            .then_with(|| a.member.name.cmp(&b.member.name))
    });
    let mut defragment = followers;
    defragment.extend(leader);

    Plan {
        leader: member_ref(healthy.leader.member),
        voting_members: healthy.voting.len(),
        defragment,
        skip,
        leader_policy: settings.leader,
        snapshot_from: member_ref(snapshot_source(healthy).member),
        snapshot_dir: settings.snapshot_dir.clone(),
        compact_first: settings.compact_first,
        nospace,
        rule: match selection {
            Selection::Rule => settings.defrag_rule.to_string(),
            Selection::Member(name) => format!("--member {name}"),
        },
        forecast: None,
    }
}

/// The follower most caught up, so the snapshot is as recent as possible and the leader
/// keeps its disk and network for clients; the leader only when there is no follower.
pub(crate) fn snapshot_source<'a>(healthy: &Healthy<'a>) -> Answered<'a> {
    healthy
        .voting
        .iter()
        .copied()
        .filter(|m| m.status.member_id != healthy.leader.status.member_id)
        .max_by_key(|m| m.status.raft_applied_index)
        .unwrap_or(healthy.leader)
}

/// One line per planned member, for logs and the text output.
pub(crate) fn describe(plan: &Plan) -> Vec<String> {
    let mut lines = Vec::new();
    let forecast = plan.forecast.as_ref();
    for (index, member) in plan.defragment.iter().enumerate() {
        let in_place = forecast
            .and_then(|f| f.leader.as_ref())
            .map_or(plan.leader_policy == LeaderPolicy::DefragInPlace, |c| {
                c.in_place
            });
        let how = match (member.is_leader, in_place, plan.leader_policy) {
            (true, true, LeaderPolicy::Auto) => {
                "leader, last, in place (auto: predicted stall under leader_in_place_below)"
            }
            (true, true, _) => "leader, defragmented in place",
            (true, false, _) => "leader, last, after leadership moves to a defragmented follower",
            (false, _, _) => "follower",
        };
        let predicted = forecast
            .and_then(|f| f.of(StepKind::Defragment, Some(&member.member)))
            .map(|d| format!(", predicted {:.2}s", d.as_secs_f64()))
            .unwrap_or_default();
        let clients = match (member.is_leader, member.stop_grpc_on_defrag) {
            (false, Some(true)) => {
                "; its health-checking clients move to other members meanwhile \
                 (StopGRPCServiceOnDefrag), its pinned clients wait"
            }
            (false, Some(false)) => "; its clients wait meanwhile (StopGRPCServiceOnDefrag off)",
            _ => "",
        };
        lines.push(format!(
            "{}. {}: {how}; {} ({} in use of {}{predicted}){clients}",
            index + 1,
            member.member,
            member.reason,
            human_bytes(member.db_size_in_use),
            human_bytes(member.db_size),
        ));
    }
    for member in &plan.skip {
        lines.push(format!(
            "-  {}: skipped; {} ({} in use of {})",
            member.member,
            member.reason,
            human_bytes(member.db_size_in_use),
            human_bytes(member.db_size),
        ));
    }
    lines
}

#[cfg(test)]
pub(crate) mod tests;
