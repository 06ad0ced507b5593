//! A fleet with dead clusters: twenty clusters that accept connections and never answer,
//! configured before one healthy 3-member cluster, against the exporter binary with its
//! default settings. What a scrape costs, whether the healthy cluster is reported up, and
//! how long a `/probe` of it takes while probes of dead clusters are in flight.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use etcdmedic_tests::ports::free_port;
use etcdmedic_tests::silent::{fleet_yaml, SilentServer};
use etcdmedic_tests::{project_binary, EtcdCluster, EtcdVersion, ExporterProcess};

use crate::{ms, verdict, Summary};

pub const SILENT_CLUSTERS: usize = 20;
const SCRAPE_TIMEOUT_SECONDS: u64 = 10;
const PROBE_TIMEOUT_SECONDS: u64 = 3;
const SEQUENTIAL_SCRAPES: usize = 20;
const CONCURRENT_SCRAPES: usize = 50;
const CONCURRENT_ROUNDS: usize = 3;
const PROBE_ROUNDS: usize = 10;

pub struct Outcome {
    first: Duration,
    first_healthy_up: bool,
    sequential: Summary,
    sequential_healthy_up: usize,
    concurrent: Summary,
    concurrent_healthy_up: usize,
    probe_alone: Summary,
    probe_beside_silent: Summary,
    probe_healthy_up: usize,
    peak_rss: u64,
}

/// A scrape with Prometheus' timeout header: wall time, and whether the healthy cluster and
/// its three members were reported up.
async fn scrape(
    http: &reqwest::Client,
    url: &str,
    timeout_seconds: u64,
) -> Result<(Duration, bool)> {
    let started = Instant::now();
    let body = http
        .get(url)
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            timeout_seconds.to_string(),
        )
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let took = started.elapsed();
    let cluster_up = body.contains("etcdmedic_cluster_up{etcd_cluster=\"healthy\"} 1");
    let members_up = body
        .lines()
        .filter(|l| {
            l.starts_with("etcdmedic_member_up{etcd_cluster=\"healthy\"") && l.ends_with(" 1")
        })
        .count();
    Ok((took, cluster_up && members_up == 3))
}

pub async fn run() -> Result<Outcome> {
    eprintln!("bench: {SILENT_CLUSTERS} silent clusters beside a healthy one");
    let healthy = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .data_on_disk()
        .start()
        .await?;
    let silent = SilentServer::start().await?;
    let config = healthy.dir().join("silent.yaml");
    std::fs::write(&config, fleet_yaml(&healthy, &silent, SILENT_CLUSTERS))?;

    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let command =
        ExporterProcess::serve_command(&project_binary("etcdmedic-exporter")?, &config, listen);
    let process = ExporterProcess::spawn(command, listen, Stdio::null()).await?;
    let http = etcdmedic_tests::http_client_builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()?;
    let metrics = format!("{}/metrics", process.base_url);

    let (first, first_healthy_up) = scrape(&http, &metrics, SCRAPE_TIMEOUT_SECONDS).await?;

    let mut sequential = Vec::new();
    let mut sequential_healthy_up = 0;
    for _ in 0..SEQUENTIAL_SCRAPES {
        let (took, up) = scrape(&http, &metrics, SCRAPE_TIMEOUT_SECONDS).await?;
        sequential.push(took);
        sequential_healthy_up += usize::from(up);
    }

    let mut concurrent = Vec::new();
    let mut concurrent_healthy_up = 0;
    for _ in 0..CONCURRENT_ROUNDS {
        let round =
            (0..CONCURRENT_SCRAPES).map(|_| scrape(&http, &metrics, SCRAPE_TIMEOUT_SECONDS));
        for result in futures::future::join_all(round).await {
            let (took, up) = result?;
            concurrent.push(took);
            concurrent_healthy_up += usize::from(up);
        }
    }

    let probe = format!("{}/probe?target=healthy", process.base_url);
    let mut probe_alone = Vec::new();
    for _ in 0..PROBE_ROUNDS {
        probe_alone.push(scrape(&http, &probe, PROBE_TIMEOUT_SECONDS).await?.0);
    }
    let mut probe_beside_silent = Vec::new();
    let mut probe_healthy_up = 0;
    for _ in 0..PROBE_ROUNDS {
        let dead = (0..8).map(|index| {
            let url = format!("{}/probe?target=silent-{index:02}", process.base_url);
            let http = http.clone();
            async move { scrape(&http, &url, SCRAPE_TIMEOUT_SECONDS).await }
        });
        let live = async {
            // Once the dead probes hold whatever they can.
            tokio::time::sleep(Duration::from_millis(100)).await;
            scrape(&http, &probe, PROBE_TIMEOUT_SECONDS).await
        };
        let (dead, live) = tokio::join!(futures::future::join_all(dead), live);
        for result in dead {
            result?;
        }
        let (took, up) = live?;
        probe_beside_silent.push(took);
        probe_healthy_up += usize::from(up);
    }
    let (_, peak_rss) = process.memory()?;
    ensure!(
        !sequential.is_empty() && !concurrent.is_empty(),
        "no scrapes measured"
    );
    Ok(Outcome {
        first,
        first_healthy_up,
        sequential: Summary::of(sequential),
        sequential_healthy_up,
        concurrent: Summary::of(concurrent),
        concurrent_healthy_up,
        probe_alone: Summary::of(probe_alone),
        probe_beside_silent: Summary::of(probe_beside_silent),
        probe_healthy_up,
        peak_rss,
    })
}

pub fn section(out: &mut String, outcome: &Outcome) -> Result<()> {
    writeln!(out, "## Dead clusters beside a healthy one\n")?;
    writeln!(
        out,
        "{SILENT_CLUSTERS} configured clusters whose endpoint accepts connections and never \
         answers (the costliest kind of dead: every call waits for its timeout), listed before \
         one healthy 3-member etcd 3.5 cluster; the exporter binary with its default settings \
         (`status_timeout: 5s`, 8 slots per lane). Scrapes send Prometheus' timeout header \
         ({SCRAPE_TIMEOUT_SECONDS} s for `/metrics`, {PROBE_TIMEOUT_SECONDS} s for the \
         healthy cluster's `/probe`); \"healthy up\" counts scrapes that reported the healthy \
         cluster and its 3 members up.\n"
    )?;
    writeln!(
        out,
        "| what | median | p90 | p99 | max | runs | healthy up |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| first `/metrics`, nothing known yet | {} | | | | 1 | {} of 1 |",
        ms(outcome.first),
        usize::from(outcome.first_healthy_up)
    )?;
    writeln!(
        out,
        "{} {} of {} |",
        outcome.sequential.row("`/metrics`, one after another"),
        outcome.sequential_healthy_up,
        outcome.sequential.count
    )?;
    writeln!(
        out,
        "{} {} of {} |",
        outcome.concurrent.row(&format!(
            "`/metrics`, {CONCURRENT_SCRAPES} at once ({CONCURRENT_ROUNDS} rounds)"
        )),
        outcome.concurrent_healthy_up,
        outcome.concurrent.count
    )?;
    writeln!(
        out,
        "{} |",
        outcome.probe_alone.row("`/probe?target=healthy`, alone")
    )?;
    writeln!(
        out,
        "{} {} of {} |",
        outcome
            .probe_beside_silent
            .row("`/probe?target=healthy`, 8 probes of dead clusters in flight"),
        outcome.probe_healthy_up,
        outcome.probe_beside_silent.count
    )?;
    let deadline = Duration::from_secs(SCRAPE_TIMEOUT_SECONDS);
    let all_up = outcome.first_healthy_up
        && outcome.sequential_healthy_up == outcome.sequential.count
        && outcome.concurrent_healthy_up == outcome.concurrent.count
        && outcome.probe_healthy_up == outcome.probe_beside_silent.count;
    writeln!(
        out,
        "\nTargets: every scrape within its timeout — {} (slowest `/metrics` {}, slowest \
         probe {}); the healthy cluster reported up in every scrape — {}. Peak resident \
         memory {:.1} MB.\n",
        verdict(
            outcome
                .first
                .max(outcome.sequential.max)
                .max(outcome.concurrent.max)
                < deadline
                && outcome.probe_beside_silent.max < Duration::from_secs(PROBE_TIMEOUT_SECONDS)
        ),
        ms(outcome
            .first
            .max(outcome.sequential.max)
            .max(outcome.concurrent.max)),
        ms(outcome.probe_beside_silent.max),
        verdict(all_up),
        outcome.peak_rss as f64 / 1e6
    )?;
    Ok(())
}
