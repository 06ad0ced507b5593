//! One etcd client per member endpoint.
//!
//! etcd-client's `Client::connect` balances requests across all the endpoints it is given,
//! so a client built from several endpoints cannot ask one particular member. Every member
//! here gets its own lazily connected gRPC channel, kept across scrapes so that a scrape
//! costs one round trip, not a TCP and TLS handshake.

use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use etcd_client::{AlarmAction, AlarmType, Client, ConnectOptions, StatusResponse};
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::OnceCell;
use tonic::transport::{Channel, Endpoint};

use crate::config::{ClusterConfig, Credentials};
use crate::error::{Error, Result};
use crate::model::{Alarm, AlarmKind, MemberId, ProbeError};

/// Keep-alive pings find a dead connection between two scrapes. etcd answers pings more
/// frequent than `--grpc-keepalive-min-time` (5s) with GOAWAY, so stay well above it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A member as MemberList describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMember {
    pub id: MemberId,
    /// Empty for a member that was added but has not started yet.
    pub name: String,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The answer to MemberList.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberListing {
    pub cluster_id: u64,
    pub members: Vec<ListedMember>,
}

/// A client bound to exactly one member endpoint.
pub struct MemberClient {
    endpoint: String,
    channel: Channel,
    credentials: Option<Credentials>,
    client: OnceCell<Client>,
}

impl std::fmt::Debug for MemberClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl MemberClient {
    /// Prepares a client for `endpoint` with the cluster's TLS and credentials. Nothing is
    /// sent until the first call.
    pub fn new(endpoint: &str, cluster: &ClusterConfig) -> Result<Self> {
        let invalid = |message: String| Error::Endpoint {
            cluster: cluster.name.clone(),
            endpoint: endpoint.to_string(),
            message,
        };
        let grpc_endpoint = Endpoint::from_shared(endpoint.to_string())
            .map_err(|err| invalid(format!("not a valid URI: {err}")))?
            .user_agent(concat!("etcdmedic/", env!("CARGO_PKG_VERSION")))
            .map_err(|err| invalid(err.to_string()))?
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);

        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(cluster.status_timeout));

        let is_https = endpoint.starts_with("https://");
        let channel = match (&cluster.tls, is_https) {
            (Some(tls), true) => {
                let builder = HttpsConnectorBuilder::new()
                    .with_tls_config((*tls.config).clone())
                    .https_only();
                let builder = match &tls.server_name {
                    Some(name) => builder
                        .with_server_name_resolver(FixedServerNameResolver::new(name.clone())),
                    None => builder,
                };
                grpc_endpoint
                    .connect_with_connector_lazy(builder.enable_http2().wrap_connector(tcp))
            }
            (None, false) => grpc_endpoint.connect_with_connector_lazy(tcp),
            (None, true) => {
                return Err(invalid(
                    "https endpoint but the cluster has no TLS settings".into(),
                ))
            }
            (Some(_), false) => {
                return Err(invalid(
                    "http endpoint in a cluster configured for TLS; use https://".into(),
                ))
            }
        };

        Ok(MemberClient {
            endpoint: endpoint.to_string(),
            channel,
            credentials: cluster.credentials.clone(),
            client: OnceCell::new(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The etcd client for this member, connected (and authenticated) on first use. A failed
    /// attempt is not cached: the next call tries again.
    pub async fn client(&self, timeout: Duration) -> Result<Client, ProbeError> {
        let connect = self.client.get_or_try_init(|| async {
            let mut options = ConnectOptions::new();
            if let Some(credentials) = &self.credentials {
                options = options
                    .with_user(
                        credentials.username.clone(),
                        credentials.password.expose().to_string(),
                    )
                    .with_auto_token_refresh(true);
            }
            Client::from_channel(
                etcd_client::Channel::Tonic(self.channel.clone()),
                Some(options),
            )
            .await
            .map_err(probe_error)
        });
        within(timeout, connect).await.cloned()
    }

    /// Maintenance Status of this member.
    pub async fn status(&self, timeout: Duration) -> Result<StatusResponse, ProbeError> {
        within(timeout, async {
            let mut client = self.client(timeout).await?;
            client.status().await.map_err(probe_error)
        })
        .await
    }

    /// Every active alarm in the cluster, as this member knows them.
    pub async fn alarms(&self, timeout: Duration) -> Result<Vec<Alarm>, ProbeError> {
        within(timeout, async {
            let mut client = self.client(timeout).await?;
            let response = client
                .alarm(AlarmAction::Get, AlarmType::None, None)
                .await
                .map_err(probe_error)?;
            Ok(response
                .alarms()
                .iter()
                .filter_map(|alarm| {
                    let kind = match alarm.alarm() {
                        AlarmType::Nospace => AlarmKind::NoSpace,
                        AlarmType::Corrupt => AlarmKind::Corrupt,
                        AlarmType::None => return None,
                    };
                    Some(Alarm {
                        member_id: MemberId(alarm.member_id()),
                        alarm: kind,
                    })
                })
                .collect())
        })
        .await
    }

    /// MemberList, as this member knows it.
    pub async fn member_list(&self, timeout: Duration) -> Result<MemberListing, ProbeError> {
        within(timeout, async {
            let mut client = self.client(timeout).await?;
            let response = client.member_list().await.map_err(probe_error)?;
            Ok(MemberListing {
                cluster_id: response.header().map_or(0, |h| h.cluster_id()),
                members: response
                    .members()
                    .iter()
                    .map(|m| ListedMember {
                        id: MemberId(m.id()),
                        name: m.name().to_string(),
                        client_urls: m.client_urls().to_vec(),
                        is_learner: m.is_learner(),
                    })
                    .collect(),
            })
        })
        .await
    }
}

/// Runs `call`, turning an expired `timeout` into [`ProbeError::Timeout`].
pub async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(ProbeError::Timeout(timeout)))
}

/// Sorts an etcd-client error into what an operator needs to know: could we reach the
/// member, did it reject our credentials, or did it refuse the request.
pub fn probe_error(err: etcd_client::Error) -> ProbeError {
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            let message = with_sources(status.message(), &status);
            match status.code() {
                tonic::Code::Unavailable => ProbeError::Unreachable(message),
                // tonic reports a connection that broke mid-call as Unknown or Cancelled, with
                // the transport error as the source.
                tonic::Code::Unknown | tonic::Code::Cancelled if status.source().is_some() => {
                    ProbeError::Unreachable(message)
                }
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    ProbeError::Auth(message)
                }
                // etcd answers a wrong password with InvalidArgument.
                tonic::Code::InvalidArgument if message.contains("authentication failed") => {
                    ProbeError::Auth(message)
                }
                code => ProbeError::Rpc(format!("{code:?}: {message}")),
            }
        }
        etcd_client::Error::TransportError(err) => {
            ProbeError::Unreachable(with_sources(&err.to_string(), &err))
        }
        other => ProbeError::Rpc(other.to_string()),
    }
}

/// `message: cause: root cause`, skipping causes that repeat what is already said.
fn with_sources(message: &str, err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = message.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
