//! The HTTP/2 transport under the etcd clients of one cluster.
//!
//! One pooled hyper client per cluster keeps one connection per member, reconnecting on
//! demand. tonic's own `Channel` would add, per member, a request buffer with its own task
//! and a reconnect layer; with hundreds of members that overhead was the largest part of
//! the exporter's memory (docs/benchmarks.md). etcd-client takes any tower service as its
//! channel, so each member gets a thin service that addresses its requests to that member
//! on the shared pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(cluster.status_timeout));

        // Plain-text clusters still need a TLS config to build the connector type; with only
        // http:// endpoints (enforced when the config loads) it is never used.
        let tls_config = match &cluster.tls {
            Some(tls) => (*tls.config).clone(),
            None => ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::Tls {
                cluster: cluster.name.clone(),
                message: err.to_string(),
            })?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
        };
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http();
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
            http: Arc::new(http),
        })
    }

    /// A gRPC service whose requests all go to `endpoint` (`scheme://host:port`).
    pub(crate) fn service(&self, endpoint: &str) -> Result<GrpcService> {
        let invalid = |message: String| Error::Endpoint {
            cluster: self.cluster.to_string(),
            endpoint: endpoint.to_string(),
            message,
        };
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
