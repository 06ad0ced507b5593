//! The run's decisions, as plain functions of a cluster's status: whether a member may go,
//! where leadership goes, whether NOSPACE may be disarmed, whether the members hold the same
//! keyspace. The steps gather the figures and act; these say what the figures mean.

use etcdmedic_cluster::model::{ClusterStatus, EndpointStatus, MemberId};
use etcdmedic_cluster::table::human_bytes;

use super::error::MoveFailure;
use super::etcd::HashKv;
use crate::plan::member_ref;
use crate::report::{HashCheck, MemberRef};

/// The answer of the member `id`, when it answered.
pub(super) fn find(status: &ClusterStatus, id: MemberId) -> Option<&EndpointStatus> {
    status
        .members
        .iter()
        .filter_map(|m| m.reachable())
        .find(|s| s.member_id == id)
}

/// Why a member may not go: the cluster would lose its quorum, or it cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum NoQuorum {
    #[error("it does not answer Status")]
    TargetSilent,
    #[error("the members do not agree on a leader")]
    NoLeader,
    #[error(
        "without it only {healthy} of {voting} voting members are up and caught up, {needed} \
         are needed ({problems})"
    )]
    TooFew {
        healthy: usize,
        voting: usize,
        needed: usize,
        problems: String,
    },
}

/// The keyspace changed while its hashes were taken: they cannot be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum KeyspaceMoved {
    #[error("a write landed during the check")]
    Written,
    #[error("a compaction ran during the check")]
    Compacted,
}

/// Whether the voting members other than `target` that answer and have caught up with the
/// leader still make a quorum. `Ok` carries `target`'s status and a sentence for the record.
pub(super) fn quorum_without(
    status: &ClusterStatus,
    target: MemberId,
    max_applied_lag: u64,
) -> Result<(EndpointStatus, String), NoQuorum> {
    let target_status = find(status, target)
        .cloned()
        .ok_or(NoQuorum::TargetSilent)?;
    let leader = status
        .agreed_leader()
        .and_then(|id| find(status, id))
        .ok_or(NoQuorum::NoLeader)?;
    let voting: Vec<_> = status.members.iter().filter(|m| !m.is_learner).collect();
    let quorum = voting.len() / 2 + 1;
    let mut healthy = 0;
    let mut problems = Vec::new();
    for member in voting.iter().filter(|m| m.id != Some(target)) {
        match member.reachable() {
            Some(s)
                if leader
                    .raft_applied_index
                    .saturating_sub(s.raft_applied_index)
                    <= max_applied_lag =>
            {
                healthy += 1
            }
            Some(s) => problems.push(format!(
                "{} is {} entries behind",
                member.display_name(),
                leader
                    .raft_applied_index
                    .saturating_sub(s.raft_applied_index)
            )),
            None => problems.push(format!("{} does not answer", member.display_name())),
        }
    }
    // Clusters of one or two voting members (accepted with --force or allow_single_member)
    // have no quorum without the member at all: that outage was accepted, but every other
    // member must still be up.
    let needed = if voting.len() >= 3 {
        quorum
    } else {
        voting.len().saturating_sub(1)
    };
    if healthy < needed {
        return Err(NoQuorum::TooFew {
            healthy,
            voting: voting.len(),
            needed,
            problems: problems.join(", "),
        });
    }
    Ok((
        target_status,
        format!(
            "{healthy} of {} voting members up and caught up without it (quorum {quorum})",
            voting.len()
        ),
    ))
}

/// Where leadership goes: a voting follower that answers and is within `max_applied_lag` of
/// `leader`, the most caught up first (raft hands over only once the transferee's log
/// matches the leader's, and the leader drops proposals until the transfer ends: the
/// furthest-along follower keeps that window shortest), then one defragmented in this run.
pub(super) fn leader_target(
    status: &ClusterStatus,
    leader: MemberId,
    defragmented: &[MemberId],
    max_applied_lag: u64,
) -> Result<MemberRef, MoveFailure> {
    let leader_applied = find(status, leader)
        .map(|s| s.raft_applied_index)
        .ok_or(MoveFailure::LeaderGone)?;
    status
        .members
        .iter()
        .filter(|m| !m.is_learner)
        .filter_map(|m| Some((m, m.reachable()?)))
        .filter(|(_, s)| s.member_id != leader)
        .filter(|(_, s)| leader_applied.saturating_sub(s.raft_applied_index) <= max_applied_lag)
        .max_by_key(|(_, s)| {
            (
                s.raft_index,
                s.raft_applied_index,
                defragmented.contains(&s.member_id),
            )
        })
        .map(|(m, _)| member_ref(m))
        .ok_or(MoveFailure::NoTarget)
}

/// Every member that answers names `target` as its leader.
pub(super) fn all_follow(status: &ClusterStatus, target: MemberId) -> bool {
    let mut answers = status
        .members
        .iter()
        .filter_map(|m| m.reachable())
        .peekable();
    answers.peek().is_some() && answers.all(|s| s.leader == Some(target))
}

/// Members still too close to their quota for NOSPACE to be disarmed: each as "m0 at 95% of
/// its 2.1 GB quota".
pub(super) fn nospace_blockers(status: &ClusterStatus, threshold: f64) -> Vec<String> {
    status
        .members
        .iter()
        .filter_map(|m| Some((m, m.reachable()?)))
        .filter(|(_, s)| s.quota_usage() >= threshold)
        .map(|(m, s)| {
            format!(
                "{} at {:.0}% of its {} quota",
                m.display_name(),
                s.quota_usage() * 100.0,
                human_bytes(s.quota_bytes)
            )
        })
        .collect()
}

/// The members' HashKV answers at `asked` (0: each at its latest revision) as one check, or
/// why they cannot be compared: the keyspace moved under them (a write, when they hashed
/// different revisions; a compaction, when their compact revisions differ).
pub(super) fn compare_hashes(
    asked: i64,
    answers: Vec<(MemberRef, HashKv)>,
) -> Result<HashCheck, KeyspaceMoved> {
    let revisions: Vec<i64> = answers
        .iter()
        .map(|(_, a)| if asked == 0 { a.revision } else { asked })
        .collect();
    if revisions.windows(2).any(|w| w[0] != w[1]) {
        return Err(KeyspaceMoved::Written);
    }
    if answers
        .windows(2)
        .any(|w| w[0].1.compact_revision != w[1].1.compact_revision)
    {
        return Err(KeyspaceMoved::Compacted);
    }
    let hashes: Vec<(MemberRef, u32)> = answers.into_iter().map(|(m, a)| (m, a.hash)).collect();
    let consistent = hashes.windows(2).all(|w| w[0].1 == w[1].1);
    Ok(HashCheck {
        revision: revisions.first().copied().unwrap_or(asked),
        hashes,
        consistent,
    })
}

#[cfg(test)]
mod tests {
    use etcdmedic_cluster::model::ProbeError;

    use super::*;
    use crate::plan::tests::{cluster, member};

    fn members(count: u64, down: &[u64]) -> ClusterStatus {
        let mut members: Vec<_> = (1..=count).map(|id| member(id, 1, 100, 10)).collect();
        for member in members.iter_mut() {
            if down.contains(&member.id.map_or(0, |id| id.0)) {
                member.status = Err(ProbeError::Unreachable("refused".into()));
            }
        }
        cluster(members, vec![])
    }

    #[test]
    fn a_member_goes_only_when_the_others_keep_a_quorum() {
        assert!(quorum_without(&members(3, &[]), MemberId(2), 1000).is_ok());
        let refused = quorum_without(&members(3, &[3]), MemberId(2), 1000)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("only 1 of 3 voting members are up and caught up, 2 are needed (m3 does not answer)"),
            "{refused}"
        );
        // Five members lose one and keep three without the target.
        assert!(quorum_without(&members(5, &[5]), MemberId(2), 1000).is_ok());
        assert!(quorum_without(&members(5, &[4, 5]), MemberId(2), 1000).is_err());
        // The target itself must answer.
        assert!(quorum_without(&members(3, &[2]), MemberId(2), 1000).is_err());
    }

    #[test]
    fn forced_small_clusters_need_every_other_member_up() {
        assert!(quorum_without(&members(1, &[]), MemberId(1), 1000).is_ok());
        assert!(quorum_without(&members(2, &[]), MemberId(2), 1000).is_ok());
        assert!(quorum_without(&members(2, &[2]), MemberId(1), 1000).is_err());
    }

    #[test]
    fn a_member_far_behind_the_leader_does_not_count() {
        // m3 has applied 2 entries fewer than the leader m1 (see the plan tests).
        let refused = quorum_without(&members(3, &[]), MemberId(2), 1)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("m3 is 2 entries behind"), "{refused}");
        assert!(quorum_without(&members(3, &[]), MemberId(2), 2).is_ok());
    }

    #[test]
    fn leadership_goes_to_the_most_caught_up_follower_then_a_defragmented_one() {
        let status = members(3, &[]);
        // m2 has applied more than m3: it takes over, defragmented or not.
        let to = leader_target(&status, MemberId(1), &[], 1000).unwrap();
        assert_eq!(to.name, "m2");
        let to = leader_target(&status, MemberId(1), &[MemberId(3)], 1000).unwrap();
        assert_eq!(to.name, "m2");
        // A follower further along in the log beats one that applied more.
        let mut ahead = members(3, &[]);
        if let Ok(m3) = &mut ahead.members[2].status {
            m3.raft_index += 1;
        }
        let to = leader_target(&ahead, MemberId(1), &[], 1000).unwrap();
        assert_eq!(to.name, "m3");
        // Level with each other: the defragmented one.
        let mut level = members(3, &[]);
        for member in &mut level.members {
            if let Ok(s) = &mut member.status {
                s.raft_applied_index = 500;
            }
        }
        let to = leader_target(&level, MemberId(1), &[MemberId(3)], 1000).unwrap();
        assert_eq!(to.name, "m3");
        // Too far behind to take over.
        assert_eq!(
            leader_target(&status, MemberId(1), &[MemberId(3)], 0).map(|m| m.name),
            Err(MoveFailure::NoTarget)
        );
        assert_eq!(
            leader_target(&members(3, &[1]), MemberId(1), &[], 1000),
            Err(MoveFailure::LeaderGone)
        );
        assert!(all_follow(&status, MemberId(1)));
        assert!(!all_follow(&status, MemberId(2)));
    }

    #[test]
    fn nospace_stays_armed_while_a_member_is_past_the_threshold() {
        let mut status = members(3, &[]);
        if let Ok(s) = &mut status.members[1].status {
            s.db_size_bytes = s.quota_bytes / 100 * 95;
        }
        let blockers = nospace_blockers(&status, 0.9);
        assert_eq!(blockers, ["m2 at 95% of its 2.1 GB quota"]);
        assert!(nospace_blockers(&status, 0.96).is_empty());
    }

    #[test]
    fn hashes_compare_only_at_one_revision_and_one_compaction() {
        let m = |n: &str| MemberRef {
            id: MemberId(1),
            name: n.into(),
            endpoint: String::new(),
        };
        let kv = |hash, revision, compact_revision| HashKv {
            hash,
            revision,
            compact_revision,
        };
        let same = compare_hashes(9, vec![(m("a"), kv(7, 9, 3)), (m("b"), kv(7, 9, 3))]).unwrap();
        assert!(same.consistent);
        assert_eq!(same.revision, 9);
        let differ = compare_hashes(9, vec![(m("a"), kv(7, 9, 3)), (m("b"), kv(8, 9, 3))]).unwrap();
        assert!(!differ.consistent);
        // At "latest" (0), members that hashed different revisions saw a write land.
        assert_eq!(
            compare_hashes(0, vec![(m("a"), kv(7, 9, 3)), (m("b"), kv(7, 10, 3))])
                .unwrap_err()
                .to_string(),
            "a write landed during the check"
        );
        assert_eq!(
            compare_hashes(9, vec![(m("a"), kv(7, 9, 3)), (m("b"), kv(7, 9, 4))])
                .unwrap_err()
                .to_string(),
            "a compaction ran during the check"
        );
    }
}
