//! The availability benchmark: what clients see while a fragmented 3-member cluster is
//! defragmented four ways (the manual etcdctl procedure, and etcdmedic with `leader:
//! defrag_in_place`, `move_then_defrag` and `auto`), each on a fresh cluster fragmented the
//! same way, on every etcd minor version, with a small and a large database, and on 3.6 with
//! `StopGRPCServiceOnDefrag` on. Every failed or
//! timed-out request is counted and laid against the step under way when it was sent.
//!
//! - `load`: the clients and what each request did.
//! - `procedure`: the four procedures and their step timelines.
//! - `timeline`: steps, and which one a request belongs to.
//! - `section`: the Markdown.

mod health_checked;
mod load;
mod procedure;
mod section;
mod timeline;

use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context, Result};
use etcd_client::{Client, CompactionOptions};
use etcdmedic_tests::workload::commit_backends;
use etcdmedic_tests::{EtcdCluster, EtcdVersion};

pub use procedure::Mode;
pub use section::section;

const MB: u64 = 1_000_000;
const VALUE_BYTES: usize = 512 * 1024;

/// A database to defragment: MB in use and MB reclaimable on each member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Size {
    /// About 300 MB files, 150 MB in use.
    Small,
    /// About 1.6 GB files, 800 MB in use.
    Large,
}

impl Size {
    fn in_use_mb(self) -> u64 {
        match self {
            Size::Small => 150,
            Size::Large => 800,
        }
    }

    /// At most [`Size::in_use_mb`]: the fragmenting overwrites that many of the live keys.
    fn free_mb(self) -> u64 {
        match self {
            Size::Small => 150,
            Size::Large => 760,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

/// One cluster (a version and a size) and the four procedures on it.
pub struct Trial {
    pub version: String,
    pub size: Size,
    /// The members ran with `StopGRPCServiceOnDefrag` on.
    pub stop_grpc_on_defrag: bool,
    /// Per member before the first procedure: (name, db size, in use).
    pub db_before: Vec<(String, u64, u64)>,
    pub results: Vec<ModeResult>,
}

/// What one procedure did to the clients.
pub struct ModeResult {
    pub mode: Mode,
    pub wall: Duration,
    pub leader: String,
    pub requests: usize,
    /// (client, step, error) of every failed or timed-out request.
    pub failures: Vec<(String, String, String)>,
    /// The longest wait of a request through a member that was not defragmenting (pinned
    /// writers and leases): (took, client, step). What the rest of the cluster felt.
    pub longest_stall: (Duration, String, String),
    /// The longest wait through the member being defragmented, which its own clients expect.
    pub slowest_own: Duration,
    /// The all-endpoints client's longest wait: (took, step). Some of its requests go to the
    /// member being defragmented, so it never waits less than the procedure's slowest member.
    pub slowest_all_endpoints: (Duration, String),
    /// The same for the all-endpoints client that follows the members' gRPC health.
    pub slowest_health_checked: (Duration, String),
    /// Each member's defragmentation time from etcd's log, in order.
    pub defrags: Vec<(String, Duration)>,
}

/// The four procedures on `version` at `size`; the members with `StopGRPCServiceOnDefrag` on
/// when `stop_grpc_on_defrag`.
pub async fn run(
    version: EtcdVersion,
    version_text: &str,
    size: Size,
    stop_grpc_on_defrag: bool,
) -> Result<Trial> {
    let mut db_before = Vec::new();
    let mut results = Vec::new();
    for mode in Mode::ALL {
        let cluster = fragmented(version, version_text, size, stop_grpc_on_defrag).await?;
        let sizes = sizes(&cluster, size).await?;
        if db_before.is_empty() {
            db_before = sizes;
        }
        eprintln!("bench: {} under load", mode.label());
        results.push(measure(&cluster, mode, size).await?);
    }
    Ok(Trial {
        version: version_text.to_string(),
        size,
        stop_grpc_on_defrag,
        db_before,
        results,
    })
}

/// A fresh cluster for each procedure: on one cluster fragmented and defragmented again and
/// again, each round ran slower than the one before (the same procedure first took 3.3 s,
/// fourth 4.7 s), which would have decided the comparison by the order.
async fn fragmented(
    version: EtcdVersion,
    version_text: &str,
    size: Size,
    stop_grpc_on_defrag: bool,
) -> Result<EtcdCluster> {
    let mut builder = EtcdCluster::builder(version)
        .members(3)
        .quota(8 * 1024 * MB)
        .data_on_disk();
    if stop_grpc_on_defrag {
        builder = builder.stop_grpc_on_defrag();
    }
    let cluster = builder.start().await?;
    let clients = cluster.clients().await?;
    let live_keys = (size.in_use_mb() * MB).div_ceil(VALUE_BYTES as u64) as usize;
    let garbage_keys = (size.free_mb() * MB).div_ceil(VALUE_BYTES as u64) as usize;
    eprintln!(
        "bench: etcd {version_text}, {} database: {} MB live data, {} MB overwritten, compacted",
        size.label(),
        size.in_use_mb(),
        size.free_mb()
    );
    write_keys(&clients[0], live_keys, 0).await?;
    refragment(&clients, garbage_keys, 1).await?;
    // What the fragmenting wrote is on disk before the procedure starts, so its fsyncs do
    // not wait behind that writeback.
    nix::unistd::sync();
    Ok(cluster)
}

async fn measure(cluster: &EtcdCluster, mode: Mode, size: Size) -> Result<ModeResult> {
    let before: Vec<usize> = (0..cluster.len())
        .map(|i| cluster.defrag_intervals(i).map(|d| d.len()))
        .collect::<Result<_>>()?;
    let load = load::Load::start(cluster).await?;
    // Let the clients settle into their rhythm first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let done = tokio::task::block_in_place(|| procedure::carry_out(mode, cluster, size.free_mb()));
    let wall = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests = load.stop().await?;
    let done = done?;

    let mut defrags = Vec::new();
    let mut own_windows: Vec<Vec<(SystemTime, SystemTime)>> = Vec::new();
    for (index, skip) in before.iter().enumerate() {
        let mut member = Vec::new();
        for (start, end) in cluster.defrag_intervals(index)?.into_iter().skip(*skip) {
            let end = end.context("a defragmentation is still running")?;
            member.push((start, end));
            defrags.push((start, index, end.duration_since(start).unwrap_or_default()));
        }
        own_windows.push(member);
    }
    defrags.sort();

    let mut failures = Vec::new();
    let mut longest_stall = (Duration::ZERO, String::new(), String::new());
    let mut slowest_own = Duration::ZERO;
    let mut slowest_all_endpoints = (Duration::ZERO, String::new());
    let mut slowest_health_checked = (Duration::ZERO, String::new());
    for request in &requests {
        let step = timeline::step_at(&done.steps, request.at);
        if let Some(error) = &request.error {
            failures.push((request.client.clone(), step.clone(), error.clone()));
        }
        let end = request.at + request.took;
        let Some(member) = request.member else {
            let slowest = match request.health_checked {
                true => &mut slowest_health_checked,
                false => &mut slowest_all_endpoints,
            };
            if request.took > slowest.0 {
                *slowest = (request.took, step);
            }
            continue;
        };
        let own = own_windows[member]
            .iter()
            .any(|(from, to)| request.at <= *to && end >= *from);
        if own {
            slowest_own = slowest_own.max(request.took);
        } else if request.took > longest_stall.0 {
            longest_stall = (request.took, request.client.clone(), step);
        }
    }
    ensure!(!requests.is_empty(), "the clients sent nothing");
    Ok(ModeResult {
        mode,
        wall,
        leader: done.leader,
        requests: requests.len(),
        failures,
        longest_stall,
        slowest_own,
        slowest_all_endpoints,
        slowest_health_checked,
        defrags: defrags
            .iter()
            .map(|(_, index, took)| (cluster.name(*index).to_string(), *took))
            .collect(),
    })
}

/// Live keys `/bench/data/NNNNN` of 512 KiB, `round` making each value distinct.
async fn write_keys(client: &Client, keys: usize, round: u8) -> Result<i64> {
    let mut client = client.clone();
    let value = vec![b'a' + round % 26; VALUE_BYTES];
    let mut revision = 0;
    for key in 0..keys {
        let response = client
            .put(format!("/bench/data/{key:05}"), value.clone(), None)
            .await
            .with_context(|| format!("writing key {key}"))?;
        revision = response.header().map_or(revision, |h| h.revision());
    }
    Ok(revision)
}

/// Overwrites the first `keys` keys, then compacts: their old values become free pages.
async fn refragment(clients: &[Client], keys: usize, round: u8) -> Result<()> {
    let revision = write_keys(&clients[0], keys, round).await?;
    clients[0]
        .clone()
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await?;
    commit_backends(clients).await
}

/// (name, db size, in use) per member, after checking the fragmentation reached the sizes
/// the benchmark promises.
async fn sizes(cluster: &EtcdCluster, size: Size) -> Result<Vec<(String, u64, u64)>> {
    let mut rows = Vec::new();
    for index in 0..cluster.len() {
        let status = cluster.client(index).await?.status().await?;
        let (db, in_use) = (status.db_size() as u64, status.raft_used_db_size() as u64);
        ensure!(
            in_use >= size.in_use_mb() * MB && db - in_use >= size.free_mb() * MB,
            "{}: {} MB with {} MB in use, short of {} MB in use and {} MB free",
            cluster.name(index),
            db / MB,
            in_use / MB,
            size.in_use_mb(),
            size.free_mb()
        );
        rows.push((cluster.name(index).to_string(), db, in_use));
    }
    Ok(rows)
}
