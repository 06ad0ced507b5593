//! Maintenance windows in `serve`: a fragmentation alert outside every window waits for the
//! next one (and runs when it opens), an urgent one (NOSPACE) runs at once, a window too short
//! for the predicted run refuses it with the prediction, and bad window syntax is refused at
//! start (exit status 2) with the key; `remediation.schedule` starts runs by itself.

use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Timelike, Utc};
use etcdmedic_tests::workload::{fragment, Fragmentation};
use etcdmedic_tests::{EtcdVersion, RemediatorService};

use crate::service::{decision_for, fragmented_cluster, metric, ServiceFiles, RUN_TIMEOUT, TOKEN};
use crate::service_hardening::refused_start;

/// A cluster entry for `prod-a` with `windows` (YAML flow list) under its remediation.
fn with_windows(entry: &str, windows: &str) -> String {
    format!("{entry}    remediation:\n      windows: {windows}\n")
}

/// A daily window opening at `at` (UTC, to the second), open for an hour.
fn daily_at(at: SystemTime) -> String {
    let at = DateTime::<Utc>::from(at);
    format!(
        "[{{start: \"{} {} {} * * *\", duration: 1h}}]",
        at.second(),
        at.minute(),
        at.hour()
    )
}

/// When a run (as the API shows it) started.
fn started_at(run: &serde_json::Value) -> Result<SystemTime> {
    let started = run["started_at"].as_str().context("started_at")?;
    Ok(humantime::parse_rfc3339_weak(
        started.trim_end_matches('Z'),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmentation_alert_outside_a_window_runs_when_the_window_opens() -> Result<()> {
    let cluster = fragmented_cluster(EtcdVersion::V3_5).await?;
    let files = ServiceFiles::new()?;
    let opens = SystemTime::now() + Duration::from_secs(8);
    let entry = with_windows(&cluster.config_entry("prod-a"), &daily_at(opens));
    let config = files.write_config(&entry, "")?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;

    let decision = decision_for(&service, "EtcdmedicDatabaseHighFragmentation", "prod-a").await?;
    ensure!(
        decision["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting_for_window")),
        "{decision}"
    );
    let id = decision["run_id"].as_i64().context("no run")?;
    let (_, status) = service.get("/api/v1/status").await?;
    let queue = &status["clusters"][0];
    ensure!(
        queue["waiting_for_window"] == true && queue["queued_run"] == id,
        "{status}"
    );
    let next = metric(
        &service.metrics().await?,
        "etcdmedic_remediation_next_window_timestamp_seconds",
        &[("etcd_cluster", "prod-a")],
    )
    .context("no next-window metric")?;
    let opens_unix = opens.duration_since(SystemTime::UNIX_EPOCH)?.as_secs() as f64;
    ensure!((next - opens_unix).abs() <= 1.0, "{next} vs {opens_unix}");

    let run = service.wait_for_run(id, RUN_TIMEOUT).await?;
    ensure!(run["outcome"] == "succeeded", "{run}");
    let started = started_at(&run)?;
    ensure!(
        started + Duration::from_secs(1) >= opens,
        "started {started:?}, the window opens {opens:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_runs_at_once_outside_windows_and_a_short_window_refuses_with_the_prediction(
) -> Result<()> {
    let cluster = fragmented_cluster(EtcdVersion::V3_5).await?;
    let files = ServiceFiles::new()?;
    // Only on 1 January: closed now (unless the test runs at midnight on new year).
    let entry = with_windows(
        &cluster.config_entry("prod-a"),
        "[{start: \"0 0 1 1 *\", duration: 1m}]",
    );
    let config = files.write_config(&entry, "")?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let decision = decision_for(&service, "EtcdmedicNoSpaceAlarm", "prod-a").await?;
    ensure!(
        decision["reason"]
            .as_str()
            .is_some_and(|r| !r.contains("waiting_for_window")),
        "{decision}"
    );
    let id = decision["run_id"].as_i64().context("no run")?;
    let run = service.wait_for_run(id, RUN_TIMEOUT).await?;
    ensure!(run["outcome"] == "succeeded", "{run}");
    drop(service);

    // A window that opens every second for a second is always open and always closing:
    // no run fits in it.
    let files = ServiceFiles::new()?;
    let entry = with_windows(
        &cluster.config_entry("prod-a"),
        "[{start: \"* * * * * *\", duration: 1s}]",
    );
    let config = files.write_config(&entry, "")?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let decision = decision_for(&service, "EtcdmedicDatabaseHighFragmentation", "prod-a").await?;
    let id = decision["run_id"].as_i64().context("no run")?;
    let run = service.wait_for_run(id, RUN_TIMEOUT).await?;
    ensure!(
        run["outcome"] == "failed"
            && run["refused"] == true
            && run["error_kind"] == "window_too_short",
        "{run}"
    );
    let reason = run["reason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("the run is predicted to take") && reason.contains("closes in"),
        "{reason}"
    );
    ensure!(run["report"]["snapshot"].is_null(), "{run}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_window_syntax_exits_2_naming_the_key() -> Result<()> {
    let files = ServiceFiles::new()?;
    let entry = with_windows(
        "  - name: prod-a\n    endpoints: [http://127.0.0.1:2379]\n",
        "[{start: \"every night\", duration: 1h}, {start: \"0 2 * * *\", duration: 0s}]",
    );
    let config = files.write_config(&entry, "")?;
    let err = refused_start(&config).await?;
    ensure!(
        err.contains(
            "clusters[0].remediation.windows[0].start: \"every night\" is not a cron expression"
        ),
        "{err}"
    );
    ensure!(
        err.contains("clusters[0].remediation.windows[1].duration: must be longer than 0s"),
        "{err}"
    );
    Ok(())
}

/// `remediation.schedule` every 15 s: the first scheduled run finds the cluster fragmented and
/// defragments it; the next finds nothing to do and the rule skips every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_starts_runs_that_the_rule_then_decides() -> Result<()> {
    let cluster = fragmented_cluster(EtcdVersion::V3_5).await?;
    let files = ServiceFiles::new()?;
    let entry = format!(
        "{}    remediation:\n      schedule: \"*/15 * * * * *\"\n",
        cluster.config_entry("prod-a")
    );
    let config = files.write_config(&entry, "  cooldown: 0s\n")?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let (_, status) = service.get("/api/v1/status").await?;
    let next = status["clusters"][0]["next_scheduled_run"]
        .as_str()
        .with_context(|| format!("no next_scheduled_run: {status}"))?;
    let next = humantime::parse_rfc3339(next)?;
    let published = metric(
        &service.metrics().await?,
        "etcdmedic_remediation_next_scheduled_run_timestamp_seconds",
        &[("etcd_cluster", "prod-a")],
    )
    .context("no next-scheduled-run metric")?;
    let next_unix = next.duration_since(SystemTime::UNIX_EPOCH)?.as_secs() as f64;
    ensure!(published == next_unix, "{published} vs {next_unix}");

    let scheduled_runs = || async {
        let runs = service.runs().await?;
        let finished: Vec<_> = runs
            .into_iter()
            .filter(|run| run["source"] == "schedule" && run["state"] == "finished")
            .collect();
        ensure!(
            finished.len() >= 2,
            "{} scheduled runs finished",
            finished.len()
        );
        Ok(finished)
    };
    let runs = etcdmedic_tests::eventually(
        "two scheduled runs finish",
        Duration::from_secs(15 * 2) + RUN_TIMEOUT,
        scheduled_runs,
    )
    .await
    .with_context(|| service.output())?;
    // Newest first.
    let (second, first) = (&runs[0], &runs[1]);
    ensure!(first["outcome"] == "succeeded", "{first}");
    ensure!(
        first["trigger"] == "schedule: */15 * * * * * (UTC)",
        "{first}"
    );
    let started = started_at(first)?;
    ensure!(
        started + Duration::from_secs(1) >= next,
        "started {started:?} before its time {next:?}"
    );
    ensure!(second["outcome"] == "skipped", "{second}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_schedule_exits_2_naming_the_key() -> Result<()> {
    let files = ServiceFiles::new()?;
    let entry =
        "  - name: prod-a\n    endpoints: [http://127.0.0.1:2379]\n    remediation:\n      \
                 schedule: \"at 3am\"\n";
    let config = files.write_config(entry, "")?;
    let err = refused_start(&config).await?;
    ensure!(
        err.contains("clusters[0].remediation.schedule: \"at 3am\" is not a cron expression"),
        "{err}"
    );
    Ok(())
}
