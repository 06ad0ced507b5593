//! The configured clusters and collecting their status at scrape time: concurrently, bounded,
//! within the scrape's deadline, and so that clusters that do not answer cannot cost the
//! others their series.
//!
//! A silent cluster (one that accepts connections and never answers) holds whatever it is
//! given until its timeout. Four rules keep it from hurting a live cluster:
//! - waiting for a slot ends at the scrape's deadline, like every call;
//! - a collection gives its slot back after [`SLOT_HOLD`] even while its calls still run (to
//!   their own deadline): on the first scrape, before anything is known, a silent cluster
//!   delays the clusters behind it by that much at most;
//! - a cluster none of whose members answered last time waits for slots of its own, so from
//!   its second scrape on it never queues in front of a live cluster, and its calls get
//!   [`SILENT_BUDGET`] rather than the full `status_timeout` (the full one once a minute, so
//!   that a slow but live cluster is seen again);
//! - concurrent scrapes of one cluster share one collection, so fifty scrapes at once cost
//!   each cluster one set of calls, not fifty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etcdmedic_cluster::{ClusterConfig, ClusterProbe, ClusterStatus, Config};
use futures::future::{join_all, BoxFuture, FutureExt, Shared};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Clusters collected at once in each lane (answering, silent). Each cluster in flight costs
/// ~0.2 MB while its calls run: for 100 clusters on two cores, 8 keeps the exporter under
/// 30 MB with a full scrape well under 100 ms; 16 or 32 shave a little latency for a few MB
/// more (docs/benchmarks.md).
pub const DEFAULT_MAX_CONCURRENT_CLUSTERS: usize = 8;

/// Members whose connections are kept between scrapes, counted as each cluster's expected
/// members ([`expected_members`]) in the order of the configuration; the clusters beyond
/// reconnect on every scrape. A kept
/// HTTP/2 connection holds about 40 KB whatever it carries (hyper's and h2's buffers and
/// queues): 256 of them are about 10 MB, and a fleet of thousands of members stays within a
/// fixed memory, at the cost of a handshake per member per scrape for the rest
/// (docs/benchmarks.md).
pub const DEFAULT_MAX_KEPT_CONNECTIONS: usize = 256;

/// The members a cluster is expected to have before its first collection: its configured
/// endpoints, and with discovery at least 3 (the smallest cluster that survives a failure),
/// since one configured endpoint usually leads to a whole cluster.
fn expected_members(cluster: &ClusterConfig) -> usize {
    if cluster.discover_members {
        cluster.endpoints.len().max(3)
    } else {
        cluster.endpoints.len()
    }
}

/// How much the exporter does at once and keeps between scrapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrent_clusters: usize,
    pub max_kept_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_clusters: DEFAULT_MAX_CONCURRENT_CLUSTERS,
            max_kept_connections: DEFAULT_MAX_KEPT_CONNECTIONS,
        }
    }
}

/// The longest a collection keeps its slot. A cluster that answers takes milliseconds; one
/// that does not is left to run out its timeout without a slot.
pub const SLOT_HOLD: Duration = Duration::from_millis(500);

/// How long each call to a cluster that answered nothing last time may take.
pub const SILENT_BUDGET: Duration = Duration::from_secs(1);
/// How often a silent cluster's calls get the full `status_timeout` again.
pub const SILENT_FULL_EVERY: Duration = Duration::from_secs(60);

/// Every configured cluster, the first ones with their member connections kept between
/// scrapes ([`DEFAULT_MAX_KEPT_CONNECTIONS`]).
#[derive(Debug)]
pub struct Targets {
    clusters: Vec<Arc<Target>>,
    /// Each cluster's place in `clusters` by its name (unique, the configuration checks):
    /// a `/probe` finds its cluster at once however large the fleet.
    by_name: HashMap<String, usize>,
    /// Slots for clusters that answered (or were not asked yet).
    answering: Arc<Semaphore>,
    /// Slots for clusters none of whose members answered last time.
    silent: Arc<Semaphore>,
}

#[derive(Debug)]
struct Target {
    probe: Arc<ClusterProbe>,
    /// No member answered the last collection.
    silent: AtomicBool,
    /// When a collection last had the full `status_timeout`.
    last_full_budget: Mutex<Option<Instant>>,
    in_flight: Mutex<Option<InFlight>>,
    collections: AtomicU64,
}

type SharedStatus = Shared<BoxFuture<'static, ClusterStatus>>;

/// A collection under way, which later scrapes of the cluster join.
#[derive(Debug)]
struct InFlight {
    id: u64,
    /// By then the collection has surely ended; an entry older than that is stale.
    ends_by: Instant,
    status: SharedStatus,
}

impl Targets {
    pub fn new(config: &Config, limits: Limits) -> etcdmedic_cluster::Result<Self> {
        let mut keep_budget = limits.max_kept_connections;
        let clusters: Vec<Arc<Target>> = config
            .clusters
            .iter()
            .map(|cluster| {
                let members = expected_members(cluster);
                let keep = members <= keep_budget;
                if keep {
                    keep_budget -= members;
                }
                Ok(Arc::new(Target {
                    probe: Arc::new(ClusterProbe::for_monitoring(cluster.clone(), keep)?),
                    silent: AtomicBool::new(false),
                    last_full_budget: Mutex::new(None),
                    in_flight: Mutex::new(None),
                    collections: AtomicU64::new(0),
                }))
            })
            .collect::<etcdmedic_cluster::Result<_>>()?;
        let slots = limits.max_concurrent_clusters.max(1);
        let by_name = clusters
            .iter()
            .enumerate()
            .map(|(index, target)| (target.probe.name().to_string(), index))
            .collect();
        Ok(Targets {
            clusters,
            by_name,
            answering: Arc::new(Semaphore::new(slots)),
            silent: Arc::new(Semaphore::new(slots)),
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.clusters.iter().map(|t| t.probe.name()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ClusterProbe>> {
        self.target(name).map(|t| &t.probe)
    }

    fn target(&self, name: &str) -> Option<&Arc<Target>> {
        self.by_name.get(name).map(|&index| &self.clusters[index])
    }

    /// Collects every cluster. `deadline`, when given (what is left of the scraper's
    /// timeout), ends every collection, and every wait for one, by then.
    pub async fn collect_all(&self, deadline: Option<Duration>) -> Vec<ClusterStatus> {
        let deadline = deadline.map(|left| Instant::now() + left);
        join_all(
            self.clusters
                .iter()
                .map(|t| self.collect_target(t, deadline)),
        )
        .await
    }

    /// Collects the cluster `probe` belongs to (joining a collection already under way).
    pub async fn collect(&self, probe: &ClusterProbe, deadline: Option<Instant>) -> ClusterStatus {
        match self.target(probe.name()) {
            Some(target) => self.collect_target(target, deadline).await,
            None => {
                probe
                    .collect_until(probe.config().status_timeout, deadline)
                    .await
            }
        }
    }

    async fn collect_target(
        &self,
        target: &Arc<Target>,
        deadline: Option<Instant>,
    ) -> ClusterStatus {
        let started = Instant::now();
        let status = self.join_or_start(target, deadline);
        match deadline {
            None => status.await,
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), status).await {
                Ok(status) => status,
                // Joined a collection that another scrape started with a later deadline.
                Err(_) => target.probe.unanswered(started.elapsed()),
            },
        }
    }

    fn join_or_start(&self, target: &Arc<Target>, deadline: Option<Instant>) -> SharedStatus {
        let mut in_flight = target
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = in_flight.as_ref().filter(|r| Instant::now() < r.ends_by) {
            return running.status.clone();
        }
        let id = target.collections.fetch_add(1, Ordering::Relaxed);
        let (lane, timeout) = if target.silent.load(Ordering::Relaxed) {
            (self.silent.clone(), target.silent_timeout())
        } else {
            (self.answering.clone(), target.full_timeout())
        };
        // A collection asks MemberList and the members, then members found late: two rounds.
        let ends_by = deadline.unwrap_or_else(|| Instant::now() + 2 * timeout) + SLOT_HOLD;
        let status = collect_in_lane(target.clone(), lane, timeout, deadline, id)
            .boxed()
            .shared();
        *in_flight = Some(InFlight {
            id,
            ends_by,
            status: status.clone(),
        });
        status
    }
}

impl Target {
    fn full_timeout(&self) -> Duration {
        *self
            .last_full_budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.probe.config().status_timeout
    }

    /// [`SILENT_BUDGET`], or the full timeout when it is due again.
    fn silent_timeout(&self) -> Duration {
        let mut last = self
            .last_full_budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < SILENT_FULL_EVERY) {
            return SILENT_BUDGET.min(self.probe.config().status_timeout);
        }
        *last = Some(Instant::now());
        self.probe.config().status_timeout
    }
}

/// One collection of `target`, each call given `timeout`: a slot from `lane` (waiting no
/// later than `deadline`), held for [`SLOT_HOLD`] at most.
async fn collect_in_lane(
    target: Arc<Target>,
    lane: Arc<Semaphore>,
    timeout: Duration,
    deadline: Option<Instant>,
    id: u64,
) -> ClusterStatus {
    let started = Instant::now();
    let probe = &target.probe;
    let status = match acquire(lane, deadline).await {
        None => probe.unanswered(started.elapsed()),
        Some(slot) => {
            let collection = probe.collect_until(timeout, deadline);
            tokio::pin!(collection);
            match tokio::time::timeout(SLOT_HOLD, &mut collection).await {
                Ok(status) => status,
                Err(_) => {
                    drop(slot);
                    collection.await
                }
            }
        }
    };
    let answered = status.is_up() || status.members.iter().any(|m| m.status.is_ok());
    target.silent.store(!answered, Ordering::Relaxed);
    let mut in_flight = target
        .in_flight
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if in_flight.as_ref().is_some_and(|running| running.id == id) {
        *in_flight = None;
    }
    drop(in_flight);
    tracing::debug!(
        cluster = %status.cluster,
        members = status.members.len(),
        unreachable = status.members.iter().filter(|m| m.status.is_err()).count(),
        took_ms = status.duration.as_millis() as u64,
        "collected"
    );
    status
}

/// A slot, or `None` once `deadline` has passed without one.
async fn acquire(lane: Arc<Semaphore>, deadline: Option<Instant>) -> Option<OwnedSemaphorePermit> {
    // The semaphores are never closed, so acquiring fails only at the deadline.
    match deadline {
        None => lane.acquire_owned().await.ok(),
        Some(deadline) => tokio::time::timeout_at(deadline.into(), lane.acquire_owned())
            .await
            .ok()?
            .ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn connections_are_kept_for_the_first_members_within_the_budget() {
        let cluster = |name: &str, members: u16| {
            let endpoints: Vec<String> = (1..=members)
                .map(|port| format!("http://127.0.0.1:{port}"))
                .collect();
            format!(
                "  - name: {name}\n    endpoints: [{}]\n    discover_members: false\n",
                endpoints.join(", ")
            )
        };
        let yaml = format!(
            "clusters:\n{}{}{}{}",
            cluster("a", 3),
            cluster("b", 3),
            cluster("c", 1),
            cluster("d", 1)
        );
        let config = Config::from_yaml(&yaml, Path::new("t.yaml")).unwrap();
        let limits = Limits {
            max_kept_connections: 4,
            ..Limits::default()
        };
        let targets = Targets::new(&config, limits).unwrap();
        for name in ["a", "b", "c", "d"] {
            assert_eq!(targets.get(name).unwrap().name(), name);
        }
        assert!(targets.get("e").is_none() && targets.get("").is_none());
        let kept: Vec<bool> = ["a", "b", "c", "d"]
            .iter()
            .map(|name| targets.get(name).unwrap().keeps_connections())
            .collect();
        // a fits (1 left), b does not, c does (none left), d does not.
        assert_eq!(kept, [true, false, true, false]);
        let none = Targets::new(
            &config,
            Limits {
                max_kept_connections: 0,
                ..Limits::default()
            },
        )
        .unwrap();
        assert!(!none.get("c").unwrap().keeps_connections());

        // With discovery, one configured endpoint counts as a 3-member cluster.
        let discovered = Config::from_yaml(
            "clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:1]\n  \
             - name: b\n    endpoints: [http://127.0.0.1:2]\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        let targets = Targets::new(&discovered, limits).unwrap();
        assert!(targets.get("a").unwrap().keeps_connections());
        assert!(!targets.get("b").unwrap().keeps_connections());
    }

    #[test]
    fn a_silent_cluster_gets_a_short_budget_but_the_full_one_once_a_minute() {
        let yaml =
            "clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:1]\n    status_timeout: 5s\n";
        let config = Config::from_yaml(yaml, Path::new("t.yaml")).unwrap();
        let targets = Targets::new(&config, Limits::default()).unwrap();
        let target = targets.target("a").unwrap();
        // Never given the full budget yet: it gets it.
        assert_eq!(target.silent_timeout(), Duration::from_secs(5));
        assert_eq!(target.silent_timeout(), SILENT_BUDGET);
        assert_eq!(target.silent_timeout(), SILENT_BUDGET);
        *target.last_full_budget.lock().unwrap() =
            Instant::now().checked_sub(SILENT_FULL_EVERY + Duration::from_secs(1));
        assert_eq!(target.silent_timeout(), Duration::from_secs(5));
        assert_eq!(target.full_timeout(), Duration::from_secs(5));
        assert_eq!(target.silent_timeout(), SILENT_BUDGET);
    }
}
