//! The `run` command's text output: one line per step as it ends, progress lines during
//! long steps, then a summary.

use std::time::Instant;

use etcdmedic_cluster::table::human_bytes;

use crate::events::Event;
use crate::plan;
use crate::report::{MemberAction, RunReport};

/// Formats events as lines, with the time since the run began.
pub struct TextProgress {
    started: Instant,
}

impl Default for TextProgress {
    fn default() -> Self {
        TextProgress {
            started: Instant::now(),
        }
    }
}

impl TextProgress {
    pub fn line(&self, event: &Event) -> Option<String> {
        let at = format!("[{:>7.2}s]", self.started.elapsed().as_secs_f64());
        match event {
            Event::Planned { plan } => {
                let mut text = format!(
                    "{at} plan: leader {}, {} voting members, rule: {}\n",
                    plan.leader, plan.voting_members, plan.rule
                );
                for line in plan::describe(plan) {
                    text.push_str(&format!("{:11}{line}\n", ""));
                }
                if let Some(forecast) = &plan.forecast {
                    text.push_str(&format!(
                        "{:11}predicted: {:.2}s in all (defragmentation at {}/s, {})\n",
                        "",
                        forecast.total.as_secs_f64(),
                        human_bytes(forecast.rates.defrag.bytes_per_second as u64),
                        forecast.rates.defrag.basis.as_str()
                    ));
                }
                Some(text.trim_end().to_string())
            }
            Event::Started { step, member } => Some(format!(
                "{at} {}{} ...",
                step.as_str(),
                member.as_ref().map(|m| format!(" {m}")).unwrap_or_default()
            )),
            Event::Progress {
                member,
                elapsed,
                detail,
                ..
            } => Some(format!(
                "{at}   {detail}{} ({:.0}s)",
                member
                    .as_ref()
                    .map(|m| format!(" on {}", m.name))
                    .unwrap_or_default(),
                elapsed.as_secs_f64()
            )),
            Event::Finished { record } => Some(format!(
                "{at} {} {}{}: {} ({:.2}s{})",
                if record.ok { "ok  " } else { "FAIL" },
                record.step.as_str(),
                record
                    .member
                    .as_ref()
                    .map(|m| format!(" {}", m.name))
                    .unwrap_or_default(),
                record.detail,
                record.duration.as_secs_f64(),
                record
                    .predicted
                    .map(|p| format!(", predicted {:.2}s", p.as_secs_f64()))
                    .unwrap_or_default()
            )),
            Event::Warning { message } => Some(format!("{at} warning: {message}")),
            Event::Decided { message } => Some(format!("{at} decided: {message}")),
        }
    }
}

/// The closing lines: outcome, reason, and what each member gave back.
/// Where the run's snapshot was kept as a backup, and what missed it.
fn kept_as_backup(backup: &crate::backup::RunBackup) -> String {
    if let Some(error) = &backup.error {
        return format!("not kept: {error}");
    }
    let mut parts: Vec<String> = backup
        .destinations
        .iter()
        .map(|l| format!("{} {}", l.destination, l.location))
        .collect();
    parts.extend(
        backup
            .missed
            .iter()
            .map(|m| format!("{} MISSED ({})", m.destination, m.reason)),
    );
    let drill = match &backup.restore_drill {
        Some(d) if d.passed => ", restore drill passed",
        Some(d) if d.not_drilled.is_some() => ", not drilled (no identity)",
        _ => "",
    };
    format!("kept in {}{drill}", parts.join(", "))
}

pub fn summary(report: &RunReport) -> String {
    let mut text = format!(
        "{}: cluster {} in {:.2}s",
        report.outcome.as_str(),
        report.cluster,
        report.duration().as_secs_f64()
    );
    if let Some(forecast) = report.plan.as_ref().and_then(|p| p.forecast.as_ref()) {
        if !report.dry_run {
            text.push_str(&format!(
                " (predicted {:.2}s)",
                forecast.total.as_secs_f64()
            ));
        }
    }
    if let Some(choice) = &report.leader_choice {
        text.push_str(&format!("\n  {}", choice.reason));
    }
    if let Some(reason) = &report.reason {
        text.push_str(&format!("\n  reason: {reason}"));
    }
    for member in report
        .members
        .iter()
        .filter(|m| m.action == MemberAction::Defragmented)
    {
        let gate = match member.stop_grpc_on_defrag {
            Some(true) => "; its gRPC service stopped meanwhile (StopGRPCServiceOnDefrag)",
            _ => "",
        };
        text.push_str(&format!(
            "\n  {}: {} -> {} ({} reclaimed{gate})",
            member.member.name,
            human_bytes(member.db_size_before),
            member.db_size_after.map(human_bytes).unwrap_or_default(),
            human_bytes(member.reclaimed_bytes().unwrap_or(0)),
        ));
    }
    if let Some(snapshot) = &report.snapshot {
        let reused = match snapshot.reused_backup {
            true => " (a backup at the frozen revision, reused)",
            false => "",
        };
        text.push_str(&format!(
            "\n  snapshot: {}{reused}",
            snapshot.path.display()
        ));
    }
    if let Some(backup) = &report.backup {
        text.push_str(&format!("\n  backup: {}", kept_as_backup(backup)));
    }
    if report.reclaimed_bytes > 0 {
        text.push_str(&format!(
            "\n  reclaimed: {} in all",
            human_bytes(report.reclaimed_bytes)
        ));
    }
    text
}
