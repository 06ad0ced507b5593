//! Backups and remediation against real etcd: under NOSPACE a verified backup at the frozen
//! revision is the run's snapshot (nothing streamed again), and a run keeps its own snapshot
//! as a backup, proven by a restore drill, in the backup destinations.

use anyhow::{ensure, Context, Result};
use etcdmedic_remediator::config::RemediatorConfig as Config;
use etcdmedic_remediator::Outcome;
use etcdmedic_tests::workload::{
    fill_to_nospace, fragment, members_at_one_revision, Fragmentation,
};
use etcdmedic_tests::{EtcdCluster, EtcdVersion};

use crate::on_each_etcd_version;
use crate::remediation::{cli, remediate, report_text};

on_each_etcd_version!(under_nospace_the_backup_at_the_frozen_revision_is_the_runs_snapshot,);

/// A config for `cluster` with one local backup destination under `dir`.
fn config(
    cluster: &EtcdCluster,
    dir: &std::path::Path,
    version: EtcdVersion,
    rule: &str,
) -> Result<Config> {
    let yaml = format!(
        "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\n{rule}backup:\n  destinations: [{{name: \
         near, kind: local, path: {}}}]\n  restore_drill: {{bin_dir: {}}}\nclusters:\n{}",
        dir.join("snapshots").display(),
        dir.join("backups").display(),
        version.bin_dir()?.display(),
        cluster.config_entry("it")
    );
    Ok(Config::from_yaml(&yaml, &dir.join("c.yaml"))?)
}

async fn under_nospace_the_backup_at_the_frozen_revision_is_the_runs_snapshot(
    version: EtcdVersion,
) -> Result<()> {
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .quota(16 * 1024 * 1024)
        .start()
        .await?;
    let mut client = cluster.client(0).await?;
    fill_to_nospace(&mut client, 256 * 1024, 1000).await?;
    client
        .delete(
            "/etcdmedic/fill/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    members_at_one_revision(&cluster.clients().await?).await?;
    let dir = tempfile::tempdir()?;
    // The built-in rule: NOSPACE alone selects every member. Compacting first frees what was
    // deleted without a new revision: the backup is still at the cluster's revision.
    let config = config(&cluster, dir.path(), version, "  compact_first: true\n")?;
    let cluster_config = config.clusters[0].clone();
    let backup = etcdmedic_remediator::Remediator::new(cluster_config.clone())?
        .backup(
            &cluster_config.backup,
            None,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await?;
    ensure!(backup.missed.is_empty(), "{:?}", backup.missed);

    let (report, _) = remediate(cluster_config, cli()).await?;
    let text = report_text(&report);
    ensure!(report.outcome == Outcome::Succeeded, "{text}");
    ensure!(!report.alarms_disarmed.is_empty(), "{text}");
    let snapshot = report.snapshot.as_ref().context("no snapshot")?;
    ensure!(
        snapshot.reused_backup
            && snapshot.path.display().to_string() == backup.destinations[0].location
            && snapshot.revision == backup.manifest.revision,
        "{text}"
    );
    let streamed = std::fs::read_dir(dir.path().join("snapshots").join("it"))?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .count();
    ensure!(streamed == 0, "a snapshot was streamed anyway");
    ensure!(report.backup.is_none(), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_its_snapshot_as_a_proven_backup() -> Result<()> {
    let version = EtcdVersion::V3_5;
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let dir = tempfile::tempdir()?;
    let rule = "  defrag_rule: \"dbSizeFree >= 4*1024*1024 && dbSizeInUse / dbSize < 0.5\"\n";
    let mut config = config(&cluster, dir.path(), version, rule)?;
    let cluster_config = config.clusters.remove(0);
    let (report, _) = remediate(cluster_config, cli()).await?;
    let text = report_text(&report);
    ensure!(report.outcome == Outcome::Succeeded, "{text}");
    let snapshot = report.snapshot.as_ref().context("no snapshot")?;
    let kept = report.backup.as_ref().context("not kept")?;
    ensure!(kept.error.is_none() && kept.missed.is_empty(), "{text}");
    ensure!(
        kept.restore_drill.as_ref().is_some_and(|d| d.passed),
        "{text}"
    );
    let location = std::path::Path::new(&kept.destinations[0].location);
    ensure!(
        location.file_name() == snapshot.path.file_name()
            && std::fs::read(location)? == std::fs::read(&snapshot.path)?,
        "{text}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(location.with_extension("json"))?)?;
    ensure!(
        manifest["revision"] == snapshot.revision
            && manifest["hash_kv"]["revision"] == snapshot.revision,
        "{manifest}"
    );
    // The source's version and the topology, from the collection the kept backup makes.
    ensure!(
        manifest["etcd_version"]
            .as_str()
            .is_some_and(|v| v.starts_with(version.prefix()))
            && manifest["members"].as_array().map(Vec::len) == Some(3),
        "{manifest}"
    );
    ensure!(
        etcdmedic_remediator::output::summary(&report).contains("backup: kept in near "),
        "{}",
        etcdmedic_remediator::output::summary(&report)
    );
    Ok(())
}
