//! Step 5: the leader's turn. Under `leader: auto` the leader is defragmented in place when
//! the followers' measured throughput predicts a stall shorter than `leader_in_place_below`
//! (no leadership transfer, so no proposal is dropped); otherwise leadership moves to the
//! most caught-up follower first, and the old leader is defragmented as a follower. A member
//! that lost leadership since the plan simply goes as a follower.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{LeaderMoveFailure, LeaderPolicy};

use etcdmedic_cluster::model::EndpointStatus;

use super::decide::{all_follow, leader_target};
use super::error::{MoveFailure, RunError, Stop};
use super::etcd::Etcd;
use super::step::done;
use super::wait::{Bounds, OnStop, Waiter};
use super::Run;
use crate::forecast::{leader_choice, Rates};
use crate::plan::{Plan, PlannedMember};
use crate::report::{LeaderMove, MemberRef, StepKind};

/// How long every member may take to follow a new leader after MoveLeader returned.
const LEADER_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// MoveLeader returns once the transfer is done; etcd gives up after an election timeout
/// or so, this only bounds a call that hangs.
const MOVE_LEADER_TIMEOUT: Duration = Duration::from_secs(30);

impl<E: Etcd> Run<'_, E> {
    /// The planned leader, after any follower that became leader during the run.
    pub(super) async fn defragment_leaders(
        &mut self,
        plan: &Plan,
        deferred: Vec<PlannedMember>,
    ) -> Result<(), RunError> {
        let leaders = plan.defragment.iter().filter(|m| m.is_leader).cloned();
        for planned in deferred.into_iter().chain(leaders) {
            self.check_stop()?;
            self.defragment_leader(plan, &planned.member).await?;
        }
        Ok(())
    }

    async fn defragment_leader(&mut self, plan: &Plan, member: &MemberRef) -> Result<(), RunError> {
        let voting = plan.voting_members;
        self.settle().await?;
        self.quiet_gate(plan, Some(member)).await?;
        let status = self.quorum_check(member).await?;
        if status.is_leader() && voting == 1 {
            self.warn(format!(
                "{member} is the only voting member: every request waits until its \
                 defragmentation ends"
            ));
        } else if status.is_leader() && self.leader_stays(member, &status) {
            // Already said why, by `leader_stays`.
        } else if status.is_leader() {
            self.confirm_still_ours().await?;
            if let Err(reason) = self.move_leader(member).await {
                match self.settings.on_leader_move_failure {
                    LeaderMoveFailure::Stop => {
                        return Err(Stop::LeaderMoveFailed {
                            leader: member.clone(),
                            reason,
                        }
                        .into())
                    }
                    LeaderMoveFailure::DefragInPlace => self.warn(format!(
                        "leadership could not be moved off {member} ({reason}); defragmenting \
                         it in place: every client of the cluster waits until it ends"
                    )),
                }
            }
        }
        // The handover is finished and nothing was started on this member yet.
        self.check_stop()?;
        let status = self
            .etcd
            .member_status(&member.endpoint)
            .await
            .map_err(|error| Stop::StatusFailed {
                member: member.clone(),
                error,
            })?;
        self.defragment(member, &status).await
    }

    /// Whether the leader is defragmented where it is, decided now (with what the followers
    /// just measured) and recorded in the report.
    fn leader_stays(&mut self, member: &MemberRef, status: &EndpointStatus) -> bool {
        let samples: Vec<_> = self.report.defrag_samples().collect();
        let rates = Rates::learned(&samples, &self.history);
        let choice = leader_choice(
            self.settings.leader,
            self.settings.leader_in_place_below,
            status.db_size_in_use_bytes,
            &rates.defrag,
            status.stop_grpc_on_defrag,
        );
        let in_place = choice.in_place;
        match self.settings.leader {
            LeaderPolicy::DefragInPlace => self.warn(format!(
                "defragmenting the leader {member} in place (leader: defrag_in_place): every \
                 client of the cluster waits until it ends ({})",
                choice.reason
            )),
            _ => self.decided(format!("{member}: {}", choice.reason)),
        }
        self.report.leader_choice = Some(choice);
        in_place
    }

    /// Hands leadership from `leader` to the healthiest follower and waits until every
    /// member follows it.
    pub(super) async fn move_leader(&mut self, leader: &MemberRef) -> Result<(), MoveFailure> {
        let step = self.begin(StepKind::MoveLeader, Some(leader.clone()));
        let started = Instant::now();
        let result = self.hand_over(leader).await;
        if let Ok(to) = &result {
            self.report.leader_move = Some(LeaderMove {
                from: leader.clone(),
                to: to.clone(),
                duration: started.elapsed(),
            });
        }
        let recorded = result
            .as_ref()
            .map(|to| {
                done(
                    (),
                    format!("leadership moved to {to}; every member follows it"),
                )
            })
            .map_err(|reason| {
                Stop::LeaderMoveFailed {
                    leader: leader.clone(),
                    reason: reason.clone(),
                }
                .into()
            });
        let _ = self.end(step, recorded);
        result.map(drop)
    }

    async fn hand_over(&self, leader: &MemberRef) -> Result<MemberRef, MoveFailure> {
        let status = self.etcd.collect().await;
        let target = leader_target(
            &status,
            leader.id,
            &self.defragmented(),
            self.settings.max_applied_lag,
        )?;
        tokio::time::timeout(
            MOVE_LEADER_TIMEOUT,
            self.etcd.move_leader(&leader.endpoint, target.id),
        )
        .await
        .map_err(|_| MoveFailure::NoAnswer(MOVE_LEADER_TIMEOUT))?
        .map_err(|error| MoveFailure::Refused {
            target: target.clone(),
            error,
        })?;
        // The handover under way is finished before a stop request is honoured.
        let mut waiter = Waiter::new(Bounds {
            within: LEADER_SETTLE_TIMEOUT,
            on_stop: OnStop::Finish,
            stop: self.stop,
        });
        loop {
            if all_follow(&self.etcd.collect().await, target.id) {
                return Ok(target);
            }
            let missing = format!("not every member follows {target} yet");
            if waiter.missed(&missing, |_, _| {}).await.is_err() {
                return Err(MoveFailure::NotFollowed {
                    target,
                    within: LEADER_SETTLE_TIMEOUT,
                });
            }
        }
    }
}
