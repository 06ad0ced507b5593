//! `make demo`: the whole loop on loopback. A 3-member etcd, the exporter, the remediator
//! service, Prometheus with the project's rules (short `for`), and Alertmanager routing the
//! remediation alerts to the remediator with a bearer token. Fragment the cluster and watch
//! the alert fire and the run fix it. Backups go hourly to a directory and to a local S3 server
//! (moto's). Ctrl-C stops everything and removes the data.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use clap::{Parser, Subcommand};
use etcdmedic_cluster::{Config, MemberClient};
use etcdmedic_tests::alertmanager::{Alertmanager, Routing};
use etcdmedic_tests::prometheus::{repository_file, with_short_durations_for, Job, Prometheus};
use etcdmedic_tests::s3::S3Server;
use etcdmedic_tests::workload::{fragment, Fragmentation};
use etcdmedic_tests::{
    eventually, project_binary, EtcdCluster, EtcdVersion, ExporterProcess, RemediatorService,
};

/// The port a first-time user would expect; any free port when it is taken.
mod narrate;

use narrate::Stack;

const PREFERRED_PORT: u16 = 9379;
const DEMO_QUOTA: u64 = 1024 * 1024 * 1024;
/// The demo's webhook token: printed, because the demo is for looking around.
const DEMO_TOKEN: &str = "demo-webhook-token";
/// The bucket the demo's backups go to.
const DEMO_BUCKET: &str = "etcd-backups";
/// The one rule the demo shortens, so that it fires seconds after the fragmentation rather
/// than ten minutes; every other rule keeps its production durations, so nothing fires in
/// the demo that would not fire in production for the same events.
const DEMO_ALERT: &str = "EtcdmedicDatabaseHighFragmentation";
const DEMO_FOR: &str = "5s";
/// 30 minutes in production (a fragmentation alert that flaps is worse than a late resolve).
const DEMO_KEEP_FIRING: &str = "1m";
/// How long `--exit-after-remediation` waits for the whole loop.
const LOOP_DEADLINE: Duration = Duration::from_secs(240);
/// 160 MiB written over 20 MiB kept: past the rules' and the built-in rule's 100 MiB floor.
const DEMO_FRAGMENTATION: Fragmentation = Fragmentation {
    keys: 20,
    value_bytes: 1024 * 1024,
    rounds: 8,
};

#[derive(Debug, Parser)]
#[command(
    name = "etcdmedic-demo",
    version = etcdmedic_cluster::build_info::VERSION_LONG,
    about = "A local etcd cluster watched by etcdmedic"
)]
struct Cli {
    /// etcd release to run.
    #[arg(long, default_value = "3.5", value_parser = ["3.4", "3.5", "3.6", "3.7"])]
    etcd: String,
    /// Start, check that /metrics answers, print everything, then stop (for tests).
    #[arg(long)]
    exit_after_start: bool,
    /// Start, fragment the cluster, wait until the alert reaches the remediator and its run
    /// succeeds, then stop (the end-to-end test of the demo).
    #[arg(long, conflicts_with = "exit_after_start")]
    exit_after_remediation: bool,
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
        /// Return once the cluster is fragmented, instead of narrating until the run ends.
        #[arg(long)]
        no_wait: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Some(Command::Fragment { config, no_wait }) => fragment_and_watch(config, *no_wait).await,
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
    let version = EtcdVersion::ALL
        .into_iter()
        .find(|version| version.to_string() == cli.etcd)
        .unwrap_or(EtcdVersion::V3_5);
    println!("Starting a 3-member etcd {version} cluster on 127.0.0.1 ...");
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .quota(DEMO_QUOTA)
        .start()
        .await?;
    let dir = cluster.dir().to_path_buf();
    let config = dir.join("demo.yaml");
    let token_file = dir.join("webhook-token");
    write_secret(&token_file, DEMO_TOKEN)?;
    let remediator_port = etcdmedic_tests::ports::free_port()?;
    let webhook = format!("http://127.0.0.1:{remediator_port}/webhook/alertmanager");

    println!("Starting an S3-compatible server (moto) for backups ...");
    let s3 = S3Server::start(DEMO_BUCKET).await?;
    write_secret(&dir.join("s3-access-key-id"), "demo\n")?;
    write_secret(&dir.join("s3-secret-access-key"), "demo-secret\n")?;

    println!("Starting Alertmanager ...");
    // Everything under the demo's directory, so one `rm` (and one check) covers it all.
    let alertmanager = Alertmanager::start_in(
        &dir,
        &webhook,
        &token_file,
        &Routing {
            group_wait: Duration::from_secs(1),
            group_interval: Duration::from_secs(10),
            repeat_interval: Duration::from_secs(3600),
        },
        &[],
    )
    .await?;
    // The built-in defrag rule, the defaults a user gets; snapshots and state stay in the
    // demo's directory.
    std::fs::write(
        &config,
        format!(
            "remediation:\n  snapshot_dir: {}\n  settle_time: 1s\n\
             remediator:\n  state_path: {}\n  auth: {{bearer_token_file: {}}}\n  cooldown: 5m\n  \
             silences: {{alertmanager_url: \"{}\"}}\n\
             backup:\n  schedule: '0 * * * *'\n  retention: {{keep: 24}}\n  \
             restore_drill: {{bin_dir: {}}}\n  destinations:\n    \
             - {{name: near, kind: local, path: {}}}\n    \
             - {{name: offsite, kind: s3, bucket: {DEMO_BUCKET}, endpoint: '{}', path_style: true, \
             access_key_id_file: s3-access-key-id, secret_access_key_file: s3-secret-access-key}}\n{}",
            dir.join("snapshots").display(),
            dir.join("state.sqlite").display(),
            token_file.display(),
            alertmanager.url,
            version.bin_dir()?.display(),
            dir.join("backups").display(),
            s3.endpoint(),
            cluster.config_yaml("demo")
        ),
    )?;

    let exporter_binary = project_binary("etcdmedic-exporter")?;
    let remediator_binary = project_binary("etcdmedic-remediator")?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, exporter_port()?));
    let exporter_log = dir.join("exporter.log");
    let exporter = ExporterProcess::spawn(
        ExporterProcess::serve_command(&exporter_binary, &config, listen),
        listen,
        std::fs::File::create(&exporter_log)?.into(),
    )
    .await?;
    let remediator_log = dir.join("remediator.log");
    let service = RemediatorService::start_logged(
        &config,
        Some(DEMO_TOKEN),
        remediator_port,
        &remediator_log,
    )
    .await?;

    println!(
        "Starting Prometheus with the project's rules (in the demo only, \
         {DEMO_ALERT}'s `for:` is {DEMO_FOR} and its `keep_firing_for:` {DEMO_KEEP_FIRING}; \
         every other rule as in production) ..."
    );
    let rules = with_short_durations_for(
        &repository_file("alerts/etcdmedic.rules.yaml")?,
        &[DEMO_ALERT],
        DEMO_FOR,
        DEMO_KEEP_FIRING,
    );
    let prometheus = Prometheus::start_in(
        &dir,
        &[
            Job {
                name: "etcdmedic-exporter",
                targets: vec![listen.to_string()],
            },
            Job {
                name: "etcdmedic-remediator",
                targets: vec![format!("127.0.0.1:{remediator_port}")],
            },
        ],
        &[("etcdmedic.rules.yaml", rules)],
        &[alertmanager.url.trim_start_matches("http://").to_string()],
    )
    .await?;

    Stack {
        prometheus: prometheus.url.clone(),
        remediator: service.base_url.clone(),
        token: DEMO_TOKEN.to_string(),
    }
    .write(&dir)?;

    println!("Taking a first backup (POST /api/v1/clusters/demo/backup) ...");
    let backup = first_backup(&service).await?;
    let listing = format!("{}/{DEMO_BUCKET}?list-type=2&prefix=demo/", s3.direct_url());
    let listed = etcdmedic_tests::http_client()
        .get(&listing)
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        listed.contains(&format!("<Key>demo/{}</Key>", backup.file)),
        "the bucket does not list the backup: {listed}"
    );

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
  exporter       {url}/   (log {exporter_log})
  remediator     {service_url}/   (web pages: log in with the token {token}; log {remediator_log})
  prometheus     {prometheus_url}/api/v1/alerts   (JSON: Debian's Prometheus 3.5 has no web pages)
  alertmanager   {alertmanager_url}/api/v2/alerts   (JSON: Debian's Alertmanager has no web pages)

The status table right now (etcdmedic-exporter status):

{table}
Look around:
  curl -s {url}/metrics | grep -v '^#'        # {series} series for 3 members
  {exporter_bin} status --config {config}

Fragment the cluster (160 MiB written, then compacted, 20 MiB kept), then watch:
  {demo_bin} fragment --config {config}
  {service_url}/ui/runs   (in a browser: the run step by step, its alerts, the sizes)
  tail -f {remediator_log}
  curl -s -H 'Authorization: Bearer {token}' {service_url}/api/v1/runs

Backups, hourly, each proven by a restore drill before it counts, go to
  {backups_dir}
  s3://{bucket}/demo/   (moto's S3 server)
The first: {first}
  curl -s -H 'Authorization: Bearer {token}' {service_url}/api/v1/backups
  curl -s '{listing}'
  {remediator_bin} backup --config {config} --cluster demo
  {remediator_bin} drill --config {config} --cluster demo
  {remediator_bin} restore --config {config} --cluster demo --into {restore_dir} --dry-run

Within a minute EtcdmedicDatabaseHighFragmentation fires in Prometheus, Alertmanager sends it to
the remediator (which silences it while it works), and the run snapshots the cluster and
defragments the members one at a time, the leader last. Or run the same by hand:
  {remediator_bin} run --config {config} --cluster demo --dry-run

Press Ctrl-C to stop everything; the data is removed.",
        members = format_args!(
            "ETCDCTL_API=3 etcdctl --endpoints={} endpoint status -w table",
            cluster.endpoints().join(",")
        ),
        config = config.display(),
        exporter_log = exporter_log.display(),
        remediator_log = remediator_log.display(),
        table = String::from_utf8_lossy(&table.stdout),
        exporter_bin = relative(&exporter_binary),
        remediator_bin = relative(&remediator_binary),
        demo_bin = relative(&demo),
        service_url = service.base_url,
        prometheus_url = prometheus.url,
        alertmanager_url = alertmanager.url,
        token = DEMO_TOKEN,
        restore_dir = dir.join("restore").display(),
        backups_dir = dir.join("backups").join("demo").display(),
        bucket = DEMO_BUCKET,
        first = backup.summary,
    );
    ensure!(
        series > 0 && table.status.success(),
        "the exporter did not report the cluster"
    );
    if cli.exit_after_remediation {
        fragment_and_watch(&config, false).await?;
    } else if !cli.exit_after_start {
        etcdmedic_cluster::shutdown::signal().await;
        println!("\nStopping ...");
    }
    drop(prometheus);
    drop(service);
    drop(alertmanager);
    drop(s3);
    drop(exporter);
    drop(cluster);
    println!("Stopped; nothing of the demo is left running.");
    Ok(())
}

/// `fragment`: fragments the cluster, then (unless `no_wait`) narrates until the run that
/// the alert asks for ends; an error when it did not succeed.
async fn fragment_and_watch(config: &Path, no_wait: bool) -> Result<()> {
    if no_wait {
        return fragment_cluster(config).await;
    }
    let stack = Stack::of(config)?;
    let after = narrate::last_run(&stack).await?;
    fragment_cluster(config).await?;
    let end = narrate::until_the_run_ends(&stack, after, LOOP_DEADLINE).await?;
    ensure!(
        end.outcome == "succeeded",
        "run {} ended {}: {}",
        end.id,
        end.outcome,
        end.reason
    );
    println!(
        "The run in a browser: {}/ui/runs/{} (log in with the token {})",
        stack.remediator, end.id, stack.token
    );
    Ok(())
}

struct FirstBackup {
    file: String,
    summary: String,
}

/// Asks the service for a backup and waits until it is recorded.
async fn first_backup(service: &RemediatorService) -> Result<FirstBackup> {
    let (code, body) = service.post("/api/v1/clusters/demo/backup").await?;
    ensure!(
        code == 202,
        "POST /api/v1/clusters/demo/backup: {code} {body}"
    );
    let backup = eventually("the first backup is recorded", LOOP_DEADLINE, || async {
        let (_, body) = service.get("/api/v1/backups?cluster=demo").await?;
        body["backups"][0].as_object().cloned().context("none yet")
    })
    .await?;
    ensure!(
        backup["outcome"] == "succeeded",
        "the first backup {}: {}",
        backup["outcome"],
        backup["reason"]
    );
    let manifest = &backup["report"]["manifest"];
    let file = manifest["file"].as_str().context("file")?.to_string();
    let summary = format!(
        "{file} (revision {}, {} KiB), drill passed in {:.1}s",
        manifest["revision"],
        manifest["size_bytes"].as_u64().unwrap_or(0) / 1024,
        manifest["restore_drill"]["duration_seconds"]
            .as_f64()
            .unwrap_or(0.0)
    );
    Ok(FirstBackup { file, summary })
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
    let spec = DEMO_FRAGMENTATION;
    println!(
        "Writing {} keys of {} KiB, {} times over, then compacting ...",
        spec.keys,
        spec.value_bytes / 1024,
        spec.rounds
    );
    let report = fragment(&members, spec).await?;
    println!(
        "Wrote {} MiB, compacted at revision {}. Run the status command again to see the IN USE \
         percentage drop.",
        report.bytes_written / (1024 * 1024),
        report.compacted_at
    );
    Ok(())
}

/// A secret file as etcdmedic expects one: its owner's alone (0600), so that nothing warns.
fn write_secret(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(content.as_bytes())
}
