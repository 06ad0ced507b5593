//! Step 1: before anything changes, every member must serve reads (none left defragmenting
//! by someone else) and pass the preflight checks; then the plan.

use std::time::Duration;

use super::error::{Refusal, RunError};
use super::etcd::Etcd;
use super::step::done;
use super::wait::{Bounds, OnStop, WaitError, Waiter};
use super::{Run, RunOptions};
use crate::events::Event;
use crate::forecast::Rates;
use crate::plan::downgrade::enabled_target;
use crate::plan::forecast;
use crate::plan::{self, Plan, PlannedMember, Selection};
use crate::report::{MemberAction, MemberReport, StepKind};

impl<E: Etcd> Run<'_, E> {
    pub(super) async fn preflight(&mut self, options: &RunOptions) -> Result<Plan, RunError> {
        let selection = match &options.only {
            Some(member) => Selection::Member(member),
            None => Selection::Rule,
        };
        let step = self.begin(StepKind::Preflight, None);
        let result = async {
            self.members_serve_reads(false).await?;
            let status = self.etcd.collect().await;
            for stray in &status.unlisted_endpoints {
                self.warn(format!(
                    "configured endpoint {} is not a member (MemberList does not list it) and \
                     does not answer; ignored: remove it from the config if it is a typo",
                    stray.endpoint
                ));
            }
            let healthy = plan::preflight(&status, self.settings, options.force)?;
            if let Some(target) = enabled_target(&status).filter(|_| !options.during_downgrade) {
                return Err(Refusal::DowngradeUnderWay(target).into());
            }
            let mut plan = plan::make_plan(&status, &healthy, self.settings, selection);
            let forecast = forecast(
                &plan,
                Rates::learned(&[], &self.history),
                self.settings.leader,
                self.settings.leader_in_place_below,
                self.settings.settle_time,
            );
            let mut detail = format!(
                "{} voting members answered, leader {}, {} member(s) to defragment",
                plan.voting_members,
                plan.leader.name,
                plan.defragment.len(),
            );
            if !plan.is_empty() {
                detail.push_str(&format!(", predicted {:.2}s", forecast.total.as_secs_f64()));
            }
            plan.forecast = (!plan.is_empty()).then_some(forecast);
            Ok(done(plan, detail))
        }
        .await;
        let plan = self.end(step, result)?;
        self.report.members = plan
            .defragment
            .iter()
            .map(|m| member_report(m, MemberAction::NotReached))
            .chain(
                plan.skip
                    .iter()
                    .map(|m| member_report(m, MemberAction::Skipped)),
            )
            .collect();
        self.report.plan = Some(plan.clone());
        for line in plan::describe(&plan) {
            tracing::info!(plan = %line, "planned");
        }
        self.events.emit(Event::Planned {
            plan: Box::new(plan.clone()),
        });
        Ok(plan)
    }

    /// Waits until every member serves a serializable read, which etcd blocks while it
    /// defragments. `all`: also members that do not answer Status at all (after a crash the
    /// member may be the one left defragmenting); otherwise only members that answer Status
    /// but not reads, the sign of a defragmentation under way. A stop request ends the wait.
    pub(super) async fn members_serve_reads(&self, all: bool) -> Result<Duration, RunError> {
        let mut waiter = Waiter::new(Bounds {
            within: self.settings.defrag_timeout,
            on_stop: OnStop::Interrupt,
            stop: self.stop,
        });
        loop {
            let status = self.etcd.collect().await;
            let mut waiting_for = Vec::new();
            for member in &status.members {
                if !all && member.status.is_err() {
                    continue;
                }
                if let Err(err) = self.serializable_read(&member.endpoint).await {
                    waiting_for.push(format!("{}: {err}", member.display_name()));
                }
            }
            if all && status.members.is_empty() {
                waiting_for.push("no member answered".to_string());
            }
            if waiting_for.is_empty() {
                return Ok(waiter.elapsed());
            }
            let missing = waiting_for.join("; ");
            let progress = |elapsed, missing: &str| {
                self.progress(
                    StepKind::Preflight,
                    None,
                    elapsed,
                    format!(
                        "waiting until every member serves reads again (a member may still be \
                         defragmenting): {missing}"
                    ),
                )
            };
            match waiter.missed(&missing, progress).await {
                Ok(()) => {}
                Err(WaitError::Stopped) => return Err(RunError::Interrupted),
                Err(WaitError::TimedOut { after, last }) => {
                    return Err(Refusal::MembersNotServingReads {
                        waited: after,
                        detail: last,
                    }
                    .into())
                }
            }
        }
    }

    /// A serializable read of `endpoint`, within the cluster's call timeout.
    pub(super) async fn serializable_read(
        &self,
        endpoint: &str,
    ) -> Result<(), super::etcd::CallError> {
        let timeout = self.etcd.call_timeout();
        tokio::time::timeout(timeout, self.etcd.serializable_read(endpoint))
            .await
            .unwrap_or(Err(super::etcd::CallError::Timeout(timeout)))
    }
}

fn member_report(planned: &PlannedMember, action: MemberAction) -> MemberReport {
    MemberReport {
        member: planned.member.clone(),
        was_leader: planned.is_leader,
        is_learner: planned.is_learner,
        action,
        reason: planned.reason.clone(),
        db_size_before: planned.db_size,
        db_size_in_use_before: planned.db_size_in_use,
        db_size_after: None,
        db_size_in_use_after: None,
        follower_at_defrag: None,
        defrag_duration: None,
        stop_grpc_on_defrag: planned.stop_grpc_on_defrag,
    }
}
