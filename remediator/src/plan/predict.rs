//! How long a plan will take, step by step, with the rates `forecast` chose.

use std::time::Duration;

use super::Plan;
use crate::config::LeaderPolicy;
use crate::forecast::{leader_choice, Forecast, PredictedStep, Rates};
use crate::vocabulary::StepKind;

/// Predicts `plan` with `rates`; `settle` is the pause between two members.
pub fn forecast(
    plan: &Plan,
    rates: Rates,
    policy: LeaderPolicy,
    bound: Duration,
    settle: Duration,
) -> Forecast {
    let mut steps = Vec::new();
    let snapshot_bytes = plan
        .defragment
        .iter()
        .chain(&plan.skip)
        .find(|m| m.member.id == plan.snapshot_from.id)
        .map_or(0, |m| m.db_size);
    steps.push(PredictedStep {
        step: StepKind::Snapshot,
        member: Some(plan.snapshot_from.clone()),
        duration: rates.snapshot.time_for(snapshot_bytes),
    });
    let mut leader = None;
    for member in &plan.defragment {
        if member.is_leader {
            let choice = leader_choice(
                policy,
                bound,
                member.db_size_in_use,
                &rates.defrag,
                member.stop_grpc_on_defrag,
            );
            if !choice.in_place {
                steps.push(PredictedStep {
                    step: StepKind::MoveLeader,
                    member: Some(member.member.clone()),
                    duration: rates.leader_move,
                });
            }
            leader = Some(choice);
        }
        steps.push(PredictedStep {
            step: StepKind::Defragment,
            member: Some(member.member.clone()),
            duration: rates.defrag.time_for(member.db_size_in_use),
        });
    }
    let pauses = settle * plan.defragment.len().saturating_sub(1) as u32;
    let total = steps.iter().map(|s| s.duration).sum::<Duration>() + pauses;
    Forecast {
        steps,
        total,
        rates,
        leader,
    }
}
