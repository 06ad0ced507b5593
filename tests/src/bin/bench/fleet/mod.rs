//! The fleet benchmark: one exporter for 100 to 3,000 configured clusters (entries pointing
//! alternately at two real 3-member clusters), full `/metrics` scrapes at each size, with the
//! exporter's and etcd's CPU per scrape, the exporter's peak memory and the raft entries each
//! scrape costs the clusters; `/probe` of every cluster, 16 at once, against a full scrape;
//! `--max-concurrent-clusters` compared at one size, and every connection kept at that size.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use etcdmedic_exporter::targets::{DEFAULT_MAX_CONCURRENT_CLUSTERS, DEFAULT_MAX_KEPT_CONNECTIONS};
use etcdmedic_tests::process::{context_switches, cpu_time};
use etcdmedic_tests::{EtcdCluster, ExporterProcess};
use futures::StreamExt;

use super::{start_exporter, Summary};

mod report;
pub use report::section;

const WARM_UPS: usize = 5;
/// `/probe` requests in flight at once, as a Prometheus with many targets sends them.
const PROBE_CONCURRENCY: usize = 16;
/// Times every cluster is probed: the CPU clock counts in ticks of 10 ms, which one pass
/// over 1,000 clusters would make 0.01 ms per cluster.
const PROBE_PASSES: usize = 5;
/// The longest any one series of requests may run.
const SERIES_DEADLINE: Duration = Duration::from_secs(600);

/// The targets (issue 16) at 100, 1,000 and 3,000 clusters: median, p99, peak memory.
fn targets(clusters: usize) -> Option<(Duration, Option<Duration>, u64)> {
    match clusters {
        100 => Some((Duration::from_millis(250), None, 30_000_000)),
        1000 => Some((
            Duration::from_millis(400),
            Some(Duration::from_secs(1)),
            64_000_000,
        )),
        3000 => Some((Duration::from_millis(1500), None, 160_000_000)),
        _ => None,
    }
}

/// One row: an exporter for `clusters` entries with these flags.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub clusters: usize,
    pub concurrency: usize,
    pub kept_connections: usize,
    /// Then every cluster once through `/probe`.
    pub probes: bool,
}

impl Scenario {
    pub fn with_defaults(clusters: usize) -> Self {
        Scenario {
            clusters,
            concurrency: DEFAULT_MAX_CONCURRENT_CLUSTERS,
            kept_connections: DEFAULT_MAX_KEPT_CONNECTIONS,
            probes: false,
        }
    }

    fn is_default(&self) -> bool {
        self.concurrency == DEFAULT_MAX_CONCURRENT_CLUSTERS
            && self.kept_connections == DEFAULT_MAX_KEPT_CONNECTIONS
    }
}

pub struct FleetRun {
    scenario: Scenario,
    latency: Summary,
    cpu_per_scrape: Duration,
    /// The six etcd processes' CPU per scrape, their idle share subtracted.
    etcd_cpu_per_scrape: Duration,
    peak_rss: u64,
    raft_entries_per_scrape: f64,
    /// The exporter's context switches per cluster in a full scrape.
    switches_per_cluster: f64,
    /// The full exposition's size per cluster.
    bytes_per_cluster: usize,
    probes: Option<ProbeRun>,
}

struct ProbeRun {
    wall_per_pass: Duration,
    cpu_per_cluster: Duration,
    switches_per_probe: f64,
    bytes_per_probe: usize,
    /// A `/healthz` request's CPU, as many and as concurrent as the probes: what any HTTP
    /// request costs before the exporter collects anything.
    cpu_per_bare_request: Duration,
}

/// The exporter's CPU and context switches while `requests` run, [`PROBE_CONCURRENCY`] at
/// a time; each answer is checked by `check`.
async fn measure_requests(
    process: &ExporterProcess,
    http: &reqwest::Client,
    urls: Vec<String>,
    check: impl Fn(&str) -> bool,
) -> Result<Requests> {
    let (cpu_before, switches_before) =
        (cpu_time(process.pid())?, context_switches(process.pid())?);
    let started = Instant::now();
    let all = futures::stream::iter(urls.iter().map(|url| get(http, url)))
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect::<Vec<_>>();
    let answers = tokio::time::timeout(SERIES_DEADLINE, all)
        .await
        .context("the requests did not end in time")?;
    let wall = started.elapsed();
    let (cpu_after, switches_after) = (cpu_time(process.pid())?, context_switches(process.pid())?);
    let mut bytes = 0;
    for answer in answers {
        let answer = answer?;
        ensure!(check(&answer), "an unexpected answer");
        bytes += answer.len();
    }
    Ok(Requests {
        cpu: cpu_after - cpu_before,
        switches: switches_after - switches_before,
        wall,
        bytes,
    })
}

/// What a series of requests cost the exporter, in total.
struct Requests {
    cpu: Duration,
    switches: u64,
    wall: Duration,
    /// The answers' bodies.
    bytes: usize,
}

/// User and system CPU the etcd processes of both clusters have used.
fn etcd_cpu_time(pair: &[EtcdCluster; 2]) -> Result<Duration> {
    pair.iter().map(EtcdCluster::cpu_time).sum()
}

/// How much CPU the two clusters use per second when nobody asks them anything (raft
/// heartbeats, timers), so that a scrape's share can be told apart.
pub async fn etcd_idle_cpu_per_second(pair: &[EtcdCluster; 2]) -> Result<Duration> {
    const SPAN: Duration = Duration::from_secs(5);
    let before = etcd_cpu_time(pair)?;
    tokio::time::sleep(SPAN).await;
    Ok((etcd_cpu_time(pair)? - before).div_f64(SPAN.as_secs_f64()))
}

/// The raft index of both clusters, summed.
async fn raft_index(pair: &[EtcdCluster; 2]) -> Result<u64> {
    let mut sum = 0;
    for cluster in pair {
        sum += cluster.client(0).await?.status().await?.raft_index();
    }
    Ok(sum)
}

async fn get(http: &reqwest::Client, url: &str) -> Result<String> {
    Ok(http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// A fresh exporter for the scenario, scraped `scrapes` times after warm-ups; with
/// `probes`, then every cluster [`PROBE_PASSES`] times through `/probe`.
pub async fn run(
    exporter: &Path,
    pair: &[EtcdCluster; 2],
    http: &reqwest::Client,
    scenario: Scenario,
    scrapes: usize,
    wrap: Option<&str>,
    etcd_idle_per_second: Duration,
) -> Result<FleetRun> {
    let Scenario {
        clusters,
        concurrency,
        kept_connections,
        probes,
    } = scenario;
    eprintln!(
        "bench: {clusters} clusters, --max-concurrent-clusters {concurrency} \
         --max-kept-connections {kept_connections}"
    );
    let config = pair[0].dir().join(format!("fleet-{clusters}.yaml"));
    std::fs::write(&config, super::scale_config_yaml(pair, clusters))?;
    let args = vec![
        "--max-concurrent-clusters".to_string(),
        concurrency.to_string(),
        "--max-kept-connections".to_string(),
        kept_connections.to_string(),
    ];
    let process: ExporterProcess = start_exporter(exporter, &config, &args, wrap).await?;
    let url = format!("{}/metrics", process.base_url);
    let series = async {
        for _ in 0..WARM_UPS {
            get(http, &url).await?;
        }
        let (cpu_before, raft_before) = (cpu_time(process.pid())?, raft_index(pair).await?);
        let (etcd_before, switches_before) =
            (etcd_cpu_time(pair)?, context_switches(process.pid())?);
        let series_started = Instant::now();
        let mut samples = Vec::with_capacity(scrapes);
        let mut body = String::new();
        for _ in 0..scrapes {
            let started = Instant::now();
            body = get(http, &url).await?;
            samples.push(started.elapsed());
        }
        let etcd_used = (etcd_cpu_time(pair)? - etcd_before)
            .saturating_sub(etcd_idle_per_second.mul_f64(series_started.elapsed().as_secs_f64()));
        let (cpu_after, raft_after) = (cpu_time(process.pid())?, raft_index(pair).await?);
        let switches = context_switches(process.pid())? - switches_before;
        let up = body
            .lines()
            .filter(|l| l.starts_with("etcdmedic_member_up{") && l.ends_with(" 1"))
            .count();
        ensure!(
            up == clusters * 3,
            "expected {} members up, got {up}",
            clusters * 3
        );
        anyhow::Ok((
            Summary::of(samples),
            (cpu_after - cpu_before) / scrapes as u32,
            etcd_used / scrapes as u32,
            (raft_after - raft_before) as f64 / scrapes as f64,
            switches as f64 / (scrapes * clusters) as f64,
            body.len() / clusters,
        ))
    };
    let (
        latency,
        cpu_per_scrape,
        etcd_cpu_per_scrape,
        raft_entries_per_scrape,
        switches_per_cluster,
        bytes_per_cluster,
    ) = tokio::time::timeout(SERIES_DEADLINE, series)
        .await
        .context("the scrapes did not end in time")??;

    let probes = if probes {
        let probed = PROBE_PASSES * clusters;
        let urls = (0..probed)
            .map(|index| format!("{}/probe?target=c{:03}", process.base_url, index % clusters))
            .collect();
        let probing = measure_requests(&process, http, urls, |answer| {
            answer.contains("etcdmedic_member_up")
        })
        .await?;
        let bare = vec![format!("{}/healthz", process.base_url); probed];
        let bare = measure_requests(&process, http, bare, |answer| answer == "ok\n").await?;
        Some(ProbeRun {
            wall_per_pass: probing.wall / PROBE_PASSES as u32,
            cpu_per_cluster: probing.cpu / probed as u32,
            switches_per_probe: probing.switches as f64 / probed as f64,
            bytes_per_probe: probing.bytes / probed,
            cpu_per_bare_request: bare.cpu / probed as u32,
        })
    } else {
        None
    };
    let (_, peak_rss) = process.memory()?;
    Ok(FleetRun {
        scenario,
        latency,
        cpu_per_scrape,
        etcd_cpu_per_scrape,
        peak_rss,
        raft_entries_per_scrape,
        switches_per_cluster,
        bytes_per_cluster,
        probes,
    })
}
