//! The availability benchmark's Markdown: one table per cluster, the targets and whether
//! each run met them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;

use super::{load, Mode, ModeResult, Size, Trial, MB, VALUE_BYTES};

/// `auto`'s wall time may exceed the manual procedure's by this factor.
pub const TARGET_RATIO: f64 = 1.2;

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn section(out: &mut String, trials: &[Trial]) -> Result<()> {
    writeln!(out, "## Remediation: what clients see\n")?;
    writeln!(
        out,
        "For each etcd version, database size and procedure a fresh 3-member cluster, data on \
         disk, fragmented the same way: {} KiB values written, part of them overwritten, \
         compacted, synced to disk. (On one cluster fragmented and defragmented again and again \
         each round ran slower than the one before, which would have let the order decide the \
         comparison.) The procedures: the manual one (`etcdctl snapshot save` from a follower, `etcdctl defrag \
         --command-timeout=10m` on each follower, the leader last, in place), then \
         `etcdmedic-remediator run` with `leader: defrag_in_place`, `move_then_defrag` and \
         `auto` (`settle_time: 0s`, everything else default: verified snapshot, quorum and \
         catch-up checks around every member, HashKV on every member). During each: {}. Every \
         request that failed or got no answer is counted and laid against the step under way \
         when it was sent (etcdmedic's steps from its report, the manual steps from etcdctl's \
         start and end). A request of a pinned writer or lease counts as \"through the member being \
         defragmented\" when it overlapped that member's own defragmentation in etcd's log: \
         its client waits whatever the procedure does. The *longest stall* is the longest wait \
         of every other pinned request, failed ones included: what the clients of the rest of \
         the cluster felt. The all-endpoints clients are shown apart: some of the plain one's \
         requests go to the member being defragmented, so its slowest put is about the slowest \
         member's defragmentation whatever the procedure; the health-checked one avoids a \
         member only while that member says `NOT_SERVING`, which etcd does during a \
         defragmentation only with `StopGRPCServiceOnDefrag` (3.6+: \
         `--feature-gates=StopGRPCServiceOnDefrag=true`).{}\n",
        VALUE_BYTES / 1024,
        load::describe(),
        trials
            .iter()
            .find(|t| t.stop_grpc_on_defrag)
            .map(|t| format!(
                " The last table is etcd {} with it on, to compare with the same version's \
                 table without.",
                t.version
            ))
            .unwrap_or_default()
    )?;
    for trial in trials {
        trial_table(out, trial)?;
    }
    Ok(())
}

fn trial_table(out: &mut String, trial: &Trial) -> Result<()> {
    let size = match trial.size {
        Size::Small => "small database",
        Size::Large => "large database",
    };
    let gate = match trial.stop_grpc_on_defrag {
        true => ", `StopGRPCServiceOnDefrag` on",
        false => "",
    };
    writeln!(out, "### etcd {}, {size}{gate}\n", trial.version)?;
    let members: Vec<String> = trial
        .db_before
        .iter()
        .map(|(name, db, in_use)| format!("{name} {} MB ({} MB in use)", db / MB, in_use / MB))
        .collect();
    writeln!(
        out,
        "Before the first procedure (the others alike): {}.\n",
        members.join(", ")
    )?;
    write!(out, "| |")?;
    for result in &trial.results {
        write!(out, " {} |", result.mode.label())?;
    }
    writeln!(out, "\n|---|{}", "---|".repeat(trial.results.len()))?;
    let row = |out: &mut String, label: &str, cell: &dyn Fn(&ModeResult) -> String| {
        let cells: Vec<String> = trial.results.iter().map(cell).collect();
        writeln!(out, "| {label} | {} |", cells.join(" | "))
    };
    row(out, "wall time", &|r| secs(r.wall))?;
    row(out, "the leader", &|r| r.leader.clone())?;
    row(out, "defragmentations, in order (etcd's log)", &|r| {
        r.defrags
            .iter()
            .map(|(name, took)| format!("{name} {}", secs(*took)))
            .collect::<Vec<_>>()
            .join(", ")
    })?;
    row(out, "requests / failed", &|r| {
        format!("{} / **{}**", r.requests, r.failures.len())
    })?;
    row(out, "failures by step", &|r| failures_by_step(r))?;
    row(
        out,
        "longest stall through members not being defragmented (client, step)",
        &|r| {
            let (took, client, step) = &r.longest_stall;
            format!("**{}** ({client}, {step})", secs(*took))
        },
    )?;
    row(
        out,
        "slowest answer through the member being defragmented",
        &|r| secs(r.slowest_own),
    )?;
    let slowest = |(took, step): &(Duration, String)| format!("{} ({step})", secs(*took));
    row(
        out,
        "slowest put of the all-endpoints client (step)",
        &|r| slowest(&r.slowest_all_endpoints),
    )?;
    row(
        out,
        "slowest put of the health-checked all-endpoints client (step)",
        &|r| slowest(&r.slowest_health_checked),
    )?;
    if let Some((client, step, error)) = trial.results.iter().flat_map(|r| &r.failures).next() {
        writeln!(
            out,
            "\nA failure, for its message: {client} during {step}: `{error}`"
        )?;
    }
    targets(out, trial)?;
    Ok(())
}

/// "2 at move leader, 1 at snapshot", or "none".
fn failures_by_step(result: &ModeResult) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, step, _) in &result.failures {
        *counts.entry(step).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(step, n)| format!("{n} at {step}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn targets(out: &mut String, trial: &Trial) -> Result<()> {
    let by_mode = |mode: Mode| trial.results.iter().find(|r| r.mode == mode);
    let (Some(auto), Some(manual)) = (by_mode(Mode::Auto), by_mode(Mode::Manual)) else {
        return Ok(());
    };
    let others: Vec<&ModeResult> = trial
        .results
        .iter()
        .filter(|r| r.mode != Mode::Auto)
        .collect();
    let ratio = auto.wall.as_secs_f64() / manual.wall.as_secs_f64();
    write!(
        out,
        "\nTargets: `auto`'s wall time within {TARGET_RATIO}x of the manual procedure's — {} \
         ({ratio:.2}x)",
        super::super::verdict(ratio <= TARGET_RATIO)
    )?;
    match trial.size {
        Size::Small => write!(
            out,
            "; zero failed requests with `auto` — {} ({})",
            super::super::verdict(auto.failures.is_empty()),
            auto.failures.len()
        )?,
        Size::Large => {
            let fewest = others
                .iter()
                .all(|o| auto.failures.len() < o.failures.len() || auto.failures.is_empty());
            let shortest = others
                .iter()
                .all(|o| auto.longest_stall.0 < o.longest_stall.0);
            write!(
                out,
                "; fewer failed requests with `auto` than with each of the others (or none) — \
                 {} ({} against {}); a shorter longest stall than each of the others — {} ({} \
                 against {})",
                super::super::verdict(fewest),
                auto.failures.len(),
                others
                    .iter()
                    .map(|o| o.failures.len().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                super::super::verdict(shortest),
                secs(auto.longest_stall.0),
                others
                    .iter()
                    .map(|o| secs(o.longest_stall.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?
        }
    }
    writeln!(out, ".\n")?;
    Ok(())
}
