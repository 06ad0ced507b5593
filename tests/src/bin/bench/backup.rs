//! Backups to local S3 servers (s3s-fs and moto's): for a 256 MiB and a 1 GiB database, the
//! time `etcdmedic-remediator serve` takes for a backup to the bucket (snapshot streamed,
//! uploaded and checked), against `etcdctl snapshot save` followed by an upload of the file
//! with boto3 (AWS's Python client) in the same run, with the CPU each procedure cost the S3
//! server, etcd and the client side; the service's peak resident memory over the backups; and
//! the restore drill of the same database.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use etcdmedic_remediator::{PARTS_IN_FLIGHT, PART_SIZE};
use etcdmedic_tests::process::cpu_time;
use etcdmedic_tests::s3::{S3Server, S3S_FS_CREDENTIALS};
use etcdmedic_tests::workload::fill_until;
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion, RemediatorService};
use serde_json::Value;

use crate::{cores, verdict};

const TOKEN: &str = "bench-backup-token";
pub const BUCKET: &str = "etcd-backups";
const MIB: u64 = 1024 * 1024;
const TARGET_RATIO: f64 = 1.0;
const TARGET_RSS_BYTES: u64 = 64 * 1000 * 1000;
const BACKUP_DEADLINE: Duration = Duration::from_secs(900);
const ROUNDS: usize = 5;

/// The CPU one backup cost each side, user and system.
#[derive(Debug, Clone, Copy, Default)]
struct CpuShares {
    s3_server: Duration,
    etcd: Duration,
    /// etcdctl and the Python upload, or the service.
    client: Duration,
}

impl CpuShares {
    fn total(&self) -> Duration {
        self.s3_server + self.etcd + self.client
    }

    /// Each share's median over the rounds.
    fn median_of(rounds: &[CpuShares]) -> CpuShares {
        let of = |pick: fn(&CpuShares) -> Duration| median(rounds.iter().map(pick).collect());
        CpuShares {
            s3_server: of(|c| c.s3_server),
            etcd: of(|c| c.etcd),
            client: of(|c| c.client),
        }
    }
}

/// What the S3 server and the etcd members have used so far.
struct ServerCpu {
    s3_server: Duration,
    etcd: Duration,
}

impl ServerCpu {
    fn now(s3: &S3Server, cluster: &EtcdCluster) -> Result<ServerCpu> {
        Ok(ServerCpu {
            s3_server: cpu_time(s3.pid()?)?,
            etcd: cluster.cpu_time()?,
        })
    }

    /// What they used since `self`, with the client side's `client`.
    fn since(&self, s3: &S3Server, cluster: &EtcdCluster, client: Duration) -> Result<CpuShares> {
        let now = ServerCpu::now(s3, cluster)?;
        Ok(CpuShares {
            s3_server: now.s3_server.saturating_sub(self.s3_server),
            etcd: now.etcd.saturating_sub(self.etcd),
            client,
        })
    }
}

/// CPU the bench's waited-for children (etcdctl, Python) have used so far.
fn children_cpu() -> Result<Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let seconds = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// The S3-compatible server a trial uploads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// Rust, taking parts on any core: the clients' own work decides the comparison, as it
    /// does against a store across a network. The targets are judged against it.
    S3sFs,
    /// Python, the backup tests' server: its own CPU per byte sets the pace on 2 cores.
    Moto,
}

impl Server {
    pub const ALL: [Server; 2] = [Server::S3sFs, Server::Moto];

    fn name(self) -> &'static str {
        match self {
            Server::S3sFs => "s3s-fs",
            Server::Moto => "moto",
        }
    }

    async fn start(self) -> Result<S3Server> {
        match self {
            Server::S3sFs => S3Server::start_s3s_fs(BUCKET).await,
            Server::Moto => S3Server::start(BUCKET).await,
        }
    }
}

pub struct Trial {
    server: Server,
    db_bytes: u64,
    usual_cpu: CpuShares,
    etcdmedic_cpu: CpuShares,
    etcdctl_save: Duration,
    boto3_upload: Duration,
    /// The median of the rounds' sums (not the sum of the medians).
    usual: Duration,
    etcdmedic: Duration,
    etcdmedic_with_drill: Duration,
    drill: Duration,
    peak_rss: u64,
}

impl Trial {
    /// etcdmedic's time against etcdctl + boto3's.
    fn ratio(&self) -> f64 {
        self.etcdmedic.as_secs_f64() / self.usual.as_secs_f64()
    }
}

/// One database size: a fresh cluster filled to `db_mib`, then for each of `servers` one
/// server and one service.
pub async fn run(db_mib: u64, servers: &[Server]) -> Result<Vec<Trial>> {
    let version = EtcdVersion::V3_5;
    eprintln!("bench: backups of a {db_mib} MiB database");
    let (cluster, db_bytes) = filled_cluster(version, db_mib).await?;
    let mut trials = Vec::new();
    for &server in servers {
        eprintln!("bench: to {}", server.name());
        trials.push(trial(version, &cluster, db_bytes, server).await?);
    }
    Ok(trials)
}

/// A 3-member cluster with its data on disk, filled with 1 MiB values to `db_mib`; its
/// database's size.
pub async fn filled_cluster(version: EtcdVersion, db_mib: u64) -> Result<(EtcdCluster, u64)> {
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .quota(8 * 1024 * MIB)
        .data_on_disk()
        .start()
        .await?;
    let mut client = cluster.client(0).await?;
    let db_bytes = fill_until(&mut client, db_mib * MIB, 1024 * 1024, 4096).await?;
    Ok((cluster, db_bytes))
}

/// The service's bearer token `token` and the S3 servers' credentials, as files in `dir`
/// (`token`, `s3-id`, `s3-secret`).
pub fn write_credentials(dir: &Path, token: &str) -> Result<()> {
    let (key, secret) = S3S_FS_CREDENTIALS;
    std::fs::write(dir.join("token"), token)?;
    std::fs::write(dir.join("s3-id"), format!("{key}\n"))?;
    std::fs::write(dir.join("s3-secret"), format!("{secret}\n"))?;
    Ok(())
}

/// A `serve` configuration with the credentials of [`write_credentials`] in `dir`, its state
/// in `state-<name>.sqlite`, backing up to `s3`'s bucket (straight to the server, as boto3
/// goes, not through the test proxy), with `restore_drill` and the cluster entries `clusters`.
pub fn service_config(
    dir: &Path,
    s3: &S3Server,
    name: &str,
    restore_drill: &str,
    clusters: &str,
) -> String {
    format!(
        "remediation: {{snapshot_dir: {snapshots}}}\nremediator:\n  state_path: {state}\n  \
         auth: {{bearer_token_file: {token}}}\nbackup:\n  destinations:\n    - {{name: \
         offsite, kind: s3, bucket: {BUCKET}, endpoint: '{endpoint}', path_style: true, \
         access_key_id_file: {id}, secret_access_key_file: {secret}}}\n  restore_drill: \
         {restore_drill}\nclusters:\n{clusters}",
        snapshots = dir.join("snapshots").display(),
        state = dir.join(format!("state-{name}.sqlite")).display(),
        token = dir.join("token").display(),
        endpoint = s3.direct_url(),
        id = dir.join("s3-id").display(),
        secret = dir.join("s3-secret").display(),
    )
}

async fn trial(
    version: EtcdVersion,
    cluster: &EtcdCluster,
    db_bytes: u64,
    server: Server,
) -> Result<Trial> {
    let s3 = server.start().await?;
    let dir = cluster.dir().to_path_buf();
    write_credentials(&dir, TOKEN)?;

    let config = dir.join("bench.yaml");
    let write_config = |drill: bool| -> Result<()> {
        let drill = format!(
            "{{enabled: {drill}, bin_dir: {}}}",
            version.bin_dir()?.display()
        );
        let entry = cluster.config_entry("bench");
        std::fs::write(
            &config,
            service_config(&dir, &s3, server.name(), &drill, &entry),
        )?;
        Ok(())
    };
    write_config(false)?;
    let mut service = RemediatorService::start(&config, Some(TOKEN)).await?;
    // The two procedures take turns, ROUNDS times each, and each figure is a median: on two
    // shared cores one run alone says little.
    let (mut saves, mut uploads, mut usual, mut plain) = (vec![], vec![], vec![], vec![]);
    let (mut usual_cpu, mut etcdmedic_cpu) = (vec![], vec![]);
    // Round 0 warms up and is not counted: moto's first uploads cost it the most CPU. Which
    // procedure goes first alternates, since moto keeps getting a little faster.
    let mut records = 0;
    for round in 0..=ROUNDS {
        let mut usual_round = None;
        let mut etcdmedic_round = None;
        for procedure in [round % 2, 1 - round % 2] {
            nix::unistd::sync();
            if procedure == 0 {
                usual_round = Some(usual_procedure(version, cluster, &s3).await?);
                continue;
            }
            let servers = ServerCpu::now(&s3, cluster)?;
            let service_before = cpu_time(service.pid()?)?;
            records += 1;
            let took = record_duration(&backup(&service, records).await?)?;
            let service_used = cpu_time(service.pid()?)?.saturating_sub(service_before);
            etcdmedic_round = Some((took, servers.since(&s3, cluster, service_used)?));
        }
        let ((save, upload, cpu), (took, shares)) = usual_round
            .zip(etcdmedic_round)
            .context("a procedure did not run")?;
        eprintln!(
            "bench: round {round}: etcdctl + boto3 {:.1} s, CPU {cpu:?}; etcdmedic {:.1} s, \
             CPU {shares:?}",
            (save + upload).as_secs_f64(),
            took.as_secs_f64(),
        );
        if round == 0 {
            continue;
        }
        saves.push(save);
        uploads.push(upload);
        usual.push(save + upload);
        usual_cpu.push(cpu);
        plain.push(took);
        etcdmedic_cpu.push(shares);
    }
    let mut peak_rss = service.memory()?.1;
    service.terminate(Duration::from_secs(30)).await?;

    write_config(true)?;
    service.restart().await?;
    nix::unistd::sync();
    let proven = backup(&service, records + 1).await?;
    peak_rss = peak_rss.max(service.memory()?.1);
    let drill = proven["report"]["manifest"]["restore_drill"]["duration_seconds"]
        .as_f64()
        .context("no drill duration")?;
    Ok(Trial {
        server,
        db_bytes,
        usual_cpu: CpuShares::median_of(&usual_cpu),
        etcdmedic_cpu: CpuShares::median_of(&etcdmedic_cpu),
        etcdctl_save: median(saves),
        boto3_upload: median(uploads),
        usual: median(usual),
        etcdmedic: median(plain),
        etcdmedic_with_drill: record_duration(&proven)?,
        drill: Duration::from_secs_f64(drill),
        peak_rss,
    })
}

/// The usual procedure: `etcdctl snapshot save` from a follower, then boto3 uploads the file.
/// Its save and upload times, and the CPU it cost.
async fn usual_procedure(
    version: EtcdVersion,
    cluster: &EtcdCluster,
    s3: &S3Server,
) -> Result<(Duration, Duration, CpuShares)> {
    let saved = cluster.dir().join("etcdctl.db");
    nix::unistd::sync();
    let servers = ServerCpu::now(s3, cluster)?;
    let clients_before = children_cpu()?;
    let started = Instant::now();
    let output = tokio::process::Command::new(version.etcdctl()?)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &cluster.endpoint(1), "snapshot", "save"])
        .arg(&saved)
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "etcdctl snapshot save: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let save = started.elapsed();
    let (upload, start_cpu) = boto3_upload(s3, &saved).await?;
    let clients = children_cpu()?
        .saturating_sub(clients_before)
        .saturating_sub(start_cpu);
    let cpu = servers.since(s3, cluster, clients)?;
    std::fs::remove_file(&saved)?;
    Ok((save, upload, cpu))
}

pub fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    durations
        .get(durations.len() / 2)
        .copied()
        .unwrap_or_default()
}

/// Asks the service for a backup of cluster `bench` and waits for the `count`th record; it
/// must have succeeded.
async fn backup(service: &RemediatorService, count: usize) -> Result<Value> {
    backup_of(service, "bench", count).await
}

/// [`backup`] of the configured cluster `cluster`.
pub async fn backup_of(service: &RemediatorService, cluster: &str, count: usize) -> Result<Value> {
    let (code, body) = service
        .post(&format!("/api/v1/clusters/{cluster}/backup"))
        .await?;
    ensure!(code == 202, "{body}");
    let record = eventually("the backup finishes", BACKUP_DEADLINE, || async {
        let (_, body) = service
            .get(&format!("/api/v1/backups?cluster={cluster}"))
            .await?;
        let backups = body["backups"].as_array().cloned().unwrap_or_default();
        ensure!(backups.len() >= count, "{} so far", backups.len());
        Ok(backups[0].clone())
    })
    .await
    .with_context(|| service.output())?;
    ensure!(record["outcome"] == "succeeded", "{record}");
    eprintln!(
        "bench: backup {count}: {} ({})",
        record["report"]["destinations"], record["report"]["duration"]
    );
    Ok(record)
}

/// From the request to the record: the snapshot, the drill and the upload with its check.
pub fn record_duration(record: &Value) -> Result<Duration> {
    let time = |key: &str| -> Result<std::time::SystemTime> {
        Ok(humantime::parse_rfc3339(
            record[key].as_str().context("no time")?,
        )?)
    };
    Ok(time("finished_at")?.duration_since(time("requested_at")?)?)
}

/// `upload_file` of boto3 with its default part size (8 MiB): its time and
/// the CPU of the interpreter's start and boto3's import, which are not the upload.
async fn boto3_upload(s3: &S3Server, file: &Path) -> Result<(Duration, Duration)> {
    let script = format!(
        "import boto3, boto3.s3.transfer as t\ns3 = boto3.client('s3', endpoint_url={endpoint:?}, \
         region_name='us-east-1', aws_access_key_id={key:?}, aws_secret_access_key={secret:?})\n\
         s3.upload_file({file:?}, {BUCKET:?}, 'etcdctl/etcdctl.db', \
         Config=t.TransferConfig(multipart_chunksize=8*1024*1024))\n",
        endpoint = s3.direct_url(),
        file = file.display().to_string(),
        key = S3S_FS_CREDENTIALS.0,
        secret = S3S_FS_CREDENTIALS.1,
    );
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    // The interpreter's start and boto3's import are not the upload: timed without them.
    let cpu_before = children_cpu()?;
    let started = Instant::now();
    let output = tokio::process::Command::new(&python)
        .args(["-c", "import boto3"])
        .output()
        .await?;
    let start_cost = started.elapsed();
    let start_cpu = children_cpu()?.saturating_sub(cpu_before);
    ensure!(output.status.success(), "python3 -c 'import boto3' failed");
    let started = Instant::now();
    let output = tokio::process::Command::new(&python)
        .args(["-c", &script])
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "boto3 upload: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((started.elapsed().saturating_sub(start_cost), start_cpu))
}

pub fn section(out: &mut String, trials: &[Trial]) -> Result<()> {
    writeln!(out, "## Backups to S3\n")?;
    writeln!(
        out,
        "etcd 3.5, 3 members, data on disk, filled with 1 MiB values to the size shown. Two \
         S3-compatible servers on loopback, each reached directly by both procedures: s3s-fs \
         (crates.io, Rust, storing objects as files) and moto's (PyPI `moto[server]`, Python, \
         the backup tests' server). **etcdctl + boto3**: `etcdctl snapshot save` from a \
         follower, then boto3's `upload_file` (8 MiB parts; the interpreter's start and boto3's \
         import subtracted). **etcdmedic**: `POST /api/v1/clusters/{{name}}/backup` to `serve` \
         until its record is written: the snapshot streamed from the most caught-up follower to \
         the staging file and, at the same time, to the bucket in {part} MiB parts \
         ({PARTS_IN_FLIGHT} in flight), while the member computes the HashKV to record; checked \
         against etcd's trailer; the object confirmed by its multipart ETag; the manifest \
         written. After one round to warm up, the two procedures take turns {ROUNDS} times, \
         each going first in every other round; each figure is the median (the sum's median \
         for etcdctl + boto3). Then one etcdmedic backup with the restore drill. Peak resident \
         memory is the service's (VmHWM) over every backup; the drill's throwaway etcd is a \
         process of its own.\n",
        part = PART_SIZE / MIB as usize,
    )?;
    writeln!(
        out,
        "| S3 server | database | etcdctl save | boto3 upload | etcdctl + boto3 | etcdmedic (no drill) | ratio | etcdmedic with drill | drill | service peak resident |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|")?;
    let seconds = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    for trial in trials {
        writeln!(
            out,
            "| {} | {} MiB | {} | {} | {} | {} | {:.2}x | {} | {} | {:.1} MB |",
            trial.server.name(),
            trial.db_bytes / MIB,
            seconds(trial.etcdctl_save),
            seconds(trial.boto3_upload),
            seconds(trial.usual),
            seconds(trial.etcdmedic),
            trial.ratio(),
            seconds(trial.etcdmedic_with_drill),
            seconds(trial.drill),
            trial.peak_rss as f64 / 1e6,
        )?;
    }
    let largest = |server: Server| {
        trials
            .iter()
            .filter(|t| t.server == server)
            .max_by_key(|t| t.db_bytes)
    };
    let judged = largest(Server::S3sFs).context("no backup trial to s3s-fs")?;
    let peak = trials.iter().map(|t| t.peak_rss).max().unwrap_or(0);
    writeln!(
        out,
        "\nTargets: the largest database's backup at most {TARGET_RATIO:.1}x etcdctl + boto3, \
         judged against s3s-fs — {} ({:.2}x); the service under {:.0} MB resident whatever the \
         size and server — {} (peak {:.1} MB).\n",
        verdict(judged.ratio() <= TARGET_RATIO),
        judged.ratio(),
        TARGET_RSS_BYTES as f64 / 1e6,
        verdict(peak < TARGET_RSS_BYTES),
        peak as f64 / 1e6
    )?;
    for server in Server::ALL {
        if let Some(trial) = largest(server) {
            cpu_shares(out, trial)?;
        }
    }
    if let Some(moto) = largest(Server::Moto) {
        writeln!(
            out,
            "Why two servers, and the target judged against s3s-fs: moto is one Python \
             process, its request handling under one interpreter lock, and it spends {} of CPU \
             taking in a {} MiB backup on the same {} cores as etcd and the client. Against it \
             both procedures wait on moto, and moto's pace decides the ratio ({:.2}x here). \
             s3s-fs takes parts on any core and spends {} on the same backup, so the clients' \
             own work decides the comparison, as it does against a store across a network. moto \
             is shown because the tests use it.\n",
            seconds(moto.etcdmedic_cpu.s3_server),
            moto.db_bytes / MIB,
            cores(),
            moto.ratio(),
            seconds(judged.etcdmedic_cpu.s3_server),
        )?;
    }
    Ok(())
}

/// Where the CPU of one backup of `trial`'s database went, each procedure.
fn cpu_shares(out: &mut String, trial: &Trial) -> Result<()> {
    let seconds = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    writeln!(
        out,
        "CPU of one backup of the {} MiB database to {} (user and system, the median of the \
         rounds for each column):\n",
        trial.db_bytes / MIB,
        trial.server.name(),
    )?;
    writeln!(
        out,
        "| procedure | S3 server | etcd (3 members) | client side | all | wall time |\n|---|---|---|---|---|---|"
    )?;
    for (name, cpu, wall) in [
        ("etcdctl + boto3", trial.usual_cpu, trial.usual),
        (
            "etcdmedic (the service)",
            trial.etcdmedic_cpu,
            trial.etcdmedic,
        ),
    ] {
        writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            seconds(cpu.s3_server),
            seconds(cpu.etcd),
            seconds(cpu.client),
            seconds(cpu.total()),
            seconds(wall),
        )?;
    }
    let cores = cores();
    writeln!(
        out,
        "\nOn {cores} shared cores a procedure cannot take less than its CPU spread over them: \
         {} for etcdctl + boto3, {} for etcdmedic. etcdmedic's client side (gRPC receive, \
         sha256, the parts' md5 for the ETag, the staging file) also records the member's \
         HashKV, which etcd computes during the stream; etcdctl + boto3 record nothing to check \
         a restore against.\n",
        seconds(trial.usual_cpu.total() / cores),
        seconds(trial.etcdmedic_cpu.total() / cores),
    )?;
    Ok(())
}
