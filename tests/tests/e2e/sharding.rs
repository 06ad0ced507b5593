//! A fleet shared by two Prometheus servers, each configured from
//! deploy/prometheus/prometheus-shard.yml and scraping its own exporter process through
//! `/probe`: every cluster is scraped by exactly one shard, and the rules fire on each shard
//! for its own clusters.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::exporter::ExporterProcess;
use etcdmedic_tests::ports::free_port;
use etcdmedic_tests::prometheus::{repository_file, with_short_durations_for, Prometheus};
use etcdmedic_tests::{eventually, project_binary, EtcdCluster, EtcdVersion};

/// Cluster entries of the fleet, all pointing at one real cluster: what is sharded is the
/// scrape targets, not the etcd processes.
const CLUSTERS: [&str; 8] = [
    "prod-a", "prod-b", "prod-c", "prod-d", "prod-e", "prod-f", "prod-g", "prod-h",
];
const SHARDS: usize = 2;

/// The deploy file as shard `shard` of the test runs it: its exporter, the fleet's names,
/// one-second intervals, no remediator, alerts to an address nobody listens on.
fn shard_config(deployed: &str, shard: usize, exporter: &str) -> Result<String> {
    let without_remediator = deployed
        .split("  # On shard 0 only")
        .next()
        .context("no remediator job in the shard file")?;
    let config = without_remediator
        .lines()
        .map(|line| {
            if line.contains("# this server's shard") {
                line.replace("\"0\"", &format!("\"{shard}\""))
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("30s", "1s")
        .replace("scrape_timeout: 10s", "scrape_timeout: 1s")
        .replace(
            "[prod-a, prod-b, prod-c, prod-d]",
            &format!("[{}]", CLUSTERS.join(", ")),
        )
        .replace("etcdmedic-exporter-0:9379", exporter)
        .replace("alertmanager:9093", &format!("127.0.0.1:{}", free_port()?));
    ensure!(
        config.contains(&format!("regex: \"{shard}\"")) && config.contains(exporter),
        "the shard file no longer has the lines this test sets:\n{config}"
    );
    Ok(config)
}

/// The README's excerpt of the shard file: its lines are the file's, in the file's order.
#[test]
fn the_readmes_excerpt_is_the_shard_files() -> Result<()> {
    let deployed = repository_file("deploy/prometheus/prometheus-shard.yml")?;
    let readme = crate::readme::documentation()?;
    let excerpt = crate::readme::block(&readme, "global:\n  external_labels:")?;
    let mut file_lines = deployed.lines();
    for line in excerpt.lines() {
        ensure!(
            file_lines.any(|l| l == line),
            "the README shows {line:?}, which the shard file does not have (there, or in that order)"
        );
    }
    Ok(())
}

/// The `etcd_cluster` labels of a query's result.
async fn clusters_in(prometheus: &Prometheus, promql: &str) -> Result<BTreeSet<String>> {
    Ok(prometheus
        .query(promql)
        .await?
        .iter()
        .filter_map(|series| series["metric"]["etcd_cluster"].as_str())
        .map(str::to_string)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cluster_is_scraped_by_exactly_one_shard_and_alerts_there() -> Result<()> {
    let mut etcd = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    let dir = tempfile::tempdir()?;
    let entries: String = CLUSTERS
        .iter()
        .map(|name| {
            etcd.config_yaml(name)
                .trim_start_matches("clusters:\n")
                .to_string()
        })
        .collect();
    let config = dir.path().join("etcdmedic.yaml");
    std::fs::write(&config, format!("clusters:\n{entries}"))?;

    let deployed = repository_file("deploy/prometheus/prometheus-shard.yml")?;
    let rules = with_short_durations_for(
        &repository_file("alerts/etcdmedic.rules.yaml")?,
        &["EtcdmedicMemberUnreachable"],
        "1s",
        "1s",
    );
    let mut exporters = Vec::new();
    let mut servers = Vec::new();
    for shard in 0..SHARDS {
        let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let binary = project_binary("etcdmedic-exporter")?;
        let command = ExporterProcess::serve_command(&binary, &config, listen);
        exporters.push(ExporterProcess::spawn(command, listen, std::process::Stdio::null()).await?);
        let prometheus = Prometheus::start_with(
            &shard_config(&deployed, shard, &listen.to_string())?,
            &[("rules/etcdmedic.rules.yaml", rules.clone())],
        )
        .await?;
        servers.push(prometheus);
    }

    // Every cluster up on exactly one shard, each shard with some.
    let scraped: Vec<BTreeSet<String>> = eventually(
        "every cluster is scraped by one shard",
        Duration::from_secs(60),
        || async {
            let mut scraped = Vec::new();
            for prometheus in &servers {
                scraped.push(clusters_in(prometheus, "etcdmedic_cluster_up == 1").await?);
            }
            let all: BTreeSet<&String> = scraped.iter().flatten().collect();
            ensure!(all.len() == CLUSTERS.len(), "scraped so far: {scraped:?}");
            Ok(scraped)
        },
    )
    .await?;
    let total: usize = scraped.iter().map(BTreeSet::len).sum();
    ensure!(
        total == CLUSTERS.len(),
        "a cluster was scraped by both shards: {scraped:?}"
    );
    ensure!(
        scraped.iter().all(|shard| !shard.is_empty()),
        "one shard got every cluster: {scraped:?}"
    );

    // A member down: each shard raises the alert for its own clusters, and only those.
    etcd.kill(2)?;
    eventually(
        "each shard fires EtcdmedicMemberUnreachable for its clusters",
        Duration::from_secs(60),
        || async {
            for (prometheus, own) in servers.iter().zip(&scraped) {
                let firing: BTreeSet<String> = prometheus
                    .firing("EtcdmedicMemberUnreachable")
                    .await?
                    .iter()
                    .filter_map(|alert| alert["labels"]["etcd_cluster"].as_str())
                    .map(str::to_string)
                    .collect();
                ensure!(
                    &firing == own,
                    "firing for {firing:?}, the shard has {own:?}"
                );
            }
            Ok(())
        },
    )
    .await?;
    for exporter in &mut exporters {
        exporter.stop(Duration::from_secs(10))?;
    }
    Ok(())
}
