//! The steps of one procedure with when each ran, so that every failed or slow request can be
//! laid against the step under way when it was sent.

use std::time::{Duration, SystemTime};

use etcdmedic_remediator::report::{RunReport, StepKind};

#[derive(Debug, Clone)]
pub struct Step {
    pub label: String,
    pub start: SystemTime,
    pub end: SystemTime,
}

impl Step {
    pub fn timed(label: impl Into<String>, start: SystemTime) -> Step {
        Step {
            label: label.into(),
            start,
            end: SystemTime::now(),
        }
    }
}

/// etcdmedic's steps from its report. HashKV is the `verify` step (every member's hash at one
/// revision).
pub fn from_report(report: &RunReport) -> Vec<Step> {
    report
        .steps
        .iter()
        .map(|record| {
            let kind = match record.step {
                StepKind::Verify => "HashKV",
                other => other.as_str(),
            };
            let label = match &record.member {
                Some(member) if record.step == StepKind::Defragment => {
                    format!("{kind} {}", member.name)
                }
                _ => kind.to_string(),
            };
            Step {
                label,
                start: record.started_at,
                end: record.started_at + record.duration,
            }
        })
        .collect()
}

/// The step under way at `at`: the latest one started by then, if `at` is before its end
/// (or within `slack` after it: a request sent as a step ends belongs to it); else between
/// steps, before the first or after the last.
pub fn step_at(steps: &[Step], at: SystemTime) -> String {
    let slack = Duration::from_millis(50);
    match steps.iter().rev().find(|step| step.start <= at) {
        Some(step) if at <= step.end + slack => step.label.clone(),
        Some(step) if steps.last().is_some_and(|last| last.start == step.start) => {
            "after the procedure".into()
        }
        Some(step) => format!("after {}", step.label),
        None => "before the procedure".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_belongs_to_the_step_under_way_when_it_was_sent() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let step = |label: &str, from: u64, to: u64| Step {
            label: label.into(),
            start: t0 + Duration::from_secs(from),
            end: t0 + Duration::from_secs(to),
        };
        let steps = [step("snapshot", 0, 2), step("move leader", 3, 4)];
        assert_eq!(
            step_at(&steps, t0 - Duration::from_secs(1)),
            "before the procedure"
        );
        assert_eq!(step_at(&steps, t0 + Duration::from_secs(1)), "snapshot");
        assert_eq!(
            step_at(&steps, t0 + Duration::from_millis(2500)),
            "after snapshot"
        );
        assert_eq!(step_at(&steps, t0 + Duration::from_secs(4)), "move leader");
        assert_eq!(
            step_at(&steps, t0 + Duration::from_secs(9)),
            "after the procedure"
        );
    }
}
