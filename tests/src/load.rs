//! Client load during a remediation: one writer per client, each putting a small value at a
//! steady pace and recording how long every put took and every put that failed, with when
//! it was sent so a failure can be laid against the step under way. Bounded in count and
//! time whatever happens to the run it measures.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use etcd_client::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How a writer paces itself and when it gives up.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Pause after each answer.
    pub every: Duration,
    /// Longer than etcd's own 7 s request timeout, so a dropped proposal shows as etcd's error.
    pub timeout: Duration,
    pub max_puts: usize,
    pub max_time: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            every: Duration::from_millis(20),
            timeout: Duration::from_secs(10),
            max_puts: 100_000,
            max_time: Duration::from_secs(900),
        }
    }
}

/// What one writer saw.
#[derive(Debug, Clone)]
pub struct Puts {
    /// The caller's name for the client (a member index, or the all-endpoints client).
    pub index: usize,
    /// (sent at, took) of every put that succeeded.
    pub samples: Vec<(SystemTime, Duration)>,
    /// Every put that failed or got no answer in time.
    pub failures: Vec<Failure>,
}

/// A request that failed: when it was sent, how long its client waited, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: SystemTime,
    pub took: Duration,
    pub error: String,
}

impl Puts {
    pub fn slowest(&self) -> Duration {
        self.samples
            .iter()
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default()
    }
}

/// Writers under way; [`PutLoad::stop`] ends them and returns what they saw.
pub struct PutLoad {
    stop: CancellationToken,
    writers: Vec<JoinHandle<Puts>>,
}

impl PutLoad {
    /// One writer per `(index, client)`, each under its own key prefix.
    pub fn start(clients: Vec<(usize, Client)>, pace: Pace) -> PutLoad {
        let stop = CancellationToken::new();
        let deadline = Instant::now() + pace.max_time;
        let writers = clients
            .into_iter()
            .map(|(index, client)| {
                tokio::spawn(put_loop(index, client, pace, stop.clone(), deadline))
            })
            .collect();
        PutLoad { stop, writers }
    }

    pub async fn stop(self) -> Result<Vec<Puts>> {
        self.stop.cancel();
        let mut puts = Vec::new();
        for writer in self.writers {
            puts.push(writer.await.context("a writer panicked")?);
        }
        Ok(puts)
    }
}

async fn put_loop(
    index: usize,
    mut client: Client,
    pace: Pace,
    stop: CancellationToken,
    deadline: Instant,
) -> Puts {
    let mut puts = Puts {
        index,
        samples: Vec::new(),
        failures: Vec::new(),
    };
    let value = vec![b'w'; 256];
    for n in 0..pace.max_puts {
        if stop.is_cancelled() || Instant::now() >= deadline {
            break;
        }
        let at = SystemTime::now();
        let started = Instant::now();
        let key = format!("/etcdmedic/load/{index}/{:04}", n % 1000);
        match tokio::time::timeout(pace.timeout, client.put(key, value.clone(), None)).await {
            Ok(Ok(_)) => puts.samples.push((at, started.elapsed())),
            Ok(Err(err)) => puts.failures.push(Failure {
                at,
                took: started.elapsed(),
                error: err.to_string(),
            }),
            Err(_) => puts.failures.push(Failure {
                at,
                took: started.elapsed(),
                error: format!("no answer within {:?}", pace.timeout),
            }),
        }
        tokio::select! {
            () = tokio::time::sleep(pace.every) => {}
            () = stop.cancelled() => break,
        }
    }
    puts
}
