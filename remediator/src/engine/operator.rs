//! An operator's one-off verbs, the ones `talosctl etcd` offers, built from the run's own
//! steps so that they check what a run checks: the alarms (`alarm list`, `alarm disarm`:
//! NOSPACE only once every member is below its quota again, never CORRUPT) and
//! `forfeit-leadership` (leadership handed to the most caught-up voting follower, and every
//! member following it before it is done). `defrag --member` is a run restricted to one
//! member (`RunOptions::only`).

use etcdmedic_cluster::model::{AlarmKind, ClusterStatus};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::error::{MoveFailure, RunError};
use super::etcd::Etcd;
use super::{Remediator, RunOptions};
use crate::events::Events;
use crate::plan::{self, member_ref, names};
use crate::report::MemberRef;

/// One alarm a member raised, by the member's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmLine {
    pub member: String,
    pub member_id: String,
    pub alarm: AlarmKind,
}

/// What `alarm disarm` did.
#[derive(Debug, Clone, Serialize)]
pub struct Disarmed {
    /// Disarmed now.
    pub disarmed: Vec<AlarmLine>,
    /// Still raised after it: a CORRUPT alarm (never disarmed here), or NOSPACE while a
    /// member is still past the threshold.
    pub remaining: Vec<AlarmLine>,
    /// Why what remains was left, when something was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `forfeit-leadership` did.
#[derive(Debug, Clone, Serialize)]
pub struct Forfeited {
    pub member: MemberRef,
    /// The new leader; `None` when the member was not the leader (nothing was done).
    pub to: Option<MemberRef>,
    /// Who leads now.
    pub leader: Option<String>,
}

/// Why an operator's verb did nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerbError {
    /// The member named is not in the cluster's member list (bad input: nothing was changed).
    #[error("no member {name:?} in cluster {cluster}; members: {known}")]
    UnknownMember {
        name: String,
        cluster: String,
        known: String,
    },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("leadership did not move: {0}")]
    Move(MoveFailure),
}

/// The alarms of `status`, each with the name of the member that raised it.
fn alarm_lines(status: &ClusterStatus) -> Result<Vec<AlarmLine>, RunError> {
    let alarms = status
        .alarms
        .as_ref()
        .map_err(|err| super::error::Refusal::AlarmsUnknown(err.clone()))?;
    Ok(alarms
        .iter()
        .map(|alarm| AlarmLine {
            member: status
                .members
                .iter()
                .find(|m| m.id == Some(alarm.member_id))
                .map_or(alarm.member_id.to_string(), |m| m.display_name()),
            member_id: alarm.member_id.to_string(),
            alarm: alarm.alarm,
        })
        .collect())
}

impl<E: Etcd> Remediator<E> {
    /// The member of the cluster that `name` names (name, endpoint or ID), or bad input.
    pub async fn member_named(&self, name: &str) -> Result<MemberRef, VerbError> {
        self.member_in(&self.etcd.collect().await, name)
    }

    /// [`Remediator::member_named`] in a status already collected.
    fn member_in(&self, status: &ClusterStatus, name: &str) -> Result<MemberRef, VerbError> {
        if let Err(err) = &status.membership {
            return Err(
                RunError::from(super::error::Refusal::MembershipUnknown(err.clone())).into(),
            );
        }
        status
            .members
            .iter()
            .find(|member| names(member, name))
            .map(member_ref)
            .ok_or_else(|| VerbError::UnknownMember {
                name: name.to_string(),
                cluster: self.cluster().to_string(),
                known: status
                    .members
                    .iter()
                    .map(|m| m.display_name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Every alarm the cluster has raised.
    pub async fn alarms(&self) -> Result<Vec<AlarmLine>, RunError> {
        alarm_lines(&self.etcd.collect().await)
    }

    /// Disarms NOSPACE once every member is below `disarm_nospace_below` of its quota, then
    /// checks that a write is accepted again; never CORRUPT.
    pub async fn disarm_alarms(
        &self,
        events: &Events,
        stop: &CancellationToken,
    ) -> Result<Disarmed, RunError> {
        let options = RunOptions {
            trigger: "alarm disarm".into(),
            ..RunOptions::default()
        };
        let mut run = self.start(&options, events, stop);
        let before = alarm_lines(&self.etcd.collect().await)?;
        let result = run.disarm_nospace().await;
        let after = alarm_lines(&self.etcd.collect().await)?;
        let disarmed = before
            .iter()
            .filter(|alarm| !after.contains(alarm))
            .cloned()
            .collect();
        let reason = match (&result, after.iter().any(|a| a.alarm == AlarmKind::Corrupt)) {
            (Err(err), _) => Some(err.to_string()),
            (Ok(()), true) => Some(
                "a CORRUPT alarm means the members' data differ: it needs a human (etcd's data \
                 corruption guide), etcdmedic never disarms it"
                    .to_string(),
            ),
            (Ok(()), false) => None,
        };
        Ok(Disarmed {
            disarmed,
            remaining: after,
            reason,
        })
    }

    /// Hands leadership from `member`, when it leads, to the most caught-up voting follower
    /// and waits until every member follows the new leader. The cluster must pass the run's
    /// preflight (every voting member answering, one agreed leader, none lagging).
    pub async fn forfeit_leadership(
        &self,
        member: &str,
        events: &Events,
        stop: &CancellationToken,
    ) -> Result<Forfeited, VerbError> {
        let status = self.etcd.collect().await;
        let member = self.member_in(&status, member)?;
        let healthy = plan::preflight(&status, &self.settings, true).map_err(RunError::from)?;
        let leader = member_ref(healthy.leader.member);
        if leader.id != member.id {
            return Ok(Forfeited {
                member,
                to: None,
                leader: Some(leader.name),
            });
        }
        let options = RunOptions {
            trigger: "forfeit-leadership".into(),
            ..RunOptions::default()
        };
        let mut run = self.start(&options, events, stop);
        run.move_leader(&member).await.map_err(VerbError::Move)?;
        let to = run.report.leader_move.map(|moved| moved.to);
        Ok(Forfeited {
            member,
            leader: to.as_ref().map(|to| to.name.clone()),
            to,
        })
    }
}
