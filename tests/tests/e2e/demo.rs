//! `make demo`'s program: it starts and reports the whole stack, runs the whole loop (fragment,
//! alert, webhook, successful run) within a deadline, and leaves nothing behind.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::project_binary;

/// Runs the demo with `flag` and returns its output, after checking that it exited 0 and
/// left no process or file behind.
async fn run_demo(flag: &str, deadline: Duration) -> Result<String> {
    let run = tokio::process::Command::new(project_binary("etcdmedic-demo")?)
        .arg(flag)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(deadline, run)
        .await
        .with_context(|| format!("the demo did not finish within {deadline:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    ensure!(
        output.status.success(),
        "exit {:?}\n{stdout}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    let config = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("config"))
        .map(str::trim)
        .context("no config line")?
        .to_string();
    ensure!(
        !std::path::Path::new(&config).exists(),
        "the demo left {config} behind"
    );
    // Every process of the stack (etcd, exporter, remediator, Prometheus, Alertmanager) was
    // started with a path under the demo's directory.
    let dir = std::path::Path::new(&config)
        .parent()
        .context("config without a directory")?
        .display()
        .to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")?
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&dir))
        .collect();
    ensure!(left.is_empty(), "processes left running: {left:?}");
    Ok(stdout)
}

#[tokio::test]
async fn the_demo_starts_the_whole_stack_then_stops_cleanly() -> Result<()> {
    let stdout = run_demo("--exit-after-start", Duration::from_secs(120)).await?;
    for expected in [
        "etcdmedic demo is running.",
        "ENDPOINT ",
        "/metrics | grep -v '^#'",
        " fragment --config ",
        "remediator     http://",
        "prometheus     http://",
        "alertmanager   http://",
        "/api/v1/runs",
        "etcdmedic-remediator run --config ",
        "/api/v1/backups",
        "drill passed in ",
        "etcdmedic-remediator drill --config ",
        "Stopped; nothing of the demo is left running.",
    ] {
        ensure!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_demo_loop_fragments_alerts_and_remediates_within_its_deadline() -> Result<()> {
    let stdout = run_demo("--exit-after-remediation", Duration::from_secs(300)).await?;
    for expected in [
        "EtcdmedicDatabaseHighFragmentation is firing in Prometheus",
        "the remediator queued run 1 from Alertmanager's webhook",
        "run 1 succeeded",
        "Stopped; nothing of the demo is left running.",
    ] {
        ensure!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    Ok(())
}
