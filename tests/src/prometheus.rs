//! Prometheus 3.5 (Debian sid's) on a free loopback port, scraping given targets every second and
//! evaluating given rule files; queried over its HTTP API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tempfile::TempDir;

use crate::poll::until_http_ok;
use crate::ports::free_port;
use crate::process::ChildProcess;

/// Scrape and rule evaluation interval: short, so tests see changes within seconds.
pub const INTERVAL: Duration = Duration::from_secs(1);

pub fn binary() -> Result<PathBuf> {
    crate::binaries::prometheus_tool("prometheus")
}

pub struct Prometheus {
    pub url: String,
    http: reqwest::Client,
    process: ChildProcess,
    _dir: TempDir,
}

/// One scrape job: its name and `host:port` targets.
pub struct Job<'a> {
    pub name: &'a str,
    pub targets: Vec<String>,
}

impl Prometheus {
    /// Starts Prometheus with `jobs` and the rule files (copied in as given), sending alerts
    /// to `alertmanagers` (`host:port`).
    pub async fn start(
        jobs: &[Job<'_>],
        rule_files: &[(&str, String)],
        alertmanagers: &[String],
    ) -> Result<Prometheus> {
        Prometheus::start_in(&std::env::temp_dir(), jobs, rule_files, alertmanagers).await
    }

    /// [`start`](Self::start), with its files in a new directory under `parent`.
    pub async fn start_in(
        parent: &Path,
        jobs: &[Job<'_>],
        rule_files: &[(&str, String)],
        alertmanagers: &[String],
    ) -> Result<Prometheus> {
        let dir = tempfile::Builder::new()
            .prefix("etcdmedic-prom-")
            .tempdir_in(parent)?;
        let mut config = format!(
            "global:\n  scrape_interval: {0}s\n  scrape_timeout: {0}s\n  evaluation_interval: {0}s\nrule_files:\n",
            INTERVAL.as_secs()
        );
        for (name, text) in rule_files {
            let path = dir.path().join(name);
            std::fs::write(&path, text)?;
            config.push_str(&format!("  - {}\n", path.display()));
        }
        if !alertmanagers.is_empty() {
            config.push_str(&format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{}]\n",
                alertmanagers
                    .iter()
                    .map(|t| format!("\"{t}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        config.push_str("scrape_configs:\n");
        for job in jobs {
            config.push_str(&format!(
                "  - job_name: {}\n    static_configs:\n      - targets: [{}]\n",
                job.name,
                job.targets
                    .iter()
                    .map(|t| format!("\"{t}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Prometheus::start_with_config(dir, &config).await
    }

    /// Starts Prometheus with a whole configuration (`files` written beside it first, at
    /// paths relative to its directory, as its relative `rule_files` expect).
    pub async fn start_with(config: &str, files: &[(&str, String)]) -> Result<Prometheus> {
        let dir = tempfile::Builder::new()
            .prefix("etcdmedic-prom-")
            .tempdir_in(std::env::temp_dir())?;
        for (name, text) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text)?;
        }
        Prometheus::start_with_config(dir, config).await
    }

    async fn start_with_config(dir: TempDir, config: &str) -> Result<Prometheus> {
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = free_port()?;
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ];
        let process = ChildProcess::spawn("prometheus", &binary()?, &args)?;
        let url = format!("http://127.0.0.1:{port}");
        let http = crate::http_client();
        let ready = until_http_ok(
            &http,
            "Prometheus answers /-/ready",
            &format!("{url}/-/ready"),
            Duration::from_secs(30),
        )
        .await;
        if let Err(err) = ready {
            return Err(err.context(format!(
                "Prometheus output:\n{}\nconfig:\n{config}",
                process.output()
            )));
        }
        Ok(Prometheus {
            url,
            http,
            process,
            _dir: dir,
        })
    }

    pub fn output(&self) -> String {
        self.process.output()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("GET {path}: not JSON"))?;
        if body["status"] != "success" {
            bail!("GET {path} {query:?}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// An instant query: the result vector's elements (`metric` and `value`).
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/query", &[("query", promql)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Active alerts (pending and firing).
    pub async fn alerts(&self) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/alerts", &[]).await?;
        Ok(data["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// Firing alerts named `name`.
    pub async fn firing(&self, name: &str) -> Result<Vec<Value>> {
        Ok(self
            .alerts()
            .await?
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .collect())
    }

    /// Every rule as Prometheus evaluates it (health, last error).
    pub async fn rules(&self) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/rules", &[]).await?;
        Ok(data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect())
    }
}

/// The rules file with every `for:` and `keep_firing_for:` shortened, so a test sees alerts
/// within seconds; nothing else changes.
pub fn with_short_durations(rules: &str, for_: &str, keep_firing_for: &str) -> String {
    shorten(rules, None, for_, keep_firing_for)
}

/// The same, for the named alerts only: the others keep the durations they have in
/// production, so they fire only when they would there.
pub fn with_short_durations_for(
    rules: &str,
    alerts: &[&str],
    for_: &str,
    keep_firing_for: &str,
) -> String {
    shorten(rules, Some(alerts), for_, keep_firing_for)
}

fn shorten(rules: &str, only: Option<&[&str]>, for_: &str, keep_firing_for: &str) -> String {
    let mut current = String::new();
    rules
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            if let Some(name) = trimmed.strip_prefix("- alert: ") {
                current = name.trim().to_string();
            }
            let chosen = only.is_none_or(|names| names.contains(&current.as_str()));
            if chosen && trimmed.starts_with("for: ") {
                format!("{indent}for: {for_}")
            } else if chosen && trimmed.starts_with("keep_firing_for: ") {
                format!("{indent}keep_firing_for: {keep_firing_for}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a file relative to the repository.
pub fn repository_file(path: &str) -> Result<String> {
    let full: PathBuf = crate::generated::repository_root().join(path);
    std::fs::read_to_string(&full)
        .with_context(|| format!("reading {}", Path::new(&full).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_alerts_are_shortened() {
        let rules = "groups:\n  - rules:\n      - alert: A\n        for: 10m\n        \
                     keep_firing_for: 30m\n      - alert: B\n        for: 1h\n";
        let short = with_short_durations_for(rules, &["A"], "5s", "1m");
        assert!(short.contains("alert: A\n        for: 5s\n        keep_firing_for: 1m"));
        assert!(short.contains("alert: B\n        for: 1h"));
        assert!(!with_short_durations(rules, "5s", "1m").contains("1h"));
    }
}
