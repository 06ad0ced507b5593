//! What encrypting backups costs: the same 1 GiB database backed up to s3s-fs by one
//! `serve`, alternately as it is and encrypted with age (`backup.encryption`), the service's
//! time from request to record and its CPU for each, and its peak resident memory over all
//! of them.

use std::fmt::Write as _;
use std::time::Duration;

use age::x25519::Identity;
use anyhow::{ensure, Context, Result};
use etcdmedic_tests::process::cpu_time;
use etcdmedic_tests::s3::S3Server;
use etcdmedic_tests::{EtcdVersion, RemediatorService};

use crate::backup::{
    backup_of, filled_cluster, median, record_duration, service_config, write_credentials, BUCKET,
};
use crate::verdict;

const TOKEN: &str = "bench-sealed-token";
const MIB: u64 = 1024 * 1024;
const ROUNDS: usize = 5;
/// Encrypted backups may take at most this much longer than plain ones.
const TARGET_OVERHEAD: f64 = 0.10;
const TARGET_RSS_BYTES: u64 = 64 * 1000 * 1000;

pub struct Outcome {
    db_bytes: u64,
    plain: Duration,
    sealed: Duration,
    plain_cpu: Duration,
    sealed_cpu: Duration,
    stored_plain: u64,
    stored_sealed: u64,
    peak_rss: u64,
}

impl Outcome {
    fn overhead(&self) -> f64 {
        self.sealed.as_secs_f64() / self.plain.as_secs_f64() - 1.0
    }
}

pub async fn run(db_mib: u64) -> Result<Outcome> {
    let version = EtcdVersion::V3_5;
    eprintln!("bench: encrypted backups of a {db_mib} MiB database");
    let (cluster, db_bytes) = filled_cluster(version, db_mib).await?;
    let s3 = S3Server::start_s3s_fs(BUCKET).await?;
    let dir = cluster.dir().to_path_buf();
    write_credentials(&dir, TOKEN)?;
    // One etcd cluster configured twice: as it is, and with its copies encrypted.
    let recipient = Identity::generate().to_public();
    let sealed_entry = cluster.config_entry("sealed")
        + &format!("    backup:\n      encryption: {{recipients: ['{recipient}']}}\n");
    let config = dir.join("sealed.yaml");
    let clusters = cluster.config_entry("plain") + &sealed_entry;
    std::fs::write(
        &config,
        service_config(&dir, &s3, "sealed", "{enabled: false}", &clusters),
    )?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let (mut plain, mut sealed, mut plain_cpu, mut sealed_cpu) = (vec![], vec![], vec![], vec![]);
    let mut stored = [0u64; 2];
    // Round 0 warms up and is not counted; which goes first alternates.
    for round in 0..=ROUNDS {
        for which in [round % 2, 1 - round % 2] {
            nix::unistd::sync();
            let name = ["plain", "sealed"][which];
            let before = cpu_time(service.pid()?)?;
            let record = backup_of(&service, name, round + 1).await?;
            let used = cpu_time(service.pid()?)?.saturating_sub(before);
            let took = record_duration(&record)?;
            let report = &record["report"];
            let encrypted = report["manifest"]["encryption"].is_object();
            ensure!(encrypted == (which == 1), "{name}: {}", report["manifest"]);
            stored[which] = report["destinations"][0]["stored_bytes"]
                .as_u64()
                .context("stored_bytes")?;
            eprintln!(
                "bench: round {round}: {name} {:.1} s, CPU {:.1} s",
                took.as_secs_f64(),
                used.as_secs_f64()
            );
            if round == 0 {
                continue;
            }
            let (times, cpus) = match which {
                0 => (&mut plain, &mut plain_cpu),
                _ => (&mut sealed, &mut sealed_cpu),
            };
            times.push(took);
            cpus.push(used);
        }
    }
    Ok(Outcome {
        db_bytes,
        plain: median(plain),
        sealed: median(sealed),
        plain_cpu: median(plain_cpu),
        sealed_cpu: median(sealed_cpu),
        stored_plain: stored[0],
        stored_sealed: stored[1],
        peak_rss: service.memory()?.1,
    })
}

pub fn section(out: &mut String, outcome: &Outcome) -> Result<()> {
    writeln!(out, "## Encrypted backups\n")?;
    writeln!(
        out,
        "etcd 3.5, 3 members, data on disk, filled with 1 MiB values to {} MiB; s3s-fs on \
         loopback. One `serve` with the cluster configured twice, once with \
         `backup.encryption` (age, one X25519 recipient), no drill: \
         `POST /api/v1/clusters/{{name}}/backup` until its record is written, the two taking \
         turns {ROUNDS} times after a round to warm up, each going first in every other round. \
         Each figure is the median; CPU is the service's (user and system). Peak resident \
         memory is the service's (VmHWM) over every backup.\n",
        outcome.db_bytes / MIB
    )?;
    writeln!(
        out,
        "| copies | backup | service CPU | stored object |\n|---|---|---|---|"
    )?;
    for (name, took, cpu, size) in [
        (
            "as etcd wrote them",
            outcome.plain,
            outcome.plain_cpu,
            outcome.stored_plain,
        ),
        (
            "encrypted (age)",
            outcome.sealed,
            outcome.sealed_cpu,
            outcome.stored_sealed,
        ),
    ] {
        writeln!(
            out,
            "| {name} | {:.1} s | {:.1} s | {:.1} MiB |",
            took.as_secs_f64(),
            cpu.as_secs_f64(),
            size as f64 / MIB as f64
        )?;
    }
    writeln!(
        out,
        "\nTargets: an encrypted backup at most {:.0}% longer than a plain one — {} ({:+.1}%); \
         the service under {:.0} MB resident — {} (peak {:.1} MB).\n",
        TARGET_OVERHEAD * 100.0,
        verdict(outcome.overhead() <= TARGET_OVERHEAD),
        outcome.overhead() * 100.0,
        TARGET_RSS_BYTES as f64 / 1e6,
        verdict(outcome.peak_rss < TARGET_RSS_BYTES),
        outcome.peak_rss as f64 / 1e6
    )?;
    Ok(())
}
