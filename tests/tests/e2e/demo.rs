//! `make demo`'s program starts, reports the cluster and leaves nothing behind.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::project_binary;

#[tokio::test]
async fn the_demo_starts_etcd_the_exporter_and_the_remediator_then_stops_cleanly() -> Result<()> {
    let run = tokio::process::Command::new(project_binary("etcdmedic-demo")?)
        .arg("--exit-after-start")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("the demo did not finish within 120s")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "exit {:?}\n{stdout}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "etcdmedic demo is running.",
        "ENDPOINT ",
        "/metrics | grep -v '^#'",
        "/probe?target=demo",
        " fragment --config ",
        "etcdmedic-remediator run --config ",
        "/webhook/alertmanager, bearer token ",
        "/api/v1/runs",
        "Stopped; nothing of the demo is left running.",
    ] {
        ensure!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    let config = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("config"))
        .map(str::trim)
        .context("no config line")?;
    ensure!(
        !std::path::Path::new(config).exists(),
        "the demo left {config} behind"
    );
    // The exporter and the remediator service were started with that config.
    let left: Vec<String> = std::fs::read_dir("/proc")?
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(config))
        .collect();
    ensure!(left.is_empty(), "processes left running: {left:?}");
    Ok(())
}
