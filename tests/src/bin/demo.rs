//! `make demo`: a local 3-member etcd and the exporter on loopback, with instructions for
//! looking at both. Ctrl-C stops everything and removes the data.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use etcdmedic_cluster::{Config, MemberClient};
use etcdmedic_tests::workload::{fragment, Fragmentation};
use etcdmedic_tests::{
    project_binary, EtcdCluster, EtcdVersion, ExporterProcess, RemediatorService,
};

/// The port a first-time user would expect; any free port when it is taken.
const PREFERRED_PORT: u16 = 9379;
const DEMO_QUOTA: u64 = 256 * 1024 * 1024;
/// Matches what `fragment` leaves: about 32 MiB of file, 4 MiB in use.
/// The demo's webhook token: printed, because the demo is for looking around.
const DEMO_TOKEN: &str = "demo-webhook-token";
/// The smallest Alertmanager payload the service takes (version 4, one firing alert); the
/// shell fills in `startsAt`, so each post is a new alert episode.
const DEMO_WEBHOOK_BODY: &str = r#"{"version":"4","groupKey":"demo","status":"firing","receiver":"etcdmedic","alerts":[{"status":"firing","labels":{"alertname":"EtcdmedicDatabaseHighFragmentation","etcd_cluster":"demo"},"startsAt":"'$(date -u +%FT%TZ)'"}]}"#;
const DEMO_RULE: &str = "dbSizeFree >= 16*1024*1024 && dbSizeInUse / dbSize < 0.5";

#[derive(Debug, Parser)]
#[command(
    name = "etcdmedic-demo",
    about = "A local etcd cluster watched by etcdmedic"
)]
struct Cli {
    /// etcd release to run.
    #[arg(long, default_value = "3.5", value_parser = ["3.4", "3.5"])]
    etcd: String,
    /// Start, check that /metrics answers, print everything, then stop (for tests).
    #[arg(long)]
    exit_after_start: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fragment a running demo cluster: large values overwritten, then compacted.
    Fragment {
        /// The demo's config file (printed when the demo starts).
        #[arg(long)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Some(Command::Fragment { config }) => fragment_cluster(config).await,
        None => run_demo(&cli).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("etcdmedic-demo: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_demo(cli: &Cli) -> Result<()> {
    let version = if cli.etcd == "3.4" {
        EtcdVersion::V3_4
    } else {
        EtcdVersion::V3_5
    };
    println!("Starting a 3-member etcd {version} cluster on 127.0.0.1 ...");
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .quota(DEMO_QUOTA)
        .start()
        .await?;
    let config = cluster.dir().join("demo.yaml");
    // Snapshots stay in the demo's directory; the rule fits the `fragment` command's 32 MiB.
    let token_file = cluster.dir().join("webhook-token");
    std::fs::write(&token_file, DEMO_TOKEN)?;
    std::fs::write(
        &config,
        format!(
            "remediation:\n  snapshot_dir: {}\n  settle_time: 1s\n  defrag_rule: \"{DEMO_RULE}\"\n\
             remediator:\n  state_path: {}\n  auth: {{bearer_token_file: {}}}\n  cooldown: 5m\n{}",
            cluster.dir().join("snapshots").display(),
            cluster.dir().join("state.sqlite").display(),
            token_file.display(),
            cluster.config_yaml("demo")
        ),
    )?;
    let exporter_binary = project_binary("etcdmedic-exporter")?;
    let remediator_binary = project_binary("etcdmedic-remediator")?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, exporter_port()?));
    let log_path = cluster.dir().join("exporter.log");
    let log = std::fs::File::create(&log_path)?;
    let exporter = ExporterProcess::spawn(
        ExporterProcess::serve_command(&exporter_binary, &config, listen),
        listen,
        log.into(),
    )
    .await?;

    let service = RemediatorService::start(&config, Some(DEMO_TOKEN)).await?;

    let table = std::process::Command::new(&exporter_binary)
        .args(["status", "--config"])
        .arg(&config)
        .output()?;
    let metrics = etcdmedic_tests::http_client()
        .get(format!("{}/metrics", exporter.base_url))
        .send()
        .await?
        .text()
        .await?;
    let series = metrics.lines().filter(|l| !l.starts_with('#')).count();

    let demo = std::env::current_exe()?;
    let url = &exporter.base_url;
    println!(
        "
etcdmedic demo is running.

  etcd members   {members}
  config         {config}
  exporter       {url}/   (pid {pid}, log {log})
  remediator     {service_url}/api/v1/runs   (webhook {service_url}/webhook/alertmanager, bearer token {token})

The status table right now (etcdmedic-exporter status):

{table}
Look around:
  curl -s {url}/metrics | grep -v '^#'        # {series} series for 3 members
  curl -s '{url}/probe?target=demo'           # one cluster, the multi-target way
  {exporter_bin} status --config {config}
  {exporter_bin} status --config {config} -o json

Fragment the cluster (about 32 MiB written, then compacted) and watch IN USE drop below 50%:
  {demo_bin} fragment --config {config}

Then remediate it: the plan first, then the run (snapshot, followers one at a time, leadership
moved, the old leader last, keyspace check):
  {remediator_bin} run --config {config} --cluster demo --dry-run
  {remediator_bin} run --config {config} --cluster demo

Or do what Alertmanager does: post its webhook to the remediator service, then read the run:
  curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{webhook_body}' \\
    {service_url}/webhook/alertmanager
  curl -s -H 'Authorization: Bearer {token}' {service_url}/api/v1/runs
  curl -s {service_url}/metrics | grep etcdmedic_remediation_runs_total

Press Ctrl-C to stop etcd, the exporter and the remediator; their data is removed.",
        members = cluster.endpoints().join(", "),
        config = config.display(),
        pid = exporter.pid(),
        log = log_path.display(),
        table = String::from_utf8_lossy(&table.stdout),
        exporter_bin = relative(&exporter_binary),
        remediator_bin = relative(&remediator_binary),
        demo_bin = relative(&demo),
        service_url = service.base_url,
        webhook_body = DEMO_WEBHOOK_BODY,
        token = DEMO_TOKEN,
    );
    anyhow::ensure!(
        series > 0 && table.status.success(),
        "the exporter did not report the cluster"
    );
    if !cli.exit_after_start {
        etcdmedic_cluster::shutdown::signal().await;
        println!("\nStopping ...");
    }
    drop(exporter);
    drop(cluster);
    println!("Stopped; nothing of the demo is left running.");
    Ok(())
}

/// 9379 when free, else any free port.
fn exporter_port() -> Result<u16> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, PREFERRED_PORT)) {
        Ok(_) => Ok(PREFERRED_PORT),
        Err(_) => etcdmedic_tests::ports::free_port(),
    }
}

/// Paths under the current directory print relative: shorter to copy.
fn relative(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            path.strip_prefix(cwd)
                .ok()
                .map(|p| format!("./{}", p.display()))
        })
        .unwrap_or_else(|| path.display().to_string())
}

async fn fragment_cluster(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let cluster = config
        .clusters
        .first()
        .context("the config lists no cluster")?;
    let mut members = Vec::new();
    for endpoint in &cluster.endpoints {
        let client = MemberClient::new(endpoint, cluster)?
            .client(cluster.status_timeout)
            .await
            .with_context(|| format!("connecting to {endpoint}"))?;
        members.push(client);
    }
    let spec = Fragmentation::default();
    println!(
        "Writing {} keys of {} KiB, {} times over, then compacting ...",
        spec.keys,
        spec.value_bytes / 1024,
        spec.rounds
    );
    let report = fragment(&members, spec).await?;
    println!(
        "Wrote {} MiB, compacted at revision {}. Run the status command again to see IN USE drop.",
        report.bytes_written / (1024 * 1024),
        report.compacted_at
    );
    Ok(())
}
