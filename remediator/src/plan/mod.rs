//! Preflight and planning: from one live [`ClusterStatus`], either a refusal that says why
//! nothing may be done, or the plan (which members, in which order, why). Pure: the same
//! status always gives the same answer, which is what `--dry-run` prints.

use std::path::PathBuf;

use etcdmedic_cluster::config::LeaderPolicy;
use etcdmedic_cluster::defrag_rule::Verdict;
use etcdmedic_cluster::model::{AlarmKind, ClusterStatus, EndpointStatus, MemberStatus};
use etcdmedic_cluster::table::human_bytes;
use etcdmedic_cluster::RemediationSettings;
use serde::{Deserialize, Serialize};

use crate::engine::error::Refusal;
use crate::report::MemberRef;

mod in_use;

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
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.defragment.is_empty()
    }
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
    MemberRef {
        id: member
            .reachable()
            .map(|s| s.member_id)
            .or(member.id)
            .unwrap_or(etcdmedic_cluster::MemberId(0)),
        name: member.display_name(),
        endpoint: member.endpoint.clone(),
    }
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
) -> Plan {
    let nospace = status.has_alarm(AlarmKind::NoSpace);
    let leader_id = healthy.leader.status.member_id;
    let mut followers = Vec::new();
    let mut leader = None;
    let mut skip = Vec::new();

    let voting: Vec<&EndpointStatus> = healthy.voting.iter().map(|m| m.status).collect();
    for answered in &healthy.voting {
        let figures = answered.status;
        let (verdict, judged_in_use) = match in_use::judged(figures, &voting) {
            Some((judged, note)) => {
                let verdict = settings.defrag_rule.verdict(&judged, nospace);
                let reason = format!("{note}: {}", verdict.reason);
                let judged_in_use = Some(judged.db_size_in_use_bytes);
                (Verdict { reason, ..verdict }, judged_in_use)
            }
            None => (settings.defrag_rule.verdict(figures, nospace), None),
        };
        let planned = PlannedMember {
            member: member_ref(answered.member),
            is_leader: figures.member_id == leader_id,
            is_learner: false,
            db_size: figures.db_size_bytes,
            db_size_in_use: figures.db_size_in_use_bytes,
            judged_in_use,
            reason: verdict.reason,
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
        rule: settings.defrag_rule.to_string(),
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
    for (index, member) in plan.defragment.iter().enumerate() {
        let how = match (member.is_leader, plan.leader_policy) {
            (true, LeaderPolicy::DefragInPlace) => "leader, defragmented in place",
            (true, _) => "leader, last, after leadership moves to a defragmented follower",
            (false, _) => "follower",
        };
        lines.push(format!(
            "{}. {}: {how}; {} ({} in use of {})",
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
pub(crate) mod tests {
    use std::time::Duration;

    use etcdmedic_cluster::model::{Alarm, Membership, ProbeError, QuotaSource};
    use etcdmedic_cluster::MemberId;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    pub(crate) fn member(id: u64, leader: u64, db_size: u64, in_use: u64) -> MemberStatus {
        MemberStatus {
            endpoint: format!("http://127.0.0.1:{}", 2379 + id),
            id: Some(MemberId(id)),
            name: Some(format!("m{id}")),
            is_learner: false,
            alarms: vec![],
            probe_latency: Duration::from_millis(1),
            status: Ok(EndpointStatus {
                member_id: MemberId(id),
                cluster_id: 7,
                revision: 100,
                version: "3.5.1".into(),
                storage_version: None,
                db_size_bytes: db_size,
                db_size_in_use_bytes: in_use,
                quota_bytes: 2048 * MIB,
                quota_source: QuotaSource::Config,
                leader: Some(MemberId(leader)),
                raft_term: 2,
                raft_index: 500,
                raft_applied_index: 500 - id,
                is_learner: false,
                errors: vec![],
            }),
        }
    }

    pub(crate) fn cluster(members: Vec<MemberStatus>, alarms: Vec<Alarm>) -> ClusterStatus {
        ClusterStatus {
            cluster: "c".into(),
            unlisted_endpoints: vec![],
            membership: Ok(Membership {
                cluster_id: 7,
                voting_members: members.iter().filter(|m| !m.is_learner).count(),
                learners: members.iter().filter(|m| m.is_learner).count(),
            }),
            members,
            alarms: Ok(alarms),
            duration: Duration::ZERO,
        }
    }

    fn fragmented_three() -> ClusterStatus {
        cluster(
            vec![
                member(1, 1, 500 * MIB, 100 * MIB),
                member(2, 1, 300 * MIB, 100 * MIB),
                member(3, 1, 600 * MIB, 100 * MIB),
            ],
            vec![],
        )
    }

    fn plan_of(status: &ClusterStatus, settings: &RemediationSettings) -> Result<Plan, String> {
        let healthy = preflight(status, settings, false).map_err(|err| err.to_string())?;
        Ok(make_plan(status, &healthy, settings))
    }

    #[test]
    fn followers_go_most_fragmented_first_and_the_leader_last() {
        let plan = plan_of(&fragmented_three(), &RemediationSettings::default()).unwrap();
        let order: Vec<&str> = plan
            .defragment
            .iter()
            .map(|m| m.member.name.as_str())
            .collect();
        assert_eq!(order, ["m3", "m2", "m1"]);
        assert!(plan.defragment[2].is_leader);
        // The most caught-up follower serves the snapshot.
        assert_eq!(plan.snapshot_from.name, "m2");
    }

    #[test]
    fn members_below_the_rule_are_skipped_with_the_rules_reason() {
        let status = cluster(
            vec![
                member(1, 1, 500 * MIB, 100 * MIB),
                member(2, 1, 150 * MIB, 100 * MIB),
                member(3, 1, 600 * MIB, 100 * MIB),
            ],
            vec![],
        );
        let plan = plan_of(&status, &RemediationSettings::default()).unwrap();
        assert_eq!(plan.defragment.len(), 2);
        assert_eq!(plan.skip[0].member.name, "m2");
        assert!(
            plan.skip[0].reason.contains("< 100 MiB"),
            "{}",
            plan.skip[0].reason
        );
    }

    #[test]
    fn a_member_whose_in_use_figure_lags_is_judged_by_its_peers_and_planned() {
        // After a compaction on a quiet cluster: m3 still reports the old figure.
        let status = cluster(
            vec![
                member(1, 1, 192 * MIB, 25 * MIB),
                member(2, 1, 192 * MIB, 25 * MIB),
                member(3, 1, 192 * MIB, 172 * MIB),
            ],
            vec![],
        );
        let plan = plan_of(&status, &RemediationSettings::default()).unwrap();
        assert!(plan.skip.is_empty(), "{:?}", plan.skip);
        let m3 = plan
            .defragment
            .iter()
            .find(|m| m.member.name == "m3")
            .unwrap();
        assert_eq!(m3.judged_in_use, Some(25 * MIB));
        assert_eq!(m3.db_size_in_use, 172 * MIB);
        assert!(
            m3.reason.starts_with("reports 180 MB in use (90%), a peer only 26 MB for the same keyspace: etcd's figure lags after a compaction; judged at 26 MB (13%): ")
                && m3.reason.ends_with("free (>= 100 MiB) and 13% in use (< 50%)"),
            "{}",
            m3.reason
        );
    }

    #[test]
    fn leader_skip_policy_leaves_the_leader_out() {
        let settings = RemediationSettings {
            leader: LeaderPolicy::Skip,
            ..Default::default()
        };
        let plan = plan_of(&fragmented_three(), &settings).unwrap();
        assert!(plan.defragment.iter().all(|m| !m.is_leader));
        assert!(plan.skip[0].reason.contains("leader: skip"));
    }

    #[test]
    fn nospace_puts_every_voting_member_in_the_plan() {
        let status = cluster(
            vec![
                member(1, 1, 100 * MIB, 99 * MIB),
                member(2, 1, 100 * MIB, 99 * MIB),
                member(3, 1, 100 * MIB, 99 * MIB),
            ],
            vec![Alarm {
                member_id: MemberId(2),
                alarm: AlarmKind::NoSpace,
            }],
        );
        let plan = plan_of(&status, &RemediationSettings::default()).unwrap();
        assert!(plan.nospace);
        assert_eq!(plan.defragment.len(), 3);
    }

    #[test]
    fn preflight_refuses_with_the_reason() {
        let settings = RemediationSettings::default();
        let refusal = |status: ClusterStatus| plan_of(&status, &settings).unwrap_err();

        let mut down = fragmented_three();
        down.members[1].status = Err(ProbeError::Unreachable("connection refused".into()));
        assert!(refusal(down).contains("member m2 (http://127.0.0.1:2381) is not answering"));

        let corrupt = cluster(
            fragmented_three().members,
            vec![Alarm {
                member_id: MemberId(3),
                alarm: AlarmKind::Corrupt,
            }],
        );
        assert!(refusal(corrupt).contains("CORRUPT alarm raised by member m3"));

        let single = cluster(vec![member(1, 1, 500 * MIB, 100 * MIB)], vec![]);
        assert!(refusal(single.clone()).contains("1 voting member:"));
        let healthy = preflight(&single, &settings, true).expect("--force accepts one member");
        assert_eq!(
            make_plan(&single, &healthy, &settings).snapshot_from.name,
            "m1"
        );

        let split = cluster(
            vec![member(1, 1, 1, 1), member(2, 2, 1, 1), member(3, 1, 1, 1)],
            vec![],
        );
        assert!(refusal(split).contains("do not agree on a leader (m1 follows"));

        let mut lagging = fragmented_three();
        if let Ok(status) = &mut lagging.members[2].status {
            status.raft_applied_index = 1;
        }
        let strict = RemediationSettings {
            max_applied_lag: 100,
            ..Default::default()
        };
        let lagging = plan_of(&lagging, &strict).unwrap_err();
        assert!(
            lagging.contains("m3 (http://127.0.0.1:2382) has applied 498 entries fewer"),
            "{lagging}"
        );
    }

    #[test]
    fn learners_are_skipped_and_not_counted_as_voting() {
        let mut learner = member(4, 1, 500 * MIB, 10 * MIB);
        learner.is_learner = true;
        let mut members = fragmented_three().members;
        members.push(learner);
        let status = cluster(members, vec![]);
        let plan = plan_of(&status, &RemediationSettings::default()).unwrap();
        assert_eq!(plan.voting_members, 3);
        let skipped = plan.skip.iter().find(|m| m.is_learner).unwrap();
        assert!(skipped.reason.starts_with("learner"));
    }
}
