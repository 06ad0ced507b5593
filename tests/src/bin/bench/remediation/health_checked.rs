//! A writer given every endpoint that skips the members whose gRPC health service says
//! `NOT_SERVING`, as a gRPC client with round-robin balancing and client-side health checking
//! (`healthCheckConfig`, gRPC's A17) does: it watches each endpoint's health
//! (`grpc.health.v1.Health/Watch`, service `""`, the one etcd's `StopGRPCServiceOnDefrag` turns
//! off) and sends each put to the next endpoint that serves. Neither etcd's Go client nor
//! etcd-client does this by default; it is what the gate is for. Bounded in count and time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use etcd_client::Client;
use etcdmedic_tests::load::Pace;
use etcdmedic_tests::EtcdCluster;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::load::Request;

pub const CLIENT: &str = "put via all endpoints, health-checked";
/// How soon a broken health stream is opened again.
const REWATCH_AFTER: Duration = Duration::from_millis(100);

pub struct HealthChecked {
    writer: JoinHandle<Vec<Request>>,
    watchers: Vec<JoinHandle<()>>,
}

impl HealthChecked {
    /// Paced as the other writers (`pace`), ending by `deadline` whatever happens.
    pub async fn start(
        cluster: &EtcdCluster,
        pace: Pace,
        deadline: Instant,
        stop: CancellationToken,
    ) -> Result<HealthChecked> {
        let mut clients = Vec::new();
        let mut serving = Vec::new();
        let mut watchers = Vec::new();
        for index in 0..cluster.len() {
            clients.push(cluster.client(index).await?);
            let flag = Arc::new(AtomicBool::new(true));
            let channel = tonic::transport::Endpoint::from_shared(cluster.endpoint(index))
                .context("an endpoint URL")?
                .connect_lazy();
            watchers.push(tokio::spawn(watch(
                HealthClient::new(channel),
                flag.clone(),
                stop.clone(),
                deadline,
            )));
            serving.push(flag);
        }
        let writer = tokio::spawn(put_loop(clients, serving, pace, deadline, stop));
        Ok(HealthChecked { writer, watchers })
    }

    /// Its requests, once the load's stop token is cancelled.
    pub async fn stop(self) -> Result<Vec<Request>> {
        let requests = self
            .writer
            .await
            .context("the health-checked writer panicked")?;
        for watcher in self.watchers {
            watcher.await.context("a health watcher panicked")?;
        }
        Ok(requests)
    }
}

/// Keeps `serving` to what the endpoint's health service says. A server without the service
/// counts as serving, as in gRPC's client; a broken stream as not serving until it is back.
async fn watch(
    mut health: HealthClient<tonic::transport::Channel>,
    serving: Arc<AtomicBool>,
    stop: CancellationToken,
    deadline: Instant,
) {
    while !stop.is_cancelled() && Instant::now() < deadline {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let opened = tokio::select! {
            opened = health.watch(request) => opened,
            () = stop.cancelled() => return,
        };
        match opened {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    let next = tokio::select! {
                        next = stream.message() => next,
                        () = stop.cancelled() => return,
                    };
                    match next {
                        Ok(Some(answer)) => serving.store(
                            answer.status == ServingStatus::Serving as i32,
                            Ordering::SeqCst,
                        ),
                        Ok(None) | Err(_) => {
                            serving.store(false, Ordering::SeqCst);
                            break;
                        }
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                serving.store(true, Ordering::SeqCst);
                return;
            }
            Err(_) => serving.store(false, Ordering::SeqCst),
        }
        tokio::select! {
            () = tokio::time::sleep(REWATCH_AFTER) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Round robin over the serving members; over all of them when none serves (gRPC would fail
/// the call at once; waiting on one shows the same cost as a stall).
async fn put_loop(
    mut clients: Vec<Client>,
    serving: Vec<Arc<AtomicBool>>,
    pace: Pace,
    deadline: Instant,
    stop: CancellationToken,
) -> Vec<Request> {
    let mut requests = Vec::new();
    let value = vec![b'h'; 256];
    let mut next = 0;
    for n in 0..pace.max_puts {
        if stop.is_cancelled() || Instant::now() >= deadline {
            break;
        }
        let count = clients.len();
        let chosen = (0..count)
            .map(|offset| (next + offset) % count)
            .find(|&i| serving[i].load(Ordering::SeqCst))
            .unwrap_or(next % count);
        next = chosen + 1;
        let at = SystemTime::now();
        let started = Instant::now();
        let key = format!("/etcdmedic/load/health-checked/{:04}", n % 1000);
        let put = clients[chosen].put(key, value.clone(), None);
        let error = match tokio::time::timeout(pace.timeout, put).await {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some(format!("no answer within {:?}", pace.timeout)),
        };
        requests.push(Request {
            client: CLIENT.to_string(),
            member: None,
            health_checked: true,
            at,
            took: started.elapsed(),
            error,
        });
        tokio::select! {
            () = tokio::time::sleep(pace.every) => {}
            () = stop.cancelled() => break,
        }
    }
    requests
}
