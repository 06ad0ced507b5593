//! The configured clusters and collecting their status at scrape time, concurrently and
//! bounded, within the scrape's deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcdmedic_cluster::{ClusterProbe, ClusterStatus, Config};
use futures::future::join_all;
use tokio::sync::Semaphore;

/// Clusters collected at once across all requests; more wait for a free slot, so a burst of
/// scrapes cannot open thousands of calls against the same members. Each cluster in flight
/// costs ~0.2 MB while its calls run: for 100 clusters on two cores, 8 keeps the exporter
/// under 30 MB with a full scrape well under 100 ms; 16 or 32 shave a little latency for a
/// few MB more (docs/benchmarks.md).
pub const DEFAULT_MAX_CONCURRENT_CLUSTERS: usize = 8;

/// Every configured cluster, with its member clients kept between scrapes.
#[derive(Debug)]
pub struct Targets {
    probes: Vec<Arc<ClusterProbe>>,
    slots: Arc<Semaphore>,
}

impl Targets {
    pub fn new(config: &Config, max_concurrent_clusters: usize) -> etcdmedic_cluster::Result<Self> {
        Ok(Targets {
            probes: config
                .clusters
                .iter()
                .map(|cluster| ClusterProbe::new(cluster.clone()).map(Arc::new))
                .collect::<Result<_, _>>()?,
            slots: Arc::new(Semaphore::new(max_concurrent_clusters.max(1))),
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.probes.iter().map(|p| p.name()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ClusterProbe>> {
        self.probes.iter().find(|p| p.name() == name)
    }

    /// Collects every cluster. `deadline`, when given (what is left of the scraper's
    /// timeout), ends every collection by then.
    pub async fn collect_all(&self, deadline: Option<Duration>) -> Vec<ClusterStatus> {
        let deadline = deadline.map(|left| Instant::now() + left);
        join_all(
            self.probes
                .iter()
                .map(|probe| self.collect(probe, deadline)),
        )
        .await
    }

    /// Collects one cluster, waiting for a free slot first.
    pub async fn collect(&self, probe: &ClusterProbe, deadline: Option<Instant>) -> ClusterStatus {
        // The semaphore is never closed, so acquiring only fails if that invariant breaks;
        // collecting without a slot is still better than no metrics.
        let _slot = self.slots.acquire().await.ok();
        let status = probe
            .collect_until(probe.config().status_timeout, deadline)
            .await;
        tracing::debug!(
            cluster = %status.cluster,
            members = status.members.len(),
            unreachable = status.members.iter().filter(|m| m.status.is_err()).count(),
            took_ms = status.duration.as_millis() as u64,
            "collected"
        );
        status
    }
}
