//! What `etcdmedic-demo fragment` prints after fragmenting, until the run ends: the alert
//! pending then firing in Prometheus, the run Alertmanager's notification queued, the run's
//! progress as it changes, and its end with each step and the space reclaimed. The running
//! demo leaves where its parts listen in `demo-stack.json` beside its config.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const STACK_FILE: &str = "demo-stack.json";
const ALERT: &str = super::DEMO_ALERT;
const POLL: Duration = Duration::from_millis(500);

/// Where the running demo's parts listen.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stack {
    pub prometheus: String,
    pub remediator: String,
    pub token: String,
}

impl Stack {
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join(STACK_FILE), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// The stack of the demo whose config is `config`.
    pub fn of(config: &Path) -> Result<Stack> {
        let path = config.with_file_name(STACK_FILE);
        let text = std::fs::read(&path)
            .with_context(|| format!("{}: is the demo running?", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is not the demo's", path.display()))
    }
}

/// How the run ended.
pub struct RunEnd {
    pub id: i64,
    pub outcome: String,
    pub reason: String,
}

/// Narrates from the alert to the end of the run Alertmanager asks for, within `deadline`.
/// `after_run`: runs up to this id already existed.
pub async fn until_the_run_ends(
    stack: &Stack,
    after_run: i64,
    deadline: Duration,
) -> Result<RunEnd> {
    let http = etcdmedic_tests::http_client();
    let started = Instant::now();
    let say = |message: &str| println!("[{:5.1}s] {message}", started.elapsed().as_secs_f64());
    let (mut alert_state, mut run, mut progress) = (String::new(), None::<i64>, String::new());
    say(&format!(
        "waiting for {ALERT} in Prometheus (the exporter is scraped every few seconds)"
    ));
    loop {
        if started.elapsed() > deadline {
            bail!(
                "no end within {deadline:?}; see {}/ui/runs and the remediator's log",
                stack.remediator
            );
        }
        if run.is_none() {
            let state = alert_state_in(&http, &stack.prometheus)
                .await
                .unwrap_or_default();
            if !state.is_empty() && state != alert_state {
                match state.as_str() {
                    "pending" => say(&format!(
                        "{ALERT} is pending in Prometheus (its `for:` runs)"
                    )),
                    _ => say(&format!(
                        "{ALERT} is firing; Prometheus sends it to Alertmanager"
                    )),
                }
                alert_state = state;
            }
            if let Ok(Some(id)) = newest_alert_run(&http, stack, after_run).await {
                say(&format!(
                    "Alertmanager delivered it to the remediator's webhook: run {id} queued \
                     ({}/ui/runs/{id})",
                    stack.remediator
                ));
                run = Some(id);
            }
        }
        if let Some(id) = run {
            let detail = get(&http, stack, &format!("/api/v1/runs/{id}")).await?;
            if let Some(now) = detail["progress"].as_str().filter(|p| *p != progress) {
                // One line per change: a plan's progress is a line per member as well, shown
                // or not as the poll happens to catch it (the run's page has all of it).
                say(now.lines().next().unwrap_or(now));
                progress = now.to_string();
            }
            if detail["state"] == "finished" {
                return Ok(finished(&detail, id, &say));
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The run's steps and end, printed; how it ended.
fn finished(detail: &Value, id: i64, say: &dyn Fn(&str)) -> RunEnd {
    let report = &detail["report"];
    for step in report["steps"].as_array().into_iter().flatten() {
        let member = step["member"]["name"]
            .as_str()
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        println!(
            "         {} {}{member} ({:.1} s): {}",
            if step["ok"] == true { "✓" } else { "✗" },
            step["step"].as_str().unwrap_or("?"),
            step["duration"].as_f64().unwrap_or(0.0),
            step["detail"].as_str().unwrap_or("")
        );
    }
    let outcome = detail["outcome"].as_str().unwrap_or("?").to_string();
    let reclaimed = report["reclaimed_bytes"].as_u64().unwrap_or(0);
    say(&format!(
        "run {id} {outcome}: {} MiB reclaimed across the members",
        reclaimed / (1024 * 1024)
    ));
    RunEnd {
        id,
        outcome,
        reason: detail["reason"].as_str().unwrap_or("").to_string(),
    }
}

/// `pending` or `firing`; empty while Prometheus has no such alert.
async fn alert_state_in(http: &reqwest::Client, prometheus: &str) -> Result<String> {
    let body: Value = http
        .get(format!("{prometheus}/api/v1/alerts"))
        .send()
        .await?
        .json()
        .await?;
    let states: Vec<&str> = body["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == ALERT)
        .filter_map(|a| a["state"].as_str())
        .collect();
    Ok(
        match (states.contains(&"firing"), states.contains(&"pending")) {
            (true, _) => "firing".into(),
            (false, true) => "pending".into(),
            _ => String::new(),
        },
    )
}

/// The newest run after `after_run` that Alertmanager's webhook started.
async fn newest_alert_run(
    http: &reqwest::Client,
    stack: &Stack,
    after_run: i64,
) -> Result<Option<i64>> {
    let page = get(http, stack, "/api/v1/runs?limit=10").await?;
    Ok(page["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["source"] == "alertmanager")
        .filter_map(|r| r["id"].as_i64())
        .find(|id| *id > after_run))
}

/// The newest run's id now (0 without runs).
pub async fn last_run(stack: &Stack) -> Result<i64> {
    let http = etcdmedic_tests::http_client();
    let page = get(&http, stack, "/api/v1/runs?limit=1").await?;
    Ok(page["runs"][0]["id"].as_i64().unwrap_or(0))
}

async fn get(http: &reqwest::Client, stack: &Stack, path: &str) -> Result<Value> {
    let response = http
        .get(format!("{}{path}", stack.remediator))
        .bearer_auth(&stack.token)
        .send()
        .await
        .with_context(|| format!("{}{path}", stack.remediator))?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
    Ok(body)
}
