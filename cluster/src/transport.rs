//! The HTTP/2 transport under the etcd clients of one cluster.
//!
//! One pooled hyper client per cluster keeps one connection per member, reconnecting on
//! demand, for as long as the transport lives (a probe that closes its connections after each
//! collection drops its transport with them). tonic's own `Channel` would add, per member, a request buffer with its own task
//! and a reconnect layer; with hundreds of members that overhead was the largest part of
//! the exporter's memory (docs/benchmarks.md). etcd-client takes any tower service as its
//! channel, so each member gets a thin service that addresses its requests to that member
//! on the shared pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, USER_AGENT};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use tonic::body::Body;
use tower::util::BoxCloneSyncService;

use crate::config::ClusterConfig;
use crate::error::{Error, Result};

/// Keep-alive pings find a dead connection between two scrapes. etcd answers pings more
/// frequent than `--grpc-keepalive-min-time` (5s) with GOAWAY, so stay well above it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections outlive any sensible scrape interval.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

const USER_AGENT_VALUE: &str = concat!("etcdmedic/", env!("CARGO_PKG_VERSION"));

/// The service etcd-client runs its gRPC calls on.
pub(crate) type GrpcService = BoxCloneSyncService<Request<Body>, Response<Body>, tower::BoxError>;

/// Connections to the members of one cluster, with its TLS settings.
#[derive(Clone)]
pub struct Transport {
    cluster: Arc<str>,
    /// Every member must be reached over TLS (the configured endpoints are `https://`).
    tls: bool,
    // Behind an Arc: etcd-client clones the service into each of its eight service
    // clients, and a bare hyper client is several hundred bytes.
    http: Arc<Client<HttpsConnector<HttpConnector>, Body>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub fn new(cluster: &ClusterConfig) -> Result<Transport> {
        let tcp = tcp_connector(cluster);
        let builder = HttpsConnectorBuilder::new().with_tls_config(tls_config(cluster)?);
        let builder = if cluster.tls.is_some() {
            builder.https_only()
        } else {
            builder.https_or_http()
        };
        let builder = match cluster.tls.as_ref().and_then(|tls| tls.server_name.clone()) {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        };
        let connector = builder.enable_http2().wrap_connector(tcp);

        let http = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Transport {
            cluster: cluster.name.as_str().into(),
            tls: cluster.tls.is_some(),
            http: Arc::new(http),
        })
    }

    /// A gRPC service whose requests all go to `endpoint` (`scheme://host:port`). A member
    /// that advertises only a plain-text URL in a TLS cluster is refused, not contacted in
    /// clear: its URL comes from MemberList, not from the validated config.
    pub(crate) fn service(&self, endpoint: &str) -> Result<GrpcService> {
        let invalid = |message: String| Error::Endpoint {
            cluster: self.cluster.to_string(),
            endpoint: endpoint.to_string(),
            message,
        };
        match (self.tls, endpoint.starts_with("https://")) {
            (true, false) => {
                return Err(invalid(
                    "plain-text endpoint in a cluster configured for TLS; use https://".into(),
                ))
            }
            (false, true) => {
                return Err(invalid(
                    "https endpoint in a cluster without TLS settings; add a tls block".into(),
                ))
            }
            _ => {}
        }
        let uri: Uri = endpoint
            .parse()
            .map_err(|err| invalid(format!("not a valid URI: {err}")))?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(invalid("needs a scheme and host:port".into()));
        };
        Ok(BoxCloneSyncService::new(MemberService {
            http: self.http.clone(),
            scheme,
            authority,
        }))
    }
}

/// TCP connections to a cluster's members: no Nagle delay, connecting within the cluster's
/// `status_timeout`.
pub(crate) fn tcp_connector(cluster: &ClusterConfig) -> HttpConnector {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(cluster.status_timeout));
    tcp
}

/// The cluster's TLS settings. A clone shares the original's TLS session cache, so the
/// connections of every collection of a cluster can resume its sessions. Plain-text clusters
/// still need a TLS config to build the connector type; with only http:// endpoints
/// (enforced when the config loads) it is never used, and all of them share one (a config
/// each, with its session cache, added up to kilobytes per cluster).
pub(crate) fn tls_config(cluster: &ClusterConfig) -> Result<ClientConfig> {
    static UNUSED: OnceLock<std::result::Result<ClientConfig, rustls::Error>> = OnceLock::new();
    match &cluster.tls {
        Some(tls) => Ok((*tls.config).clone()),
        None => UNUSED
            .get_or_init(|| {
                Ok(ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth())
            })
            .clone()
            .map_err(|err| Error::Tls {
                cluster: cluster.name.to_string(),
                message: err.to_string(),
            }),
    }
}

/// Sends tonic's requests, which carry only a path, to one member.
#[derive(Clone)]
struct MemberService {
    http: Arc<Client<HttpsConnector<HttpConnector>, Body>>,
    scheme: Scheme,
    authority: Authority,
}

impl tower::Service<Request<Body>> for MemberService {
    type Response = Response<Body>;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool connects on demand inside `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = request.uri().path_and_query().cloned();
        match Uri::from_parts(uri) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(err) => return Box::pin(std::future::ready(Err(err.into()))),
        }
        request
            .headers_mut()
            .insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let response = self.http.request(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(Body::new))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    fn transport(yaml: &str) -> Transport {
        let config = Config::from_yaml(yaml, Path::new("test.yaml")).unwrap();
        Transport::new(&config.clusters[0]).unwrap()
    }

    #[test]
    fn a_tls_cluster_refuses_a_plain_text_member_endpoint() {
        let tls = transport(
            "clusters:\n  - name: a\n    endpoints: [https://127.0.0.1:2379]\n    tls: {insecure_skip_verify: true}\n",
        );
        let err = tls.service("http://127.0.0.1:2379").err().unwrap();
        assert!(
            err.to_string()
                .contains("plain-text endpoint in a cluster configured for TLS"),
            "got: {err}"
        );
        assert!(tls.service("https://127.0.0.1:2379").is_ok());
    }

    #[test]
    fn a_plain_text_cluster_refuses_an_https_member_endpoint() {
        let plain = transport("clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n");
        let err = plain.service("https://127.0.0.1:2379").err().unwrap();
        assert!(
            err.to_string()
                .contains("https endpoint in a cluster without TLS settings"),
            "got: {err}"
        );
        assert!(plain.service("http://127.0.0.1:2379").is_ok());
    }
}
