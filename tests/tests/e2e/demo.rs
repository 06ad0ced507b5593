//! `make demo`'s program: it starts and reports the whole stack, runs the whole loop (fragment,
//! alert, webhook, successful run) within a deadline, and leaves nothing behind.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::project_binary;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{series_labels, shape};

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
    nothing_left_behind(&stdout)?;
    Ok(stdout)
}

/// The demo's directory (the config's) is gone, and no process started under it runs.
fn nothing_left_behind(stdout: &str) -> Result<()> {
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
    Ok(())
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

/// The README's fenced block that starts with `first`.
fn readme_text<'a>(readme: &'a str, first: &str) -> Result<&'a str> {
    let start = readme
        .find(&format!("```\n{first}"))
        .with_context(|| format!("no README block starting {first:?}"))?
        + 4;
    let end = readme[start..].find("\n```").context("unclosed block")? + start;
    Ok(&readme[start..end])
}

/// Its lines' shapes, without the progress lines (`[  8.8s] [   0.01s] ...`: how many
/// depends on timing).
fn readme_block(readme: &str, first: &str) -> Result<Vec<Vec<String>>> {
    Ok(lines_of(readme_text(readme, first)?))
}

fn lines_of(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !is_progress(l))
        .map(shape)
        .collect()
}

fn is_progress(line: &str) -> bool {
    line.starts_with('[') && line.contains("s] [")
}

/// The README shows what the demo prints: the same lines, with the same words, in the same
/// order, whatever the ports, paths, ids, times and sizes.
fn ensure_readme_shows(stdout: &str) -> Result<()> {
    let readme = std::fs::read_to_string(repository_root().join("README.md"))?;
    for (first, last) in [
        (
            "etcdmedic demo is running.",
            "Press Ctrl-C to stop everything",
        ),
        ("Writing ", "The run in a browser: "),
    ] {
        let shown = readme_block(&readme, first)?;
        let start = stdout.find(first).context("not printed")?;
        let end = stdout[start..]
            .find(last)
            .map(|i| start + i)
            .context("no end")?;
        let end = stdout[end..].find('\n').map_or(stdout.len(), |i| end + i);
        let printed = lines_of(&stdout[start..end]);
        for (index, (readme_line, printed_line)) in shown.iter().zip(&printed).enumerate() {
            ensure!(
                readme_line == printed_line,
                "README block {first:?}, line {}: shows {readme_line:?}, the demo prints \
                 {printed_line:?}",
                index + 1
            );
        }
        ensure!(
            shown.len() == printed.len(),
            "README block {first:?}: {} lines shown, {} printed:\n{}",
            shown.len(),
            printed.len(),
            &stdout[start..end]
        );
    }
    let series = |text: &str| -> Option<String> {
        let line = text.lines().find(|l| l.contains(" series for 3 members"))?;
        let (_, count) = line.rsplit_once("# ")?;
        Some(count.to_string())
    };
    ensure!(
        series(&readme) == series(stdout),
        "the README says {:?}, the demo {:?}",
        series(&readme),
        series(stdout)
    );
    Ok(())
}

/// What the README shows of the running demo: the status table (the same columns and kinds
/// of rows as `etcdmedic-exporter status` prints now) and the metrics excerpt (every series
/// shown exists now, with the same labels).
async fn ensure_readme_matches_the_running_demo(banner: &str) -> Result<()> {
    let readme = std::fs::read_to_string(repository_root().join("README.md"))?;
    let config = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("config"))
        .map(str::trim)
        .context("no config line")?;
    let output = tokio::process::Command::new(project_binary("etcdmedic-exporter")?)
        .args(["status", "--config", config])
        .output()
        .await?;
    ensure!(output.status.success(), "status: {output:?}");
    let table = String::from_utf8(output.stdout)?;
    let shown = readme_block(&readme, "$ etcdmedic-exporter status --config demo.yaml")?;
    let printed = lines_of(&table);
    ensure!(
        shown.get(1..=printed.len()) == Some(&printed[..]),
        "the README's status table is not what `status` prints now:\n{table}"
    );

    let exporter = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("exporter"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no exporter line")?;
    let metrics = etcdmedic_tests::http_client()
        .get(format!("{exporter}metrics"))
        .send()
        .await?
        .text()
        .await?;
    let live: Vec<(String, Vec<String>)> = metrics.lines().filter_map(series_labels).collect();
    let excerpt = readme_text(&readme, "# HELP etcdmedic_member_db_in_use_ratio")?;
    for line in excerpt.lines().filter(|l| l.starts_with("etcdmedic_")) {
        let shown = series_labels(line).context("not a series")?;
        ensure!(
            live.contains(&shown),
            "the README shows {line}, which the exporter no longer exposes with these labels"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_demo_loop_fragments_alerts_and_remediates_within_its_deadline() -> Result<()> {
    let stdout = run_demo("--exit-after-remediation", Duration::from_secs(300)).await?;
    ensure_readme_shows(&stdout)?;
    for expected in [
        "EtcdmedicDatabaseHighFragmentation is firing",
        "Alertmanager delivered it to the remediator's webhook: run 1 queued",
        "✓ defragment m",
        "run 1 succeeded: ",
        "/ui/runs/1 (log in with the token ",
        "Stopped; nothing of the demo is left running.",
    ] {
        ensure!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    Ok(())
}

/// Every link the running demo prints answers 200 with a body a person can use (with the
/// bearer token where the line gives one), with the packages install-deps installs; then
/// Ctrl-C stops it all.
#[tokio::test]
async fn every_link_the_demo_prints_answers() -> Result<()> {
    let mut demo = tokio::process::Command::new(project_binary("etcdmedic-demo")?)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(demo.stdout.take().context("no stdout")?).lines();
    let mut banner = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await? {
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("Press Ctrl-C") {
                return Ok(());
            }
        }
        anyhow::bail!("the demo ended before it was ready")
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .context("the demo was not ready within 120s")??;

    let http = etcdmedic_tests::http_client();
    let mut checked = 0;
    // The banner's links and commands are indented; the status table's rows (data) are not.
    for line in banner.lines().filter(|l| l.starts_with("  ")) {
        // A command for a terminal (the members' client URLs are not pages): it must work.
        if let Some(command) = line.trim().strip_prefix("etcd members").map(str::trim) {
            let output = tokio::process::Command::new("bash")
                .args(["-c", command])
                .output()
                .await?;
            ensure!(
                output.status.success() && output.stdout.len() > 100,
                "{command}: {output:?}"
            );
            checked += 1;
            continue;
        }
        let token = line
            .split_once("Authorization: Bearer ")
            .and_then(|(_, rest)| rest.split('\'').next());
        for url in line
            .split(|c: char| c.is_whitespace() || c == '\'')
            .filter(|word| word.starts_with("http://"))
            .map(|word| word.trim_end_matches([',', ';', ')']))
        {
            let mut request = http.get(url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.with_context(|| url.to_string())?;
            let status = response.status();
            let body = response.text().await?;
            ensure!(
                status == 200 && !body.trim().is_empty(),
                "{url} ({line:?}) answered {status}: {body:.200}"
            );
            checked += 1;
        }
    }
    ensure!(checked >= 8, "only {checked} links in:\n{banner}");
    ensure_readme_matches_the_running_demo(&banner).await?;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id().context("no pid")? as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let status = tokio::time::timeout(Duration::from_secs(60), demo.wait())
        .await
        .context("the demo did not stop within 60s of Ctrl-C")??;
    ensure!(status.success(), "{status}");
    nothing_left_behind(&banner)
}
