//! What clients see during a run: under `leader: auto` a small leader is defragmented in
//! place, so no leadership transfer drops a proposal and no client request fails, whether
//! the client is pinned to one member (as kube-apiserver is on kubeadm and Talos) or given
//! every endpoint.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcd_client::Client;
use etcdmedic_remediator::forecast::Basis;
use etcdmedic_remediator::report::{MemberAction, StepKind};
use etcdmedic_remediator::Outcome;
use etcdmedic_tests::load::{Pace, PutLoad};
use etcdmedic_tests::workload::{fragment, Fragmentation};
use etcdmedic_tests::{EtcdCluster, EtcdVersion};

use crate::on_each_etcd_version;
use crate::remediation::{cli, config, remediate, report_text};

on_each_etcd_version!(auto_keeps_a_small_leader_in_place_and_no_write_fails);

/// The writer given every endpoint, numbered after the pinned ones.
const ALL_ENDPOINTS: usize = 100;

async fn auto_keeps_a_small_leader_in_place_and_no_write_fails(version: EtcdVersion) -> Result<()> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    cluster.wait_for_leader().await?;
    let snapshots = tempfile::tempdir()?;

    let mut clients = Vec::new();
    for index in 0..cluster.len() {
        clients.push((index, cluster.client(index).await?));
    }
    clients.push((
        ALL_ENDPOINTS,
        Client::connect(cluster.endpoints(), None).await?,
    ));
    let load = PutLoad::start(
        clients,
        Pace {
            max_time: Duration::from_secs(120),
            ..Pace::default()
        },
    );
    let ran = remediate(config(&cluster, snapshots.path(), "")?, cli()).await;
    let puts = load.stop().await?;
    let (report, _) = ran?;
    let text = report_text(&report);
    ensure!(report.outcome == Outcome::Succeeded, "{text}");

    // The leader was defragmented where it was, decided from the followers' throughput.
    let choice = report.leader_choice.as_ref().context("no leader choice")?;
    ensure!(choice.in_place, "{text}");
    ensure!(choice.reason.contains(Basis::ThisRun.as_str()), "{text}");
    ensure!(report.leader_move.is_none(), "{text}");
    ensure!(
        !report.steps.iter().any(|s| s.step == StepKind::MoveLeader),
        "{text}"
    );
    let leader = report
        .members
        .iter()
        .find(|m| m.was_leader)
        .context("no leader")?;
    ensure!(leader.action == MemberAction::Defragmented, "{text}");
    ensure!(leader.follower_at_defrag == Some(false), "{text}");
    // Predicted, and compared after the fact.
    let forecast = report.plan.as_ref().and_then(|p| p.forecast.as_ref());
    ensure!(forecast.is_some_and(|f| f.total > Duration::ZERO), "{text}");
    ensure!(
        report
            .steps
            .iter()
            .filter(|s| s.step == StepKind::Defragment)
            .all(|s| s.predicted.is_some()),
        "{text}"
    );

    // Every writer wrote throughout the run, and not one request failed.
    for writer in &puts {
        let during = writer
            .samples
            .iter()
            .filter(|(at, _)| *at >= report.started_at && *at <= report.finished_at)
            .count();
        ensure!(
            during >= 3,
            "writer {} put only {during} times during the {:?} run",
            writer.index,
            report.duration()
        );
        ensure!(
            writer.failures.is_empty(),
            "writer {} saw failures: {:?}\n{text}",
            writer.index,
            writer.failures
        );
    }
    Ok(())
}

/// A cluster being written to faster than `max_write_rate`: the writer, its pace, and the
/// config lines that set the gate.
async fn busy_cluster(writing_for: Duration) -> Result<(EtcdCluster, PutLoad)> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    cluster.wait_for_leader().await?;
    let load = PutLoad::start(
        vec![(0, cluster.client(0).await?)],
        Pace {
            every: Duration::from_millis(5),
            max_time: writing_for,
            ..Pace::default()
        },
    );
    Ok((cluster, load))
}

const GATE: &str = "      max_write_rate: 10\n      quiet_wait: 60s\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_cluster_holds_the_run_until_the_writer_stops() -> Result<()> {
    let (cluster, load) = busy_cluster(Duration::from_secs(4)).await?;
    let snapshots = tempfile::tempdir()?;
    let overrides = format!("{GATE}      on_busy: wait\n");
    let ran = remediate(config(&cluster, snapshots.path(), &overrides)?, cli()).await;
    let puts = load.stop().await?;
    let (report, events) = ran?;
    let text = report_text(&report);
    ensure!(report.outcome == Outcome::Succeeded, "{text}");

    let writer = &puts[0];
    ensure!(writer.failures.is_empty(), "{:?}", writer.failures);
    ensure!(
        writer.samples.len() > 4 * 10,
        "the writer was not busy: {} puts in 4 s",
        writer.samples.len()
    );
    let last_put = writer.samples.last().map(|(at, _)| *at).context("no put")?;
    // Nothing was touched before the writer stopped: the gate held the snapshot back.
    let snapshot = report
        .steps
        .iter()
        .find(|s| s.step == StepKind::Snapshot)
        .context("no snapshot step")?;
    ensure!(
        snapshot.started_at >= last_put,
        "the snapshot began {:?} before the last put: {text}",
        last_put
            .duration_since(snapshot.started_at)
            .unwrap_or_default()
    );
    let gate = report
        .steps
        .iter()
        .find(|s| s.step == StepKind::QuietCheck)
        .context("no quiet check")?;
    ensure!(gate.ok && gate.duration >= Duration::from_secs(1), "{text}");
    ensure!(
        events.iter().any(|e| matches!(
            e,
            etcdmedic_remediator::Event::Progress {
                step: StepKind::QuietCheck,
                ..
            }
        )),
        "no progress while waiting"
    );
    // A gate before each member too.
    let gates = report
        .steps
        .iter()
        .filter(|s| s.step == StepKind::QuietCheck)
        .count();
    ensure!(gates == 1 + cluster.len(), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defer_refuses_a_busy_cluster_and_changes_nothing() -> Result<()> {
    let (cluster, load) = busy_cluster(Duration::from_secs(60)).await?;
    let snapshots = tempfile::tempdir()?;
    let overrides = format!("{GATE}      on_busy: defer\n");
    let ran = remediate(config(&cluster, snapshots.path(), &overrides)?, cli()).await;
    load.stop().await?;
    let (report, _) = ran?;
    let text = report_text(&report);
    ensure!(
        report.outcome == Outcome::Failed && report.refused,
        "{text}"
    );
    ensure!(
        report.error_kind.as_deref() == Some("cluster_busy"),
        "{text}"
    );
    let reason = report.reason.as_deref().unwrap_or_default();
    ensure!(
        reason.contains("above max_write_rate 10 (on_busy: defer)"),
        "{text}"
    );
    ensure!(report.snapshot.is_none(), "{text}");
    ensure!(
        report
            .members
            .iter()
            .all(|m| m.action != MemberAction::Defragmented),
        "{text}"
    );
    ensure!(report.duration() < Duration::from_secs(10), "{text}");
    Ok(())
}
