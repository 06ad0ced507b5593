//! Backups in `etcdmedic-remediator serve`, against real etcd 3.5 and moto's S3 server: a
//! scheduled backup fires at its time and lands, proven, in a directory and a bucket; a backup
//! asked for with a remediation of the same cluster never overlaps it; an S3 outage makes a
//! partial backup the failure metric counts while the other destination still moves on; the
//! next one after the outage succeeds; and the metrics survive a restart.

use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::s3::S3Server;
use etcdmedic_tests::{eventually, EtcdVersion, RemediatorService};
use serde_json::Value;

use crate::service::{fragmented_cluster, metric, ServiceFiles, RUN_TIMEOUT, TOKEN};

const BUCKET: &str = "etcd-backups";
const BACKUP_TIMEOUT: Duration = Duration::from_secs(120);

/// The backups the API lists, newest first.
/// Every family the remediator exposes has its row in docs/service.md's metrics table.
fn every_metric_is_documented(exposition: &str) -> Result<()> {
    let table = std::fs::read_to_string(
        etcdmedic_tests::generated::repository_root().join("docs/service.md"),
    )?;
    let mut missing = std::collections::BTreeSet::new();
    for line in exposition.lines().filter(|l| l.starts_with("etcdmedic_")) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        if !table.contains(&format!("`{name}`")) && !table.contains(&format!("`{family}`")) {
            missing.insert(name.to_string());
        }
    }
    ensure!(
        missing.is_empty(),
        "metrics docs/service.md does not list: {missing:?}"
    );
    Ok(())
}

async fn backups(service: &RemediatorService) -> Result<Vec<Value>> {
    let (status, body) = service.get("/api/v1/backups?cluster=prod-a").await?;
    ensure!(status == 200, "GET /api/v1/backups: {status} {body}");
    body["backups"]
        .as_array()
        .cloned()
        .context("no backups array")
}

/// Waits until the API lists `count` backups; the newest.
async fn nth_backup(service: &RemediatorService, count: usize) -> Result<Value> {
    let listed = eventually(
        &format!("{count} backups are recorded"),
        BACKUP_TIMEOUT,
        || async {
            let listed = backups(service).await?;
            ensure!(listed.len() >= count, "{} so far", listed.len());
            Ok(listed)
        },
    )
    .await
    .with_context(|| service.output())?;
    Ok(listed[0].clone())
}

fn time(value: &Value) -> Result<SystemTime> {
    let text = value
        .as_str()
        .with_context(|| format!("not a time: {value}"))?;
    Ok(humantime::parse_rfc3339(text)?)
}

fn landed<'a>(backup: &'a Value, destination: &str) -> Option<&'a Value> {
    backup["report"]["destinations"]
        .as_array()?
        .iter()
        .find(|d| d["destination"] == destination)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_scheduled_backups_beside_runs_and_counts_an_outage() -> Result<()> {
    let version = EtcdVersion::V3_5;
    let s3 = S3Server::start(BUCKET).await?;
    let cluster = fragmented_cluster(version).await?;
    let files = ServiceFiles::new()?;
    std::fs::write(files.path("access-key-id"), "etcdmedic-test\n")?;
    std::fs::write(files.path("secret-access-key"), "not-checked-by-moto\n")?;
    // One scheduled time a few seconds out, then not again for a day.
    let at = SystemTime::now() + Duration::from_secs(6);
    let clock = humantime::format_rfc3339_seconds(at).to_string();
    let (h, m, s) = (&clock[11..13], &clock[14..16], &clock[17..19]);
    let entry = format!(
        "{entry}    backup:\n      schedule: '{s} {m} {h} * * *'\n      destinations:\n        \
         - {{name: near, kind: local, path: {near}}}\n        - {{name: offsite, kind: s3, \
         bucket: {BUCKET}, endpoint: '{endpoint}', path_style: true, access_key_id_file: \
         {id}, secret_access_key_file: {secret}}}\n      restore_drill: {{bin_dir: {bin}}}\n",
        entry = cluster.config_entry("prod-a"),
        near = files.path("backups").display(),
        endpoint = s3.endpoint(),
        id = files.path("access-key-id").display(),
        secret = files.path("secret-access-key").display(),
        bin = version.bin_dir()?.display(),
    );
    let config = files.write_config(&entry, "")?;
    let mut service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let (_, status) = service.get("/api/v1/status").await?;
    ensure!(
        status["clusters"][0]["next_scheduled_backup"] == clock.as_str(),
        "{status}"
    );

    let scheduled = nth_backup(&service, 1).await?;
    ensure!(
        scheduled["source"] == "schedule" && scheduled["outcome"] == "succeeded",
        "{scheduled}"
    );
    let due = humantime::parse_rfc3339(&clock)?;
    ensure!(time(&scheduled["started_at"])? >= due, "{scheduled}");
    let manifest = &scheduled["report"]["manifest"];
    ensure!(manifest["restore_drill"]["passed"] == true, "{manifest}");
    let file = manifest["file"].as_str().context("file")?;
    let local = std::fs::read(files.path("backups").join("prod-a").join(file))?;
    ensure!(
        s3.object(&format!("prod-a/{file}")).await? == local,
        "the bucket's copy differs from the directory's"
    );
    let text = service.metrics().await?;
    let offsite = [("etcd_cluster", "prod-a"), ("destination", "offsite")];
    let last_offsite = metric(
        &text,
        "etcdmedic_backup_last_success_timestamp_seconds",
        &offsite,
    )
    .context("no last-success metric for offsite")?;
    ensure!(last_offsite > 0.0, "{text}");
    ensure!(
        metric(&text, "etcdmedic_backup_failures_total", &offsite) == Some(0.0),
        "{text}"
    );
    // What each destination holds, as it reports it: here the snapshot as etcd wrote it.
    for destination in ["near", "offsite"] {
        let stored = metric(
            &text,
            "etcdmedic_backup_stored_size_bytes",
            &[("etcd_cluster", "prod-a"), ("destination", destination)],
        );
        ensure!(
            stored == Some(local.len() as f64),
            "{destination} holds {stored:?} bytes, the file has {}",
            local.len()
        );
    }
    every_metric_is_documented(&text)?;
    ensure!(
        metric(
            &text,
            "etcdmedic_backup_schedule_interval_seconds",
            &[("etcd_cluster", "prod-a")]
        ) == Some(86400.0),
        "{text}"
    );
    ensure!(
        metric(
            &text,
            "etcdmedic_restore_drill_last_success_timestamp_seconds",
            &[("etcd_cluster", "prod-a")]
        )
        .is_some_and(|t| t > 0.0),
        "{text}"
    );

    // A remediation and a backup asked for together: one after the other, in either order.
    let (code, run) = service.post("/api/v1/clusters/prod-a/remediate").await?;
    ensure!(code == 202, "{run}");
    let (code, asked) = service.post("/api/v1/clusters/prod-a/backup").await?;
    ensure!(
        code == 202 && asked["decision"]["action"] == "queued",
        "{asked}"
    );
    let run_id = run["decision"]["run_id"].as_i64().context("run id")?;
    let run = service.wait_for_run(run_id, RUN_TIMEOUT).await?;
    ensure!(run["outcome"] == "succeeded", "{run}");
    let beside = nth_backup(&service, 2).await?;
    ensure!(
        beside["source"] == "api" && beside["outcome"] == "succeeded",
        "{beside}"
    );
    let (run_start, run_end) = (time(&run["started_at"])?, time(&run["finished_at"])?);
    let (backup_start, backup_end) = (time(&beside["started_at"])?, time(&beside["finished_at"])?);
    ensure!(
        backup_end <= run_start || backup_start >= run_end,
        "the backup ({backup_start:?}..{backup_end:?}) overlapped the run \
         ({run_start:?}..{run_end:?})"
    );

    // The bucket goes away 1 MiB into the upload: the directory still gets the backup.
    s3.proxy.cut_after(1 << 20);
    let (code, _) = service.post("/api/v1/clusters/prod-a/backup").await?;
    ensure!(code == 202);
    let partial = nth_backup(&service, 3).await?;
    ensure!(partial["outcome"] == "partial", "{partial}");
    ensure!(
        landed(&partial, "near").is_some() && landed(&partial, "offsite").is_none(),
        "{partial}"
    );
    ensure!(
        partial["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("offsite: ") && r.contains("failed 3 times")),
        "{partial}"
    );
    let text = service.metrics().await?;
    ensure!(
        metric(&text, "etcdmedic_backup_failures_total", &offsite) == Some(1.0),
        "{text}"
    );
    let offsite_after = metric(
        &text,
        "etcdmedic_backup_last_success_timestamp_seconds",
        &offsite,
    );
    ensure!(offsite_after == Some(last_offsite) || offsite_after > Some(last_offsite));
    let near = [("etcd_cluster", "prod-a"), ("destination", "near")];
    let near_now = metric(
        &text,
        "etcdmedic_backup_last_success_timestamp_seconds",
        &near,
    )
    .context("near")?;
    ensure!(
        near_now >= offsite_after.unwrap_or_default(),
        "the directory moved on"
    );

    s3.proxy.restore();
    let (code, _) = service.post("/api/v1/clusters/prod-a/backup").await?;
    ensure!(code == 202);
    let recovered = nth_backup(&service, 4).await?;
    ensure!(recovered["outcome"] == "succeeded", "{recovered}");
    let text = service.metrics().await?;
    let offsite_recovered = metric(
        &text,
        "etcdmedic_backup_last_success_timestamp_seconds",
        &offsite,
    )
    .context("offsite")?;
    ensure!(offsite_recovered > near_now - 1.0, "{text}");

    // The gauges come back from the state after a restart.
    service.terminate(Duration::from_secs(30)).await?;
    service.restart().await?;
    let text = service.metrics().await?;
    ensure!(
        metric(
            &text,
            "etcdmedic_backup_last_success_timestamp_seconds",
            &offsite
        ) == Some(offsite_recovered),
        "{text}"
    );
    let (code, body) = service.get("/api/v1/backups?cluster=nope").await?;
    ensure!(code == 404, "{body}");
    let (code, body) = service.post("/api/v1/clusters/nope/backup").await?;
    ensure!(code == 404, "{body}");
    Ok(())
}
