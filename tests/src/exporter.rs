//! The exporter served in-process on a free loopback port, stopped on drop.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use etcdmedic_cluster::Config;
use etcdmedic_exporter::{LiveTargets, Targets};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::exposition::Exposition;

pub struct RunningExporter {
    pub base_url: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningExporter {
    /// Loads `config` and serves it on 127.0.0.1:<free port>.
    pub async fn start(config_path: &Path) -> Result<RunningExporter> {
        let config = Config::load(config_path)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let limits = etcdmedic_exporter::targets::Limits::default();
        let targets = Arc::new(LiveTargets::new(
            Targets::new(&config, limits)?,
            Some(config_path.to_path_buf()),
            limits,
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = etcdmedic_exporter::Serving {
            remote_reload: false,
            limits: etcdmedic_cluster::listener::Limits::default(),
        };
        let task = tokio::spawn(etcdmedic_exporter::serve(
            listener,
            targets,
            serving,
            async {
                let _ = stopped.await;
            },
        ));
        Ok(RunningExporter {
            base_url,
            http: crate::http_client(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// GET `path`: status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// GET `/metrics`, parsed; an error unless it answered 200.
    pub async fn scrape(&self) -> Result<Exposition> {
        self.scrape_path("/metrics").await
    }

    pub async fn scrape_path(&self, path: &str) -> Result<Exposition> {
        let (status, body) = self.get(path).await?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}: {body}");
        Exposition::parse(&body)
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for RunningExporter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `etcdmedic-exporter serve` binary as a child process (for the demo and benchmarks,
/// where its memory is measured separately from the harness). Stopped with SIGTERM on drop.
pub struct ExporterProcess {
    pub base_url: String,
    child: std::process::Child,
}

impl ExporterProcess {
    /// `binary serve --config <config> --listen <listen>`, to add arguments to (or to run
    /// under a profiler: build your own command ending in these arguments).
    pub fn serve_command(
        binary: &Path,
        config: &Path,
        listen: std::net::SocketAddr,
    ) -> std::process::Command {
        let mut command = std::process::Command::new(binary);
        command.args(Self::serve_args(config, listen));
        command
    }

    pub fn serve_args(config: &Path, listen: std::net::SocketAddr) -> Vec<std::ffi::OsString> {
        vec![
            "serve".into(),
            "--config".into(),
            config.into(),
            "--listen".into(),
            listen.to_string().into(),
        ]
    }

    /// Starts `command` (an exporter serving on `listen`) with logs on `log` and waits until
    /// `/healthz` answers.
    pub async fn spawn(
        mut command: std::process::Command,
        listen: std::net::SocketAddr,
        log: std::process::Stdio,
    ) -> Result<ExporterProcess> {
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let process = ExporterProcess {
            base_url: format!("http://{listen}"),
            child,
        };
        let http = crate::http_client();
        let healthz = format!("{}/healthz", process.base_url);
        crate::poll::eventually(
            "the exporter answers /healthz",
            std::time::Duration::from_secs(60),
            || async {
                let response = http.get(&healthz).send().await?;
                anyhow::ensure!(response.status().is_success(), "{}", response.status());
                Ok(())
            },
        )
        .await?;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now and at its peak, in bytes, from /proc.
    pub fn memory(&self) -> Result<(u64, u64)> {
        crate::process::memory(self.child.id())
    }

    /// SIGTERM, then wait; SIGKILL if it has not stopped within `grace`.
    pub fn stop(&mut self, grace: std::time::Duration) -> Result<std::process::ExitStatus> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        kill(pid, Signal::SIGTERM)?;
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for ExporterProcess {
    fn drop(&mut self) {
        let _ = self.stop(std::time::Duration::from_secs(5));
    }
}
