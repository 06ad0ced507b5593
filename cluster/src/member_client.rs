//! One etcd client per member endpoint.
//!
//! etcd-client's `Client::connect` balances requests across all the endpoints it is given,
//! so a client built from several endpoints cannot ask one particular member. Every member
//! here gets its own client, whose requests all go to that member over one connection (see
//! [`crate::transport`]), kept across collections or closed after each as its
//! [`ClusterProbe`](crate::collect::ClusterProbe) decides.

use std::error::Error as _;
use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use std::time::Duration;

use etcd_client::{
    AlarmAction, AlarmType, Client, ClusterClient, ConnectOptions, MaintenanceClient,
    StatusResponse,
};
use tokio::sync::OnceCell;

use crate::config::{ClusterConfig, Credentials};
use crate::error::Result;
use crate::model::{Alarm, AlarmKind, MemberId, ProbeError};
use crate::tls::CertificateRequests;
use crate::transport::{GrpcService, Transport};

/// A member as MemberList describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMember {
    pub id: MemberId,
    /// Empty for a member that was added but has not started yet.
    pub name: String,
    pub client_urls: Vec<String>,
    /// Where the other members reach it: what a restore of the cluster needs.
    pub peer_urls: Vec<String>,
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
    service: GrpcService,
    credentials: Option<Credentials>,
    cluster: String,
    /// Set when TLS is used without a client certificate: see [`CertificateRequests`].
    certificate_requests: Option<Arc<CertificateRequests>>,
    /// What status collection uses, kept between calls. Only these two of etcd-client's
    /// eight service clients are kept: with hundreds of members the rest added up.
    status_clients: OnceCell<StatusClients>,
    /// The full client, for the remediator's calls, made on first use and kept. Boxed: a
    /// `Client` is kilobytes, and the exporter, which never makes one, keeps hundreds of
    /// members.
    full_client: OnceCell<Box<Client>>,
}

#[derive(Clone)]
struct StatusClients {
    maintenance: MaintenanceClient,
    cluster: ClusterClient,
}

impl std::fmt::Debug for MemberClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl MemberClient {
    /// A client for `endpoint` on its own connection pool, for one-off use. Clients of the
    /// same cluster should share a [`Transport`] through [`MemberClient::on`].
    pub fn new(endpoint: &str, cluster: &ClusterConfig) -> Result<Self> {
        Self::on(&Transport::new(cluster)?, endpoint, cluster)
    }

    /// A client for `endpoint` on the cluster's shared `transport`. Nothing is sent until
    /// the first call.
    pub fn on(transport: &Transport, endpoint: &str, cluster: &ClusterConfig) -> Result<Self> {
        Ok(MemberClient {
            endpoint: endpoint.to_string(),
            service: transport.service(endpoint)?,
            credentials: cluster.credentials.clone(),
            cluster: cluster.name.to_string(),
            certificate_requests: cluster
                .tls
                .as_ref()
                .and_then(|tls| tls.certificate_requests.clone()),
            status_clients: OnceCell::new(),
            full_client: OnceCell::new(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A full etcd client for this member (every service), authenticated when the cluster
    /// has credentials: made on first use and kept (a failed attempt is not). Status
    /// collection keeps its own two service clients.
    pub async fn client(&self, timeout: Duration) -> Result<Client, ProbeError> {
        let connect = self
            .full_client
            .get_or_try_init(|| async { Box::pin(self.connect()).await.map(Box::new) });
        self.within(timeout, connect)
            .await
            .map(|client| Client::clone(client))
    }

    /// [`within`], and a failure that followed the member's request for a client
    /// certificate, with none configured, says so. Not an `async fn`: that would keep `call`
    /// twice in its state, and these futures are large.
    fn within<'a, T: 'a>(
        &'a self,
        timeout: Duration,
        call: impl Future<Output = Result<T, ProbeError>> + 'a,
    ) -> impl Future<Output = Result<T, ProbeError>> + 'a {
        let asked_before = self.certificate_requests.as_ref().map(|r| r.count());
        within(timeout, call).map(move |result| {
            let asked_now = self.certificate_requests.as_ref().map(|r| r.count());
            match result {
                Err(ProbeError::Unreachable(_) | ProbeError::Rpc(_) | ProbeError::Auth(_))
                    if asked_now > asked_before =>
                {
                    Err(ProbeError::Auth(format!(
                        "the member requires a client certificate (etcd runs with \
                         --client-cert-auth) and none is configured: set tls.cert_file and \
                         tls.key_file for cluster {}",
                        self.cluster
                    )))
                }
                other => other,
            }
        })
    }

    async fn connect(&self) -> Result<Client, ProbeError> {
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
            etcd_client::Channel::Custom(self.service.clone()),
            Some(options),
        )
        .await
        .map_err(probe_error)
    }

    /// The clients status collection uses, connected (and authenticated) on first use. A
    /// failed attempt is not cached: the next call tries again.
    async fn status_clients(&self, timeout: Duration) -> Result<StatusClients, ProbeError> {
        let connect = self.status_clients.get_or_try_init(|| async {
            // Boxed: connecting is a large state machine, needed once per member.
            let client = Box::pin(self.connect()).await?;
            Ok(StatusClients {
                maintenance: client.maintenance_client(),
                cluster: client.cluster_client(),
            })
        });
        within(timeout, connect).await.cloned()
    }

    /// Maintenance Status of this member.
    pub async fn status(&self, timeout: Duration) -> Result<StatusResponse, ProbeError> {
        self.within(timeout, async {
            let mut maintenance = self.status_clients(timeout).await?.maintenance;
            maintenance.status().await.map_err(probe_error)
        })
        .await
    }

    /// Every active alarm in the cluster, as this member knows them.
    pub async fn alarms(&self, timeout: Duration) -> Result<Vec<Alarm>, ProbeError> {
        self.within(timeout, async {
            let mut maintenance = self.status_clients(timeout).await?.maintenance;
            let response = maintenance
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
        self.within(timeout, async {
            let mut cluster = self.status_clients(timeout).await?.cluster;
            let response = cluster.member_list().await.map_err(probe_error)?;
            Ok(MemberListing {
                cluster_id: response.header().map_or(0, |h| h.cluster_id()),
                members: response
                    .members()
                    .iter()
                    .map(|m| ListedMember {
                        id: MemberId(m.id()),
                        name: m.name().to_string(),
                        client_urls: m.client_urls().to_vec(),
                        peer_urls: m.peer_urls().to_vec(),
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
pub fn with_sources(message: &str, err: &(dyn std::error::Error + 'static)) -> String {
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
