//! The space quota each member enforces, and whether it stops its gRPC service while it
//! defragments. etcd 3.6 reports the quota in Status (`dbSizeQuota`); before 3.6 only the
//! member's own `/metrics` says it (`etcd_server_quota_backend_bytes`, see [`reader`]). The
//! config's `quota_backend_bytes` is used only when neither answers, then etcd's 2 GiB default.
//! A guessed quota is dangerous both ways: too high and a nearly full member looks fine until
//! NOSPACE, too low and healthy members get defragmented. The `StopGRPCServiceOnDefrag` gate
//! (etcd 3.6+) is only on `/metrics`, so 3.6 members are read there too. Both change only when
//! a member restarts, so what `/metrics` said is kept, per endpoint.

mod reader;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::StatusResponse;

use crate::config::ClusterConfig;
use crate::error::Result;
use crate::model::{MemberId, QuotaSource};
pub use reader::{MemberMetrics, MetricsError, QuotaReader};

/// A member's quota and where the figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub bytes: u64,
    pub source: QuotaSource,
}

/// A quota read from `/metrics` changes only when the member restarts (a restart usually shows
/// as an unanswered Status, which forgets it at once); read it again this often regardless.
const QUOTA_REFRESH: Duration = Duration::from_secs(60 * 60);
/// After `/metrics` answered without a quota (or not at all), try again this much later.
const QUOTA_RETRY: Duration = Duration::from_secs(5 * 60);

/// What a member's `/metrics` said, and when.
#[derive(Debug, Clone)]
struct LearnedQuota {
    member: MemberId,
    version: String,
    /// Default (nothing known): `/metrics` answered without them, or not at all.
    metrics: MemberMetrics,
    at: Instant,
}

/// What a member enforces and how it defragments, from Status and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberFacts {
    pub quota: Quota,
    /// Whether the member's gRPC health service says `NOT_SERVING` while it defragments
    /// (`StopGRPCServiceOnDefrag`); `None` when it does not say (3.5.14 to 3.5.x have the
    /// flag but publish no gates).
    pub stop_grpc_on_defrag: Option<bool>,
}

/// The gate from what `/metrics` said, else from the release: 3.4 and 3.5 before 3.5.14
/// (which added `--experimental-stop-grpc-service-on-defrag`) cannot have it.
fn stop_grpc_on_defrag(version: &str, metrics: &MemberMetrics) -> Option<bool> {
    metrics
        .stop_grpc_on_defrag
        .or_else(|| match crate::upgrade::release(version)? {
            (3, minor, _) if minor < 5 => Some(false),
            (3, 5, Some(patch)) if patch < 14 => Some(false),
            _ => None,
        })
}

impl LearnedQuota {
    /// Still the same process, as far as Status tells, and not too old.
    fn holds_for(&self, member: MemberId, version: &str) -> bool {
        let max_age = if self.metrics != MemberMetrics::default() {
            QUOTA_REFRESH
        } else {
            QUOTA_RETRY
        };
        self.member == member && self.version == version && self.at.elapsed() < max_age
    }
}

/// What members said on their `/metrics`, by endpoint.
#[derive(Debug)]
pub(crate) struct MetricsCache {
    reader: QuotaReader,
    learned: Mutex<HashMap<String, LearnedQuota>>,
}

impl MetricsCache {
    pub(crate) fn new(cluster: &ClusterConfig) -> Result<Self> {
        Ok(MetricsCache {
            reader: QuotaReader::new(cluster)?,
            learned: Mutex::new(HashMap::new()),
        })
    }

    /// The member's quota: from Status (etcd 3.6+), else from its `/metrics` (read once and
    /// kept), else the config's or etcd's default; and its defragmentation gate.
    pub(crate) async fn facts_of(
        &self,
        cluster: &str,
        endpoint: &str,
        response: &StatusResponse,
        budget: Duration,
    ) -> MemberFacts {
        let from_status = u64::try_from(response.db_size_quota())
            .ok()
            .filter(|&bytes| bytes > 0);
        let member = MemberId(response.header().map_or(0, |h| h.member_id()));
        let version = response.version();
        let metrics = self
            .metrics_of(
                cluster,
                endpoint,
                member,
                version,
                from_status.is_none(),
                budget,
            )
            .await;
        let quota = match (from_status, metrics.quota_bytes) {
            (Some(bytes), _) => Quota {
                bytes,
                source: QuotaSource::Status,
            },
            (None, Some(bytes)) => Quota {
                bytes,
                source: QuotaSource::Metrics,
            },
            (None, None) => self.reader.fallback(),
        };
        MemberFacts {
            quota,
            stop_grpc_on_defrag: stop_grpc_on_defrag(version, &metrics),
        }
    }

    /// What `/metrics` says, read once per member process and kept.
    async fn metrics_of(
        &self,
        cluster: &str,
        endpoint: &str,
        member: MemberId,
        version: &str,
        quota_wanted: bool,
        budget: Duration,
    ) -> MemberMetrics {
        if let Some(known) = self
            .lock()
            .get(endpoint)
            .filter(|known| known.holds_for(member, version))
        {
            return known.metrics;
        }
        // Boxed: an HTTP request's state machine is large, and this one runs rarely.
        let read = Box::pin(self.reader.from_metrics(endpoint, budget));
        let metrics = match read.await {
            Ok(metrics) => {
                tracing::debug!(%cluster, %endpoint, ?metrics, "read the member's /metrics");
                metrics
            }
            // Out of time for this collection: the next one tries again.
            Err(MetricsError::Timeout { .. }) => return MemberMetrics::default(),
            Err(err) => {
                tracing::debug!(%cluster, %endpoint, error = %err, "cannot read the member's /metrics");
                MemberMetrics::default()
            }
        };
        if quota_wanted && metrics.quota_bytes.is_none() {
            let fallback = self.reader.fallback();
            tracing::warn!(
                %cluster,
                %endpoint,
                metrics_url = %self.reader.metrics_url(endpoint),
                assumed_bytes = fallback.bytes,
                assumed_from = fallback.source.as_str(),
                "the member reports its quota neither in Status nor on /metrics; set metrics_url if it serves metrics elsewhere"
            );
        }
        self.lock().insert(
            endpoint.to_string(),
            LearnedQuota {
                member,
                version: version.to_string(),
                metrics,
                at: Instant::now(),
            },
        );
        metrics
    }

    /// The member at `endpoint` stopped answering: a restart may bring another quota.
    pub(crate) fn forget(&self, endpoint: &str) {
        self.lock().remove(endpoint);
    }

    /// Keeps what was learned only for endpoints that `keep` still wants.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|endpoint, _| keep(endpoint));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, LearnedQuota>> {
        // A cache: a panic elsewhere leaves nothing inconsistent that matters.
        self.learned.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defrag_gate_is_known_off_only_where_the_release_cannot_have_it() {
        let unsaid = MemberMetrics::default();
        assert_eq!(stop_grpc_on_defrag("3.4.23", &unsaid), Some(false));
        assert_eq!(stop_grpc_on_defrag("3.5.13", &unsaid), Some(false));
        assert_eq!(stop_grpc_on_defrag("3.5.14", &unsaid), None);
        assert_eq!(stop_grpc_on_defrag("3.5.30", &unsaid), None);
        assert_eq!(stop_grpc_on_defrag("3.6.15", &unsaid), None);
        let said = |on| MemberMetrics {
            quota_bytes: None,
            stop_grpc_on_defrag: Some(on),
        };
        assert_eq!(stop_grpc_on_defrag("3.6.15", &said(true)), Some(true));
        assert_eq!(stop_grpc_on_defrag("3.7.2", &said(false)), Some(false));
    }
}
