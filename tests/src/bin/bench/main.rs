//! `make bench`: the exporter's speed and memory against real etcd, written to
//! docs/benchmarks.md together with the machine it ran on.
//!
//! 1. Scrape latency of `/metrics` for one local 3-member cluster, beside
//!    `etcdctl endpoint status --cluster -w json` on the same cluster in the same run.
//! 2. Scale: many configured clusters pointing at two real 3-member clusters; full `/metrics`
//!    latency and the exporter's resident memory.
//! 3. Series per member, against etcd's own `/metrics`.
//! 4. Dead clusters: twenty clusters that never answer beside a healthy one (see `silent`).
//! 5. Remediation: what clients see while a fragmented cluster is defragmented by hand and by
//!    etcdmedic under each leader setting, on etcd 3.4 and 3.5, small and large databases
//!    (see `remediation`).
//! 6. Backups to a local S3 server against etcdctl + boto3, memory, restore drill (`backup`),
//!    and the NOSPACE outage with and without a backup to reuse (`nospace`).
//!
//! Every loop is bounded in count and each request in time; everything is on 127.0.0.1.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::Parser;
use etcdmedic_exporter::targets::DEFAULT_MAX_CONCURRENT_CLUSTERS;
use etcdmedic_tests::ports::free_port;
use etcdmedic_tests::{project_binary, EtcdCluster, EtcdVersion, ExporterProcess};

mod backup;
mod backup_sealed;
mod fleet;
mod nospace;
mod remediation;
mod replicas;
mod silent;
mod webhook;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const TARGET_MEDIAN_SCRAPE: Duration = Duration::from_millis(5);

#[derive(Debug, Parser)]
#[command(
    name = "etcdmedic-bench",
    version = etcdmedic_cluster::build_info::VERSION_LONG,
    about = "Benchmarks of etcdmedic against real etcd"
)]
struct Cli {
    /// Write the report here (Markdown); stdout otherwise.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Scrapes of one cluster.
    #[arg(long, default_value_t = 500)]
    scrapes: usize,
    /// etcdctl runs to compare with.
    #[arg(long, default_value_t = 50)]
    etcdctl_runs: usize,
    /// Fleet sizes (configured clusters) of the fleet benchmark.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000, 3000])]
    clusters: Vec<usize>,
    /// Scrapes at each fleet size and concurrency setting.
    #[arg(long, default_value_t = 30)]
    scale_scrapes: usize,
    /// Values of the exporter's --max-concurrent-clusters to compare, at 1,000 clusters (or
    /// the largest size run).
    #[arg(long, value_delimiter = ',', default_values_t = [4, 8, 16, 32])]
    concurrency: Vec<usize>,
    /// Run the exporter under this command, e.g. "valgrind --tool=massif" (its memory
    /// figures are then the wrapper's).
    #[arg(long)]
    wrap: Option<String>,
    /// Which parts to run.
    #[arg(long, value_delimiter = ',', default_values_t = [Part::Exporter, Part::Silent, Part::Remediation, Part::Webhook, Part::Replicas, Part::Backup, Part::Encryption])]
    parts: Vec<Part>,
    /// Backup benchmark: the database sizes to back up, in MiB.
    #[arg(long, value_delimiter = ',', default_values_t = [256, 1024])]
    backup_mib: Vec<u64>,
    /// NOSPACE outage benchmark (part of `backup`): the quota to fill, in MiB.
    #[arg(long, default_value_t = 512)]
    nospace_quota_mib: u64,
    /// Remediation benchmark: the database sizes to run.
    #[arg(long, value_delimiter = ',', default_values = ["small", "large"])]
    sizes: Vec<remediation::Size>,
    /// Remediation benchmark: the etcd minor versions to run (3.6 adds a run with
    /// `StopGRPCServiceOnDefrag` on).
    #[arg(long, value_delimiter = ',', default_values = ["3.4", "3.5", "3.6", "3.7"], value_parser = parse_version)]
    etcd_versions: Vec<EtcdVersion>,
}

fn parse_version(text: &str) -> Result<EtcdVersion, String> {
    EtcdVersion::ALL
        .into_iter()
        .find(|v| v.to_string() == text)
        .ok_or_else(|| format!("not one of {:?}", EtcdVersion::ALL.map(|v| v.to_string())))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Exporter,
    Silent,
    Remediation,
    Webhook,
    Replicas,
    Backup,
    Encryption,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Exporter => "exporter",
            Part::Silent => "silent",
            Part::Remediation => "remediation",
            Part::Webhook => "webhook",
            Part::Replicas => "replicas",
            Part::Backup => "backup",
            Part::Encryption => "encryption",
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(report) => {
            match &cli.output {
                Some(path) => {
                    if let Err(err) = std::fs::write(path, &report) {
                        eprintln!("etcdmedic-bench: writing {}: {err}", path.display());
                        return ExitCode::FAILURE;
                    }
                    println!("{report}");
                    eprintln!("etcdmedic-bench: wrote {}", path.display());
                }
                None => println!("{report}"),
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("etcdmedic-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Latency figures of one series of measurements.
struct Summary {
    count: usize,
    median: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Summary {
            count: samples.len(),
            median: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    fn row(&self, what: &str) -> String {
        format!(
            "| {what} | {} | {} | {} | {} | {} |",
            ms(self.median),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            self.count
        )
    }
}

/// CPU cores the benchmark's processes share (the machine's, as the Machine section says).
fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**not met**"
    }
}

async fn run(cli: &Cli) -> Result<String> {
    let exporter_etcd = etcd_version(EtcdVersion::V3_5)?;
    let remediation_etcd = cli
        .etcd_versions
        .iter()
        .map(|&v| etcd_version(v))
        .collect::<Result<Vec<_>>>()?
        .join(", ");
    let mut out = String::new();
    writeln!(out, "# Benchmarks\n")?;
    writeln!(
        out,
        "Written by `make bench` ([tests/src/bin/bench](../tests/src/bin/bench)); every \
         figure below comes from one run of it. Release build, everything on 127.0.0.1, etcd \
         data on the machine's disk (not tmpfs), so each raft proposal (a put, a defragmentation's NOSPACE disarm) \
         pays a real WAL fsync. Each part starts after a `sync`, so the gigabytes the \
         previous one wrote are not still being written back under it.\n"
    )?;
    writeln!(
        out,
        "## Machine\n\n{}",
        machine(&format!(
            "{exporter_etcd} (Debian sid) for the exporter; {remediation_etcd} for remediation (3.4 from Debian bookworm, 3.5 from Debian sid, 3.6 and 3.7 from the etcd-bin-vendored crates)"
        ))?
    )?;
    if cli.parts.contains(&Part::Exporter) {
        out.push_str(&exporter_sections(cli).await?);
    }
    if cli.parts.contains(&Part::Silent) {
        quiet_disk();
        let outcome = silent::run().await?;
        silent::section(&mut out, &outcome)?;
    }
    if cli.parts.contains(&Part::Remediation) {
        quiet_disk();
        let mut trials = Vec::new();
        for &version in &cli.etcd_versions {
            for size in &cli.sizes {
                quiet_disk();
                let version_text = etcd_version(version)?;
                trials.push(remediation::run(version, &version_text, *size, false).await?);
            }
        }
        // What etcd 3.6's StopGRPCServiceOnDefrag changes, on the size where a member's
        // defragmentation is long enough for clients to notice.
        let gate_version = cli.etcd_versions.contains(&EtcdVersion::V3_6);
        if let Some(size) = cli.sizes.last().filter(|_| gate_version) {
            quiet_disk();
            let version = EtcdVersion::V3_6;
            let version_text = etcd_version(version)?;
            trials.push(remediation::run(version, &version_text, *size, true).await?);
        }
        remediation::section(&mut out, &trials)?;
    }
    if cli.parts.contains(&Part::Webhook) {
        quiet_disk();
        let outcome = webhook::run().await?;
        webhook::section(&mut out, &outcome)?;
    }
    if cli.parts.contains(&Part::Replicas) {
        quiet_disk();
        let outcome = replicas::run().await?;
        replicas::section(&mut out, &outcome)?;
    }
    if cli.parts.contains(&Part::Backup) {
        let mut trials = Vec::new();
        for &mib in &cli.backup_mib {
            quiet_disk();
            trials.extend(backup::run(mib, &backup::Server::ALL).await?);
        }
        backup::section(&mut out, &trials)?;
        quiet_disk();
        let outage = nospace::run(cli.nospace_quota_mib).await?;
        nospace::section(&mut out, &outage)?;
    }
    if cli.parts.contains(&Part::Encryption) {
        quiet_disk();
        let largest = cli.backup_mib.iter().copied().max().unwrap_or(1024);
        let outcome = backup_sealed::run(largest).await?;
        backup_sealed::section(&mut out, &outcome)?;
    }
    writeln!(out, "Reproduce with `make bench` (it rewrites this file).")?;
    Ok(out)
}

/// Flushes what earlier parts wrote, so their writeback does not stall the next part's
/// fsyncs.
fn quiet_disk() {
    eprintln!("bench: sync");
    nix::unistd::sync();
}

async fn exporter_sections(cli: &Cli) -> Result<String> {
    let exporter = project_binary("etcdmedic-exporter")?;
    let http = etcdmedic_tests::http_client_builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let version = EtcdVersion::V3_5;

    eprintln!("bench: one 3-member cluster, {} scrapes", cli.scrapes);
    let single = EtcdCluster::builder(version)
        .members(3)
        .data_on_disk()
        .start()
        .await?;
    let config = single.write_config("bench")?;
    let process = start_exporter(&exporter, &config, &[], cli.wrap.as_deref()).await?;
    let url = format!("{}/metrics", process.base_url);
    let (scrape_latency, body) = time_scrapes(&http, &url, cli.scrapes).await?;
    let etcdctl_latency = time_etcdctl(&single, cli.etcdctl_runs)?;
    let series = series_per_member(&http, &single, &body).await?;
    drop(process);
    drop(single);

    let pair = [
        EtcdCluster::builder(version)
            .members(3)
            .data_on_disk()
            .start()
            .await?,
        EtcdCluster::builder(version)
            .members(3)
            .data_on_disk()
            .start()
            .await?,
    ];
    let compare_at = if cli.clusters.contains(&1000) {
        1000
    } else {
        cli.clusters.iter().copied().max().unwrap_or(0)
    };
    let etcd_idle_per_second = fleet::etcd_idle_cpu_per_second(&pair).await?;
    let mut scenarios = Vec::new();
    for &clusters in &cli.clusters {
        let default = fleet::Scenario::with_defaults(clusters);
        if clusters != compare_at {
            scenarios.push(default);
            continue;
        }
        for &concurrency in &cli.concurrency {
            scenarios.push(fleet::Scenario {
                concurrency,
                probes: concurrency == DEFAULT_MAX_CONCURRENT_CLUSTERS,
                ..default
            });
        }
        // What the bound on kept connections costs in time, and saves in memory.
        scenarios.push(fleet::Scenario {
            kept_connections: clusters * 3,
            ..default
        });
    }
    let mut fleet_runs = Vec::new();
    for scenario in scenarios {
        fleet_runs.push(
            fleet::run(
                &exporter,
                &pair,
                &http,
                scenario,
                cli.scale_scrapes,
                cli.wrap.as_deref(),
                etcd_idle_per_second,
            )
            .await?,
        );
    }
    drop(pair);

    let mut out = String::new();
    writeln!(out, "## Scrape latency: one local 3-member cluster\n")?;
    writeln!(
        out,
        "Sequential `GET /metrics` over one kept-alive connection after 20 warm-up scrapes; \
         each scrape asks all 3 members for Status, and one member for MemberList (alarms \
         come from Status: nothing is written to raft). `etcdctl` is timed as a user runs it, process start included.\n"
    )?;
    writeln!(out, "| what | median | p90 | p99 | max | runs |")?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    writeln!(out, "{}", scrape_latency.row("etcdmedic `/metrics`"))?;
    writeln!(
        out,
        "{}",
        etcdctl_latency.row("`etcdctl endpoint status --cluster -w json`")
    )?;
    writeln!(
        out,
        "\nTarget: median scrape under {} — {} ({}).\n",
        ms(TARGET_MEDIAN_SCRAPE),
        verdict(scrape_latency.median < TARGET_MEDIAN_SCRAPE),
        ms(scrape_latency.median)
    )?;

    fleet::section(&mut out, &fleet_runs, etcd_idle_per_second)?;

    writeln!(out, "## Series per member\n")?;
    writeln!(out, "| source | series per member |\n|---|---|")?;
    writeln!(
        out,
        "| etcdmedic (per-member series) | {} |\n| etcdmedic (per-cluster series, shared by the members) | {} |\n| etcd's own `/metrics` on the same member | {} |",
        series.ours_per_member, series.ours_per_cluster, series.etcd_per_member
    )?;
    writeln!(out)?;
    Ok(out)
}

async fn start_exporter(
    binary: &Path,
    config: &Path,
    args: &[String],
    wrap: Option<&str>,
) -> Result<ExporterProcess> {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let mut command = match wrap.map(|w| w.split_whitespace().collect::<Vec<_>>()) {
        Some(wrapper) if !wrapper.is_empty() => {
            let mut command = Command::new(wrapper[0]);
            command.args(&wrapper[1..]).arg(binary);
            command.args(ExporterProcess::serve_args(config, listen));
            command
        }
        _ => ExporterProcess::serve_command(binary, config, listen),
    };
    command.args(args);
    ExporterProcess::spawn(command, listen, Stdio::null()).await
}

async fn time_scrapes(
    http: &reqwest::Client,
    url: &str,
    count: usize,
) -> Result<(Summary, String)> {
    let get = || async {
        let response = http.get(url).send().await?.error_for_status()?;
        anyhow::Ok(response.text().await?)
    };
    let mut body = String::new();
    for _ in 0..20 {
        body = get().await?;
    }
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        body = get().await?;
        samples.push(started.elapsed());
    }
    ensure!(
        body.contains("etcdmedic_member_up"),
        "unexpected /metrics body"
    );
    Ok((Summary::of(samples), body))
}

fn time_etcdctl(cluster: &EtcdCluster, runs: usize) -> Result<Summary> {
    let etcdctl = cluster.version().etcdctl()?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let output = Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", cluster.endpoint(0)))
            .args(["endpoint", "status", "--cluster", "-w", "json"])
            .output()?;
        samples.push(started.elapsed());
        ensure!(output.status.success(), "etcdctl failed: {output:?}");
    }
    Ok(Summary::of(samples))
}

struct Series {
    ours_per_member: usize,
    ours_per_cluster: usize,
    etcd_per_member: usize,
}

async fn series_per_member(
    http: &reqwest::Client,
    cluster: &EtcdCluster,
    ours: &str,
) -> Result<Series> {
    let endpoint = cluster.endpoint(0);
    let samples = || {
        ours.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
    };
    let ours_per_member = samples()
        .filter(|l| l.contains(&format!("endpoint=\"{endpoint}\"")))
        .count();
    let ours_per_cluster = samples()
        .filter(|l| l.contains("etcd_cluster=") && !l.contains("endpoint="))
        .count();
    let etcd = http
        .get(format!("{endpoint}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let etcd_per_member = etcd
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    Ok(Series {
        ours_per_member,
        ours_per_cluster,
        etcd_per_member,
    })
}

fn scale_config_yaml(pair: &[EtcdCluster; 2], clusters: usize) -> String {
    let mut yaml = String::from("clusters:\n");
    for index in 0..clusters {
        let target = &pair[index % 2];
        let _ = writeln!(
            yaml,
            "  - name: c{index:03}\n    endpoints: [{}]",
            target.endpoint(0)
        );
    }
    yaml
}

fn etcd_version(version: EtcdVersion) -> Result<String> {
    let output = Command::new(version.etcd()?).arg("--version").output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .next()
        .and_then(|l| l.split(':').nth(1))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| version.to_string()))
}

/// The machine the numbers came from.
fn machine(etcd_version: &str) -> Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    let command = |program: &str, args: &[&str]| -> String {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    };
    let date = command("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let kernel = command("uname", &["-r"]);
    let rustc = command("rustc", &["--version"]);
    let disk = command(
        "df",
        &[
            "--output=fstype",
            &std::env::temp_dir().display().to_string(),
        ],
    )
    .lines()
    .last()
    .unwrap_or("unknown")
    .to_string();
    Ok(format!(
        "- Date: {date}\n- CPU: {cpu}, {cores} cores available\n- Memory: {:.1} GiB\n- OS: {os}, kernel {kernel}\n- etcd: {etcd_version}, data in {} ({disk})\n- {rustc}\n",
        memory_kib as f64 / (1024.0 * 1024.0),
        std::env::temp_dir().display()
    ))
}
