//! Step 4, and the part of every member's turn that is the same for all: the quorum check
//! before it, the Defragment call, and the wait until the member serves reads and has caught
//! up again, which a lost answer (etcd goes on defragmenting) only makes longer.

use std::time::Duration;

use tokio::time::Instant;

use etcdmedic_cluster::model::EndpointStatus;
use etcdmedic_cluster::table::human_bytes;

use super::decide::{find, quorum_without};
use super::error::{RunError, Stop};
use super::etcd::{CallError, Etcd};
use super::step::done;
use super::wait::{self, Bounds, OnStop, WaitError, Waiter};
use super::Run;
use crate::plan::{Plan, PlannedMember};
use crate::report::{MemberAction, MemberRef, StepKind};

/// The shortest wait for a defragmented member to serve reads and catch up.
const CATCH_UP_FLOOR: Duration = Duration::from_secs(30);

impl<E: Etcd> Run<'_, E> {
    /// Defragments the planned followers, one at a time. Returns those that lead the
    /// cluster by their turn: they go with the leader, last.
    pub(super) async fn defragment_followers(
        &mut self,
        plan: &Plan,
    ) -> Result<Vec<PlannedMember>, RunError> {
        let mut deferred = Vec::new();
        for planned in plan.defragment.iter().filter(|m| !m.is_leader) {
            self.check_stop()?;
            self.settle().await?;
            self.quiet_gate(plan, Some(&planned.member)).await?;
            let status = self.quorum_check(&planned.member).await?;
            if status.is_leader() {
                self.warn(format!(
                    "{} became the leader since the plan was made; it goes last",
                    planned.member
                ));
                deferred.push(planned.clone());
                continue;
            }
            self.defragment(&planned.member, &status).await?;
        }
        Ok(deferred)
    }

    /// The pause between two members, `settle_time` (none before the first); a stop request
    /// ends it.
    pub(super) async fn settle(&self) -> Result<(), RunError> {
        if self.defragmented().is_empty() || self.settings.settle_time.is_zero() {
            return Ok(());
        }
        wait::pause(self.settings.settle_time, OnStop::Interrupt, self.stop)
            .await
            .map_err(|_| RunError::Interrupted)
    }

    /// Stops unless the cluster keeps quorum without `member`, counting only members that
    /// answer and have caught up. Returns `member`'s current status.
    pub(super) async fn quorum_check(
        &mut self,
        member: &MemberRef,
    ) -> Result<EndpointStatus, RunError> {
        let step = self.begin(StepKind::QuorumCheck, Some(member.clone()));
        let status = self.etcd.collect().await;
        let result = quorum_without(&status, member.id, self.settings.max_applied_lag)
            .map(|(target, detail)| done(target, detail))
            .map_err(|refused| {
                Stop::NoQuorum {
                    member: member.clone(),
                    detail: refused.to_string(),
                }
                .into()
            });
        self.end(step, result)
    }

    /// One member's Defragment, then the wait until it serves reads and has caught up.
    pub(super) async fn defragment(
        &mut self,
        member: &MemberRef,
        before: &EndpointStatus,
    ) -> Result<(), RunError> {
        let follower = !before.is_leader();
        if let Some(report) = self.member_report(member.id) {
            report.follower_at_defrag = Some(follower);
            report.db_size_before = before.db_size_bytes;
            report.db_size_in_use_before = before.db_size_in_use_bytes;
        }
        self.confirm_still_ours().await?;
        let step = self.begin(StepKind::Defragment, Some(member.clone()));
        let timeout = self.settings.defrag_timeout;
        let started = Instant::now();
        // The call is only dropped once the member has caught up: dropped earlier, the
        // request might never leave the client, and a member that was never defragmented
        // would look done.
        let etcd = self.etcd;
        let call = etcd.defragment(&member.endpoint);
        tokio::pin!(call);
        let progress = |elapsed| {
            self.progress(
                StepKind::Defragment,
                Some(member),
                elapsed,
                format!("still defragmenting {}", member.name),
            )
        };
        let answer = wait::call(timeout, progress, &mut call).await;
        let call_took = started.elapsed();
        let still_in_flight = answer.is_none();
        let lost = match answer {
            Some(Ok(())) => None,
            Some(Err(err)) if err.lost_answer() => Some(err),
            None => Some(CallError::Timeout(timeout)),
            Some(Err(error)) => {
                self.set_action(member.id, MemberAction::Failed);
                let failed = Stop::DefragFailed {
                    member: member.clone(),
                    error,
                };
                return self.end(step, Err(failed.into()));
            }
        };
        if let Some(lost) = &lost {
            // etcd keeps defragmenting after the client gives up: wait for the member itself
            // rather than starting on the next one.
            self.warn(format!(
                "Defragment on {member} ended without an answer ({lost}); waiting until it \
                 serves reads and catches up with the leader before going on"
            ));
        }
        // However short defrag_timeout is, a member that just finished needs a moment to
        // apply what the cluster wrote meanwhile.
        let catch_up = self.caught_up(member, timeout.max(CATCH_UP_FLOOR));
        let caught_up = if still_in_flight {
            // Still in flight: keep it going (its answer no longer matters) while waiting.
            let in_flight = async {
                let _ = (&mut call).await;
                std::future::pending::<()>().await
            };
            tokio::select! {
                caught_up = catch_up => caught_up,
                () = in_flight => unreachable!("pending never ends"),
            }
        } else {
            catch_up.await
        };
        let after = match caught_up {
            Ok(after) => after,
            Err(err) => {
                self.set_action(member.id, MemberAction::Failed);
                return self.end(step, Err(err));
            }
        };
        if let Some(report) = self.member_report(member.id) {
            report.action = MemberAction::Defragmented;
            report.db_size_after = Some(after.db_size_bytes);
            report.db_size_in_use_after = Some(after.db_size_in_use_bytes);
            report.defrag_duration = Some(call_took);
        }
        let detail = format!(
            "{} -> {} ({} reclaimed) as {}{}",
            human_bytes(before.db_size_bytes),
            human_bytes(after.db_size_bytes),
            human_bytes(before.db_size_bytes.saturating_sub(after.db_size_bytes)),
            if follower { "follower" } else { "leader" },
            if lost.is_some() {
                format!(" (the call gave up after {:.2}s)", call_took.as_secs_f64())
            } else {
                String::new()
            }
        );
        self.end(step, Ok(done((), detail)))
    }

    /// Waits until `member` answers Status and a serializable read (which etcd blocks for
    /// the whole defragmentation), and its applied index has reached the leader's as it was
    /// when the wait began. Part of finishing the member: a stop request does not end it.
    async fn caught_up(
        &self,
        member: &MemberRef,
        within: Duration,
    ) -> Result<EndpointStatus, RunError> {
        let mut waiter = Waiter::new(Bounds {
            within,
            on_stop: OnStop::Finish,
            stop: self.stop,
        });
        let mut target_applied = None;
        loop {
            let status = self.etcd.collect().await;
            let leader_applied = status
                .agreed_leader()
                .and_then(|leader| find(&status, leader))
                .map(|leader| leader.raft_applied_index);
            let missing = match (find(&status, member.id), leader_applied) {
                (Some(current), Some(leader_applied)) => {
                    let target = *target_applied.get_or_insert(leader_applied);
                    if current.raft_applied_index < target {
                        format!("applied index {} of {target}", current.raft_applied_index)
                    } else {
                        match self.serializable_read(&member.endpoint).await {
                            Ok(()) => return Ok(current.clone()),
                            Err(err) => format!("a read failed: {err}"),
                        }
                    }
                }
                (None, _) => "Status unanswered".into(),
                (_, None) => "the members do not agree on a leader".into(),
            };
            if let Err(err) = waiter.missed(&missing, |_, _| {}).await {
                let detail = match err {
                    WaitError::TimedOut { last, .. } => last,
                    WaitError::Stopped => "stopped".into(),
                };
                return Err(Stop::NotCaughtUp {
                    member: member.clone(),
                    within,
                    detail,
                }
                .into());
            }
        }
    }
}
