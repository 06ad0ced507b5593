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
        peer_urls: Vec::new(),
        alarms: vec![],
        probe_latency: Duration::from_millis(1),
        status: Ok(EndpointStatus {
            member_id: MemberId(id),
            cluster_id: 7,
            revision: 100,
            version: "3.5.1".into(),
            storage_version: None,
            downgrade: None,
            upgrade_advice: None,
            db_size_bytes: db_size,
            db_size_in_use_bytes: in_use,
            quota_bytes: 2048 * MIB,
            quota_source: QuotaSource::Config,
            stop_grpc_on_defrag: None,
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
    Ok(make_plan(status, &healthy, settings, Selection::Rule))
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
fn each_follower_says_what_its_clients_do_while_it_defragments() {
    let mut status = fragmented_three();
    let gates = [(1, Some(true)), (2, Some(false)), (3, Some(true))];
    for (member, (_, gate)) in status.members.iter_mut().zip(gates) {
        if let Ok(answer) = member.status.as_mut() {
            answer.stop_grpc_on_defrag = gate;
        }
    }
    let plan = plan_of(&status, &RemediationSettings::default()).unwrap();
    let gated: Vec<Option<bool>> = plan
        .defragment
        .iter()
        .map(|m| m.stop_grpc_on_defrag)
        .collect();
    assert_eq!(gated, [Some(true), Some(false), Some(true)], "m3, m2, m1");
    let lines = describe(&plan);
    assert!(
        lines[0].starts_with("1. m3") && lines[0].ends_with("its pinned clients wait"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with("(StopGRPCServiceOnDefrag off)"),
        "{}",
        lines[1]
    );
    // The leader's clients are the forecast's to describe (its choice's reason).
    assert!(
        !lines[2].contains("StopGRPCServiceOnDefrag"),
        "{}",
        lines[2]
    );
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
        make_plan(&single, &healthy, &settings, Selection::Rule)
            .snapshot_from
            .name,
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
