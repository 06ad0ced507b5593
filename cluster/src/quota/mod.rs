//! The space quota each member enforces. etcd 3.6 reports it in Status (`dbSizeQuota`);
//! before 3.6 only the member's own `/metrics` says it (`etcd_server_quota_backend_bytes`,
//! see [`reader`]). The config's `quota_backend_bytes` is used only when neither answers, then
//! etcd's 2 GiB default. A guessed quota is dangerous both ways: too high and a nearly full
//! member looks fine until NOSPACE, too low and healthy members get defragmented. The quota
//! changes only when a member restarts, so what `/metrics` said is kept, per endpoint.

mod reader;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::StatusResponse;

use crate::config::ClusterConfig;
use crate::error::Result;
use crate::model::{MemberId, QuotaSource};
pub use reader::{MetricsError, QuotaReader};

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

/// What a member's `/metrics` said about its quota, and when.
#[derive(Debug, Clone)]
struct LearnedQuota {
    member: MemberId,
    version: String,
    /// `None`: `/metrics` answered, but not with a quota.
    bytes: Option<u64>,
    at: Instant,
}

impl LearnedQuota {
    /// Still the same process, as far as Status tells, and not too old.
    fn holds_for(&self, member: MemberId, version: &str) -> bool {
        let max_age = if self.bytes.is_some() {
            QUOTA_REFRESH
        } else {
            QUOTA_RETRY
        };
        self.member == member && self.version == version && self.at.elapsed() < max_age
    }
}

/// Quotas read from members' `/metrics`, by endpoint.
#[derive(Debug)]
pub(crate) struct QuotaCache {
    reader: QuotaReader,
    learned: Mutex<HashMap<String, LearnedQuota>>,
}

impl QuotaCache {
    pub(crate) fn new(cluster: &ClusterConfig) -> Result<Self> {
        Ok(QuotaCache {
            reader: QuotaReader::new(cluster)?,
            learned: Mutex::new(HashMap::new()),
        })
    }

    /// The member's quota: from Status (etcd 3.6+), else from its `/metrics` (read once and
    /// kept), else the config's or etcd's default.
    pub(crate) async fn quota_of(
        &self,
        cluster: &str,
        endpoint: &str,
        response: &StatusResponse,
        budget: Duration,
    ) -> Quota {
        if let Ok(bytes @ 1..) = u64::try_from(response.db_size_quota()) {
            return Quota {
                bytes,
                source: QuotaSource::Status,
            };
        }
        let member = MemberId(response.header().map_or(0, |h| h.member_id()));
        let version = response.version();
        let fallback = self.reader.fallback();
        let as_quota = |bytes: Option<u64>| match bytes {
            Some(bytes) => Quota {
                bytes,
                source: QuotaSource::Metrics,
            },
            None => fallback,
        };
        if let Some(known) = self
            .lock()
            .get(endpoint)
            .filter(|known| known.holds_for(member, version))
        {
            return as_quota(known.bytes);
        }
        // Boxed: an HTTP request's state machine is large, and this one runs rarely.
        let read = Box::pin(self.reader.from_metrics(endpoint, budget));
        let bytes = match read.await {
            Ok(bytes) => {
                tracing::debug!(%cluster, %endpoint, bytes, "quota read from /metrics");
                Some(bytes)
            }
            // Out of time for this collection: the next one tries again.
            Err(MetricsError::Timeout { .. }) => return fallback,
            Err(err) => {
                tracing::warn!(
                    %cluster,
                    %endpoint,
                    error = %err,
                    assumed_bytes = fallback.bytes,
                    assumed_from = fallback.source.as_str(),
                    "the member reports its quota neither in Status nor on /metrics; set metrics_url if it serves metrics elsewhere"
                );
                None
            }
        };
        self.lock().insert(
            endpoint.to_string(),
            LearnedQuota {
                member,
                version: version.to_string(),
                bytes,
                at: Instant::now(),
            },
        );
        as_quota(bytes)
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
