//! Where a downgrade stands and what the operator does next, from one live status: a plain
//! function, so every state of the seed's procedure is a unit test.

use etcdmedic_cluster::model::{ClusterStatus, EndpointStatus, MemberStatus};
use serde::Serialize;

pub use crate::plan::downgrade::{enabled_target, minor};

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum NextStep {
    /// No downgrade under way and every member runs one minor version: nothing to do.
    Done { version: String, storage: String },
    /// A member does not answer: wait until it is back (a replaced member restarting).
    Wait { reason: String },
    /// Members run different minor versions and no downgrade is enabled.
    Mixed { versions: String },
    /// The storage version of some member is not yet the target's: etcd migrates it on its
    /// own, quickly.
    Migrating { member: String, storage: String },
    /// Replace this member's binary with the target's next.
    Replace {
        member: String,
        target: String,
        leader: bool,
    },
    /// The member left to replace leads: move leadership away first.
    MoveLeadership { member: String, target: String },
}

impl NextStep {
    pub fn is_done(&self) -> bool {
        matches!(self, NextStep::Done { .. })
    }

    /// The step in words, as `downgrade status` prints it.
    pub fn sentence(&self) -> String {
        match self {
            NextStep::Done { version, storage } if storage.is_empty() => {
                format!("done: every member runs {version}, no downgrade is under way")
            }
            NextStep::Done { version, storage } => format!(
                "done: every member runs {version} and storage is {storage}, no downgrade is \
                 under way"
            ),
            NextStep::Wait { reason } => format!("wait: {reason}"),
            NextStep::Mixed { versions } => format!(
                "members run different minor versions ({versions}) and no downgrade is \
                 enabled: finish the upgrade, or `downgrade enable` the older version"
            ),
            NextStep::Migrating { member, storage } => format!(
                "storage version not yet migrated on {member} ({storage}): wait (etcd migrates \
                 it by itself within seconds)"
            ),
            NextStep::Replace {
                member,
                target,
                leader: false,
            } => format!(
                "replace {member}'s binary with {target} next (a follower): stop it, start etcd \
                 {target} on the same data directory, then run `downgrade status` again"
            ),
            NextStep::Replace { member, target, .. } => format!(
                "replace {member}'s binary with {target} next (it leads: the cluster elects \
                 another leader while it restarts)"
            ),
            NextStep::MoveLeadership { member, target } => format!(
                "{member} leads: move leadership away first (`forfeit-leadership --member \
                 {member}`), then replace its binary with {target}"
            ),
        }
    }
}

/// The next step of the downgrade `status` shows.
pub fn next_step(status: &ClusterStatus) -> NextStep {
    let mut answered: Vec<(&MemberStatus, &EndpointStatus)> = Vec::new();
    for member in &status.members {
        match &member.status {
            Ok(answer) => answered.push((member, answer)),
            Err(err) => {
                return NextStep::Wait {
                    reason: format!(
                        "{} does not answer ({err}); a member whose binary was just replaced \
                         needs a moment to start",
                        member.display_name()
                    ),
                }
            }
        }
    }
    let Some(target) = enabled_target(status) else {
        let mut minors: Vec<String> = answered.iter().map(|(_, s)| minor(&s.version)).collect();
        minors.sort();
        minors.dedup();
        return match minors.as_slice() {
            [version] => NextStep::Done {
                version: version.clone(),
                storage: answered
                    .iter()
                    .find_map(|(_, s)| s.storage_version.clone())
                    .unwrap_or_default(),
            },
            _ => NextStep::Mixed {
                versions: answered
                    .iter()
                    .map(|(m, s)| format!("{} {}", m.display_name(), s.version))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        };
    };
    let on_target = |s: &EndpointStatus| {
        s.storage_version
            .as_deref()
            .is_none_or(|v| minor(v) == target)
    };
    if let Some((member, status)) = answered.iter().find(|(_, s)| !on_target(s)) {
        return NextStep::Migrating {
            member: member.display_name(),
            storage: status.storage_version.clone().unwrap_or_default(),
        };
    }
    // Followers first, in name order; the leader last.
    let next = answered
        .iter()
        .filter(|(_, s)| minor(&s.version) != target)
        .min_by_key(|(m, s)| (s.is_leader(), m.display_name()));
    match next {
        None => NextStep::Done {
            version: target.clone(),
            storage: format!("{target}.0"),
        },
        Some((member, s)) if s.is_leader() && answered.len() > 1 => NextStep::MoveLeadership {
            member: member.display_name(),
            target,
        },
        Some((member, s)) => NextStep::Replace {
            member: member.display_name(),
            target,
            leader: s.is_leader(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use etcdmedic_cluster::model::{Downgrade, QuotaSource};
    use etcdmedic_cluster::{MemberId, ProbeError};

    use super::*;

    /// A member `id` running `version` with `storage`, following member 1, and whether it
    /// reports a downgrade to 3.5 enabled.
    fn member(id: u64, version: &str, storage: &str, enabled: bool) -> MemberStatus {
        let reports = minor(version) != "3.5";
        MemberStatus {
            endpoint: format!("http://127.0.0.1:{id}"),
            id: Some(MemberId(id)),
            name: Some(format!("m{id}")),
            is_learner: false,
            peer_urls: Vec::new(),
            alarms: Vec::new(),
            probe_latency: Duration::ZERO,
            status: Ok(EndpointStatus {
                member_id: MemberId(id),
                cluster_id: 1,
                revision: 10,
                version: version.into(),
                storage_version: (!storage.is_empty()).then(|| storage.into()),
                downgrade: reports.then(|| Downgrade {
                    enabled,
                    target_version: if enabled {
                        "3.5.0".into()
                    } else {
                        String::new()
                    },
                }),
                upgrade_advice: None,
                db_size_bytes: 1,
                db_size_in_use_bytes: 1,
                quota_bytes: 2,
                quota_source: QuotaSource::Status,
                stop_grpc_on_defrag: None,
                leader: Some(MemberId(1)),
                raft_term: 2,
                raft_index: 10,
                raft_applied_index: 10,
                is_learner: false,
                errors: Vec::new(),
            }),
        }
    }

    fn cluster(members: Vec<MemberStatus>) -> ClusterStatus {
        crate::plan::tests::cluster(members, vec![])
    }

    #[test]
    fn a_healthy_cluster_on_one_version_has_nothing_to_do() {
        let status = cluster(
            (1..=3)
                .map(|i| member(i, "3.6.15", "3.6.0", false))
                .collect(),
        );
        assert_eq!(
            next_step(&status).sentence(),
            "done: every member runs 3.6 and storage is 3.6.0, no downgrade is under way"
        );
    }

    #[test]
    fn once_enabled_it_waits_for_the_storage_then_names_followers_then_the_leader() {
        let migrating = cluster(vec![
            member(1, "3.6.15", "3.5.0", true),
            member(2, "3.6.15", "3.6.0", true),
            member(3, "3.6.15", "3.5.0", true),
        ]);
        assert_eq!(
            next_step(&migrating),
            NextStep::Migrating {
                member: "m2".into(),
                storage: "3.6.0".into()
            }
        );
        let migrated = cluster(
            (1..=3)
                .map(|i| member(i, "3.6.15", "3.5.0", true))
                .collect(),
        );
        assert_eq!(
            next_step(&migrated),
            NextStep::Replace {
                member: "m2".into(),
                target: "3.5".into(),
                leader: false
            }
        );
        let leader_left = cluster(vec![
            member(1, "3.6.15", "3.5.0", true),
            member(2, "3.5.30", "3.5.0", false),
            member(3, "3.5.30", "", false),
        ]);
        assert!(next_step(&leader_left).sentence().starts_with(
            "m1 leads: move leadership away first (`forfeit-leadership --member m1`)"
        ));
    }

    #[test]
    fn every_member_on_the_target_is_done_and_a_silent_member_is_waited_for() {
        let done = cluster(
            (1..=3)
                .map(|i| member(i, "3.5.30", "3.5.0", false))
                .collect(),
        );
        assert!(next_step(&done).is_done(), "{:?}", next_step(&done));
        let mut down = cluster(
            (1..=3)
                .map(|i| member(i, "3.6.15", "3.5.0", true))
                .collect(),
        );
        down.members[2].status = Err(ProbeError::Timeout(Duration::from_secs(1)));
        assert!(matches!(next_step(&down), NextStep::Wait { .. }));
        let mixed = cluster(vec![
            member(1, "3.6.15", "3.6.0", false),
            member(2, "3.5.30", "", false),
        ]);
        assert!(matches!(next_step(&mixed), NextStep::Mixed { .. }));
    }
}
