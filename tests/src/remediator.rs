//! `etcdmedic-remediator serve` as a real process on a free loopback port: webhooks and API
//! calls over HTTP, SIGTERM and SIGKILL, and a restart on the same port and state.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::binaries::project_binary;
use crate::poll::{eventually, until_http_ok};
use crate::ports::free_port;
use crate::process::ChildProcess;

/// How long the service may take to answer `/readyz` after starting.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RemediatorService {
    pub base_url: String,
    pub port: u16,
    config: PathBuf,
    token: Option<String>,
    http: reqwest::Client,
    process: Option<ChildProcess>,
    /// Where the output is also appended, when given.
    log_file: Option<PathBuf>,
    /// Output of earlier incarnations (before a kill and restart).
    earlier_output: String,
    /// What answering 200 means it has started: `/readyz`, or `/healthz` for a standby.
    started_path: &'static str,
}

impl RemediatorService {
    /// Starts `serve --config <config>` on a free port; `token` is sent as the bearer token.
    pub async fn start(config: &Path, token: Option<&str>) -> Result<RemediatorService> {
        RemediatorService::start_on(config, token, free_port()?).await
    }

    /// Starts it on `port` (chosen beforehand, e.g. for an Alertmanager config).
    pub async fn start_on(
        config: &Path,
        token: Option<&str>,
        port: u16,
    ) -> Result<RemediatorService> {
        let http = crate::http_client_builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        RemediatorService::launch(config, token, port, "http", http, None).await
    }

    /// Starts a service whose config serves TLS, talking to it as a client that trusts
    /// `ca_file` and presents `cert_file`/`key_file`.
    pub async fn start_tls(
        config: &Path,
        token: Option<&str>,
        ca_file: &Path,
        cert_file: &Path,
        key_file: &Path,
    ) -> Result<RemediatorService> {
        let http = tls_client(ca_file, Some((cert_file, key_file)))?;
        RemediatorService::launch(config, token, free_port()?, "https", http, None).await
    }

    async fn launch(
        config: &Path,
        token: Option<&str>,
        port: u16,
        scheme: &str,
        http: reqwest::Client,
        log: Option<&Path>,
    ) -> Result<RemediatorService> {
        let mut service = RemediatorService {
            base_url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            config: config.to_path_buf(),
            token: token.map(str::to_string),
            http,
            process: None,
            log_file: log.map(Path::to_path_buf),
            earlier_output: String::new(),
            started_path: "/readyz",
        };
        service.spawn().await?;
        Ok(service)
    }

    /// Starts a replica expected to wait as a standby (another holds the state store): it
    /// has started once `/healthz` answers; `/readyz` answers 503 until it takes over.
    pub async fn start_standby(config: &Path, token: Option<&str>) -> Result<RemediatorService> {
        let http = crate::http_client_builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut service = RemediatorService {
            base_url: String::new(),
            port: free_port()?,
            config: config.to_path_buf(),
            token: token.map(str::to_string),
            http,
            process: None,
            log_file: None,
            earlier_output: String::new(),
            started_path: "/healthz",
        };
        service.base_url = format!("http://127.0.0.1:{}", service.port);
        service.spawn().await?;
        Ok(service)
    }

    /// Starts it again on the same port and state, as a standby (see
    /// [`start_standby`](Self::start_standby)).
    pub async fn restart_standby(&mut self) -> Result<()> {
        self.started_path = "/healthz";
        self.restart().await
    }

    /// `/readyz`: its status and body.
    pub async fn readiness(&self) -> Result<(u16, Value)> {
        send(self.http.get(format!("{}/readyz", self.base_url))).await
    }

    /// [`start_on`](Self::start_on), also appending the service's log to `log`.
    pub async fn start_logged(
        config: &Path,
        token: Option<&str>,
        port: u16,
        log: &Path,
    ) -> Result<RemediatorService> {
        let http = crate::http_client_builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        RemediatorService::launch(config, token, port, "http", http, Some(log)).await
    }

    async fn spawn(&mut self) -> Result<()> {
        let binary = project_binary("etcdmedic-remediator")?;
        let args = vec![
            "serve".to_string(),
            "--config".to_string(),
            self.config.display().to_string(),
            "--listen".to_string(),
            format!("127.0.0.1:{}", self.port),
            "--log-level".to_string(),
            "info,etcdmedic_remediator=debug".to_string(),
            // Where standbys forward to while this one is active (state in PostgreSQL).
            "--advertise-url".to_string(),
            self.base_url.clone(),
        ];
        self.process = Some(ChildProcess::spawn_logged(
            "etcdmedic-remediator",
            &binary,
            &args,
            self.log_file.as_deref(),
        )?);
        let ready = until_http_ok(
            &self.http,
            &format!("the remediator answers {}", self.started_path),
            &format!("{}{}", self.base_url, self.started_path),
            START_TIMEOUT,
        )
        .await;
        if let Err(err) = ready {
            return Err(err.context(format!("remediator output:\n{}", self.output())));
        }
        Ok(())
    }

    /// Everything every incarnation printed.
    pub fn output(&self) -> String {
        let current = self
            .process
            .as_ref()
            .map(ChildProcess::output)
            .unwrap_or_default();
        format!("{}{current}", self.earlier_output)
    }

    /// Resident memory now and at its peak (VmRSS, VmHWM), in bytes.
    pub fn memory(&self) -> Result<(u64, u64)> {
        crate::process::memory(self.pid()?)
    }

    /// The service's process id.
    pub fn pid(&self) -> Result<u32> {
        self.process
            .as_ref()
            .and_then(ChildProcess::pid)
            .ok_or_else(|| anyhow!("not running"))
    }

    /// SIGKILL: no chance to finish anything.
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        self.stop_with(Signal::SIGKILL, Duration::from_secs(10))
            .await
    }

    /// SIGTERM, waiting up to `within` for a graceful exit.
    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        self.stop_with(Signal::SIGTERM, within).await
    }

    /// Sends SIGTERM and returns at once; [`wait_exit`](Self::wait_exit) waits for the end.
    pub fn send_sigterm(&self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends `signal` (SIGSTOP and SIGCONT freeze and thaw it) without waiting.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.process
            .as_ref()
            .ok_or_else(|| anyhow!("not running"))?
            .signal(signal)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> Result<bool> {
        match self.process.as_mut() {
            Some(process) => Ok(process.try_wait()?.is_none()),
            None => Ok(false),
        }
    }

    /// Waits (bounded) for the process to exit after a signal; keeps its output.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let process = self
            .process
            .as_mut()
            .ok_or_else(|| anyhow!("not running"))?;
        let status = process.wait_exit(within).await?;
        if let Some(process) = self.process.take() {
            self.earlier_output.push_str(&process.output());
            self.earlier_output.push('\n');
        }
        Ok(status)
    }

    async fn stop_with(&mut self, signal: Signal, within: Duration) -> Result<ExitStatus> {
        self.process
            .as_ref()
            .ok_or_else(|| anyhow!("not running"))?
            .signal(signal)?;
        self.wait_exit(within).await
    }

    /// Starts it again on the same port and state.
    pub async fn restart(&mut self) -> Result<()> {
        anyhow::ensure!(
            self.process.is_none(),
            "stop the service before restarting it"
        );
        self.spawn().await
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// POSTs an Alertmanager payload with the configured token: status and JSON body.
    pub async fn post_webhook(&self, payload: &Value) -> Result<(u16, Value)> {
        let request = self
            .http
            .post(format!("{}/webhook/alertmanager", self.base_url))
            .header("content-type", "application/json")
            .body(payload.to_string());
        send(self.authorized(request)).await
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let request = self.http.get(format!("{}{path}", self.base_url));
        send(self.authorized(request)).await
    }

    /// Waits up to `within` until run `id`'s reason says the replica that took it over found
    /// every member serving reads again.
    pub async fn recovery_recorded(&self, id: i64, within: Duration) -> Result<()> {
        eventually("the recovery is recorded", within, || async {
            let (_, run) = self.get(&format!("/api/v1/runs/{id}")).await?;
            anyhow::ensure!(
                run["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("every member served reads again")),
                "{run}"
            );
            Ok(())
        })
        .await
        .with_context(|| self.output())
    }

    pub async fn post(&self, path: &str) -> Result<(u16, Value)> {
        let request = self.http.post(format!("{}{path}", self.base_url));
        send(self.authorized(request)).await
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> Result<String> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await?;
        Ok(response.text().await?)
    }

    /// Waits until run `id` is finished and returns it (`GET /api/v1/runs/{id}`).
    pub async fn wait_for_run(&self, id: i64, within: Duration) -> Result<Value> {
        let run = eventually(&format!("run {id} finishes"), within, || async move {
            let (status, run) = self.get(&format!("/api/v1/runs/{id}")).await?;
            anyhow::ensure!(status == 200, "GET run {id}: {status} {run}");
            anyhow::ensure!(run["state"] == "finished", "state {}", run["state"]);
            Ok(run)
        })
        .await;
        run.with_context(|| format!("remediator output:\n{}", self.output()))
    }

    /// The runs the API lists (newest first).
    pub async fn runs(&self) -> Result<Vec<Value>> {
        let (status, page) = self.get("/api/v1/runs?limit=500").await?;
        anyhow::ensure!(status == 200, "GET /api/v1/runs: {status} {page}");
        Ok(page["runs"].as_array().cloned().unwrap_or_default())
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<(u16, Value)> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

/// An HTTPS client trusting `ca_file`, with an optional client certificate.
pub fn tls_client(ca_file: &Path, identity: Option<(&Path, &Path)>) -> Result<reqwest::Client> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert_file, key_file)) => {
            let certs = CertificateDer::pem_file_iter(cert_file)?.collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(key_file)?)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(crate::http_client_builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(30))
        .build()?)
}
