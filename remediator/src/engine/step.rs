//! Step bookkeeping, in one place: every step is announced when it starts, and recorded when
//! it ends with its duration, its result and a sentence saying what happened (sizes,
//! revisions, or the error), logged and sent as an event.

use std::time::SystemTime;

use tokio::time::Instant;

use super::error::RunError;
use super::etcd::Etcd;
use super::Run;
use crate::events::Event;
use crate::report::{MemberAction, MemberRef, MemberReport, StepKind, StepRecord};
use etcdmedic_cluster::model::MemberId;

/// A step under way; [`Run::end`] records it.
pub(super) struct Step {
    kind: StepKind,
    member: Option<MemberRef>,
    started_at: SystemTime,
    started: Instant,
}

/// What a step that went well produced, and its sentence for the record.
pub(super) struct Done<T> {
    pub value: T,
    pub detail: String,
}

pub(super) fn done<T>(value: T, detail: impl Into<String>) -> Done<T> {
    Done {
        value,
        detail: detail.into(),
    }
}

impl<E: Etcd> Run<'_, E> {
    pub(super) fn begin(&self, kind: StepKind, member: Option<MemberRef>) -> Step {
        tracing::debug!(
            step = kind.as_str(),
            member = member.as_ref().map(|m| m.name.as_str()),
            "step started"
        );
        self.events.emit(Event::Started {
            step: kind,
            member: member.clone(),
        });
        Step {
            kind,
            member,
            started_at: SystemTime::now(),
            started: Instant::now(),
        }
    }

    /// Records `step` with `result` and passes the result on.
    pub(super) fn end<T>(
        &mut self,
        step: Step,
        result: Result<Done<T>, RunError>,
    ) -> Result<T, RunError> {
        let (ok, detail) = match &result {
            Ok(done) => (true, done.detail.clone()),
            Err(err) => (false, err.to_string()),
        };
        let predicted = self
            .report
            .plan
            .as_ref()
            .and_then(|plan| plan.forecast.as_ref())
            .and_then(|forecast| forecast.of(step.kind, step.member.as_ref()));
        let record = StepRecord {
            step: step.kind,
            member: step.member,
            started_at: step.started_at,
            duration: step.started.elapsed(),
            ok,
            detail,
            predicted,
        };
        let member = record.member.as_ref().map_or("", |m| m.name.as_str());
        let seconds = record.duration.as_secs_f64();
        if ok {
            tracing::info!(step = record.step.as_str(), member, seconds, detail = %record.detail, "step done");
        } else {
            tracing::warn!(step = record.step.as_str(), member, seconds, detail = %record.detail, "step failed");
        }
        self.events.emit(Event::Finished {
            record: record.clone(),
        });
        self.report.steps.push(record);
        result.map(|done| done.value)
    }

    pub(super) fn warn(&self, message: String) {
        tracing::warn!(%message, "warning");
        self.events.emit(Event::Warning { message });
    }

    /// A decision the run made on its own, for the log and the events.
    pub(super) fn decided(&self, message: String) {
        tracing::info!(%message, "decided");
        self.events.emit(Event::Decided { message });
    }

    /// A long step still running: progress for the log and the events.
    pub(super) fn progress(
        &self,
        step: StepKind,
        member: Option<&MemberRef>,
        elapsed: std::time::Duration,
        detail: String,
    ) {
        tracing::info!(step = step.as_str(), member = member.map(|m| m.name.as_str()), elapsed_seconds = elapsed.as_secs(), %detail, "in progress");
        self.events.emit(Event::Progress {
            step,
            member: member.cloned(),
            elapsed,
            detail,
        });
    }

    pub(super) fn member_report(&mut self, id: MemberId) -> Option<&mut MemberReport> {
        self.report.members.iter_mut().find(|m| m.member.id == id)
    }

    pub(super) fn set_action(&mut self, id: MemberId, action: MemberAction) {
        if let Some(report) = self.member_report(id) {
            report.action = action;
        }
    }

    pub(super) fn defragmented(&self) -> Vec<MemberId> {
        self.report
            .members
            .iter()
            .filter(|m| m.action == MemberAction::Defragmented)
            .map(|m| m.member.id)
            .collect()
    }
}
