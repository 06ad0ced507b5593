//! The README's output blocks are what their commands print now: configuration errors word for
//! word, and everything shown of the demo (the metrics excerpt, the status table, also with the leader paused,
//! `status -o json`, `run` and running it again, `backup`, `drill`, a manifest, the backup
//! API) run as the README shows it against
//! `make demo`'s stack and compared in shape (ports, ids, paths, times and sizes vary).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use etcdmedic_tests::project_binary;

use crate::demo::RunningDemo;
use crate::readme::{block, documentation, ensure_same_output, ensure_same_rows, session, Step};
use crate::support::series_labels;

/// `command` run by bash in `dir` with the project's binaries first on PATH; its stdout and
/// stderr together, and whether it exited 0.
async fn shell(dir: &Path, command: &str, env: &[(&str, &str)]) -> Result<(String, bool)> {
    let binaries = project_binary("etcdmedic-remediator")?
        .parent()
        .context("binary without a directory")?
        .to_path_buf();
    let path = format!(
        "{}:{}",
        binaries.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = tokio::process::Command::new("bash")
        .args(["-c", &format!("{{ {command}; }} 2>&1")])
        .current_dir(dir)
        .env("PATH", path)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .with_context(|| format!("{command} did not finish within 180s"))??;
    Ok((
        String::from_utf8_lossy(&output.stdout).to_string(),
        output.status.success(),
    ))
}

/// The configuration errors the README shows are printed word for word by the commands it
/// shows, with files that have those mistakes.
#[tokio::test]
async fn the_readmes_configuration_errors_are_printed_word_for_word() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Each file with the binary whose part of the configuration it gets wrong.
    let files = [
        (
            "etcdmedic-exporter",
            "bad.yaml",
            "clusters:\n  - name: a\n    endpoints: [https://10.0.0.1:2379]\n    \
             tls: {ca_file: /x/ca.pem}\n  - name: a\n    endpoints: ['10.0.0.1:2379']\n",
        ),
        (
            "etcdmedic-remediator",
            "typo.yaml",
            "remediation:\n  setle_time: 1s\nremediator:\n  cooldwn: 1h\n\
             clusters:\n  - name: a\n    endpoints: [https://10.0.0.1:2379]\n",
        ),
    ];
    let readme = documentation()?;
    for (binary, name, yaml) in files {
        std::fs::write(dir.path().join(name), yaml)?;
        let first = format!("$ {binary} serve --config {name}");
        for step in session(block(&readme, &first)?) {
            let (printed, _) = shell(dir.path(), &step.command, &[]).await?;
            ensure!(
                printed == step.shown,
                "the README shows for {name}:\n{}printed:\n{printed}",
                step.shown
            );
        }
    }

    // The defrag rule's errors, as the remediator's `--config.check` reports them.
    for (yaml, shown_prefix) in [
        (
            "clusters:\n  - name: a\n    endpoints: [https://10.0.0.1:2379]\n    \
             remediation: {defrag_rule: 'dbSize ^ 2 > 0'}\n",
            "config etcdmedic.yaml: clusters[0].remediation.defrag_rule: ",
        ),
        (
            "remediation: {defrag_rule: 'free > 1'}\n\
             clusters:\n  - name: a\n    endpoints: [https://10.0.0.1:2379]\n",
            "config etcdmedic.yaml: remediation.defrag_rule: ",
        ),
    ] {
        std::fs::write(dir.path().join("etcdmedic.yaml"), yaml)?;
        let shown = readme
            .lines()
            .find(|l| l.starts_with(shown_prefix))
            .with_context(|| format!("no README line starting {shown_prefix}"))?;
        // The rule is the remediator's: the exporter skips its block.
        let command = "etcdmedic-remediator serve --config etcdmedic.yaml --config.check";
        let (printed, ok) = shell(dir.path(), command, &[]).await?;
        ensure!(
            !ok && printed.trim_end() == format!("etcdmedic-remediator: {shown}"),
            "the README shows {shown:?}, printed:\n{printed}"
        );
    }
    Ok(())
}

/// The demo's stack, and a README command turned into the same command against it.
struct Demo {
    running: RunningDemo,
    dir: PathBuf,
}

impl Demo {
    /// The README's `command` against the demo: the binary from this build, its
    /// configuration file, its remediator's URL, its newest manifest for `cat`.
    fn live(&self, command: &str) -> Result<String> {
        let remediator = self.running.remediator()?;
        let mut words = Vec::new();
        let mut after_config = false;
        for word in command.split(' ') {
            let word = word.strip_prefix("./target/debug/").unwrap_or(word);
            let live = if after_config {
                // `--config demo.yaml; echo ...`: the separator stays.
                let separator = &word[word.trim_end_matches(';').len()..];
                format!("{}{separator}", self.running.config()?)
            } else if let Some((quote, rest)) = word.split_once("http://127.0.0.1:") {
                let path = rest.trim_start_matches(|c: char| c.is_ascii_digit());
                format!("{quote}{remediator}{path}")
            } else if word.starts_with("backups/demo/") && word.ends_with(".json") {
                self.newest_manifest()?.display().to_string()
            } else {
                word.to_string()
            };
            after_config = word == "--config";
            words.push(live);
        }
        Ok(words.join(" "))
    }

    fn newest_manifest(&self) -> Result<PathBuf> {
        let mut manifests: Vec<PathBuf> = std::fs::read_dir(self.dir.join("backups/demo"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        manifests.sort();
        manifests.pop().context("no manifest in the demo's backups")
    }

    /// Runs the README's `command` against the demo; it must exit 0. While the demo's
    /// service holds the cluster's lock (its hourly backup, when the test crosses the hour)
    /// the command is refused and asked again.
    async fn run(&self, command: &str) -> Result<String> {
        let live = self.live(command)?;
        let token = self.running.token()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (printed, ok) = shell(&self.dir, &live, &[("TOKEN", token)]).await?;
            let locked = printed.contains("another remediation of cluster demo is running");
            if ok || !locked || tokio::time::Instant::now() > deadline {
                ensure!(ok, "{live} failed:\n{printed}");
                return Ok(printed);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs each step of the README's session and compares what it shows with what is
    /// printed.
    async fn ensure_session_prints_what_it_shows(&self, steps: &[Step]) -> Result<()> {
        for step in steps {
            let printed = self.run(&step.command).await?;
            ensure_same_output(&step.command, &step.shown, &printed)?;
        }
        Ok(())
    }

    /// `field` (`name`, `endpoint`) of a member of the demo's cluster that leads now
    /// (`leads`), or that follows.
    async fn member_that(&self, leads: bool, field: &str) -> Result<String> {
        let status: serde_json::Value = serde_json::from_str(
            &self
                .run("etcdmedic-exporter status --config demo.yaml -o json")
                .await?,
        )?;
        let members = status[0]["members"].as_array().context("no members")?;
        members
            .iter()
            .find(|m| (m["status"]["ok"]["leader"] == m["id"]) == leads)
            .and_then(|m| m[field].as_str())
            .map(str::to_string)
            .with_context(|| format!("no member with leads={leads} in {status}"))
    }

    /// The names of the member that leads the demo's cluster now and of one that follows.
    async fn leader_and_follower(&self) -> Result<(String, String)> {
        Ok((
            self.member_that(true, "name").await?,
            self.member_that(false, "name").await?,
        ))
    }

    /// The process of the member that leads the demo's cluster now.
    async fn leader_pid(&self) -> Result<i32> {
        let leader = self.member_that(true, "endpoint").await?;
        let flag = format!("--listen-client-urls={leader}\0");
        std::fs::read_dir("/proc")?
            .filter_map(Result::ok)
            .find_map(|entry| {
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                String::from_utf8_lossy(&cmdline)
                    .contains(&flag)
                    .then(|| entry.file_name().to_str()?.parse().ok())?
            })
            .with_context(|| format!("no process serves {leader}"))
    }

    /// The newest backup the service recorded, once it is no longer under way.
    async fn wait_for_backup(&self, id: u64) -> Result<serde_json::Value> {
        let url = format!(
            "{}/api/v1/backups?cluster=demo&limit=1",
            self.running.remediator()?
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let answer: serde_json::Value = etcdmedic_tests::http_client()
                .get(&url)
                .bearer_auth(self.running.token()?)
                .send()
                .await?
                .json()
                .await?;
            let newest = &answer["backups"][0];
            if newest["id"].as_u64() >= Some(id) && newest["outcome"] != "running" {
                return Ok(newest.clone());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("backup {id} not finished within 120s: {answer}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Every series of the README's metrics excerpt is exposed now, with the same labels.
async fn ensure_metrics_excerpt_is_exposed(demo: &RunningDemo, readme: &str) -> Result<()> {
    let exporter = demo.banner_value("exporter")?;
    let metrics = etcdmedic_tests::http_client()
        .get(format!("{exporter}metrics"))
        .send()
        .await?
        .text()
        .await?;
    let live: Vec<(String, Vec<String>)> = metrics.lines().filter_map(series_labels).collect();
    let excerpt = block(readme, "# HELP etcdmedic_member_db_in_use_ratio")?;
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
async fn the_readmes_commands_print_what_it_shows_against_the_demo() -> Result<()> {
    let running = RunningDemo::start().await?;
    let dir = Path::new(running.config()?)
        .parent()
        .context("config without a directory")?
        .to_path_buf();
    let demo = Demo { running, dir };
    let readme = documentation()?;

    ensure_metrics_excerpt_is_exposed(&demo.running, &readme).await?;
    let printed = demo
        .run("etcdmedic-exporter status --config demo.yaml -o json")
        .await?;
    let shown = block(&readme, "[\n  {\n    \"cluster\": \"demo\",")?;
    ensure_same_output("status -o json", shown, &printed)?;

    // As the README says: the service paused, so that the command line gets the cluster.
    demo.run(&format!(
        "curl -sf -X POST -H 'Authorization: Bearer {}' {}/api/v1/pause",
        demo.running.token()?,
        demo.running.remediator()?
    ))
    .await?;
    demo.run("etcdmedic-demo fragment --no-wait --config demo.yaml")
        .await?;
    let run = session(block(
        &readme,
        "$ ./target/debug/etcdmedic-remediator run ",
    )?);
    let [step] = run.as_slice() else {
        bail!("the README's run block should show one command");
    };
    demo.ensure_session_prints_what_it_shows(&run).await?;
    let printed = demo.run(&step.command).await?;
    ensure_same_output(
        "run again",
        block(&readme, "[   0.00s] preflight ...")?,
        &printed,
    )?;

    // The one-off verbs: the README defragments a follower and takes leadership from the
    // leader, so each is asked of a member that has that role now.
    let verbs = session(block(&readme, "$ etcdmedic-remediator alarm list ")?);
    ensure!(
        verbs.len() == 3,
        "alarm list, defrag --dry-run, forfeit-leadership"
    );
    let (leader, follower) = demo.leader_and_follower().await?;
    let verbs: Vec<Step> = verbs
        .into_iter()
        .map(|step| {
            let member = if step.command.contains("forfeit-leadership") {
                &leader
            } else {
                &follower
            };
            match step.command.split_once(" --member ") {
                Some((before, after)) => {
                    let rest = after.split_once(' ').map_or("", |(_, rest)| rest);
                    Step {
                        command: format!("{before} --member {member} {rest}")
                            .trim_end()
                            .to_string(),
                        shown: step.shown,
                    }
                }
                None => step,
            }
        })
        .collect();
    demo.ensure_session_prints_what_it_shows(&verbs).await?;

    let backups = session(block(&readme, "$ etcdmedic-remediator backup ")?);
    ensure!(backups.len() == 3, "backup, drill and the manifest");
    demo.ensure_session_prints_what_it_shows(&backups).await?;

    let api = session(block(&readme, "$ curl -s -X POST ")?);
    let [post, list] = api.as_slice() else {
        bail!("the README's backup API block should show two commands");
    };
    demo.ensure_session_prints_what_it_shows(std::slice::from_ref(post))
        .await?;
    let newest = demo.wait_for_backup(2).await?;
    ensure!(newest["outcome"] == "succeeded", "{newest}");
    demo.ensure_session_prints_what_it_shows(std::slice::from_ref(list))
        .await?;

    // Last, as it pauses the leader: the status table, then with the leader paused.
    let status = session(block(
        &readme,
        "$ etcdmedic-exporter status --config demo.yaml\n",
    )?);
    ensure!(status.len() == 2, "the table, then with the leader paused");
    let leader = demo.leader_pid().await?;
    let shown = async {
        for step in &status {
            let command = step
                .command
                .replace("<the leader's pid>", &leader.to_string());
            let printed = demo.run(&command).await?;
            // Which row is the paused leader's varies.
            ensure_same_rows(&command, &step.shown, &printed)?;
        }
        anyhow::Ok(())
    }
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leader),
        nix::sys::signal::Signal::SIGCONT,
    )?;
    shown?;
    demo.running.stop().await
}
