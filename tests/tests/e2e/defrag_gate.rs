//! etcd's `StopGRPCServiceOnDefrag`: a defragmenting member's gRPC health says `NOT_SERVING`,
//! so health-checking clients move to another member (what that spares them is measured in
//! docs/benchmarks.md). etcdmedic reads the gate from each member's `/metrics` (3.6+):
//! `status -o json` says it, and a run reports which members had it and what their clients
//! did. etcd 3.5 has the flag but does not say: unknown, never guessed.

use anyhow::{ensure, Context, Result};
use etcdmedic_remediator::output::summary;
use etcdmedic_tests::workload::{fragment, Fragmentation};
use etcdmedic_tests::{EtcdCluster, EtcdVersion};

use crate::remediation::{cli, config, remediate, report_text};
use crate::support::exporter_binary;

async fn a_run_says_which_members_stopped_their_grpc_service(version: EtcdVersion) -> Result<()> {
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .stop_grpc_on_defrag()
        .start()
        .await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let known = version >= EtcdVersion::V3_6;
    let expected = match known {
        true => serde_json::Value::Bool(true),
        false => serde_json::Value::Null,
    };

    let config_path = cluster.write_config("gate")?;
    let output = exporter_binary(&[
        "status",
        "--config",
        &config_path.to_string_lossy(),
        "-o",
        "json",
    ])
    .await?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| String::from_utf8_lossy(&output.stderr).into_owned())?;
    let members = json[0]["members"].as_array().context("members")?;
    ensure!(
        members.len() == 3
            && members
                .iter()
                .all(|m| m["status"]["ok"]["stop_grpc_on_defrag"] == expected),
        "on {version}: {json:#}"
    );

    let snapshots = cluster.dir().join("snapshots");
    let (report, _) = remediate(config(&cluster, &snapshots, "")?, cli()).await?;
    let text = report_text(&report);
    ensure!(report.members.len() == 3, "{text}");
    ensure!(
        report
            .members
            .iter()
            .all(|m| m.stop_grpc_on_defrag == known.then_some(true)),
        "{text}"
    );
    let said = summary(&report);
    let lines = said
        .lines()
        .filter(|l| l.contains("its gRPC service stopped meanwhile (StopGRPCServiceOnDefrag)"))
        .count();
    ensure!(lines == if known { 3 } else { 0 }, "{said}");
    let choice = report.leader_choice.as_ref().context("no leader choice")?;
    ensure!(
        choice.reason.contains("StopGRPCServiceOnDefrag") == known,
        "{}",
        choice.reason
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_3_5_the_gate_is_unknown() -> Result<()> {
    a_run_says_which_members_stopped_their_grpc_service(EtcdVersion::V3_5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_3_6_a_run_says_which_members_stopped_their_grpc_service() -> Result<()> {
    a_run_says_which_members_stopped_their_grpc_service(EtcdVersion::V3_6).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_3_7_a_run_says_which_members_stopped_their_grpc_service() -> Result<()> {
    a_run_says_which_members_stopped_their_grpc_service(EtcdVersion::V3_7).await
}
