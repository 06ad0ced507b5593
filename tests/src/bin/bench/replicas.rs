//! Two `serve` replicas on one PostgreSQL: webhook answers through each (the standby forwards
//! to the active one) under the same load as the single service, and failover: the active
//! replica SIGKILLed while its run defragments, to the other taking over and to the run's
//! recovery recorded.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::postgres::Postgres;
use etcdmedic_tests::workload::{fragment, Fragmentation};
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion, RemediatorService};

use crate::webhook::{open_loop, payload, LOAD_TIME, RATE_PER_SECOND, TARGET_P99};
use crate::{ms, verdict, Summary};

const TOKEN: &str = "bench-webhook-token";
const FAILOVERS: usize = 3;
/// Target: a standby takes over (and the run's recovery starts) within this long of the
/// active replica's death.
const TARGET_TAKEOVER: Duration = Duration::from_secs(5);

pub struct Outcome {
    /// Runs paused: every payload decided (`ignored`) and recorded, etcd idle.
    idle_direct: Summary,
    idle_forwarded: Summary,
    direct: Summary,
    forwarded: Summary,
    accepted: usize,
    sent: usize,
    throughput: f64,
    takeovers: Vec<Duration>,
    recoveries: Vec<Duration>,
}

const SPEC: Fragmentation = Fragmentation {
    keys: 64,
    value_bytes: 1024 * 1024,
    rounds: 4,
};

pub async fn run() -> Result<Outcome> {
    let postgres = Postgres::start().await?;
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .data_on_disk()
        .start()
        .await?;
    eprintln!("bench: fragmenting a 3-member cluster for the replicas benchmark");
    fragment(&cluster.clients().await?, SPEC).await?;

    let dir = tempfile::Builder::new()
        .prefix("etcdmedic-bench-")
        .tempdir()?;
    std::fs::write(dir.path().join("token"), TOKEN)?;
    std::fs::write(dir.path().join("pg-password"), postgres.password())?;
    let mut clusters = cluster.config_entry("prod-a");
    for index in 0..FAILOVERS {
        clusters.push_str(&cluster.config_entry(&format!("failover-{index}")));
    }
    let config = dir.path().join("etcdmedic.yaml");
    std::fs::write(
        &config,
        format!(
            "remediation:\n  snapshot_dir: {}\n  settle_time: 2s\n  defrag_rule: \"dbSizeFree >= 16*1024*1024 && dbSizeInUse / dbSize < 0.5\"\n\
             remediator:\n  postgres: {{url: {}, password_file: {}}}\n  auth: {{bearer_token_file: {}}}\nclusters:\n{clusters}",
            dir.path().join("snapshots").display(),
            postgres.url_without_password(),
            dir.path().join("pg-password").display(),
            dir.path().join("token").display(),
        ),
    )?;
    let mut active = RemediatorService::start(&config, Some(TOKEN)).await?;
    let mut standby = RemediatorService::start_standby(&config, Some(TOKEN)).await?;
    forwarding(&standby, &active).await?;

    let urls = [
        format!("{}/webhook/alertmanager", active.base_url),
        format!("{}/webhook/alertmanager", standby.base_url),
    ];
    // The load spread over both replicas: first with runs paused (etcd idle), then while
    // a run is under way.
    eprintln!("bench: {RATE_PER_SECOND} webhook requests/s for {LOAD_TIME:?} over two replicas, runs paused");
    let (status, _) = active.post("/api/v1/pause").await?;
    ensure!(status == 200, "pause: {status}");
    let idle = open_loop(&urls, TOKEN).await?;
    let (status, _) = active.post("/api/v1/resume").await?;
    ensure!(status == 200, "resume: {status}");
    let (status, answer) = active.post_webhook(&payload(0)).await?;
    ensure!(status == 202, "first payload: {status} {answer}");
    eprintln!("bench: {RATE_PER_SECOND} webhook requests/s for {LOAD_TIME:?} over two replicas, a run under way");
    let load = open_loop(&urls, TOKEN).await?;
    let (direct, accepted_direct) = load.answers_from(0);
    let (forwarded, accepted_forwarded) = load.answers_from(1);
    let run_id = answer["alerts"][0]["run_id"].as_i64().context("no run")?;
    active
        .wait_for_run(run_id, Duration::from_secs(600))
        .await?;

    let mut takeovers = Vec::new();
    let mut recoveries = Vec::new();
    for index in 0..FAILOVERS {
        eprintln!("bench: failover {}/{FAILOVERS}", index + 1);
        refragment(&cluster).await?;
        let before: usize = (0..cluster.len())
            .map(|i| cluster.defrag_intervals(i).map_or(0, |d| d.len()))
            .sum();
        let (status, answer) = active
            .post(&format!("/api/v1/clusters/failover-{index}/remediate"))
            .await?;
        ensure!(status == 202, "{status} {answer}");
        let id = answer["decision"]["run_id"].as_i64().context("no run")?;
        eventually(
            "a member starts defragmenting",
            Duration::from_secs(120),
            || async {
                let now: usize = (0..cluster.len())
                    .map(|i| cluster.defrag_intervals(i).map_or(0, |d| d.len()))
                    .sum();
                ensure!(now > before, "not yet");
                Ok(())
            },
        )
        .await?;
        active.kill().await?;
        let killed = Instant::now();
        eventually(
            "the standby takes over",
            Duration::from_secs(60),
            || async {
                let (status, body) = standby.readiness().await?;
                ensure!(status == 200 && body == "ready\n", "{status} {body}");
                Ok(())
            },
        )
        .await?;
        takeovers.push(killed.elapsed());
        standby
            .recovery_recorded(id, Duration::from_secs(120))
            .await?;
        recoveries.push(killed.elapsed());
        active.restart_standby().await?;
        std::mem::swap(&mut active, &mut standby);
        forwarding(&standby, &active).await?;
    }
    Ok(Outcome {
        idle_direct: Summary::of(idle.answers_from(0).0),
        idle_forwarded: Summary::of(idle.answers_from(1).0),
        direct: Summary::of(direct),
        forwarded: Summary::of(forwarded),
        accepted: accepted_direct + accepted_forwarded,
        sent: load.answers.len(),
        throughput: (accepted_direct + accepted_forwarded) as f64 / load.took.as_secs_f64(),
        takeovers,
        recoveries,
    })
}

/// Fragments the cluster again, on fresh connections, asking again when a member dropped
/// one (the killed replica's defragmentation may have just ended).
async fn refragment(cluster: &EtcdCluster) -> Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match fragment(&cluster.clients().await?, SPEC).await {
            Ok(_) => return Ok(()),
            Err(err) if attempt < 3 => eprintln!("bench: fragmenting again after: {err:#}"),
            Err(err) => {
                let running = cluster.running();
                let tails: Vec<String> = (0..cluster.len())
                    .filter(|_| !running.is_empty())
                    .map(|i| format!("{}:\n{}", cluster.name(i), cluster.log_tail(i, 30)))
                    .collect();
                let listening = std::process::Command::new("ss")
                    .arg("-ltnp")
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                return Err(err.context(format!(
                    "members running: {running:?} at {:?}\n{listening}\n{}",
                    cluster.endpoints(),
                    tails.join("\n")
                )));
            }
        }
    }
}

/// Waits until `standby` forwards to `active`.
async fn forwarding(standby: &RemediatorService, active: &RemediatorService) -> Result<()> {
    eventually(
        "the standby forwards to the active replica",
        Duration::from_secs(30),
        || async {
            let (status, body) = standby.readiness().await?;
            ensure!(
                status == 200 && body["forwarding_to"] == active.base_url.as_str(),
                "{status} {body}"
            );
            Ok(())
        },
    )
    .await
}

pub fn section(out: &mut String, outcome: &Outcome) -> Result<()> {
    writeln!(out, "## Remediator replicas on PostgreSQL\n")?;
    writeln!(
        out,
        "Two `etcdmedic-remediator serve` replicas (release build) sharing their state in \
         PostgreSQL (Debian's, on loopback, `fsync=off`), one active and one standby that \
         forwards to it. The same load as above ({RATE_PER_SECOND} payloads a second for {} s, \
         open loop) taking turns over the two replicas: first with runs paused (each payload \
         decided `ignored` and recorded, etcd idle), then while the active one remediates a \
         fragmented 3-member etcd 3.5 cluster (each payload joined to the run and recorded). \
         Every decision is made and recorded in PostgreSQL by the active replica, one at a \
         time, over one connection.\n",
        LOAD_TIME.as_secs()
    )?;
    writeln!(
        out,
        "| | median | p90 | p99 | max | requests |\n|---|---|---|---|---|---|\n{}\n{}\n{}\n{}",
        outcome
            .idle_direct
            .row("runs paused: to the active replica (202)"),
        outcome
            .idle_forwarded
            .row("runs paused: to the standby, forwarded (202)"),
        outcome
            .direct
            .row("run under way: to the active replica (202)"),
        outcome
            .forwarded
            .row("run under way: to the standby, forwarded (202)")
    )?;
    let p99 = outcome.direct.p99.max(outcome.forwarded.p99);
    writeln!(
        out,
        "\n- Run under way: {} of {} answered 202; throughput {:.0} requests/s. Target p99 \
         under {} through either replica while a run is under way: {} ({}).\n",
        outcome.accepted,
        outcome.sent,
        outcome.throughput,
        ms(TARGET_P99),
        verdict(p99 < TARGET_P99),
        ms(p99)
    )?;
    let seconds = |all: &[Duration]| -> String {
        all.iter()
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let worst = outcome.takeovers.iter().max().copied().unwrap_or_default();
    writeln!(
        out,
        "Failover, {} times: the active replica SIGKILLed while its run defragments a member \
         (the cluster fragmented again each time); the roles swap each time.\n\n\
         - to the standby taking over (its `/readyz` says `ready`): {};\n\
         - to the dead replica's run recorded `interrupted` and its recovery (every member \
         serves reads again) recorded: {}.\n\n\
         Target: takeover within {} of the death — {} (worst {:.2} s).\n",
        outcome.takeovers.len(),
        seconds(&outcome.takeovers),
        seconds(&outcome.recoveries),
        ms(TARGET_TAKEOVER),
        verdict(worst <= TARGET_TAKEOVER),
        worst.as_secs_f64()
    )?;
    Ok(())
}
