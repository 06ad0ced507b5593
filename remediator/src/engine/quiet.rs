//! The quiet-cluster gate: before the snapshot and before each member, the cluster's write
//! rate (how fast the leader's raft index advances, sampled over a second) must be at most
//! `max_write_rate`. A busy cluster is waited for (up to `quiet_wait`, with progress), then
//! `on_busy` decides: end the run, or go on with a warning; `defer` ends it at once. Off
//! unless `max_write_rate` is set, and never applied under NOSPACE: a cluster refusing writes
//! cannot wait for a quiet moment.

use std::time::Duration;

use crate::config::OnBusy;
use tokio::time::Instant;

use super::decide::find;
use super::error::{Busy, Refusal, RunError, Stop};
use super::etcd::Etcd;
use super::step::done;
use super::wait::{self, OnStop};
use super::Run;
use crate::plan::Plan;
use crate::report::{MemberRef, StepKind};

/// How long one sample of the write rate lasts.
const SAMPLE: Duration = Duration::from_secs(1);

impl<E: Etcd> Run<'_, E> {
    /// The gate before `member` (`None`: before the run's first change).
    pub(super) async fn quiet_gate(
        &mut self,
        plan: &Plan,
        member: Option<&MemberRef>,
    ) -> Result<(), RunError> {
        let Some(max) = self.settings.max_write_rate else {
            return Ok(());
        };
        if plan.nospace {
            return Ok(());
        }
        let step = self.begin(StepKind::QuietCheck, member.cloned());
        let result = self.wait_for_quiet(max, member).await;
        self.end(step, result.map(|detail| done((), detail)))
    }

    async fn wait_for_quiet(
        &self,
        max: f64,
        member: Option<&MemberRef>,
    ) -> Result<String, RunError> {
        let started = Instant::now();
        let mut samples = 0u32;
        // Each sample ends where the next begins: one Status round per second of waiting.
        let mut last = self.leader_raft_index().await;
        loop {
            samples += 1;
            let (rate, now) = self.write_rate(last).await?;
            last = now;
            let Some(rate) = rate else {
                // No agreed leader to measure by: the quorum check that follows says why.
                return Ok("the write rate could not be measured (no agreed leader)".into());
            };
            if rate <= max {
                return Ok(format!(
                    "{rate:.1} raft entries/s, at most max_write_rate {max}"
                ));
            }
            let waited = started.elapsed();
            let busy = Busy { rate, max, waited };
            let give_up = match self.settings.on_busy {
                OnBusy::Defer => true,
                OnBusy::Wait | OnBusy::Proceed => waited >= self.settings.quiet_wait,
            };
            if !give_up {
                // Every tenth sample: a minute-long wait must not look hung, nor flood.
                if samples % 10 == 1 {
                    self.progress(
                        StepKind::QuietCheck,
                        member,
                        waited,
                        format!(
                            "waiting for a quiet cluster: {rate:.1} raft entries/s, above \
                             max_write_rate {max}"
                        ),
                    );
                }
                continue;
            }
            if self.settings.on_busy == OnBusy::Proceed {
                self.warn(format!("{busy}; going on anyway (on_busy: proceed)"));
                return Ok(format!("{busy}; went on (on_busy: proceed)"));
            }
            let busy = Busy {
                waited: if self.settings.on_busy == OnBusy::Defer {
                    Duration::ZERO
                } else {
                    waited
                },
                ..busy
            };
            return Err(match member {
                Some(member) if !self.defragmented().is_empty() => Stop::ClusterBusy {
                    member: member.clone(),
                    busy,
                }
                .into(),
                _ => Refusal::ClusterBusy(busy).into(),
            });
        }
    }

    /// The leader's raft index now, and when it was read; `None` without an agreed leader.
    async fn leader_raft_index(&self) -> (Option<u64>, Instant) {
        let status = self.etcd.collect().await;
        let index = status
            .agreed_leader()
            .and_then(|leader| find(&status, leader))
            .map(|leader| leader.raft_index);
        (index, Instant::now())
    }

    /// Raft entries per second through the leader over [`SAMPLE`] from `since`, and the
    /// reading it ended with; no rate without an agreed leader at either end.
    async fn write_rate(
        &self,
        since: (Option<u64>, Instant),
    ) -> Result<(Option<f64>, (Option<u64>, Instant)), RunError> {
        wait::pause(SAMPLE, OnStop::Interrupt, self.stop)
            .await
            .map_err(|_| RunError::Interrupted)?;
        let now = self.leader_raft_index().await;
        let rate = match (since.0, now.0) {
            (Some(before), Some(after)) => Some(
                after.saturating_sub(before) as f64 / now.1.duration_since(since.1).as_secs_f64(),
            ),
            _ => None,
        };
        Ok((rate, now))
    }
}
