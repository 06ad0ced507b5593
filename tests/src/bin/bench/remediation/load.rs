//! The clients of the availability benchmark: a writer pinned to each member, a writer given
//! every endpoint (etcd-client balances over them, as kube-apiserver's client does), one that
//! also follows each member's gRPC health ([`super::health_checked`]), and a lease kept alive
//! through each member. Every request is kept with when it was sent, how
//! long it took and whether it failed. Bounded in count and time.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use etcd_client::Client;
use etcdmedic_tests::load::{Failure, Pace, PutLoad};
use etcdmedic_tests::EtcdCluster;

use super::health_checked::HealthChecked;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PUT_EVERY: Duration = Duration::from_millis(20);
/// Longer than etcd's 7 s request timeout, so a dropped proposal shows as etcd's own error.
const PUT_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_PUTS_PER_CLIENT: usize = 100_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(900);
const KEEPALIVE_EVERY: Duration = Duration::from_millis(100);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(15);
pub const LEASE_TTL_SECONDS: i64 = 10;

/// One request and what became of it.
#[derive(Debug, Clone)]
pub struct Request {
    /// "put via m1", "put via all endpoints", "lease via m2".
    pub client: String,
    /// The member it went through; `None` for the all-endpoints clients.
    pub member: Option<usize>,
    /// Sent by the all-endpoints client that follows the members' gRPC health.
    pub health_checked: bool,
    pub at: SystemTime,
    pub took: Duration,
    pub error: Option<String>,
}

pub struct Load {
    stop: CancellationToken,
    writers: PutLoad,
    all_endpoints: usize,
    names: Vec<String>,
    keepalives: Vec<JoinHandle<Vec<Request>>>,
    health_checked: HealthChecked,
}

impl Load {
    pub async fn start(cluster: &EtcdCluster) -> Result<Load> {
        let stop = CancellationToken::new();
        let deadline = Instant::now() + MAX_LOAD_TIME;
        let names: Vec<String> = (0..cluster.len())
            .map(|i| cluster.name(i).to_string())
            .collect();
        let mut writing = Vec::new();
        let mut keepalives = Vec::new();
        for (index, name) in names.iter().enumerate() {
            writing.push((index, cluster.client(index).await?));
            let client = cluster.client(index).await?;
            let label = format!("lease via {name}");
            keepalives.push(tokio::spawn(keepalive_loop(
                label,
                index,
                client,
                stop.clone(),
                deadline,
            )));
        }
        let all_endpoints = names.len();
        writing.push((
            all_endpoints,
            Client::connect(cluster.endpoints(), None).await?,
        ));
        let pace = Pace {
            every: PUT_EVERY,
            timeout: PUT_TIMEOUT,
            max_puts: MAX_PUTS_PER_CLIENT,
            max_time: MAX_LOAD_TIME,
        };
        let health_checked = HealthChecked::start(cluster, pace, deadline, stop.clone()).await?;
        let writers = PutLoad::start(writing, pace);
        Ok(Load {
            stop,
            writers,
            all_endpoints,
            names,
            keepalives,
            health_checked,
        })
    }

    /// Stops every client; their requests, in no particular order.
    pub async fn stop(self) -> Result<Vec<Request>> {
        self.stop.cancel();
        let mut requests = Vec::new();
        for writer in self.writers.stop().await? {
            let (client, member) = match writer.index {
                i if i == self.all_endpoints => ("put via all endpoints".to_string(), None),
                i => (format!("put via {}", self.names[i]), Some(i)),
            };
            requests.extend(writer.samples.iter().map(|(at, took)| Request {
                client: client.clone(),
                member,
                health_checked: false,
                at: *at,
                took: *took,
                error: None,
            }));
            requests.extend(writer.failures.iter().map(|f: &Failure| Request {
                client: client.clone(),
                member,
                health_checked: false,
                at: f.at,
                took: f.took,
                error: Some(f.error.clone()),
            }));
        }
        for keepalive in self.keepalives {
            requests.extend(keepalive.await?);
        }
        requests.extend(self.health_checked.stop().await?);
        Ok(requests)
    }
}

/// Keeps one lease alive through member `index`. A failed keep-alive is recorded and the
/// stream opened again, so one failure does not end the measurement.
async fn keepalive_loop(
    client_label: String,
    index: usize,
    mut client: Client,
    stop: CancellationToken,
    deadline: Instant,
) -> Vec<Request> {
    let mut requests = Vec::new();
    let mut record = |at: SystemTime, took: Duration, error: Option<String>| {
        requests.push(Request {
            client: client_label.clone(),
            member: Some(index),
            health_checked: false,
            at,
            took,
            error,
        })
    };
    let lease = match client.lease_grant(LEASE_TTL_SECONDS, None).await {
        Ok(lease) => lease.id(),
        Err(err) => {
            record(
                SystemTime::now(),
                Duration::ZERO,
                Some(format!("lease grant: {err}")),
            );
            return requests;
        }
    };
    let mut stream = None;
    while !stop.is_cancelled() && Instant::now() < deadline {
        let (at, sent) = (SystemTime::now(), Instant::now());
        if stream.is_none() {
            match client.lease_keep_alive(lease).await {
                Ok(opened) => stream = Some(opened),
                Err(err) => {
                    record(
                        at,
                        sent.elapsed(),
                        Some(format!("keep-alive stream: {err}")),
                    );
                    tokio::time::sleep(KEEPALIVE_EVERY).await;
                    continue;
                }
            }
        }
        let Some((keeper, answers)) = stream.as_mut() else {
            continue;
        };
        let answer = async {
            keeper.keep_alive().await?;
            answers.message().await
        };
        let error = match tokio::time::timeout(KEEPALIVE_TIMEOUT, answer).await {
            Ok(Ok(Some(response))) if response.ttl() > 0 => None,
            Ok(Ok(Some(_))) => Some("the lease expired".to_string()),
            Ok(Ok(None)) => Some("the keep-alive stream ended".to_string()),
            Ok(Err(err)) => Some(format!("keep-alive: {err}")),
            Err(_) => Some(format!("no keep-alive answer within {KEEPALIVE_TIMEOUT:?}")),
        };
        let expired = error.as_deref() == Some("the lease expired");
        if error.is_some() {
            stream = None;
        }
        record(at, sent.elapsed(), error);
        if expired {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(KEEPALIVE_EVERY) => {}
            () = stop.cancelled() => break,
        }
    }
    let _ = client.lease_revoke(lease).await;
    requests
}

pub fn describe() -> String {
    format!(
        "one writer pinned to each member's endpoint, one given all three endpoints, and one \
         given all three that follows each member's gRPC health (`grpc.health.v1.Health/Watch`, \
         as a gRPC client with `healthCheckConfig` does) and sends each put to the next member \
         that says `SERVING`, each putting a 256-byte value every {} ms (timeout {} s, longer than etcd's 7 s request \
         timeout so a dropped proposal shows as etcd's own error), and one lease (TTL \
         {LEASE_TTL_SECONDS} s) kept alive through each member every {} ms",
        PUT_EVERY.as_millis(),
        PUT_TIMEOUT.as_secs(),
        KEEPALIVE_EVERY.as_millis()
    )
}
