//! `etcdmedic-remediator serve` as a process: alerts from a real Alertmanager (alone and
//! clustered) remediate a real cluster, duplicates coalesce, cooldown and interrupted runs
//! survive restarts, SIGTERM lets the member under way finish, and bad requests get their
//! status code and start nothing.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::alertmanager::{Alertmanager, Routing};
use etcdmedic_tests::certs::TestPki;
use etcdmedic_tests::workload::{fragment, Fragmentation};
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion, RemediatorService};
use serde_json::{json, Value};

use crate::on_each_etcd_version;
use crate::support::{assert_cluster_serves, promtool_check_metrics, SETTLE};

/// Matches the default [`fragment`] workload (about 32 MiB file, 4 MiB in use).
const TEST_RULE: &str = "dbSizeFree >= 4*1024*1024 && dbSizeInUse / dbSize < 0.5";
pub(crate) const TOKEN: &str = "test-webhook-token";
/// A run of a small test cluster takes a few seconds; this bounds it generously.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A directory holding the token file, the config, snapshots and the state.
pub(crate) struct ServiceFiles {
    dir: tempfile::TempDir,
}

impl ServiceFiles {
    pub(crate) fn new() -> Result<ServiceFiles> {
        let dir = tempfile::Builder::new()
            .prefix("etcdmedic-svc-")
            .tempdir()?;
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n"))?;
        Ok(ServiceFiles { dir })
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a config: `clusters` entries (YAML list items), remediation defaults for tests,
    /// and `remediator_extra` lines (indented by two spaces) under `remediator:`.
    pub(crate) fn write_config(&self, clusters: &str, remediator_extra: &str) -> Result<PathBuf> {
        let state = format!(
            "  state_path: {}\n",
            self.path("state/state.sqlite").display()
        );
        self.write_config_with_state(clusters, &state, remediator_extra)
    }

    /// [`write_config`](Self::write_config) with `state` (lines under `remediator:`) in place
    /// of the SQLite file.
    pub(crate) fn write_config_with_state(
        &self,
        clusters: &str,
        state: &str,
        remediator_extra: &str,
    ) -> Result<PathBuf> {
        let yaml = format!(
            "remediation:\n  snapshot_dir: {snapshots}\n  settle_time: 0s\n  defrag_rule: \"{TEST_RULE}\"\n\
             remediator:\n{state}  auth: {{bearer_token_file: {token}}}\n{remediator_extra}\
             clusters:\n{clusters}",
            snapshots = self.path("snapshots").display(),
            token = self.path("token").display(),
        );
        let path = self.path("etcdmedic.yaml");
        std::fs::write(&path, yaml)?;
        Ok(path)
    }
}

/// An Alertmanager webhook payload (version 4) with one alert.
pub(crate) fn payload(alertname: &str, cluster: &str, status: &str, starts_at: &str) -> Value {
    let labels = json!({"alertname": alertname, "etcd_cluster": cluster, "severity": "warning"});
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{etcd_cluster=\"{cluster}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "etcdmedic",
        "groupLabels": {"etcd_cluster": cluster},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "test"},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": {"summary": "test"},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": format!("fp-{alertname}-{cluster}"),
        }]
    })
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Fires the fragmentation alert for `cluster` through `alertmanager` (ending in an hour) and
/// waits until its notification queues the service's first run; that run's id.
pub(crate) async fn alert_queues_a_run(
    alertmanager: &Alertmanager,
    service: &RemediatorService,
    cluster: &str,
) -> Result<i64> {
    let far = SystemTime::now() + Duration::from_secs(3600);
    alertmanager.post_alerts(&am_alert(cluster, far)).await?;
    eventually(
        "Alertmanager's notification queues a run",
        SETTLE,
        || async {
            let runs = service.runs().await?;
            ensure!(runs.len() == 1, "runs: {runs:?}");
            runs[0]["id"].as_i64().context("run id")
        },
    )
    .await
    .with_context(|| format!("Alertmanager output:\n{}", alertmanager.output()))
}

/// An alert as Alertmanager's API takes it.
fn am_alert(cluster: &str, ends_at: SystemTime) -> Value {
    json!([{
        "labels": {"alertname": "EtcdmedicDatabaseHighFragmentation", "etcd_cluster": cluster, "severity": "warning"},
        "annotations": {"summary": "fragmented"},
        "startsAt": humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(60)).to_string(),
        "endsAt": humantime::format_rfc3339_millis(ends_at).to_string(),
    }])
}

/// Posts one firing alert and returns what the service decided for it.
pub(crate) async fn decision_for(
    service: &RemediatorService,
    alertname: &str,
    cluster: &str,
) -> Result<Value> {
    let (status, answer) = service
        .post_webhook(&payload(alertname, cluster, "firing", &now_rfc3339()))
        .await?;
    ensure!(status == 202, "{status} {answer}");
    Ok(answer["alerts"][0].clone())
}

/// Posts one firing alert for `prod-a` and returns the run it queued or joined.
pub(crate) async fn queue_run(
    service: &RemediatorService,
    alertname: &str,
    starts_at: &str,
) -> Result<i64> {
    let (status, answer) = service
        .post_webhook(&payload(alertname, "prod-a", "firing", starts_at))
        .await?;
    ensure!(status == 202, "{status} {answer}");
    answer["alerts"][0]["run_id"]
        .as_i64()
        .with_context(|| format!("no run for the alert: {answer}"))
}

/// A 3-member cluster fragmented by the default workload.
pub(crate) async fn fragmented_cluster(version: EtcdVersion) -> Result<EtcdCluster> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    Ok(cluster)
}

/// The value of the first series of `name` whose labels include every `labels` pair.
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .find(|line| {
            labels
                .iter()
                .all(|(label, value)| line.contains(&format!("{label}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Checks `condition` until `window` has passed; fails at the first time it does not hold.
/// For asserting that something does not happen.
pub(crate) async fn holds_for<F, Fut>(what: &str, window: Duration, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let end = std::time::Instant::now() + window;
    while std::time::Instant::now() < end {
        condition()
            .await
            .with_context(|| format!("{what} stopped holding"))?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

// The webhook loop, end to end, on every etcd version users run.
on_each_etcd_version!(
    alerts_through_alertmanager_remediate_the_cluster_and_a_resolve_starts_nothing
);

async fn alerts_through_alertmanager_remediate_the_cluster_and_a_resolve_starts_nothing(
    version: EtcdVersion,
) -> Result<()> {
    let cluster = fragmented_cluster(version).await?;
    let files = ServiceFiles::new()?;
    let port = etcdmedic_tests::ports::free_port()?;
    let alertmanager =
        Alertmanager::for_remediator_on(port, &files.path("token"), &Routing::default()).await?;
    let config = files.write_config(
        &cluster.config_entry("prod-a"),
        &format!(
            "  silences: {{alertmanager_url: \"{}\"}}\n",
            alertmanager.url
        ),
    )?;
    let service = RemediatorService::start_on(&config, Some(TOKEN), port).await?;

    let run_id = alert_queues_a_run(&alertmanager, &service, "prod-a").await?;
    let run = service.wait_for_run(run_id, RUN_TIMEOUT).await?;
    ensure!(
        run["outcome"] == "succeeded",
        "expected succeeded, got {}\nservice output:\n{}",
        serde_json::to_string_pretty(&run)?,
        service.output()
    );
    let defragmented = run["report"]["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter(|m| m["action"] == "defragmented")
        .count();
    ensure!(
        defragmented == 3,
        "expected 3 members defragmented, got {defragmented}"
    );
    ensure!(
        run["alerts"][0]["alertname"] == "EtcdmedicDatabaseHighFragmentation",
        "{run}"
    );
    assert_cluster_serves(&cluster).await?;

    // The run silenced its alert while it was active, and expired the silence at the end.
    let silences = alertmanager.silences().await?;
    let ours: Vec<&Value> = silences
        .iter()
        .filter(|s| s["createdBy"] == "etcdmedic-remediator")
        .collect();
    ensure!(
        ours.len() == 1,
        "expected one silence by etcdmedic, got {silences:?}"
    );
    ensure!(
        ours[0]["status"]["state"] == "expired",
        "{:?}\nservice output:\n{}",
        ours[0],
        service.output()
    );

    let metrics = service.metrics().await?;
    let succeeded = metric(
        &metrics,
        "etcdmedic_remediation_runs_total",
        &[("etcd_cluster", "prod-a"), ("outcome", "succeeded")],
    );
    ensure!(
        succeeded == Some(1.0),
        "runs_total succeeded: {succeeded:?}\n{metrics}"
    );
    let reclaimed = metric(
        &metrics,
        "etcdmedic_defrag_reclaimed_bytes_total",
        &[("etcd_cluster", "prod-a")],
    );
    ensure!(
        reclaimed.is_some_and(|b| b > 1e6),
        "reclaimed: {reclaimed:?}\n{metrics}"
    );
    ensure!(metric(
        &metrics,
        "etcdmedic_snapshot_size_bytes",
        &[("etcd_cluster", "prod-a")]
    )
    .is_some_and(|b| b > 0.0));
    ensure!(metric(
        &metrics,
        "etcdmedic_webhook_requests_total",
        &[("code", "202")]
    )
    .is_some_and(|n| n >= 1.0));

    // Resolving the alert reaches the service and starts nothing.
    alertmanager
        .post_alerts(&am_alert("prod-a", SystemTime::now()))
        .await?;
    eventually("the resolved notification arrives", SETTLE, || async {
        let metrics = service.metrics().await?;
        let resolved = metric(
            &metrics,
            "etcdmedic_webhook_alerts_total",
            &[("action", "ignored"), ("reason", "resolved")],
        );
        ensure!(
            resolved.is_some_and(|n| n >= 1.0),
            "resolved alerts: {resolved:?}"
        );
        Ok(())
    })
    .await?;
    ensure!(
        service.runs().await?.len() == 1,
        "a resolved alert started a run"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_copies_of_one_payload_give_one_run() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    let files = ServiceFiles::new()?;
    let config = files.write_config(&cluster.config_entry("prod-a"), "")?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let body = payload(
        "EtcdmedicDatabaseHighFragmentation",
        "prod-a",
        "firing",
        &now_rfc3339(),
    );
    let answers = futures::future::join_all((0..20).map(|_| service.post_webhook(&body))).await;
    let mut run_ids = std::collections::BTreeSet::new();
    let mut queued = 0;
    for answer in answers {
        let (status, body) = answer?;
        ensure!(status == 202, "status {status}: {body}");
        let decision = &body["alerts"][0];
        match decision["action"].as_str() {
            Some("queued") => queued += 1,
            Some("joined" | "ignored") => {}
            other => anyhow::bail!("unexpected action {other:?}: {body}"),
        }
        if let Some(id) = decision["run_id"].as_i64() {
            run_ids.insert(id);
        }
    }
    ensure!(queued == 1, "expected exactly one queued, got {queued}");
    ensure!(run_ids.len() == 1, "run ids: {run_ids:?}");
    let id = *run_ids.iter().next().context("no run")?;
    let run = service.wait_for_run(id, RUN_TIMEOUT).await?;
    // Not fragmented: the live re-check at the start skips it.
    ensure!(run["outcome"] == "skipped", "{run}");
    ensure!(
        run["alerts"].as_array().map_or(0, Vec::len) >= 2,
        "every copy is recorded: {run}"
    );
    ensure!(service.runs().await?.len() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clustered_alertmanagers_give_one_run() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_4)
        .members(3)
        .start()
        .await?;
    let files = ServiceFiles::new()?;
    let config = files.write_config(&cluster.config_entry("prod-a"), "")?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let webhook = format!("{}/webhook/alertmanager", service.base_url);
    let routing = Routing::default();
    let first = Alertmanager::start(&webhook, &files.path("token"), &routing, &[]).await?;
    let second = Alertmanager::start(
        &webhook,
        &files.path("token"),
        &routing,
        std::slice::from_ref(&first.cluster_address),
    )
    .await?;
    eventually("the two Alertmanagers see each other", SETTLE, || async {
        ensure!(first.peers().await? == 2 && second.peers().await? == 2);
        Ok(())
    })
    .await?;

    // Prometheus sends every alert to every Alertmanager of an HA pair.
    let alert = am_alert("prod-a", SystemTime::now() + Duration::from_secs(3600));
    first.post_alerts(&alert).await?;
    second.post_alerts(&alert).await?;
    let id = eventually("a run is queued", SETTLE, || async {
        let runs = service.runs().await?;
        ensure!(!runs.is_empty());
        runs[0]["id"].as_i64().context("id")
    })
    .await?;
    service.wait_for_run(id, RUN_TIMEOUT).await?;
    // Whether the second instance also delivers depends on gossip timing; either way no
    // second run may appear while both hold the alert (group_wait + peer timeouts).
    holds_for("exactly one run", Duration::from_secs(5), || async {
        let runs = service.runs().await?;
        ensure!(runs.len() == 1, "runs: {runs:?}");
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cooldown_survives_a_restart_and_manual_dry_runs_skip_it() -> Result<()> {
    let cluster = fragmented_cluster(EtcdVersion::V3_4).await?;
    let files = ServiceFiles::new()?;
    let config = files.write_config(&cluster.config_entry("prod-a"), "  cooldown: 1h\n")?;
    let mut service = RemediatorService::start(&config, Some(TOKEN)).await?;

    let (status, answer) = service
        .post_webhook(&payload(
            "EtcdmedicDatabaseHighFragmentation",
            "prod-a",
            "firing",
            "2026-11-21T07:00:00Z",
        ))
        .await?;
    ensure!(
        status == 202 && answer["alerts"][0]["action"] == "queued",
        "{status} {answer}"
    );
    let first = answer["alerts"][0]["run_id"].as_i64().context("run id")?;
    let run = service.wait_for_run(first, RUN_TIMEOUT).await?;
    ensure!(run["outcome"] == "succeeded", "{run}\n{}", service.output());

    let exit = service.terminate(Duration::from_secs(30)).await?;
    ensure!(exit.success(), "SIGTERM exit: {exit:?}");
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    service.restart().await?;

    // The metrics come back from the store.
    let metrics = service.metrics().await?;
    ensure!(
        metric(
            &metrics,
            "etcdmedic_remediation_last_run_timestamp_seconds",
            &[("etcd_cluster", "prod-a"), ("outcome", "succeeded")]
        )
        .is_some(),
        "last run timestamp not restored:\n{metrics}"
    );

    // A new episode inside the cooldown: recorded, and skipped without touching the cluster.
    let (status, answer) = service
        .post_webhook(&payload(
            "EtcdmedicDatabaseHighFragmentation",
            "prod-a",
            "firing",
            "2026-11-21T08:00:00Z",
        ))
        .await?;
    ensure!(status == 202, "{status} {answer}");
    let second = answer["alerts"][0]["run_id"].as_i64().context("run id")?;
    ensure!(
        answer["alerts"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cooldown")),
        "{answer}"
    );
    let run = service.wait_for_run(second, RUN_TIMEOUT).await?;
    ensure!(run["outcome"] == "skipped", "{run}");
    ensure!(
        run["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cooldown")),
        "{run}"
    );
    ensure!(
        run["report"]["steps"].as_array().is_some_and(Vec::is_empty),
        "{run}"
    );

    // A repeat of the first episode is a duplicate.
    let (_, answer) = service
        .post_webhook(&payload(
            "EtcdmedicDatabaseHighFragmentation",
            "prod-a",
            "firing",
            "2026-11-21T07:00:00Z",
        ))
        .await?;
    ensure!(
        answer["alerts"][0]["ignored_because"] == "duplicate",
        "{answer}"
    );

    // A manual dry run is not held by the cooldown and plans the fragmented cluster.
    let (status, answer) = service
        .post("/api/v1/clusters/prod-a/remediate?dry_run=true")
        .await?;
    ensure!(status == 202, "{status} {answer}");
    let dry = answer["decision"]["run_id"].as_i64().context("run id")?;
    let run = service.wait_for_run(dry, RUN_TIMEOUT).await?;
    ensure!(run["outcome"] == "planned", "{run}");

    let (status, _) = service.post("/api/v1/clusters/nope/remediate").await?;
    ensure!(status == 404);
    let (_, page) = service.get("/api/v1/runs?cluster=prod-a&limit=2").await?;
    ensure!(
        page["runs"].as_array().map_or(0, Vec::len) == 2 && page["next"].is_i64(),
        "{page}"
    );
    let (_, page) = service.get("/api/v1/runs?outcome=succeeded").await?;
    ensure!(page["runs"].as_array().map_or(0, Vec::len) == 1, "{page}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_reports_the_run_interrupted_and_waits_for_the_member_after_restart(
) -> Result<()> {
    let cluster = fragmented_cluster(EtcdVersion::V3_5).await?;
    let files = ServiceFiles::new()?;
    let config = files.write_config(&cluster.config_entry("prod-a"), "")?;
    let mut service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let id = queue_run(&service, "EtcdmedicNoSpaceAlarm", &now_rfc3339()).await?;

    // Freeze the first member the moment its defragmentation starts, then kill the service:
    // the member is left mid-defragmentation as far as anyone can tell.
    let frozen = eventually("a member starts defragmenting", RUN_TIMEOUT, || async {
        (0..cluster.len())
            .find(|&i| cluster.defrag_intervals(i).is_ok_and(|d| !d.is_empty()))
            .context("no defragmentation yet")
    })
    .await?;
    cluster.pause(frozen)?;
    service.kill().await?;
    service.restart().await?;

    let run = service.get(&format!("/api/v1/runs/{id}")).await?.1;
    ensure!(run["outcome"] == "interrupted", "{run}");
    // The restarted service holds the cluster until the frozen member serves reads.
    let (_, status) = service.post("/api/v1/clusters/prod-a/remediate").await?;
    let held = status["decision"]["run_id"].as_i64().context("run id")?;
    eventually("the service reports it is waiting", SETTLE, || async {
        let (_, status) = service.get("/api/v1/status").await?;
        ensure!(status["clusters"][0]["recovering"] == true, "{status}");
        ensure!(status["clusters"][0]["running_run"].is_null(), "{status}");
        Ok(())
    })
    .await?;
    cluster.resume(frozen)?;
    let run = service.wait_for_run(id, SETTLE).await;
    let run = eventually("the recovery is recorded", SETTLE, || async {
        let run = service.get(&format!("/api/v1/runs/{id}")).await?.1;
        ensure!(
            run["reason"]
                .as_str()
                .is_some_and(|r| r.contains("every member served reads again")),
            "{run}"
        );
        Ok(run)
    })
    .await
    .with_context(|| format!("{run:?}\nservice output:\n{}", service.output()))?;
    ensure!(run["outcome"] == "interrupted");
    // The held manual run ran afterwards (skipped: the interrupted run started a cooldown).
    let held = service.wait_for_run(held, RUN_TIMEOUT).await?;
    ensure!(held["outcome"] == "skipped", "{held}");
    // No two members ever defragmented at once, and the frozen one finished.
    let intervals = cluster.defrag_intervals(frozen)?;
    ensure!(
        intervals.iter().all(|(_, end)| end.is_some()),
        "{intervals:?}"
    );
    assert_cluster_serves(&cluster).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_member_under_way_finish_and_starts_no_other() -> Result<()> {
    // 96 MiB in use per member: each defragmentation takes long enough (around a second) to
    // be caught under way.
    let cluster = EtcdCluster::builder(EtcdVersion::V3_4)
        .members(3)
        .start()
        .await?;
    let spec = Fragmentation {
        keys: 96,
        value_bytes: 1024 * 1024,
        rounds: 2,
    };
    fragment(&cluster.clients().await?, spec).await?;
    let files = ServiceFiles::new()?;
    let config = files.write_config(&cluster.config_entry("prod-a"), "")?;
    let mut service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let id = queue_run(
        &service,
        "EtcdmedicDatabaseHighFragmentation",
        &now_rfc3339(),
    )
    .await?;
    // Freeze the first member the moment its defragmentation starts: the run cannot get past
    // it (its Defragment call, or the catch-up wait after it) until it is resumed.
    let first = eventually("a member starts defragmenting", RUN_TIMEOUT, || async {
        (0..cluster.len())
            .find(|&i| cluster.defrag_intervals(i).is_ok_and(|d| !d.is_empty()))
            .context("no defragmentation yet")
    })
    .await?;
    cluster.pause(first)?;
    let signalled = SystemTime::now();
    service.send_sigterm()?;
    // The service waits for the member under way rather than exiting.
    holds_for(
        "the service waits for the member",
        Duration::from_secs(2),
        || {
            let running = service.is_running();
            async move {
                ensure!(
                    running?,
                    "the service exited while a member was being defragmented"
                );
                Ok(())
            }
        },
    )
    .await?;
    cluster.resume(first)?;
    let exit = service.wait_exit(Duration::from_secs(90)).await?;
    ensure!(exit.success(), "exit {exit:?}\n{}", service.output());
    // The frozen member finished, and nothing started after the signal (give or take the
    // time the signal takes to arrive).
    let late = signalled + Duration::from_millis(200);
    for index in 0..cluster.len() {
        for (start, end) in cluster.defrag_intervals(index)? {
            ensure!(
                end.is_some(),
                "member {index}'s defragmentation never finished"
            );
            ensure!(
                start <= late,
                "member {index} started defragmenting after SIGTERM"
            );
        }
    }
    service.restart().await?;
    let run = service.get(&format!("/api/v1/runs/{id}")).await?.1;
    ensure!(run["outcome"] == "interrupted", "{run}");
    ensure!(
        run["reason"]
            .as_str()
            .is_some_and(|r| r.contains("stopped on request")),
        "{run}"
    );
    Ok(())
}

/// A config whose cluster is never contacted (nothing here may start a run).
pub(crate) fn unreachable_cluster() -> String {
    "  - name: prod-a\n    endpoints: [http://127.0.0.1:1]\n".to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_code_and_start_nothing() -> Result<()> {
    let files = ServiceFiles::new()?;
    let config = files.write_config(&unreachable_cluster(), "")?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let http = etcdmedic_tests::http_client();
    let url = format!("{}/webhook/alertmanager", service.base_url);
    let good = payload(
        "EtcdmedicNoSpaceAlarm",
        "elsewhere",
        "firing",
        &now_rfc3339(),
    )
    .to_string();
    let send = |body: Vec<u8>, content_type: Option<&str>, token: Option<&str>| {
        let mut request = http.post(&url).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.context("error bodies are JSON")?;
            anyhow::Ok((status, body))
        }
    };
    let json = Some("application/json");
    let token = Some(TOKEN);
    let deep = format!(
        "{{\"version\":\"4\",\"x\":{}{}}}",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    // (case, body, content type, token, expected status)
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, Option<&'a str>, u16);
    let cases: Vec<Case> = vec![
        ("no token", good.clone().into_bytes(), json, None, 401),
        ("wrong token", good.clone().into_bytes(), json, Some("nope"), 401),
        ("text/plain", good.clone().into_bytes(), Some("text/plain"), token, 415),
        ("no content type", good.clone().into_bytes(), None, token, 415),
        ("truncated JSON", good.as_bytes()[..good.len() / 2].to_vec(), json, token, 400),
        ("wrong types", good.replace("\"truncatedAlerts\":0", "\"truncatedAlerts\":\"x\"").into_bytes(), json, token, 400),
        ("version 3", good.replace("\"version\":\"4\"", "\"version\":\"3\"").into_bytes(), json, token, 400),
        ("missing labels", json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r", "alerts": [{"status": "firing"}]}).to_string().into_bytes(), json, token, 400),
        ("non-UTF-8", b"{\"version\":\"4\",\"groupKey\":\"\xff\xfe\"}".to_vec(), json, token, 400),
        ("deeply nested", deep.into_bytes(), json, token, 400),
    ];
    for (name, body, content_type, token, expected) in cases {
        let (status, answer) = send(body, content_type, token)
            .await
            .with_context(|| name.to_string())?;
        ensure!(
            status == expected,
            "{name}: expected {expected}, got {status}: {answer}"
        );
        ensure!(
            answer["error"].is_string(),
            "{name}: no error message: {answer}"
        );
    }
    // A body over the 16 MiB default is refused from its Content-Length, before it is sent
    // (the service then closes the connection, so the client reads the answer instead of
    // writing the body), and logged as an error: Alertmanager does not retry a 413.
    let status_line = raw_request(
        service.port,
        &format!(
            "POST /webhook/alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"version\"",
            17 * 1024 * 1024
        ),
    )
    .await?;
    ensure!(
        status_line.starts_with("HTTP/1.1 413"),
        "17 MiB body: {status_line}"
    );
    eventually(
        "the refused body is logged with its size",
        SETTLE,
        || async {
            let output = service.output();
            ensure!(
                output.contains("ERROR")
                    && output.contains("declared_bytes=17825792")
                    && output.contains("refused a webhook body over max_body_bytes (413)"),
                "{output}"
            );
            Ok(())
        },
    )
    .await?;
    // A body over the limit without a Content-Length is cut off while reading.
    let chunks =
        futures::stream::iter((0..280).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])));
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .bearer_auth(TOKEN)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    ensure!(
        response.status() == 413,
        "streamed body: {}",
        response.status()
    );

    let (status, _) = service.get("/webhook/alertmanager").await?;
    ensure!(status == 405, "GET webhook: {status}");

    // Well-formed, but nothing to do: unknown cluster, not a trigger.
    let (status, answer) = service.post_webhook(&serde_json::from_str(&good)?).await?;
    ensure!(
        status == 202 && answer["alerts"][0]["ignored_because"] == "unknown_cluster",
        "{answer}"
    );
    let decided = decision_for(&service, "SomethingElse", "prod-a").await?;
    ensure!(decided["ignored_because"] == "not_a_trigger", "{decided}");

    // Paused: alerts are recorded and ignored, manual runs refused.
    ensure!(service.post("/api/v1/pause").await?.0 == 200);
    let decided = decision_for(&service, "EtcdmedicNoSpaceAlarm", "prod-a").await?;
    ensure!(decided["ignored_because"] == "paused", "{decided}");
    ensure!(service.post("/api/v1/clusters/prod-a/remediate").await?.0 == 409);
    let metrics = service.metrics().await?;
    ensure!(
        metric(&metrics, "etcdmedic_remediator_paused", &[]) == Some(1.0),
        "{metrics}"
    );

    // The state store locked by another process: 503 so Alertmanager retries, then back.
    let mut blocker = rusqlite::Connection::open(files.path("state/state.sqlite"))?;
    let lock = blocker.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
    let (status, answer) = service
        .post_webhook(&payload(
            "EtcdmedicNoSpaceAlarm",
            "prod-a",
            "firing",
            &now_rfc3339(),
        ))
        .await?;
    ensure!(status == 503, "store locked: {status} {answer}");
    lock.rollback()?;
    let (status, _) = service
        .post_webhook(&payload(
            "EtcdmedicNoSpaceAlarm",
            "prod-a",
            "firing",
            &now_rfc3339(),
        ))
        .await?;
    ensure!(status == 202);

    ensure!(
        service.runs().await?.is_empty(),
        "a bad request started a run"
    );
    let metrics = service.metrics().await?;
    for code in ["400", "401", "413", "415", "503", "202"] {
        ensure!(
            metric(
                &metrics,
                "etcdmedic_webhook_requests_total",
                &[("code", code)]
            )
            .is_some(),
            "no count for {code}:\n{metrics}"
        );
    }
    promtool_check_metrics(&metrics).await?;
    Ok(())
}

/// Sends `head` on a new connection and returns the response's status line.
pub(crate) async fn raw_request(port: u16, head: &str) -> Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(head.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    Ok(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_client_certificates_are_enforced() -> Result<()> {
    let files = ServiceFiles::new()?;
    std::fs::write(files.path("password"), "pw\n")?;
    let pki = TestPki::generate(&files.path("pki"), true, "localhost")?;
    let stranger = TestPki::generate(&files.path("stranger"), true, "localhost")?;

    // Basic auth.
    let config = files.write_config(&unreachable_cluster(), "")?;
    let text = std::fs::read_to_string(&config)?.replace(
        &format!(
            "auth: {{bearer_token_file: {}}}",
            files.path("token").display()
        ),
        &format!(
            "auth: {{basic_auth: {{username: alertmanager, password_file: {}}}}}",
            files.path("password").display()
        ),
    );
    std::fs::write(&config, text)?;
    let service = RemediatorService::start(&config, None).await?;
    let http = etcdmedic_tests::http_client();
    let status = |user: &str, password: &str| {
        let request = http
            .get(format!("{}/api/v1/runs", service.base_url))
            .basic_auth(user, Some(password))
            .send();
        async move { anyhow::Ok(request.await?.status().as_u16()) }
    };
    ensure!(status("alertmanager", "pw").await? == 200);
    ensure!(status("alertmanager", "px").await? == 401);
    ensure!(status("someone", "pw").await? == 401);
    ensure!(
        service.get("/api/v1/runs").await?.0 == 401,
        "no credentials"
    );
    ensure!(
        service.get("/metrics").await?.0 == 200,
        "metrics need no credentials"
    );
    drop(service);

    // mTLS: only a client certificate from the configured CA gets through.
    let config = files.write_config(
        &unreachable_cluster(),
        &format!(
            "  tls: {{cert_file: {}, key_file: {}, client_ca_file: {}}}\n",
            pki.server_cert_file.display(),
            pki.server_key_file.display(),
            pki.ca_file.display()
        ),
    )?;
    let service = RemediatorService::start_tls(
        &config,
        Some(TOKEN),
        &pki.ca_file,
        &pki.client_cert_file,
        &pki.client_key_file,
    )
    .await?;
    let (status, _) = service.get("/api/v1/runs").await?;
    ensure!(status == 200, "trusted client certificate: {status}");
    let url = format!("{}/api/v1/runs", service.base_url);
    let stranger_client = etcdmedic_tests::remediator::tls_client(
        &pki.ca_file,
        Some((&stranger.client_cert_file, &stranger.client_key_file)),
    )?;
    ensure!(
        stranger_client
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .is_err(),
        "a certificate from another CA got through"
    );
    // Without a certificate: Kubernetes probes and Prometheus get their endpoints, the API
    // and the webhook refuse, saying what is missing.
    let anonymous = etcdmedic_tests::remediator::tls_client(&pki.ca_file, None)?;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = anonymous
            .get(format!("{}{path}", service.base_url))
            .send()
            .await?;
        ensure!(
            response.status() == 200,
            "{path} without a client certificate: {}",
            response.status()
        );
    }
    let refused = anonymous.get(&url).bearer_auth(TOKEN).send().await?;
    ensure!(
        refused.status() == 401,
        "API without a certificate: {}",
        refused.status()
    );
    let body = refused.text().await?;
    ensure!(
        body.contains("a client certificate signed by remediator.tls.client_ca_file is required"),
        "{body}"
    );
    let webhook = anonymous
        .post(format!("{}/webhook/alertmanager", service.base_url))
        .bearer_auth(TOKEN)
        .json(&payload(
            "EtcdmedicDatabaseHighFragmentation",
            "prod-a",
            "firing",
            &now_rfc3339(),
        ))
        .send()
        .await?;
    ensure!(
        webhook.status() == 401,
        "webhook without a certificate: {}",
        webhook.status()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_nospace_alarm_goes_ahead_inside_the_cooldown() -> Result<()> {
    const QUOTA: u64 = 16 * 1024 * 1024;
    let mut cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .quota(QUOTA)
        .start()
        .await?;
    let files = ServiceFiles::new()?;
    let entry = format!(
        "{}    remediation:\n      compact_first: true\n",
        cluster.config_entry("prod-a")
    );
    let config = files.write_config(&entry, "  cooldown: 1h\n")?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;

    // A refused run (a member down) changed nothing and starts no cooldown.
    cluster.kill(2)?;
    let (_, answer) = service.post("/api/v1/clusters/prod-a/remediate").await?;
    let refused = answer["decision"]["run_id"].as_i64().context("run id")?;
    let run = service.wait_for_run(refused, RUN_TIMEOUT).await?;
    ensure!(
        run["outcome"] == "failed" && run["refused"] == true && run["error_kind"] == "member_down",
        "{run}"
    );
    let metrics = service.metrics().await?;
    let failures = metric(
        &metrics,
        "etcdmedic_remediation_failures_total",
        &[("etcd_cluster", "prod-a"), ("kind", "member_down")],
    );
    ensure!(
        failures == Some(1.0),
        "failures_total: {failures:?}\n{metrics}"
    );
    cluster.restart(2).await?;

    // A run that did work starts it (10 MiB written, 2 MiB kept: within the 16 MiB quota).
    let small = Fragmentation {
        keys: 8,
        value_bytes: 256 * 1024,
        rounds: 5,
    };
    fragment(&cluster.clients().await?, small).await?;
    let (_, answer) = service.post("/api/v1/clusters/prod-a/remediate").await?;
    ensure!(
        answer["decision"]["reason"]
            .as_str()
            .is_some_and(|r| !r.contains("cooldown")),
        "the refusal started a cooldown: {answer}"
    );
    let worked = answer["decision"]["run_id"].as_i64().context("run id")?;
    let run = service.wait_for_run(worked, RUN_TIMEOUT).await?;
    ensure!(run["outcome"] == "succeeded", "{run}");

    let mut client = cluster.client(0).await?;
    etcdmedic_tests::workload::fill_to_nospace(&mut client, 256 * 1024, 1000).await?;
    client
        .delete(
            "/etcdmedic/fill/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    let (_, answer) = service
        .post_webhook(&payload(
            "EtcdmedicNoSpaceAlarm",
            "prod-a",
            "firing",
            &now_rfc3339(),
        ))
        .await?;
    ensure!(
        answer["alerts"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cooldown")),
        "{answer}"
    );
    let id = answer["alerts"][0]["run_id"].as_i64().context("run id")?;
    let run = service.wait_for_run(id, RUN_TIMEOUT).await?;
    ensure!(run["outcome"] == "succeeded", "{run}\n{}", service.output());
    ensure!(
        run["report"]["alarms_disarmed"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{run}"
    );
    ensure!(crate::support::etcdctl_alarms(&cluster)?.is_empty());
    assert_cluster_serves(&cluster).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_config_check_reads_the_secrets_and_refuses_with_the_key() -> Result<()> {
    let files = ServiceFiles::new()?;
    let config = files.write_config(&unreachable_cluster(), "")?;
    let binary = etcdmedic_tests::project_binary("etcdmedic-remediator")?;
    let output = std::process::Command::new(&binary)
        .args(["serve", "--config.check", "--config"])
        .arg(&config)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "{output:?}");
    ensure!(
        stdout.contains("ok (1 clusters: prod-a; webhook on 0.0.0.0:9380"),
        "{stdout}"
    );

    std::fs::remove_file(files.path("token"))?;
    let output = std::process::Command::new(&binary)
        .args(["serve", "--config.check", "--config"])
        .arg(&config)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(2), "{output:?}");
    ensure!(
        stderr.contains("remediator.auth.bearer_token_file") && stderr.contains("no such file"),
        "{stderr}"
    );
    Ok(())
}
