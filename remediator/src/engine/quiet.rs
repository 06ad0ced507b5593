//! The quiet-cluster gate: before the snapshot and before each member, the cluster's write
//! rate (how fast the leader's raft index advances, sampled over a second) must be at most
//! `max_write_rate`. A busy cluster is waited for (up to `quiet_wait`, with progress), then
//! `on_busy` decides: end the run, or go on with a warning; `defer` ends it at once. Off
//! unless `max_write_rate` is set, and never applied under NOSPACE: a cluster refusing writes
//! cannot wait for a quiet moment.

use std::time::Duration;

use etcdmedic_cluster::config::OnBusy;
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
        loop {
            samples += 1;
            let Some(rate) = self.write_rate().await? else {
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

    /// Raft entries per second through the leader, over [`SAMPLE`]; `None` without an
    /// agreed leader.
    async fn write_rate(&self) -> Result<Option<f64>, RunError> {
        let leader_index = |status: &etcdmedic_cluster::model::ClusterStatus| {
            let leader = status.agreed_leader()?;
            Some(find(status, leader)?.raft_index)
        };
        let before = leader_index(&self.etcd.collect().await);
        let sampled = Instant::now();
        wait::pause(SAMPLE, OnStop::Interrupt, self.stop)
            .await
            .map_err(|_| RunError::Interrupted)?;
        let after = leader_index(&self.etcd.collect().await);
        Ok(match (before, after) {
            (Some(before), Some(after)) => {
                Some(after.saturating_sub(before) as f64 / sampled.elapsed().as_secs_f64())
            }
            _ => None,
        })
    }
}
