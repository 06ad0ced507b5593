//! `make demo`'s program: it starts and reports the whole stack, runs the whole loop (fragment,
//! alert, webhook, successful run) within a deadline, and leaves nothing behind.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::project_binary;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::readme::{block, documentation, ensure_same_output};

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

/// The first word after the banner line `label` (`config`, `exporter`, `remediator`).
fn banner_value<'a>(banner: &'a str, label: &str) -> Result<&'a str> {
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("no {label} line in:\n{banner}"))
}

/// The demo's directory (the config's) is gone, and no process started under it runs.
fn nothing_left_behind(stdout: &str) -> Result<()> {
    let config = banner_value(stdout, "config")?;
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
        "etcdmedic-remediator restore --config ",
        "Stopped; nothing of the demo is left running.",
    ] {
        ensure!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    Ok(())
}

/// The README shows what the demo prints: the same lines, with the same words, in the same
/// order, whatever the ports, paths, ids, times and sizes.
fn ensure_readme_shows(stdout: &str) -> Result<()> {
    let readme = documentation()?;
    for (first, last) in [
        (
            "etcdmedic demo is running.",
            "Press Ctrl-C to stop everything",
        ),
        ("Writing ", "The run in a browser: "),
    ] {
        let start = stdout.find(first).context("not printed")?;
        let end = stdout[start..]
            .find(last)
            .map(|i| start + i)
            .context("no end")?;
        let end = stdout[end..].find('\n').map_or(stdout.len(), |i| end + i);
        ensure_same_output(
            &format!("README block {first:?}"),
            block(&readme, first)?,
            &stdout[start..end],
        )?;
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

/// The demo running in the background, as started by `make demo`, and its banner.
pub struct RunningDemo {
    process: tokio::process::Child,
    /// The rest of its output: read until it ends, so that the demo never writes to a closed
    /// pipe.
    output: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pub banner: String,
}

impl RunningDemo {
    /// Starts the demo and returns once it has printed its banner.
    pub async fn start() -> Result<Self> {
        // Not killed on drop: a killed demo would leave its etcd, exporter and servers
        // running; `Drop` asks it to stop the way Ctrl-C does.
        let mut process = tokio::process::Command::new(project_binary("etcdmedic-demo")?)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let mut lines = BufReader::new(process.stdout.take().context("no stdout")?).lines();
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
        Ok(Self {
            process,
            output: lines,
            banner,
        })
    }

    /// The first word after the banner line's `label`.
    pub fn banner_value(&self, label: &str) -> Result<&str> {
        banner_value(&self.banner, label)
    }

    pub fn config(&self) -> Result<&str> {
        self.banner_value("config")
    }

    /// The remediator's base URL, without the trailing slash.
    pub fn remediator(&self) -> Result<&str> {
        Ok(self.banner_value("remediator")?.trim_end_matches('/'))
    }

    pub fn token(&self) -> Result<&str> {
        self.banner
            .split_once("Authorization: Bearer ")
            .and_then(|(_, rest)| rest.split('\'').next())
            .context("no token in the banner")
    }

    /// Ctrl-C: everything stops and nothing is left behind.
    pub async fn stop(mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.process.id().context("no pid")? as i32),
            nix::sys::signal::Signal::SIGINT,
        )?;
        let mut rest = String::new();
        let stopped = async {
            while let Some(line) = self.output.next_line().await? {
                rest.push_str(&line);
                rest.push('\n');
            }
            anyhow::Ok(self.process.wait().await?)
        };
        let status = tokio::time::timeout(Duration::from_secs(60), stopped)
            .await
            .context("the demo did not stop within 60s of Ctrl-C")??;
        ensure!(status.success(), "{status}:\n{rest}");
        ensure!(
            rest.contains("Stopped; nothing of the demo is left running."),
            "{rest}"
        );
        nothing_left_behind(&self.banner)
    }
}

/// A test that failed before [`RunningDemo::stop`] still stops the demo as Ctrl-C does, so
/// that nothing of it is left running (its processes) or on disk (its directory): SIGINT,
/// then up to a minute for the demo to stop everything, then SIGKILL.
impl Drop for RunningDemo {
    fn drop(&mut self) {
        let Some(pid) = self.process.id() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).is_err() {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if matches!(self.process.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.process.start_kill();
    }
}

/// Every link the running demo prints answers 200 with a body a person can use (with the
/// bearer token where the line gives one), with the packages install-deps installs; then
/// Ctrl-C stops it all.
#[tokio::test]
async fn every_link_the_demo_prints_answers() -> Result<()> {
    let demo = RunningDemo::start().await?;
    let banner = &demo.banner;
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
        // The restore it shows is a dry run of the demo's newest backup: it must plan one and
        // write nothing.
        if line.contains("etcdmedic-remediator restore ") {
            let output = tokio::process::Command::new("bash")
                .args(["-c", line.trim()])
                .current_dir(etcdmedic_tests::generated::repository_root())
                .output()
                .await?;
            let printed = String::from_utf8_lossy(&output.stdout);
            ensure!(
                output.status.success() && printed.starts_with("Would restore backup demo-"),
                "{line}: {output:?}"
            );
            let into = line
                .split(" --into ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .context("no --into")?;
            ensure!(
                !std::path::Path::new(into).exists(),
                "a dry run wrote {into}"
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
    demo.stop().await
}
