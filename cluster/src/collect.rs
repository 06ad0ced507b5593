//! Status collection for one cluster: Status from every member, MemberList (and, for the
//! remediator, AlarmList) from whichever member answers first, all at once, each call with
//! its own timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::StatusResponse;
use futures::future::join_all;

use crate::alarm_source::{alarms_in_status_errors, AlarmSource};
use crate::config::{normalize_endpoint, ClusterConfig};
use crate::error::Result;
use crate::hedge::first_success;
use crate::member_client::{ListedMember, MemberClient, MemberListing};
use crate::model::{
    Alarm, ClusterStatus, Downgrade, EndpointStatus, MemberId, MemberStatus, Membership, ProbeError,
};
use crate::quota::{MemberFacts, MetricsCache};
use crate::transport::Transport;

/// Ask the next member for MemberList (or AlarmList) when the current one has been silent this
/// long (or sooner, as a fraction of a short timeout).
const HEDGE_AFTER: Duration = Duration::from_millis(200);
/// A call is never given less than this, even right at a deadline: it reports a timeout
/// instead of not being made.
const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(1);
/// Collects [`ClusterStatus`] for one configured cluster, keeping one client per member
/// endpoint and the last membership it saw between collections.
#[derive(Debug)]
pub struct ClusterProbe {
    config: ClusterConfig,
    metrics: MetricsCache,
    alarm_source: AlarmSource,
    connections: Connections,
    state: Mutex<ProbeState>,
}

/// Whether a probe keeps its connections to the members between collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connections {
    /// Kept: a call costs one round trip. For the remediator's few clusters, and for clusters
    /// with a username and password, whose token (an Authenticate, itself a raft proposal, and
    /// a bcrypt check on the member) must not be asked for again on every scrape.
    Kept,
    /// Opened by a collection and closed at its end: an HTTP/2 connection holds about 40 KB
    /// in hyper and h2 (buffers, queues, tables) whatever it carries, so a monitor of
    /// thousands of members that kept them all would hold all of that between scrapes.
    /// Reconnecting costs a TCP (and TLS, resumed where the member allows) handshake per
    /// member per scrape.
    PerCollection,
}

#[derive(Debug, Default)]
struct ProbeState {
    /// The connections of the clients below; `None` once a collection closed them.
    transport: Option<Transport>,
    clients: HashMap<String, Arc<MemberClient>>,
    /// The last answer to MemberList; drives which endpoints are probed.
    members: Vec<KnownMember>,
    /// Endpoint that answered the last MemberList: asked first next time.
    preferred: Option<String>,
    /// Whether each endpoint answered last time, to log changes rather than every failure.
    reachable: HashMap<String, bool>,
}

/// A member from MemberList, with the client URL chosen to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KnownMember {
    id: MemberId,
    name: String,
    endpoint: Option<String>,
    peer_urls: Vec<String>,
    is_learner: bool,
}

struct Probed {
    endpoint: String,
    latency: Duration,
    result: Result<EndpointStatus, ProbeError>,
}

impl ClusterProbe {
    /// A probe for monitoring: alarms from Status, so nothing is written to raft, and
    /// connections kept between collections when `keep_connections` (or the cluster
    /// authenticates with a password), else closed after each.
    pub fn for_monitoring(config: ClusterConfig, keep_connections: bool) -> Result<Self> {
        let connections = if keep_connections || config.credentials.is_some() {
            Connections::Kept
        } else {
            Connections::PerCollection
        };
        Self::new(config, AlarmSource::Status, connections)
    }

    /// A probe for the remediator, which acts on what it reads: alarms from AlarmList, the
    /// authoritative list, and connections kept for the whole run.
    pub fn for_remediation(config: ClusterConfig) -> Result<Self> {
        Self::new(config, AlarmSource::AlarmList, Connections::Kept)
    }

    fn new(
        config: ClusterConfig,
        alarm_source: AlarmSource,
        connections: Connections,
    ) -> Result<Self> {
        // Made now, so that a TLS setting that cannot work is an error at start-up.
        let transport = Transport::new(&config)?;
        Ok(ClusterProbe {
            metrics: MetricsCache::new(&config)?,
            alarm_source,
            connections,
            config,
            state: Mutex::new(ProbeState {
                transport: Some(transport),
                ..ProbeState::default()
            }),
        })
    }

    /// Whether the connections to the members outlive a collection.
    pub fn keeps_connections(&self) -> bool {
        self.connections == Connections::Kept
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The client for one endpoint, created on first use and kept.
    pub fn client(&self, endpoint: &str) -> Result<Arc<MemberClient>> {
        let mut state = self.lock();
        if let Some(client) = state.clients.get(endpoint) {
            return Ok(client.clone());
        }
        let transport = match &state.transport {
            Some(transport) => transport.clone(),
            None => {
                let transport = Transport::new(&self.config)?;
                state.transport = Some(transport.clone());
                transport
            }
        };
        let client = Arc::new(MemberClient::on(&transport, endpoint, &self.config)?);
        state.clients.insert(endpoint.to_string(), client.clone());
        Ok(client)
    }

    /// Status of the member at `endpoint` alone.
    pub async fn member_status(
        &self,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<EndpointStatus, ProbeError> {
        self.status_at(endpoint, timeout).await.1
    }

    /// Status of the member at `endpoint` with its quota and defragmentation gate, and how long
    /// Status itself took.
    async fn status_at(
        &self,
        endpoint: &str,
        timeout: Duration,
    ) -> (Duration, Result<EndpointStatus, ProbeError>) {
        let started = Instant::now();
        let response = match self.client(endpoint) {
            Ok(client) => client.status(timeout).await,
            Err(err) => Err(ProbeError::Rpc(err.to_string())),
        };
        let latency = started.elapsed();
        let result = match response {
            Ok(response) => {
                let budget = timeout.saturating_sub(latency).max(MIN_CALL_TIMEOUT);
                let facts = self
                    .metrics
                    .facts_of(&self.config.name, endpoint, &response, budget)
                    .await;
                Ok(endpoint_status(&response, facts))
            }
            Err(err) => {
                // Whatever stopped it answering may be a restart with another quota.
                self.metrics.forget(endpoint);
                Err(err)
            }
        };
        (latency, result)
    }

    /// Collects the cluster's status; every call to a member may take up to `timeout`.
    pub async fn collect(&self, timeout: Duration) -> ClusterStatus {
        self.collect_until(timeout, None).await
    }

    /// Like [`collect`](Self::collect), and the whole collection ends by `deadline` (a
    /// scraper's timeout): calls still running then count as timed out.
    pub async fn collect_until(
        &self,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> ClusterStatus {
        let started = Instant::now();
        let call_timeout = || match deadline {
            Some(deadline) => timeout
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(MIN_CALL_TIMEOUT),
            None => timeout,
        };
        let (known, list_order) = self.plan();
        // Before the first MemberList answer nothing is known but the configured endpoints:
        // ask them for Status at once rather than after MemberList, which etcd 3.5 answers
        // only once there is a leader and so can take most of the timeout.
        let targets = if known.is_empty() {
            self.config.endpoints.clone()
        } else {
            known
        };

        let list_clients = self.clients_for(&list_order);
        let first_timeout = call_timeout();
        let hedge_after = HEDGE_AFTER.min(first_timeout / 4);
        let alarm_list = async {
            match self.alarm_source {
                AlarmSource::AlarmList => Some(
                    first_success(&list_clients, hedge_after, |c| c.alarms(first_timeout))
                        .await
                        .map(|(_, alarms)| alarms),
                ),
                AlarmSource::Status => None,
            }
        };
        let (mut probed, listing, alarm_list) = tokio::join!(
            self.probe_all(&targets, first_timeout),
            first_success(&list_clients, hedge_after, |c| c.member_list(first_timeout)),
            alarm_list,
        );

        let listing = listing.map(|(index, listing)| {
            self.remember(&listing, list_clients[index].endpoint());
            listing
        });
        let mut unlisted = Vec::new();
        if listing.is_ok() && self.config.discover_members {
            // One row per member, at the endpoint chosen for it. A configured endpoint that is
            // not a member's own served discovery if it answered (a load balancer, say); if it
            // did not, it is a typo or a removed member, and stays visible as such.
            let members = self.member_endpoints();
            let (own, others): (Vec<Probed>, Vec<Probed>) = probed
                .into_iter()
                .partition(|p| members.contains(&p.endpoint));
            probed = own;
            unlisted = others
                .into_iter()
                .filter(|p| p.result.is_err() && self.config.endpoints.contains(&p.endpoint))
                .collect();
            // Members that appeared since the last collection (or on the first one, beyond
            // the configured endpoints) are asked now rather than one scrape later.
            let late: Vec<String> = members
                .into_iter()
                .filter(|endpoint| !probed.iter().any(|p| &p.endpoint == endpoint))
                .collect();
            if !late.is_empty() {
                probed.extend(self.probe_all(&late, call_timeout()).await);
            }
        }

        let alarms = alarm_list.unwrap_or_else(|| alarms_from_statuses(&probed));
        if self.connections == Connections::PerCollection {
            // The connections close once the last client of this collection is dropped.
            let mut state = self.lock();
            state.clients.clear();
            state.transport = None;
        }
        self.assemble(probed, unlisted, listing, alarms, started.elapsed())
    }

    /// What to report when no collection could run or end in time: every member that would
    /// have been asked, timed out after `waited`.
    pub fn unanswered(&self, waited: Duration) -> ClusterStatus {
        let (targets, _) = self.plan();
        let targets = if targets.is_empty() {
            self.config.endpoints.clone()
        } else {
            targets
        };
        let timeout = ProbeError::Timeout(waited);
        let probed = targets
            .into_iter()
            .map(|endpoint| Probed {
                endpoint,
                latency: waited,
                result: Err(timeout.clone()),
            })
            .collect();
        self.assemble(
            probed,
            Vec::new(),
            Err(timeout.clone()),
            Err(timeout),
            waited,
        )
    }

    /// The client URLs chosen for the members MemberList reported last.
    fn member_endpoints(&self) -> Vec<String> {
        self.lock()
            .members
            .iter()
            .filter_map(|m| m.endpoint.clone())
            .collect()
    }

    /// Which endpoints to ask for Status, and in which order to ask for MemberList.
    fn plan(&self) -> (Vec<String>, Vec<String>) {
        let state = self.lock();
        let seeds = &self.config.endpoints;
        let targets: Vec<String> = if self.config.discover_members {
            let mut targets: Vec<String> = state
                .members
                .iter()
                .filter_map(|m| m.endpoint.clone())
                .collect();
            // Configured endpoints that are no member's own are asked too, so that one that
            // never answers (a typo) keeps its `up 0` row.
            if !targets.is_empty() {
                for seed in seeds {
                    if !targets.contains(seed) {
                        targets.push(seed.clone());
                    }
                }
            }
            targets
        } else {
            seeds.clone()
        };
        let mut list_order: Vec<String> = Vec::with_capacity(seeds.len() + targets.len());
        for endpoint in state.preferred.iter().chain(seeds).chain(&targets) {
            if !list_order.contains(endpoint) {
                list_order.push(endpoint.clone());
            }
        }
        (targets, list_order)
    }

    fn clients_for(&self, endpoints: &[String]) -> Vec<Arc<MemberClient>> {
        endpoints
            .iter()
            .filter_map(|endpoint| match self.client(endpoint) {
                Ok(client) => Some(client),
                Err(err) => {
                    tracing::warn!(cluster = %self.config.name, %endpoint, error = %err, "skipping endpoint");
                    None
                }
            })
            .collect()
    }

    async fn probe_all(&self, endpoints: &[String], timeout: Duration) -> Vec<Probed> {
        join_all(endpoints.iter().map(|endpoint| async move {
            let (latency, result) = self.status_at(endpoint, timeout).await;
            Probed {
                endpoint: endpoint.clone(),
                latency,
                result,
            }
        }))
        .await
    }

    /// Records a new MemberList answer and forgets members that left.
    fn remember(&self, listing: &MemberListing, answered_by: &str) {
        let members: Vec<KnownMember> = listing
            .members
            .iter()
            .map(|m| KnownMember {
                id: m.id,
                name: m.name.clone(),
                endpoint: choose_endpoint(m, &self.config.endpoints),
                peer_urls: m.peer_urls.clone(),
                is_learner: m.is_learner,
            })
            .collect();
        let mut state = self.lock();
        if state.members != members {
            let summary: Vec<_> = members
                .iter()
                .map(|m| (m.name.as_str(), m.endpoint.as_deref()))
                .collect();
            if state.members.is_empty() {
                tracing::debug!(cluster = %self.config.name, members = ?summary, "members discovered");
            } else {
                tracing::info!(cluster = %self.config.name, members = ?summary, "membership changed");
            }
            let keep: Vec<&String> = members
                .iter()
                .filter_map(|m| m.endpoint.as_ref())
                .chain(&self.config.endpoints)
                .collect();
            state.clients.retain(|endpoint, _| keep.contains(&endpoint));
            state
                .reachable
                .retain(|endpoint, _| keep.contains(&endpoint));
            self.metrics
                .retain(|endpoint| keep.iter().any(|k| *k == endpoint));
            state.members = members;
        }
        state.preferred = Some(answered_by.to_string());
    }

    fn assemble(
        &self,
        probed: Vec<Probed>,
        unlisted: Vec<Probed>,
        listing: Result<MemberListing, ProbeError>,
        alarms: Result<Vec<Alarm>, ProbeError>,
        duration: Duration,
    ) -> ClusterStatus {
        let known = self.lock().members.clone();
        let mut members: Vec<MemberStatus> = probed
            .into_iter()
            .map(|probed| {
                let status = probed.result;
                let answered_as = status.as_ref().ok().map(|s| s.member_id);
                let listed = known.iter().find(|m| match answered_as {
                    Some(id) => m.id == id,
                    None => m.endpoint.as_deref() == Some(probed.endpoint.as_str()),
                });
                let id = answered_as.or(listed.map(|m| m.id));
                let is_learner = listed
                    .map(|m| m.is_learner)
                    .unwrap_or_else(|| status.as_ref().map(|s| s.is_learner).unwrap_or(false));
                let member_alarms = match (&alarms, id) {
                    (Ok(alarms), Some(id)) => {
                        let mut kinds: Vec<_> = alarms
                            .iter()
                            .filter(|a| a.member_id == id)
                            .map(|a| a.alarm)
                            .collect();
                        kinds.sort();
                        kinds.dedup();
                        kinds
                    }
                    _ => Vec::new(),
                };
                MemberStatus {
                    endpoint: probed.endpoint,
                    id,
                    name: listed.map(|m| m.name.clone()).filter(|n| !n.is_empty()),
                    is_learner,
                    peer_urls: listed.map(|m| m.peer_urls.clone()).unwrap_or_default(),
                    alarms: member_alarms,
                    probe_latency: probed.latency,
                    status,
                }
            })
            .collect();
        members
            .sort_by(|a, b| (a.display_name(), &a.endpoint).cmp(&(b.display_name(), &b.endpoint)));
        self.log_reachability_changes(&members);
        let unlisted_endpoints: Vec<MemberStatus> = unlisted
            .into_iter()
            .map(|probed| MemberStatus {
                endpoint: probed.endpoint,
                id: None,
                name: None,
                is_learner: false,
                peer_urls: Vec::new(),
                alarms: Vec::new(),
                probe_latency: probed.latency,
                status: probed.result,
            })
            .collect();
        self.log_reachability_changes(&unlisted_endpoints);

        let membership = listing.map(|listing| Membership {
            cluster_id: listing.cluster_id,
            voting_members: listing.members.iter().filter(|m| !m.is_learner).count(),
            learners: listing.members.iter().filter(|m| m.is_learner).count(),
        });

        ClusterStatus {
            cluster: self.config.name.to_string(),
            members,
            unlisted_endpoints,
            membership,
            alarms,
            duration,
        }
    }

    fn log_reachability_changes(&self, members: &[MemberStatus]) {
        let mut state = self.lock();
        for member in members {
            let answered = member.status.is_ok();
            let before = state.reachable.insert(member.endpoint.clone(), answered);
            match (&member.status, before) {
                (Err(err), Some(true) | None) => tracing::warn!(
                    cluster = %self.config.name,
                    member = %member.display_name(),
                    endpoint = %member.endpoint,
                    error = %err,
                    "member does not answer Status"
                ),
                (Ok(_), Some(false)) => tracing::info!(
                    cluster = %self.config.name,
                    member = %member.display_name(),
                    endpoint = %member.endpoint,
                    "member answers Status again"
                ),
                _ => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        // The state is a cache: a panic elsewhere cannot leave it inconsistent in a way
        // that matters more than stopping every later scrape would.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Picks the client URL to reach `member` at: one of the configured endpoints if the member
/// advertises it, else the first URL with the configured scheme, else the first URL.
fn choose_endpoint(member: &ListedMember, seeds: &[String]) -> Option<String> {
    let urls: Vec<String> = member
        .client_urls
        .iter()
        .filter_map(|url| normalize_endpoint(url).ok())
        .collect();
    let scheme = seeds
        .first()
        .and_then(|s| s.split_once("://"))
        .map(|(scheme, _)| scheme);
    urls.iter()
        .find(|url| seeds.contains(url))
        .or_else(|| {
            urls.iter()
                .find(|url| scheme.is_some_and(|scheme| url.starts_with(&format!("{scheme}://"))))
        })
        .or_else(|| urls.first())
        .cloned()
}

/// Every alarm the members that answered Status list, once each; unknown when none answered.
fn alarms_from_statuses(probed: &[Probed]) -> Result<Vec<Alarm>, ProbeError> {
    let mut answered = probed
        .iter()
        .filter_map(|p| p.result.as_ref().ok())
        .peekable();
    if answered.peek().is_none() {
        return Err(probed
            .iter()
            .find_map(|p| p.result.clone().err())
            .unwrap_or_else(|| {
                ProbeError::Unreachable("no member to ask for its alarms".to_string())
            }));
    }
    let mut alarms: Vec<Alarm> = Vec::new();
    for alarm in answered.flat_map(|status| alarms_in_status_errors(&status.errors)) {
        if !alarms.contains(&alarm) {
            alarms.push(alarm);
        }
    }
    Ok(alarms)
}

fn endpoint_status(response: &StatusResponse, facts: MemberFacts) -> EndpointStatus {
    let header = response.header();
    EndpointStatus {
        member_id: MemberId(header.map_or(0, |h| h.member_id())),
        cluster_id: header.map_or(0, |h| h.cluster_id()),
        revision: header.map_or(0, |h| h.revision()),
        version: response.version().to_string(),
        storage_version: Some(response.storage_version().to_string()).filter(|v| !v.is_empty()),
        upgrade_advice: crate::upgrade::advice(response.version()),
        // Before 3.6 the field does not exist; from 3.6 a member always sends it.
        downgrade: response.downgrade_info().and_then(|info| {
            (!response.storage_version().is_empty()).then(|| Downgrade {
                enabled: info.enabled(),
                target_version: info.target_version().to_string(),
            })
        }),
        db_size_bytes: u64::try_from(response.db_size()).unwrap_or(0),
        db_size_in_use_bytes: u64::try_from(response.raft_used_db_size()).unwrap_or(0),
        quota_bytes: facts.quota.bytes,
        quota_source: facts.quota.source,
        stop_grpc_on_defrag: facts.stop_grpc_on_defrag,
        leader: Some(response.leader())
            .filter(|&leader| leader != 0)
            .map(MemberId),
        raft_term: response.raft_term(),
        raft_index: response.raft_index(),
        raft_applied_index: response.raft_applied_index(),
        is_learner: response.is_learner(),
        errors: response.errors().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(urls: &[&str]) -> ListedMember {
        ListedMember {
            id: MemberId(1),
            name: "m".into(),
            client_urls: urls.iter().map(|u| u.to_string()).collect(),
            peer_urls: Vec::new(),
            is_learner: false,
        }
    }

    #[test]
    fn a_member_is_reached_at_a_configured_endpoint_when_it_advertises_one() {
        let seeds = vec!["https://10.0.0.2:2379".to_string()];
        let member = listed(&["https://127.0.0.1:2379", "https://10.0.0.2:2379"]);
        assert_eq!(
            choose_endpoint(&member, &seeds).as_deref(),
            Some("https://10.0.0.2:2379")
        );
    }

    #[test]
    fn a_member_is_reached_with_the_configured_scheme_before_any_other() {
        let seeds = vec!["https://10.0.0.1:2379".to_string()];
        let member = listed(&["http://127.0.0.1:2379", "https://10.0.0.3:2379/"]);
        assert_eq!(
            choose_endpoint(&member, &seeds).as_deref(),
            Some("https://10.0.0.3:2379")
        );
    }

    #[test]
    fn an_unstarted_member_has_no_endpoint() {
        assert_eq!(choose_endpoint(&listed(&[]), &[]), None);
    }
}
