//! Reading what a member says only on its own `/metrics`: its quota
//! (`etcd_server_quota_backend_bytes`) and, from etcd 3.6, whether it stops its gRPC service
//! while it defragments (`etcd_server_feature_enabled{name="StopGRPCServiceOnDefrag"}`). Over
//! HTTP/1.1 with the cluster's TLS settings and client certificate: on the client URL, or at
//! `metrics_url` for members that serve metrics on a listener of their own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::file::DEFAULT_QUOTA_BACKEND_BYTES;
use crate::config::ClusterConfig;
use crate::error::Result;
use crate::member_client::with_sources;
use crate::model::QuotaSource;

use super::Quota;
use crate::transport;

/// The gauge etcd (3.4 and later) publishes with its quota.
const QUOTA_METRIC: &str = "etcd_server_quota_backend_bytes";
/// etcd 3.6's feature gates, one series per gate; the exposition is sorted by name, so they
/// come before the quota.
const FEATURE_METRIC: &str = "etcd_server_feature_enabled";
const STOP_GRPC_ON_DEFRAG: &str = "name=\"StopGRPCServiceOnDefrag\"";
/// etcd's `/metrics` is a few hundred kB; reading stops at the quota gauge, and never past this.
const MAX_METRICS_BYTES: usize = 16 * 1024 * 1024;
const READ_BUFFER_BYTES: usize = 16 * 1024;
const USER_AGENT_VALUE: &str = concat!("etcdmedic/", env!("CARGO_PKG_VERSION"));

/// What a member's `/metrics` said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberMetrics {
    pub quota_bytes: Option<u64>,
    /// The `StopGRPCServiceOnDefrag` feature gate; `None` where the member does not publish
    /// its gates (before 3.6).
    pub stop_grpc_on_defrag: Option<bool>,
}

/// Why `/metrics` did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    #[error("{url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: {message}")]
    Failed { url: String, message: String },
}

/// Reads quotas from members' `/metrics`, over HTTP/1.1 with the cluster's TLS settings.
#[derive(Clone)]
pub struct QuotaReader {
    /// `metrics_url` with `{host}`, or `None` for `<client URL>/metrics`.
    template: Option<String>,
    configured: Option<u64>,
    http: Arc<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>>,
}

impl std::fmt::Debug for QuotaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaReader")
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl QuotaReader {
    pub fn new(cluster: &ClusterConfig) -> Result<Self> {
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(transport::tls_config(cluster)?)
            .https_or_http();
        let builder = match cluster.tls.as_ref().and_then(|tls| tls.server_name.clone()) {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        };
        let connector = builder
            .enable_http1()
            .wrap_connector(transport::tcp_connector(cluster));
        Ok(QuotaReader {
            template: cluster.metrics_url.clone(),
            configured: cluster.quota_backend_bytes,
            // etcd writes /metrics in small chunks and only one line is wanted: a small fixed
            // read buffer rather than one that grows to hundreds of kB per member.
            http: Arc::new(
                Client::builder(TokioExecutor::new())
                    .http1_read_buf_exact_size(READ_BUFFER_BYTES)
                    .pool_max_idle_per_host(0)
                    .build(connector),
            ),
        })
    }

    /// The quota to use when the member does not say: the config's, else etcd's default.
    pub fn fallback(&self) -> Quota {
        match self.configured {
            Some(bytes) => Quota {
                bytes,
                source: QuotaSource::Config,
            },
            None => Quota {
                bytes: DEFAULT_QUOTA_BACKEND_BYTES,
                source: QuotaSource::Default,
            },
        }
    }

    /// Where the member at client URL `endpoint` serves its metrics.
    pub fn metrics_url(&self, endpoint: &str) -> String {
        match &self.template {
            Some(template) => template.replace("{host}", endpoint_host(endpoint)),
            None => format!("{endpoint}/metrics"),
        }
    }

    /// What the member at `endpoint` reports on its `/metrics`.
    pub async fn from_metrics(
        &self,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<MemberMetrics, MetricsError> {
        let url = self.metrics_url(endpoint);
        tokio::time::timeout(timeout, self.read(&url))
            .await
            .unwrap_or_else(|_| {
                Err(MetricsError::Timeout {
                    url: url.clone(),
                    after: timeout,
                })
            })
    }

    async fn read(&self, url: &str) -> Result<MemberMetrics, MetricsError> {
        let failed = |message: String| MetricsError::Failed {
            url: url.to_string(),
            message,
        };
        let uri: Uri = url
            .parse()
            .map_err(|err| failed(format!("not a URL: {err}")))?;
        let request = Request::get(uri)
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .body(Empty::new())
            .map_err(|err| failed(err.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|err| failed(with_sources(&err.to_string(), &err)))?;
        if response.status() != StatusCode::OK {
            return Err(failed(format!("answered {}", response.status())));
        }
        let mut body = response.into_body();
        let mut pending = Vec::new();
        let mut read = 0;
        let mut found = MemberMetrics::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| failed(with_sources(&err.to_string(), &err)))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            read += data.len();
            pending.extend_from_slice(data);
            // Only whole lines are looked at; the unfinished last one waits for more.
            let complete = pending
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            if found.scan(&pending[..complete]) {
                return Ok(found);
            }
            pending.drain(..complete);
            if read > MAX_METRICS_BYTES {
                break;
            }
        }
        found.scan(&pending);
        Ok(found)
    }
}

/// `host` of `scheme://host:port` (brackets kept for IPv6).
fn endpoint_host(endpoint: &str) -> &str {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

impl MemberMetrics {
    /// Takes what `text` (whole lines of Prometheus text) says; `true` once the quota is
    /// known, which ends the reading.
    fn scan(&mut self, text: &[u8]) -> bool {
        for line in text.split(|&b| b == b'\n') {
            if let Some((labels, value)) = sample(line, FEATURE_METRIC) {
                if labels
                    .windows(STOP_GRPC_ON_DEFRAG.len())
                    .any(|w| w == STOP_GRPC_ON_DEFRAG.as_bytes())
                {
                    self.stop_grpc_on_defrag = Some(value == 1.0);
                }
            } else if let Some((_, value)) = sample(line, QUOTA_METRIC) {
                if value.is_finite() && value >= 1.0 && value < u64::MAX as f64 {
                    self.quota_bytes = Some(value as u64);
                    return true;
                }
            }
        }
        false
    }
}

/// The labels (`{...}`, or empty) and value of a sample of `metric` in Prometheus text:
/// `etcd_server_quota_backend_bytes 2.097152e+08`.
fn sample<'a>(line: &'a [u8], metric: &str) -> Option<(&'a [u8], f64)> {
    let rest = line.strip_prefix(metric.as_bytes())?;
    let (labels, rest) = match rest.first() {
        Some(b' ') => (&rest[..0], &rest[1..]),
        Some(b'{') => rest.split_at(rest.iter().position(|&b| b == b'}')? + 1),
        _ => return None,
    };
    let value = std::str::from_utf8(rest).ok()?.split_whitespace().next()?;
    Some((labels, value.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find_quota(text: &[u8]) -> Option<u64> {
        let mut found = MemberMetrics::default();
        found.scan(text);
        found.quota_bytes
    }

    #[test]
    fn the_quota_gauge_is_read_in_every_number_format_etcd_writes() {
        let text = b"# HELP etcd_server_quota_backend_bytes Current backend storage quota size in bytes.\n\
            # TYPE etcd_server_quota_backend_bytes gauge\n\
            etcd_server_quota_backend_bytes 2.097152e+08\n\
            etcd_server_quota_backend_bytes_other 1\n";
        assert_eq!(find_quota(text), Some(209_715_200));
        assert_eq!(
            find_quota(b"etcd_server_quota_backend_bytes 2147483648\n"),
            Some(1 << 31)
        );
        assert_eq!(
            find_quota(b"etcd_server_quota_backend_bytes{instance=\"x\"} 1e+06\n"),
            Some(1_000_000)
        );
        assert_eq!(
            find_quota(b"etcd_server_quota_backend_bytes_total 5\n"),
            None
        );
        assert_eq!(find_quota(b"etcd_server_quota_backend_bytes NaN\n"), None);
        assert_eq!(find_quota(b"etcd_server_quota_backend_bytes 0\n"), None);
    }

    #[test]
    fn the_defrag_gate_is_read_from_etcd_3_6s_feature_gates() {
        // As etcd 3.6.15 writes them, with --feature-gates=StopGRPCServiceOnDefrag=true.
        let on = b"# TYPE etcd_server_feature_enabled gauge\n\
            etcd_server_feature_enabled{name=\"SetMemberLocalAddr\",stage=\"ALPHA\"} 0\n\
            etcd_server_feature_enabled{name=\"StopGRPCServiceOnDefrag\",stage=\"ALPHA\"} 1\n\
            etcd_server_feature_enabled{name=\"TxnModeWriteWithSharedBuffer\",stage=\"BETA\"} 1\n\
            etcd_server_quota_backend_bytes 2.147483648e+09\n";
        let mut found = MemberMetrics::default();
        assert!(found.scan(on));
        assert_eq!(
            found,
            MemberMetrics {
                quota_bytes: Some(1 << 31),
                stop_grpc_on_defrag: Some(true)
            }
        );
        let off =
            b"etcd_server_feature_enabled{name=\"StopGRPCServiceOnDefrag\",stage=\"ALPHA\"} 0\n";
        let mut found = MemberMetrics::default();
        assert!(!found.scan(off), "no quota yet: reading goes on");
        assert_eq!(found.stop_grpc_on_defrag, Some(false));
        // etcd 3.5 publishes no gates: unknown, not off.
        let mut found = MemberMetrics::default();
        found.scan(b"etcd_server_quota_backend_bytes 2.147483648e+09\n");
        assert_eq!(found.stop_grpc_on_defrag, None);
    }

    #[test]
    fn the_metrics_url_is_the_client_url_unless_configured() {
        assert_eq!(endpoint_host("https://10.0.0.1:2379"), "10.0.0.1");
        assert_eq!(endpoint_host("http://[::1]:2379"), "[::1]");
        assert_eq!(
            endpoint_host("https://etcd-0.example:2379"),
            "etcd-0.example"
        );
    }
}
