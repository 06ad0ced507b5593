//! The fleet benchmark: one exporter for 100 to 3,000 configured clusters (entries pointing
//! alternately at two real 3-member clusters), full `/metrics` scrapes at each size, with the
//! exporter's CPU per scrape, its peak memory and the raft entries each scrape costs the
//! clusters; `/probe` of every cluster, 16 at once, against a full scrape; and the setting of
//! `--max-concurrent-clusters` compared at one size.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use etcdmedic_exporter::targets::DEFAULT_MAX_CONCURRENT_CLUSTERS;
use etcdmedic_tests::{EtcdCluster, ExporterProcess};
use futures::StreamExt;

use super::{ms, start_exporter, verdict, Summary};

const WARM_UPS: usize = 5;
/// `/probe` requests in flight at once, as a Prometheus with many targets sends them.
const PROBE_CONCURRENCY: usize = 16;
/// Clock ticks per second in /proc/<pid>/stat: Linux reports in USER_HZ, 100 on every
/// architecture it runs on (part of its user-space ABI, whatever the kernel's own HZ).
const USER_HZ: f64 = 100.0;
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

pub struct FleetRun {
    clusters: usize,
    concurrency: usize,
    latency: Summary,
    cpu_per_scrape: Duration,
    peak_rss: u64,
    raft_entries_per_scrape: f64,
    probes: Option<ProbeRun>,
}

struct ProbeRun {
    wall: Duration,
    cpu_per_cluster: Duration,
}

/// User and system CPU the process `pid` has used.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no command name")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / USER_HZ))
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

/// A fresh exporter for `clusters` entries at `concurrency`, scraped `scrapes` times after
/// warm-ups; with `probes`, then every cluster once through `/probe`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    exporter: &Path,
    pair: &[EtcdCluster; 2],
    http: &reqwest::Client,
    clusters: usize,
    concurrency: usize,
    scrapes: usize,
    wrap: Option<&str>,
    probes: bool,
) -> Result<FleetRun> {
    eprintln!("bench: {clusters} clusters, --max-concurrent-clusters {concurrency}");
    let config = pair[0].dir().join(format!("fleet-{clusters}.yaml"));
    std::fs::write(&config, super::scale_config_yaml(pair, clusters))?;
    let args = vec![
        "--max-concurrent-clusters".to_string(),
        concurrency.to_string(),
    ];
    let process: ExporterProcess = start_exporter(exporter, &config, &args, wrap).await?;
    let url = format!("{}/metrics", process.base_url);
    let series = async {
        for _ in 0..WARM_UPS {
            get(http, &url).await?;
        }
        let (cpu_before, raft_before) = (cpu_time(process.pid())?, raft_index(pair).await?);
        let mut samples = Vec::with_capacity(scrapes);
        let mut body = String::new();
        for _ in 0..scrapes {
            let started = Instant::now();
            body = get(http, &url).await?;
            samples.push(started.elapsed());
        }
        let (cpu_after, raft_after) = (cpu_time(process.pid())?, raft_index(pair).await?);
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
            (raft_after - raft_before) as f64 / scrapes as f64,
        ))
    };
    let (latency, cpu_per_scrape, raft_entries_per_scrape) =
        tokio::time::timeout(SERIES_DEADLINE, series)
            .await
            .context("the scrapes did not end in time")??;

    let probes = if probes {
        let cpu_before = cpu_time(process.pid())?;
        let started = Instant::now();
        let all = futures::stream::iter((0..clusters).map(|index| {
            let url = format!("{}/probe?target=c{index:03}", process.base_url);
            async move { get(http, &url).await }
        }))
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect::<Vec<_>>();
        let answers = tokio::time::timeout(SERIES_DEADLINE, all)
            .await
            .context("the probes did not end in time")?;
        let wall = started.elapsed();
        for answer in answers {
            ensure!(
                answer?.contains("etcdmedic_member_up"),
                "a probe without members"
            );
        }
        Some(ProbeRun {
            wall,
            cpu_per_cluster: (cpu_time(process.pid())? - cpu_before) / clusters as u32,
        })
    } else {
        None
    };
    let (_, peak_rss) = process.memory()?;
    Ok(FleetRun {
        clusters,
        concurrency,
        latency,
        cpu_per_scrape,
        peak_rss,
        raft_entries_per_scrape,
        probes,
    })
}

pub fn section(out: &mut String, runs: &[FleetRun]) -> Result<()> {
    writeln!(out, "## Fleet: 100 to 3,000 configured clusters\n")?;
    writeln!(
        out,
        "Cluster entries alternately pointing at two real 3-member clusters (6 etcd processes \
         on the same 2 cores as the exporter), member discovery on: 3 members, 4 Status and \
         MemberList calls per cluster per scrape. One fresh exporter per row, default flags \
         unless the row says otherwise (`--max-kept-connections` {}: the first clusters keep \
         their connections, the rest reconnect on each scrape); {WARM_UPS} warm-up scrapes, \
         then sequential full `/metrics` scrapes. CPU is the exporter's own (user and \
         system) per scrape; memory its peak resident size over the whole run (VmHWM); raft \
         entries are how far the two clusters' raft index moved per scrape.\n",
        etcdmedic_exporter::targets::DEFAULT_MAX_KEPT_CONNECTIONS
    )?;
    writeln!(
        out,
        "| clusters (members) | `--max-concurrent-clusters` | median | p99 | CPU per scrape | peak resident | raft entries per scrape | runs |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for run in runs {
        let default = if run.concurrency == DEFAULT_MAX_CONCURRENT_CLUSTERS {
            " (default)"
        } else {
            ""
        };
        writeln!(
            out,
            "| {} ({}) | {}{default} | {} | {} | {:.2} s | {:.1} MB | {:.2} | {} |",
            run.clusters,
            run.clusters * 3,
            run.concurrency,
            ms(run.latency.median),
            ms(run.latency.p99),
            run.cpu_per_scrape.as_secs_f64(),
            run.peak_rss as f64 / 1e6,
            run.raft_entries_per_scrape,
            run.latency.count
        )?;
    }
    writeln!(out, "\nTargets, at the default setting:\n")?;
    for run in runs
        .iter()
        .filter(|run| run.concurrency == DEFAULT_MAX_CONCURRENT_CLUSTERS)
    {
        let Some((median, p99, rss)) = targets(run.clusters) else {
            continue;
        };
        let mut line = format!(
            "- {} clusters: median under {} — {} ({})",
            run.clusters,
            ms(median),
            verdict(run.latency.median < median),
            ms(run.latency.median)
        );
        if let Some(p99) = p99 {
            let _ = write!(
                line,
                "; p99 under {} — {} ({})",
                ms(p99),
                verdict(run.latency.p99 < p99),
                ms(run.latency.p99)
            );
        }
        let _ = write!(
            line,
            "; peak memory under {:.0} MB — {} ({:.1} MB)",
            rss as f64 / 1e6,
            verdict(run.peak_rss < rss),
            run.peak_rss as f64 / 1e6
        );
        writeln!(out, "{line}.")?;
    }
    writeln!(
        out,
        "- no raft entry per scrape — {}.",
        verdict(runs.iter().all(|run| run.raft_entries_per_scrape == 0.0))
    )?;
    for run in runs {
        if let Some(probes) = &run.probes {
            let full_per_cluster = run.cpu_per_scrape / run.clusters as u32;
            writeln!(
                out,
                "\n`/probe` of each of the {} clusters once, {PROBE_CONCURRENCY} at a time, \
                 on the same exporter after its full scrapes: {:.2} s in all, {:.2} ms of \
                 exporter CPU per cluster against {:.2} ms per cluster in a full scrape. \
                 Target: no more than the full scrape — {}.",
                run.clusters,
                probes.wall.as_secs_f64(),
                probes.cpu_per_cluster.as_secs_f64() * 1000.0,
                full_per_cluster.as_secs_f64() * 1000.0,
                verdict(probes.cpu_per_cluster <= full_per_cluster)
            )?;
        }
    }
    writeln!(out)?;
    Ok(())
}
