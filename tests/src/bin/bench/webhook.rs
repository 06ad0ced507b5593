//! The webhook service under load: 200 Alertmanager payloads a second for 10 s against
//! `etcdmedic-remediator serve` while it remediates a real cluster, and the time from an
//! alert posted to a real Alertmanager to the run's first step.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::alertmanager::{Alertmanager, Routing};
use etcdmedic_tests::workload::{fragment, Fragmentation};
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion, RemediatorService};
use serde_json::{json, Value};

use crate::{ms, verdict, Summary};

const TOKEN: &str = "bench-webhook-token";
pub const RATE_PER_SECOND: u64 = 200;
pub const LOAD_TIME: Duration = Duration::from_secs(10);
pub const TARGET_P99: Duration = Duration::from_millis(20);
/// Clusters (names over the same etcd) used for the alert-to-run timings, one each, so
/// neither grouping nor cooldown of one measurement affects the next.
const ALERT_TIMINGS: usize = 5;
const GROUP_WAIT: Duration = Duration::from_secs(1);

pub struct Outcome {
    latency: Summary,
    sent: usize,
    accepted: usize,
    throughput: f64,
    peak_rss: u64,
    /// Seconds of the load window during which the run was under way.
    run_overlap: Duration,
    run_outcome: String,
    alert_to_run: Vec<Duration>,
}

/// Three firing alerts of one cluster, as Alertmanager groups them (`group_by: [etcd_cluster]`).
pub fn payload(sequence: usize) -> Value {
    let alert = |name: &str, member: &str| {
        json!({
            "status": "firing",
            "labels": {"alertname": name, "etcd_cluster": "prod-a", "member": member, "severity": "warning"},
            "annotations": {"summary": "etcd database fragmented", "description": "In use 18% of 790 MiB", "runbook_url": "https://example.invalid/runbook"},
            "startsAt": "2026-11-21T07:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=etcdmedic_member_db_in_use_ratio",
            "fingerprint": format!("{name}-{member}"),
        })
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}/{{}}:{{etcd_cluster=\"prod-a\"}}#{sequence}"),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "etcdmedic",
        "groupLabels": {"etcd_cluster": "prod-a"},
        "commonLabels": {"alertname": "EtcdmedicDatabaseHighFragmentation", "etcd_cluster": "prod-a"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            alert("EtcdmedicDatabaseHighFragmentation", "m0"),
            alert("EtcdmedicDatabaseHighFragmentation", "m1"),
            alert("EtcdmedicDatabaseHighFragmentation", "m2"),
        ]
    })
}

pub async fn run() -> Result<Outcome> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_4)
        .members(3)
        .data_on_disk()
        .start()
        .await?;
    eprintln!("bench: fragmenting a 3-member cluster for the webhook benchmark");
    let spec = Fragmentation {
        keys: 64,
        value_bytes: 1024 * 1024,
        rounds: 4,
    };
    fragment(&cluster.clients().await?, spec).await?;

    let dir = tempfile::Builder::new()
        .prefix("etcdmedic-bench-")
        .tempdir()?;
    std::fs::write(dir.path().join("token"), TOKEN)?;
    let mut clusters = cluster.config_entry("prod-a");
    for index in 0..ALERT_TIMINGS {
        clusters.push_str(&cluster.config_entry(&format!("timing-{index}")));
    }
    let config = dir.path().join("etcdmedic.yaml");
    std::fs::write(
        &config,
        format!(
            "remediation:\n  snapshot_dir: {}\n  settle_time: 6s\n  defrag_rule: \"dbSizeFree >= 16*1024*1024 && dbSizeInUse / dbSize < 0.5\"\n\
             remediator:\n  state_path: {}\n  auth: {{bearer_token_file: {}}}\nclusters:\n{clusters}",
            dir.path().join("snapshots").display(),
            dir.path().join("state.sqlite").display(),
            dir.path().join("token").display(),
        ),
    )?;
    let port = etcdmedic_tests::ports::free_port()?;
    let service = RemediatorService::start_on(&config, Some(TOKEN), port).await?;

    // Start a real remediation, and load the webhook while it runs.
    let (status, answer) = service.post_webhook(&payload(0)).await?;
    ensure!(status == 202, "first payload: {status} {answer}");
    let run_id = answer["alerts"][0]["run_id"]
        .as_i64()
        .context("no run queued")?;
    eventually("the run starts", Duration::from_secs(30), || async {
        let (_, status) = service.get("/api/v1/status").await?;
        ensure!(status["clusters"][0]["running_run"] == run_id, "{status}");
        Ok(())
    })
    .await?;

    eprintln!("bench: {RATE_PER_SECOND} webhook requests/s for {LOAD_TIME:?}");
    let url = format!("{}/webhook/alertmanager", service.base_url);
    let load_started_at = SystemTime::now();
    let load = open_loop(std::slice::from_ref(&url), TOKEN).await?;
    let load_ended_at = SystemTime::now();
    let (latencies, accepted) = load.answers_from(0);
    let load_time = load.took;
    let (_, peak_rss) = service.memory()?;
    let run = service
        .wait_for_run(run_id, Duration::from_secs(600))
        .await?;
    let run_outcome = run["outcome"].as_str().unwrap_or("?").to_string();
    let time = |field: &str| -> Result<SystemTime> {
        Ok(humantime::parse_rfc3339(
            run[field].as_str().context("no timestamp")?,
        )?)
    };
    let overlap_start = time("started_at")?.max(load_started_at);
    let overlap_end = time("finished_at")?.min(load_ended_at);
    let run_overlap = overlap_end
        .duration_since(overlap_start)
        .unwrap_or_default();

    eprintln!("bench: alert to Alertmanager → the run's first step, {ALERT_TIMINGS} times");
    let alertmanager = Alertmanager::start(
        &url,
        &dir.path().join("token"),
        &Routing {
            group_wait: GROUP_WAIT,
            group_interval: Duration::from_secs(5),
            repeat_interval: Duration::from_secs(3600),
        },
        &[],
    )
    .await?;
    let mut alert_to_run = Vec::new();
    for index in 0..ALERT_TIMINGS {
        let name = format!("timing-{index}");
        let posted = SystemTime::now();
        alertmanager
            .post_alerts(&json!([{
                "labels": {"alertname": "EtcdmedicNoSpaceAlarm", "etcd_cluster": name},
                "startsAt": humantime::format_rfc3339_millis(posted).to_string(),
                "endsAt": humantime::format_rfc3339_millis(posted + Duration::from_secs(3600)).to_string(),
            }]))
            .await?;
        let run = eventually(
            "the alert's run starts",
            Duration::from_secs(60),
            || async {
                let (_, page) = service.get(&format!("/api/v1/runs?cluster={name}")).await?;
                let run = page["runs"].get(0).cloned().context("no run yet")?;
                ensure!(run["started_at"].is_string(), "not started");
                Ok(run)
            },
        )
        .await?;
        let started = humantime::parse_rfc3339(run["started_at"].as_str().unwrap_or_default())?;
        alert_to_run.push(started.duration_since(posted).unwrap_or_default());
        let id = run["id"].as_i64().context("run id")?;
        service.wait_for_run(id, Duration::from_secs(600)).await?;
    }

    Ok(Outcome {
        latency: Summary::of(latencies),
        sent: load.answers.len(),
        accepted,
        throughput: accepted as f64 / load_time.as_secs_f64(),
        peak_rss,
        run_overlap,
        run_outcome,
        alert_to_run,
    })
}

/// What [`open_loop`] measured: each request's target, status (0: no answer) and time.
pub struct Load {
    pub answers: Vec<(usize, u16, Duration)>,
    pub took: Duration,
}

impl Load {
    /// The answer times of the requests sent to target `index`, and how many got 202.
    pub fn answers_from(&self, index: usize) -> (Vec<Duration>, usize) {
        let answered: Vec<_> = self
            .answers
            .iter()
            .filter(|(target, status, _)| *target == index && *status != 0)
            .collect();
        let accepted = answered
            .iter()
            .filter(|(_, status, _)| *status == 202)
            .count();
        (
            answered.iter().map(|(_, _, took)| *took).collect(),
            accepted,
        )
    }
}

/// [`RATE_PER_SECOND`] webhook payloads a second for [`LOAD_TIME`], open loop (sent on
/// schedule, not after the previous answer), taking turns over `urls`.
pub async fn open_loop(urls: &[String], token: &str) -> Result<Load> {
    let http = etcdmedic_tests::http_client_builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let total = (RATE_PER_SECOND * LOAD_TIME.as_secs()) as usize;
    let interval = Duration::from_secs(1) / RATE_PER_SECOND as u32;
    let started = Instant::now();
    let mut requests = Vec::with_capacity(total);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for sequence in 1..=total {
        ticker.tick().await;
        let target = sequence % urls.len();
        let request = http
            .post(&urls[target])
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(payload(sequence).to_string());
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = request.send().await;
            let took = sent.elapsed();
            (target, response.map_or(0, |r| r.status().as_u16()), took)
        }));
    }
    let mut answers = Vec::with_capacity(total);
    for request in requests {
        answers.push(request.await?);
    }
    Ok(Load {
        answers,
        took: started.elapsed(),
    })
}

pub fn section(out: &mut String, outcome: &Outcome) -> Result<()> {
    writeln!(out, "## Webhook service under load\n")?;
    writeln!(
        out,
        "`etcdmedic-remediator serve` (release build, SQLite state on disk, logging at info) \
         while it remediates a fragmented 3-member etcd 3.4 cluster (64 MiB in use per member, \
         `settle_time: 6s`). {RATE_PER_SECOND} requests a second for {} s, open loop (sent on \
         schedule, not after the previous answer), each an Alertmanager version-4 payload of \
         three firing alerts for the cluster under remediation, with bearer auth; every one \
         is parsed, decided (joined to the running run) and recorded in SQLite before the 202.\n",
        LOAD_TIME.as_secs()
    )?;
    writeln!(
        out,
        "| | median | p90 | p99 | max | requests |\n|---|---|---|---|---|---|\n{}",
        outcome.latency.row("webhook answer (202)")
    )?;
    writeln!(
        out,
        "\n- {} of {} answered 202; throughput {:.0} requests/s.",
        outcome.accepted, outcome.sent, outcome.throughput
    )?;
    writeln!(
        out,
        "- Target p99 under {} while a remediation is running: {} ({}). The run was under way \
         for {:.1} s of the {} s load and finished `{}`.",
        ms(TARGET_P99),
        verdict(outcome.latency.p99 < TARGET_P99),
        ms(outcome.latency.p99),
        outcome.run_overlap.as_secs_f64(),
        LOAD_TIME.as_secs(),
        outcome.run_outcome
    )?;
    writeln!(
        out,
        "- Peak resident memory of the service (VmHWM): {:.1} MB.\n",
        outcome.peak_rss as f64 / 1e6
    )?;
    let timings: Vec<String> = outcome
        .alert_to_run
        .iter()
        .map(|d| format!("{:.2} s", d.as_secs_f64()))
        .collect();
    writeln!(
        out,
        "Alert posted to a real Alertmanager (`group_wait: {} s`, webhook receiver with bearer \
         credentials) → the run's first step (its `started_at`), {} times: {}. Alertmanager's \
         `group_wait` is nearly all of it; the service's own part is the webhook answer above.\n",
        GROUP_WAIT.as_secs(),
        timings.len(),
        timings.join(", ")
    )?;
    Ok(())
}
