//! The seed's "Downgrade v3.6 to v3.5" with etcdmedic's verbs: a 3-member 3.6.15 cluster
//! with data is validated (one minor at a time), enabled after a verified backup, and each
//! member's binary replaced with 3.5.30 in the order `downgrade status` names, the leader
//! last after `forfeit-leadership`; every key, equal HashKV everywhere, and `status` exit 0
//! at the end. A cancel before any member is replaced puts the storage back at 3.6, and a
//! cluster that cannot downgrade (3.4, 3.5) is told so with nothing changed.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion, RunningExporter};
use serde_json::Value;

use crate::support::{remediator_exits, remediator_on_it, stderr, stdout, write_file};

const KEYS: usize = 100;
/// Long enough for a replaced member to start and the storage migration to happen.
const STEP: Duration = Duration::from_secs(60);

/// `downgrade status -o json`: the members and the next step.
async fn status(config: &Path) -> Result<Value> {
    let output = remediator_on_it(config, &["downgrade", "status", "-o", "json"]).await?;
    serde_json::from_str(&stdout(&output))
        .with_context(|| format!("status -o json: {}{}", stdout(&output), stderr(&output)))
}

/// A cluster of `version` with keys in it, and a configuration with a local backup
/// destination whose drill uses the cluster's own binaries.
async fn cluster_with_data(version: EtcdVersion) -> Result<(EtcdCluster, std::path::PathBuf)> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let mut client = cluster.client(0).await?;
    for i in 0..KEYS {
        client
            .put(format!("/downgrade/{i:03}"), format!("value-{i}"), None)
            .await?;
    }
    let yaml = format!(
        "remediation:\n  snapshot_dir: {}\nbackup:\n  destinations: [{{name: near, kind: local, \
         path: {}}}]\n  restore_drill: {{bin_dir: {}}}\nclusters:\n{}",
        cluster.dir().join("snapshots").display(),
        cluster.dir().join("backups").display(),
        version.bin_dir()?.display(),
        cluster.config_entry("it")
    );
    let config = write_file(cluster.dir(), "downgrade.yaml", &yaml)?;
    Ok((cluster, config))
}

/// Every member's storage version, once each reports `expected`.
async fn storage_becomes(config: &Path, expected: &str) -> Result<()> {
    eventually(
        &format!("every member's storage is {expected}"),
        STEP,
        || async {
            let status = status(config).await?;
            let members = status["members"].as_array().context("members")?;
            ensure!(
                members.len() == 3
                    && members
                        .iter()
                        .all(|m| m["status"]["ok"]["storage_version"] == expected),
                "{status:#}"
            );
            Ok(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_6_cluster_is_downgraded_to_3_5_member_by_member_leader_last() -> Result<()> {
    let (mut cluster, config) = cluster_with_data(EtcdVersion::V3_6).await?;

    let refused = remediator_exits(&config, &["downgrade", "validate", "3.4"], 1).await?;
    ensure!(refused.contains("refused by etcd"), "{refused}");
    let valid = remediator_exits(&config, &["downgrade", "validate", "3.5"], 0).await?;
    ensure!(
        valid.contains("downgrade validate success, cluster version 3.6"),
        "{valid}"
    );
    let enabled = remediator_exits(&config, &["downgrade", "enable", "3.5"], 0).await?;
    ensure!(
        enabled.contains("backup first: near ") && enabled.contains("downgrade enable success"),
        "{enabled}"
    );
    storage_becomes(&config, "3.5.0").await?;

    // Each member in the order status names; at most one leadership move besides.
    let mut replaced = Vec::new();
    for _ in 0..5 {
        let next = eventually("a step to take", STEP, || async {
            let next = status(&config).await?["next"].clone();
            ensure!(
                !matches!(next["step"].as_str(), Some("wait" | "migrating")),
                "{next}"
            );
            Ok(next)
        })
        .await?;
        let member = next["member"].as_str().unwrap_or_default().to_string();
        match next["step"].as_str() {
            Some("done") => break,
            Some("replace") => {
                ensure!(
                    next["leader"] == false,
                    "the leader is named while a follower is left: {next}"
                );
                let index = (0..cluster.len())
                    .find(|&i| cluster.name(i) == member)
                    .with_context(|| format!("no member {member}"))?;
                cluster.replace_binary(index, EtcdVersion::V3_5).await?;
                replaced.push(member);
            }
            Some("move_leadership") => {
                ensure!(
                    replaced.len() == 2,
                    "the leader before its followers: {next}"
                );
                let moved =
                    remediator_exits(&config, &["forfeit-leadership", "--member", &member], 0)
                        .await?;
                ensure!(moved.contains("leadership moved to"), "{moved}");
            }
            other => bail!("unexpected step {other:?}: {next}"),
        }
    }
    ensure!(replaced.len() == 3, "replaced {replaced:?}");
    let done = remediator_exits(&config, &["downgrade", "status"], 0).await?;
    ensure!(done.contains("next: done: every member runs 3.5"), "{done}");

    let versions: Vec<String> = cluster
        .etcdctl_json(&["endpoint", "status"])?
        .as_array()
        .context("endpoint status")?
        .iter()
        .map(|e| {
            e["Status"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    ensure!(
        versions.len() == 3 && versions.iter().all(|v| v.starts_with("3.5.")),
        "{versions:?}"
    );
    let mut client = cluster.client(0).await?;
    let kept = client
        .get(
            "/downgrade/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    ensure!(
        kept.kvs().len() == KEYS,
        "{} keys of {KEYS}",
        kept.kvs().len()
    );
    let hashes: Vec<u64> = cluster
        .etcdctl_json(&["endpoint", "hashkv"])?
        .as_array()
        .context("hashkv")?
        .iter()
        .map(|e| e["HashKV"]["hash"].as_u64().unwrap_or(0))
        .collect();
    ensure!(
        hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0] && *h != 0),
        "HashKV differs: {hashes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_before_any_member_is_replaced_puts_the_storage_back_at_3_6() -> Result<()> {
    let (cluster, config) = cluster_with_data(EtcdVersion::V3_6).await?;
    remediator_exits(&config, &["downgrade", "enable", "3.5"], 0).await?;
    storage_becomes(&config, "3.5.0").await?;
    // The exporter shows it on every member.
    let exporter = RunningExporter::start(&config).await?;
    let scrape = exporter.scrape().await?;
    for index in 0..3 {
        let labels = [("member", cluster.name(index)), ("target_version", "3.5.0")];
        let enabled = scrape.value("etcdmedic_member_downgrade_enabled", &labels)?;
        ensure!(enabled == 1.0, "{}", scrape.text);
    }
    exporter.shutdown().await?;
    // Mid-downgrade a run is refused unless told otherwise.
    let refused = remediator_exits(&config, &["run", "--dry-run", "-o", "json"], 1).await?;
    ensure!(refused.contains("\"downgrade_under_way\""), "{refused}");
    remediator_exits(&config, &["run", "--dry-run", "--during-downgrade"], 0).await?;
    let cancelled = remediator_exits(&config, &["downgrade", "cancel"], 0).await?;
    ensure!(
        cancelled.contains("downgrade cancel success"),
        "{cancelled}"
    );
    storage_becomes(&config, "3.6.0").await?;
    let idle = remediator_exits(&config, &["downgrade", "status"], 0).await?;
    ensure!(idle.contains("no downgrade is under way"), "{idle}");
    Ok(())
}

/// etcd 3.4 has no Downgrade call and 3.5's enable never completes: every verb says so and
/// nothing changes.
async fn a_cluster_before_3_6_is_told_it_cannot_downgrade(version: EtcdVersion) -> Result<()> {
    let (cluster, config) = cluster_with_data(version).await?;
    for verb in ["validate", "enable"] {
        let refused = remediator_exits(&config, &["downgrade", verb, "3.4"], 1).await?;
        ensure!(
            refused.contains("a downgrade needs every member on etcd 3.6 or later"),
            "{verb}: {refused}"
        );
    }
    ensure!(
        !cluster.dir().join("backups").exists(),
        "enable took a backup before refusing"
    );
    let bad = remediator_exits(&config, &["downgrade", "validate", "three"], 2).await?;
    ensure!(bad.contains("write MAJOR.MINOR"), "{bad}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_4_cluster_is_told_it_cannot_downgrade() -> Result<()> {
    a_cluster_before_3_6_is_told_it_cannot_downgrade(EtcdVersion::V3_4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_5_cluster_is_told_it_cannot_downgrade() -> Result<()> {
    a_cluster_before_3_6_is_told_it_cannot_downgrade(EtcdVersion::V3_5).await
}
