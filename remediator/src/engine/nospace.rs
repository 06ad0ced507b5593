//! Step 6: NOSPACE disarmed, once every member is below `disarm_nospace_below` of its quota,
//! and a write accepted again.

use etcdmedic_cluster::model::AlarmKind;

use super::decide::nospace_blockers;
use super::error::{RunError, Stop};
use super::etcd::Etcd;
use super::step::done;
use super::Run;
use crate::plan::member_ref;
use crate::report::StepKind;

impl<E: Etcd> Run<'_, E> {
    pub(super) async fn disarm_nospace(&mut self) -> Result<(), RunError> {
        let status = self.etcd.collect().await;
        let Ok(alarms) = &status.alarms else {
            return Err(Stop::AlarmsUnknown.into());
        };
        let nospace: Vec<_> = alarms
            .iter()
            .filter(|a| a.alarm == AlarmKind::NoSpace)
            .copied()
            .collect();
        if nospace.is_empty() {
            return Ok(());
        }
        self.confirm_still_ours().await?;
        let step = self.begin(StepKind::Disarm, None);
        let threshold = self.settings.disarm_nospace_below;
        let blockers = nospace_blockers(&status, threshold);
        if !blockers.is_empty() {
            let armed = Stop::NospaceArmed {
                members: blockers,
                threshold,
            };
            return self.end(step, Err(armed.into()));
        }
        let Some(leader) = status
            .agreed_leader()
            .and_then(|id| status.members.iter().find(|m| m.id == Some(id)))
        else {
            return self.end(step, Err(Stop::NoLeaderToDisarm.into()));
        };
        let leader = member_ref(leader);
        let result = async {
            for alarm in &nospace {
                self.etcd
                    .disarm_nospace(&leader.endpoint, alarm.member_id)
                    .await
                    .map_err(|error| Stop::DisarmFailed {
                        member: alarm.member_id,
                        error,
                    })?;
            }
            Ok(done(
                (),
                format!("{} NOSPACE alarm(s) disarmed", nospace.len()),
            ))
        }
        .await;
        self.end(step, result)?;
        self.report.alarms_disarmed = nospace;

        // A lease grant is a write that NOSPACE refuses, and leaves no key behind.
        let step = self.begin(StepKind::VerifyWrite, Some(leader.clone()));
        let write = self
            .etcd
            .write_probe(&leader.endpoint)
            .await
            .map(|()| done((), "a write (lease grant) is accepted again"))
            .map_err(|err| Stop::WritesRefused(err).into());
        self.end(step, write)
    }
}
