//! Monitoring writes nothing to etcd: the exporter reads alarms from Status rather than
//! AlarmList (a raft proposal even to read), so scraping an idle cluster leaves its raft log
//! where it was.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use etcdmedic_tests::{EtcdCluster, EtcdVersion, RunningExporter};

use crate::on_each_etcd_version;
use crate::support::etcdctl_endpoint_status;

const SCRAPES: usize = 200;

on_each_etcd_version!(two_hundred_scrapes_of_an_idle_cluster_append_nothing_to_raft,);

/// Every member's raft index, in the order etcdctl lists them.
fn raft_indexes(cluster: &EtcdCluster) -> Result<Vec<u64>> {
    Ok(etcdctl_endpoint_status(cluster)?
        .into_iter()
        .map(|e| e.status.raft_index)
        .collect())
}

/// Raft indexes once the cluster has stopped appending (a new cluster publishes its members
/// and version through raft for a moment after it starts).
async fn settled_raft_indexes(cluster: &EtcdCluster) -> Result<Vec<u64>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = raft_indexes(cluster)?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = raft_indexes(cluster)?;
        if now == last {
            return Ok(now);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the idle cluster kept appending to raft: {last:?} then {now:?}");
        }
        last = now;
    }
}

async fn two_hundred_scrapes_of_an_idle_cluster_append_nothing_to_raft(
    version: EtcdVersion,
) -> Result<()> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let exporter = RunningExporter::start(&cluster.write_config("e2e")?).await?;
    exporter.scrape().await?;
    let before = settled_raft_indexes(&cluster).await?;

    let scraping = async {
        for scrape in 0..SCRAPES {
            let path = if scrape % 2 == 0 {
                "/metrics"
            } else {
                "/probe?target=e2e"
            };
            let exposition = exporter.scrape_path(path).await?;
            ensure!(
                exposition.value("etcdmedic_cluster_up", &[("etcd_cluster", "e2e")])? == 1.0,
                "scrape {scrape} of {path}: the cluster is not up"
            );
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(180), scraping).await??;

    let after = raft_indexes(&cluster)?;
    ensure!(
        after == before,
        "{SCRAPES} scrapes moved the raft indexes from {before:?} to {after:?}"
    );
    Ok(())
}
