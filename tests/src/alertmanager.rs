//! Alertmanager 0.33 (Debian sid's) on free loopback ports, with a webhook receiver pointing at the
//! remediator (bearer token from a file), alone or clustered with peers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tempfile::TempDir;

use crate::poll::until_http_ok;
use crate::ports::free_ports;
use crate::process::ChildProcess;

/// The route's timing; short for tests, explained for production in deploy/alertmanager.
#[derive(Debug, Clone)]
pub struct Routing {
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            group_wait: Duration::from_secs(1),
            group_interval: Duration::from_secs(2),
            repeat_interval: Duration::from_secs(3600),
        }
    }
}

pub struct Alertmanager {
    pub url: String,
    /// `host:port` other instances use as `--cluster.peer`.
    pub cluster_address: String,
    process: ChildProcess,
    _dir: TempDir,
}

pub fn binary() -> Result<PathBuf> {
    crate::binaries::prometheus_tool("alertmanager")
}

impl Alertmanager {
    /// Starts an instance whose only receiver POSTs to `webhook_url` with the bearer token in
    /// `token_file`; `peers` are cluster addresses of instances to gossip with.
    pub async fn start(
        webhook_url: &str,
        token_file: &Path,
        routing: &Routing,
        peers: &[String],
    ) -> Result<Alertmanager> {
        Alertmanager::start_in(
            &std::env::temp_dir(),
            webhook_url,
            token_file,
            routing,
            peers,
        )
        .await
    }

    /// An instance whose only receiver is the remediator service on loopback `port` (its
    /// webhook path), with the bearer token in `token_file`.
    pub async fn for_remediator_on(
        port: u16,
        token_file: &Path,
        routing: &Routing,
    ) -> Result<Alertmanager> {
        Alertmanager::start(
            &format!("http://127.0.0.1:{port}/webhook/alertmanager"),
            token_file,
            routing,
            &[],
        )
        .await
    }

    /// [`start`](Self::start), with its files in a new directory under `parent`.
    pub async fn start_in(
        parent: &Path,
        webhook_url: &str,
        token_file: &Path,
        routing: &Routing,
        peers: &[String],
    ) -> Result<Alertmanager> {
        Alertmanager::start_with_config_in(
            parent,
            &config_yaml(webhook_url, token_file, routing),
            peers,
        )
        .await
    }

    /// Starts an instance with a whole configuration (YAML, or JSON, its subset).
    pub async fn start_with_config(config: &str) -> Result<Alertmanager> {
        Alertmanager::start_with_config_in(&std::env::temp_dir(), config, &[]).await
    }

    async fn start_with_config_in(
        parent: &Path,
        config_text: &str,
        peers: &[String],
    ) -> Result<Alertmanager> {
        let dir = tempfile::Builder::new()
            .prefix("etcdmedic-am-")
            .tempdir_in(parent)?;
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, config_text)?;
        let [web_port, cluster_port] = free_ports(2)?[..] else {
            bail!("free_ports(2) returned other than two ports");
        };
        let cluster_address = format!("127.0.0.1:{cluster_port}");
        let mut args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{web_port}"),
            format!("--cluster.listen-address={cluster_address}"),
            format!("--cluster.advertise-address={cluster_address}"),
            "--cluster.gossip-interval=50ms".into(),
            "--cluster.pushpull-interval=1s".into(),
            "--cluster.settle-timeout=1s".into(),
            "--log.level=info".into(),
        ];
        args.extend(peers.iter().map(|peer| format!("--cluster.peer={peer}")));
        let process = ChildProcess::spawn("alertmanager", &binary()?, &args)?;
        let url = format!("http://127.0.0.1:{web_port}");
        let ready = until_http_ok(
            &crate::http_client(),
            "Alertmanager answers /-/ready",
            &format!("{url}/-/ready"),
            Duration::from_secs(30),
        )
        .await;
        if let Err(err) = ready {
            return Err(err.context(format!("Alertmanager output:\n{}", process.output())));
        }
        Ok(Alertmanager {
            url,
            cluster_address,
            process,
            _dir: dir,
        })
    }

    pub fn output(&self) -> String {
        self.process.output()
    }

    /// POST /api/v2/alerts: `alerts` is a JSON array of `{labels, annotations, startsAt,
    /// endsAt}`.
    pub async fn post_alerts(&self, alerts: &Value) -> Result<()> {
        let response = crate::http_client()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await
            .context("posting alerts to Alertmanager")?;
        let status = response.status();
        if !status.is_success() {
            bail!("Alertmanager answered {status}: {}", response.text().await?);
        }
        Ok(())
    }

    /// GET /api/v2/alerts: every alert it holds, inhibited and silenced ones included, each
    /// with its `status` (`state`, `inhibitedBy`, `silencedBy`).
    pub async fn alerts(&self) -> Result<Vec<Value>> {
        let response = crate::http_client()
            .get(format!("{}/api/v2/alerts", self.url))
            .send()
            .await?;
        Ok(response.json().await?)
    }

    /// GET /api/v2/silences.
    pub async fn silences(&self) -> Result<Vec<Value>> {
        let response = crate::http_client()
            .get(format!("{}/api/v2/silences", self.url))
            .send()
            .await?;
        Ok(response.json().await?)
    }

    /// Members of its gossip cluster, as it reports them.
    pub async fn peers(&self) -> Result<usize> {
        let status: Value = crate::http_client()
            .get(format!("{}/api/v2/status", self.url))
            .send()
            .await?
            .json()
            .await?;
        Ok(status["cluster"]["peers"].as_array().map_or(0, Vec::len))
    }
}

fn config_yaml(webhook_url: &str, token_file: &Path, routing: &Routing) -> String {
    let seconds = |d: Duration| format!("{}ms", d.as_millis());
    format!(
        "route:\n  receiver: etcdmedic\n  group_by: [etcd_cluster]\n  group_wait: {}\n  \
         group_interval: {}\n  repeat_interval: {}\nreceivers:\n  - name: etcdmedic\n    \
         webhook_configs:\n      - url: {webhook_url}\n        send_resolved: true\n        \
         http_config:\n          authorization:\n            credentials_file: {}\n",
        seconds(routing.group_wait),
        seconds(routing.group_interval),
        seconds(routing.repeat_interval),
        token_file.display()
    )
}
