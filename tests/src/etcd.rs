//! Real etcd clusters on loopback: configure, then start.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use etcdmedic_tests::{EtcdCluster, EtcdVersion};
//! let mut cluster = EtcdCluster::builder(EtcdVersion::V3_5)
//!     .members(3)
//!     .quota(64 << 20)
//!     .tls()
//!     .start()
//!     .await?;
//! cluster.kill(1)?;
//! # Ok(()) }
//! ```
//!
//! Names, `--initial-cluster` and data directories derive from the member index; ports are
//! free ports picked at start. A member is up when it logs that it serves clients, the
//! cluster when every member names the same leader. Dropping the cluster kills every
//! process and removes its directory.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use etcdmedic_cluster::{ClusterConfig, Config, MemberClient, MemberId};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::binaries::EtcdVersion;
use crate::certs::TestPki;
use crate::poll::eventually;
use crate::ports::free_ports;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_LINES_KEPT: usize = 300;
pub const ROOT_PASSWORD: &str = "etcdmedic-root-password";
/// The only name in the serving certificate of [`EtcdClusterBuilder::tls_named_only`].
pub const TLS_SERVER_NAME: &str = "etcd.test";

/// Configuration of a cluster to start.
#[derive(Debug, Clone)]
pub struct EtcdClusterBuilder {
    version: EtcdVersion,
    members: usize,
    quota_backend_bytes: Option<u64>,
    tls: Option<bool>,
    auth: bool,
    data_on_disk: bool,
    restore_from: Option<PathBuf>,
    metrics_listener: bool,
    stop_grpc_on_defrag: bool,
}

impl EtcdClusterBuilder {
    /// A defragmenting member's gRPC health service says `NOT_SERVING`: etcd 3.6's
    /// `StopGRPCServiceOnDefrag` feature gate, 3.5's `--experimental-stop-grpc-service-on-defrag`
    /// (3.5.14+). etcd 3.4 has neither: starting fails.
    pub fn stop_grpc_on_defrag(mut self) -> Self {
        self.stop_grpc_on_defrag = true;
        self
    }

    /// Starts a one-member cluster from a snapshot file, restored the way an operator
    /// would (`etcdutl snapshot restore` on 3.5, `etcdctl snapshot restore` on 3.4).
    pub fn restore_from(mut self, snapshot: &Path) -> Self {
        self.members = 1;
        self.restore_from = Some(snapshot.to_path_buf());
        self
    }

    pub fn members(mut self, members: usize) -> Self {
        self.members = members;
        self
    }

    /// `--quota-backend-bytes`.
    pub fn quota(mut self, bytes: u64) -> Self {
        self.quota_backend_bytes = Some(bytes);
        self
    }

    /// Clients speak TLS and must present a certificate signed by the test CA.
    pub fn tls(mut self) -> Self {
        self.tls = Some(true);
        self
    }

    /// Like [`tls`](Self::tls), but the serving certificate names only `etcd.test`, not
    /// 127.0.0.1: clients must set `server_name`.
    pub fn tls_named_only(mut self) -> Self {
        self.tls = Some(false);
        self
    }

    /// Authentication enabled, with user `root` and [`ROOT_PASSWORD`].
    pub fn auth(mut self) -> Self {
        self.auth = true;
        self
    }

    /// Every member also serves `/metrics` on a port of its own (`--listen-metrics-urls`),
    /// see [`EtcdCluster::metrics_port`].
    pub fn metrics_listener(mut self) -> Self {
        self.metrics_listener = true;
        self
    }

    /// Data on the real disk rather than tmpfs, for measurements where fsync matters.
    pub fn data_on_disk(mut self) -> Self {
        self.data_on_disk = true;
        self
    }

    pub async fn start(self) -> Result<EtcdCluster> {
        let etcd = self.version.etcd()?;
        if self.stop_grpc_on_defrag && self.version == EtcdVersion::V3_4 {
            bail!("etcd 3.4 cannot stop its gRPC service on defragmentation");
        }
        let dir = temp_dir(self.data_on_disk)?;
        let pki = match self.tls {
            Some(ip_san) => Some(TestPki::generate(
                &dir.path().join("pki"),
                ip_san,
                TLS_SERVER_NAME,
            )?),
            None => None,
        };
        let password_file = dir.path().join("root-password");
        std::fs::write(&password_file, format!("{ROOT_PASSWORD}\n"))?;

        let mut cluster = EtcdCluster {
            version: self.version,
            etcd,
            members: Vec::new(),
            pki,
            tls_server_name: (self.tls == Some(false)).then_some(TLS_SERVER_NAME),
            auth: false,
            password_file,
            quota_backend_bytes: self.quota_backend_bytes,
            metrics_listener: self.metrics_listener,
            stop_grpc_on_defrag: self.stop_grpc_on_defrag,
            dir,
        };
        // A port picked as free can be taken by someone else before etcd binds it; start
        // again on new ports when that happens.
        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.members = cluster.plan_members(self.members)?;
            if let Some(snapshot) = &self.restore_from {
                cluster.restore(snapshot)?;
            }
            match cluster.start_all() {
                Ok(()) => break,
                Err(err)
                    if attempt < 3 && format!("{err:#}").contains("address already in use") =>
                {
                    cluster.kill_all();
                    std::fs::remove_dir_all(cluster.dir.path().join("data")).ok();
                }
                Err(err) => return Err(err),
            }
        }
        cluster.wait_for_leader().await?;
        if self.auth {
            cluster.enable_auth().await?;
            cluster.auth = true;
        }
        Ok(cluster)
    }
}

fn temp_dir(on_disk: bool) -> Result<TempDir> {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut builder = tempfile::Builder::new();
        builder.prefix("etcdmedic-etcd-");
        builder
    };
    if !on_disk && shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return Ok(dir);
        }
    }
    builder.tempdir().context("creating a temporary directory")
}

/// A running (or partly stopped) etcd cluster.
pub struct EtcdCluster {
    version: EtcdVersion,
    etcd: PathBuf,
    members: Vec<Member>,
    pki: Option<TestPki>,
    /// Set when the serving certificate does not name 127.0.0.1.
    tls_server_name: Option<&'static str>,
    /// Authentication is enabled: clients log in as root.
    auth: bool,
    password_file: PathBuf,
    quota_backend_bytes: Option<u64>,
    metrics_listener: bool,
    stop_grpc_on_defrag: bool,
    // Last: removed after the processes are gone.
    dir: TempDir,
}

struct Member {
    /// etcd's "starting/finished defragment" log lines, kept whole across restarts (the
    /// general log keeps only a tail).
    defrag_log: Arc<Mutex<Vec<String>>>,
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `--listen-metrics-urls` port, when the cluster has one.
    metrics_port: Option<u16>,
    args: Vec<String>,
    /// Another release's binary than the cluster's, once [`EtcdCluster::replace_binary`]
    /// put one in.
    binary: Option<PathBuf>,
    process: Option<Running>,
}

struct Running {
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
    events: Receiver<LogEvent>,
}

enum LogEvent {
    Ready,
    Exited,
}

impl EtcdCluster {
    pub fn builder(version: EtcdVersion) -> EtcdClusterBuilder {
        EtcdClusterBuilder {
            version,
            members: 3,
            quota_backend_bytes: None,
            tls: None,
            auth: false,
            data_on_disk: false,
            restore_from: None,
            metrics_listener: false,
            stop_grpc_on_defrag: false,
        }
    }

    pub fn version(&self) -> EtcdVersion {
        self.version
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Indexes of the members whose process is running (paused ones included).
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].process.is_some())
            .collect()
    }

    pub fn name(&self, index: usize) -> &str {
        &self.members[index].name
    }

    fn scheme(&self) -> &'static str {
        if self.pki.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Client URL of member `index`.
    pub fn endpoint(&self, index: usize) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme(),
            self.members[index].client_port
        )
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn pki(&self) -> Option<&TestPki> {
        self.pki.as_ref()
    }

    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn quota_backend_bytes(&self) -> Option<u64> {
        self.quota_backend_bytes
    }

    /// The port member `index` serves `/metrics` on besides its client URL, when the cluster
    /// was built with [`EtcdClusterBuilder::metrics_listener`].
    pub fn metrics_port(&self, index: usize) -> Option<u16> {
        self.members[index].metrics_port
    }

    fn plan_members(&self, count: usize) -> Result<Vec<Member>> {
        let per_member = if self.metrics_listener { 3 } else { 2 };
        let all = free_ports(per_member * count)?;
        let metrics_ports: Vec<Option<u16>> = all
            .chunks(per_member)
            .map(|ports| ports.get(2).copied())
            .collect();
        let ports: Vec<(u16, u16)> = all
            .chunks(per_member)
            .map(|pair| (pair[0], pair[1]))
            .collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(ports
            .iter()
            .zip(metrics_ports)
            .enumerate()
            .map(|(i, (&(client_port, peer_port), metrics_port))| {
                let mut member = self.member(
                    format!("m{i}"),
                    client_port,
                    peer_port,
                    &initial_cluster,
                    "new",
                );
                if let Some(port) = metrics_port {
                    member
                        .args
                        .push(format!("--listen-metrics-urls=http://127.0.0.1:{port}"));
                    member.metrics_port = Some(port);
                }
                member
            })
            .collect())
    }

    /// etcd's flags for one member; names and data directories derive from `name`.
    /// A member not started yet, with its etcd flags.
    fn member(
        &self,
        name: String,
        client_port: u16,
        peer_port: u16,
        initial_cluster: &str,
        initial_state: &str,
    ) -> Member {
        let args = self.member_args(
            &name,
            client_port,
            peer_port,
            initial_cluster,
            initial_state,
        );
        Member {
            defrag_log: Arc::default(),
            name,
            client_port,
            peer_port,
            metrics_port: None,
            args,
            binary: None,
            process: None,
        }
    }

    fn member_args(
        &self,
        name: &str,
        client_port: u16,
        peer_port: u16,
        initial_cluster: &str,
        initial_state: &str,
    ) -> Vec<String> {
        let scheme = self.scheme();
        let data_dir = self.dir.path().join("data").join(name);
        let token = format!(
            "etcdmedic-{}",
            self.dir
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={scheme}://127.0.0.1:{client_port}"),
            format!("--advertise-client-urls={scheme}://127.0.0.1:{client_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster={initial_cluster}"),
            format!("--initial-cluster-state={initial_state}"),
            format!("--initial-cluster-token={token}"),
            "--logger=zap".to_string(),
            "--log-outputs=stderr".to_string(),
        ];
        if let Some(quota) = self.quota_backend_bytes {
            args.push(format!("--quota-backend-bytes={quota}"));
        }
        if self.stop_grpc_on_defrag {
            args.push(match self.version {
                EtcdVersion::V3_4 | EtcdVersion::V3_5 => {
                    "--experimental-stop-grpc-service-on-defrag=true".to_string()
                }
                EtcdVersion::V3_6 | EtcdVersion::V3_7 => {
                    "--feature-gates=StopGRPCServiceOnDefrag=true".to_string()
                }
            });
        }
        if let Some(pki) = &self.pki {
            args.extend([
                format!("--cert-file={}", pki.server_cert_file.display()),
                format!("--key-file={}", pki.server_key_file.display()),
                format!("--trusted-ca-file={}", pki.ca_file.display()),
                "--client-cert-auth".to_string(),
            ]);
        }
        args
    }

    /// Adds a learner (a non-voting member) through MemberAdd, starts it and waits until it
    /// follows the leader; returns its index.
    pub async fn add_learner(&mut self) -> Result<usize> {
        let index = self.members.len();
        let name = format!("m{index}");
        let [client_port, peer_port] = free_ports(2)?[..] else {
            bail!("free_ports(2) returned other than two ports");
        };
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        // etcd refuses MemberAdd ("unhealthy cluster") until every voting member has been
        // connected for its health interval (5 s), which a cluster just started has not.
        let client = self.client(0).await?;
        eventually("the cluster accepts a new member", START_TIMEOUT, || {
            let mut client = client.clone();
            let peer_url = peer_url.clone();
            async move {
                client
                    .member_add(
                        [peer_url.as_str()],
                        Some(etcd_client::MemberAddOptions::new().with_is_learner()),
                    )
                    .await
                    .context("adding a learner")
            }
        })
        .await?;
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .chain(std::iter::once(format!("{name}={peer_url}")))
            .collect::<Vec<_>>()
            .join(",");
        let member = self.member(name, client_port, peer_port, &initial_cluster, "existing");
        self.members.push(member);
        self.spawn(index)?;
        self.wait_ready(index)?;
        self.wait_for_leader().await?;
        Ok(index)
    }

    fn start_all(&mut self) -> Result<()> {
        for index in 0..self.members.len() {
            self.spawn(index)?;
        }
        for index in 0..self.members.len() {
            self.wait_ready(index)?;
        }
        Ok(())
    }

    fn spawn(&mut self, index: usize) -> Result<()> {
        let member = &mut self.members[index];
        let etcd = member.binary.clone().unwrap_or_else(|| self.etcd.clone());
        let mut command = Command::new(&etcd);
        command
            .args(&member.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // If the test process dies without running destructors, its etcd members go with
        // it instead of lingering on the machine.
        crate::process::set_parent_death_signal(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} for {}", etcd.display(), member.name))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe for {}", member.name))?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES_KEPT)));
        let (events_tx, events) = mpsc::channel();
        let log_writer = log.clone();
        let defrag_log = member.defrag_log.clone();
        std::thread::Builder::new()
            .name(format!("etcd-{}-log", member.name))
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("ready to serve client requests")
                        || line.contains("serving client traffic")
                    {
                        let _ = events_tx.send(LogEvent::Ready);
                    }
                    if line.contains("starting defragment") || line.contains("finished defragment")
                    {
                        defrag_log
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(line.clone());
                    }
                    let mut log = log_writer.lock().unwrap_or_else(PoisonError::into_inner);
                    if log.len() == LOG_LINES_KEPT {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
                let _ = events_tx.send(LogEvent::Exited);
            })?;
        member.process = Some(Running { child, log, events });
        Ok(())
    }

    fn wait_ready(&mut self, index: usize) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let name = self.members[index].name.clone();
        let running = self.members[index]
            .process
            .as_mut()
            .ok_or_else(|| anyhow!("{name} is not running"))?;
        let left = deadline.saturating_duration_since(Instant::now());
        match running.events.recv_timeout(left) {
            Ok(LogEvent::Ready) => Ok(()),
            Ok(LogEvent::Exited) | Err(RecvTimeoutError::Disconnected) => {
                let status = running.child.wait().ok();
                bail!(
                    "etcd {name} exited before serving ({status:?}); last log lines:\n{}",
                    tail(&running.log, 15)
                );
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "etcd {name} did not serve clients within {START_TIMEOUT:?}; last log lines:\n{}",
                tail(&running.log, 15)
            ),
        }
    }

    /// When member `index` defragmented, from its own log: etcd's "starting defragment" and
    /// "finished defragment" timestamps (millisecond precision). A defragmentation still
    /// running has no end.
    pub fn defrag_intervals(&self, index: usize) -> Result<Vec<(SystemTime, Option<SystemTime>)>> {
        let lines = self.members[index]
            .defrag_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut intervals: Vec<(SystemTime, Option<SystemTime>)> = Vec::new();
        for line in lines {
            let entry: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("etcd log line is not JSON: {line}"))?;
            let at = entry["ts"]
                .as_str()
                .and_then(|ts| humantime::parse_rfc3339_weak(ts).ok())
                .with_context(|| format!("no timestamp in {line}"))?;
            match entry["msg"].as_str() {
                Some("starting defragment") => intervals.push((at, None)),
                Some("finished defragment") => match intervals.last_mut() {
                    Some((_, end @ None)) => *end = Some(at),
                    _ => bail!(
                        "\"finished defragment\" without a start in {}",
                        self.name(index)
                    ),
                },
                _ => {}
            }
        }
        Ok(intervals)
    }

    /// Restores `snapshot` into the data directory of the (only) planned member.
    fn restore(&self, snapshot: &Path) -> Result<()> {
        let member = &self.members[0];
        let tool = self.version.snapshot_tool()?;
        let keep = [
            "--name=",
            "--data-dir=",
            "--initial-cluster=",
            "--initial-advertise-peer-urls=",
            "--initial-cluster-token=",
        ];
        let flags: Vec<&String> = member
            .args
            .iter()
            .filter(|arg| keep.iter().any(|k| arg.starts_with(k)))
            .collect();
        let output = Command::new(&tool)
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .args(flags)
            .env("ETCDCTL_API", "3")
            .output()
            .with_context(|| format!("running {}", tool.display()))?;
        if !output.status.success() {
            bail!(
                "{} snapshot restore {} failed: {}",
                tool.display(),
                snapshot.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// The last `lines` log lines of member `index`, for failure messages.
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        match &self.members[index].process {
            Some(running) => tail(&running.log, lines),
            None => format!("{} is not running", self.members[index].name),
        }
    }

    /// The etcdmedic config entry (a YAML list item under `clusters:`) for this cluster.
    pub fn config_entry(&self, name: &str) -> String {
        let mut yaml = format!(
            "  - name: {name}\n    endpoints: [{}]\n",
            self.endpoints().join(", ")
        );
        if let Some(quota) = self.quota_backend_bytes {
            yaml.push_str(&format!("    quota_backend_bytes: {quota}\n"));
        }
        if let Some(pki) = &self.pki {
            yaml.push_str(&format!(
                "    tls:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
                pki.ca_file.display(),
                pki.client_cert_file.display(),
                pki.client_key_file.display()
            ));
            if let Some(server_name) = self.tls_server_name {
                yaml.push_str(&format!("      server_name: {server_name}\n"));
            }
        }
        if self.auth {
            yaml.push_str(&format!(
                "    auth:\n      username: root\n      password_file: {}\n",
                self.password_file.display()
            ));
        }
        yaml
    }

    /// A whole config file holding only this cluster.
    pub fn config_yaml(&self, name: &str) -> String {
        format!("clusters:\n{}", self.config_entry(name))
    }

    /// Writes [`config_yaml`](Self::config_yaml) into the cluster's directory.
    pub fn write_config(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, self.config_yaml(name))?;
        Ok(path)
    }

    /// The cluster as the etcdmedic library sees it, from [`config_yaml`](Self::config_yaml).
    pub fn cluster_config(&self) -> Result<ClusterConfig> {
        let path = self.dir.path().join("harness.yaml");
        let config = Config::from_yaml(&self.config_yaml("harness"), &path)?;
        config
            .clusters
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the harness config has no cluster"))
    }

    /// An etcd client bound to member `index` (with the cluster's TLS and credentials).
    pub async fn client(&self, index: usize) -> Result<etcd_client::Client> {
        let member = MemberClient::new(&self.endpoint(index), &self.cluster_config()?)?;
        Ok(member.client(Duration::from_secs(10)).await?)
    }

    /// One client per running member, in member order.
    pub async fn clients(&self) -> Result<Vec<etcd_client::Client>> {
        let mut clients = Vec::new();
        for index in self.running() {
            clients.push(self.client(index).await?);
        }
        Ok(clients)
    }

    /// The member ID of member `index`, as it reports it.
    pub async fn member_id(&self, index: usize) -> Result<MemberId> {
        let mut client = self.client(index).await?;
        let status = client.status().await?;
        let header = status
            .header()
            .ok_or_else(|| anyhow!("Status without a header"))?;
        Ok(MemberId(header.member_id()))
    }

    /// Waits until every running member names the same leader, and returns its index.
    pub async fn wait_for_leader(&self) -> Result<usize> {
        let config = self.cluster_config()?;
        let running = self.running();
        let clients: Vec<MemberClient> = running
            .iter()
            .map(|&i| MemberClient::new(&self.endpoint(i), &config))
            .collect::<Result<_, _>>()?;
        eventually(
            "every running member names the same leader",
            START_TIMEOUT,
            || async {
                let mut leader = None;
                let mut ids = Vec::new();
                for client in &clients {
                    let status = client.status(Duration::from_secs(2)).await?;
                    let header = status.header().ok_or_else(|| anyhow!("no header"))?;
                    ids.push(header.member_id());
                    match (leader, status.leader()) {
                        (_, 0) => bail!("{} has no leader yet", client.endpoint()),
                        (None, l) => leader = Some(l),
                        (Some(a), b) if a != b => bail!("members name leaders {a:x} and {b:x}"),
                        _ => {}
                    }
                }
                let leader = leader.ok_or_else(|| anyhow!("no running member"))?;
                ids.iter()
                    .position(|&id| id == leader)
                    .map(|position| running[position])
                    .ok_or_else(|| anyhow!("the leader {leader:x} is not a running member"))
            },
        )
        .await
    }

    async fn enable_auth(&self) -> Result<()> {
        // Called before `self.auth` is set, so this client logs in as nobody.
        let mut client = self.client(0).await?;
        client.user_add("root", ROOT_PASSWORD, None).await?;
        client.user_grant_role("root", "root").await?;
        client.auth_enable().await?;
        Ok(())
    }

    /// Runs the matching `etcdctl` against every member with the cluster's TLS and
    /// credentials; returns stdout, or an error carrying stderr.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        self.etcdctl_at(&self.endpoints(), args)
    }

    /// `etcdctl <args> -w json`, parsed.
    pub fn etcdctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut args = args.to_vec();
        args.extend(["-w", "json"]);
        let text = self.etcdctl(&args)?;
        serde_json::from_str(&text).with_context(|| format!("etcdctl {args:?} printed {text}"))
    }

    /// Like [`etcdctl`](Self::etcdctl), against the given endpoints only.
    pub fn etcdctl_at(&self, endpoints: &[String], args: &[&str]) -> Result<String> {
        let mut command = Command::new(self.version.etcdctl()?);
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--command-timeout=10s");
        if let Some(pki) = &self.pki {
            command
                .arg(format!("--cacert={}", pki.ca_file.display()))
                .arg(format!("--cert={}", pki.client_cert_file.display()))
                .arg(format!("--key={}", pki.client_key_file.display()));
        }
        if self.auth {
            command.arg(format!("--user=root:{ROOT_PASSWORD}"));
        }
        let output = command.args(args).output().context("running etcdctl")?;
        if !output.status.success() {
            bail!(
                "etcdctl {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// SIGKILL member `index` and reap it.
    pub fn kill(&mut self, index: usize) -> Result<()> {
        self.signal_and_reap(index, Signal::SIGKILL)
    }

    /// SIGTERM member `index` (a clean stop) and reap it.
    pub fn stop(&mut self, index: usize) -> Result<()> {
        self.signal_and_reap(index, Signal::SIGTERM)
    }

    fn signal_and_reap(&mut self, index: usize, signal: Signal) -> Result<()> {
        let member = &mut self.members[index];
        let mut running = member
            .process
            .take()
            .ok_or_else(|| anyhow!("{} is not running", member.name))?;
        signal_child(&running.child, signal)?;
        running.child.wait()?;
        Ok(())
    }

    /// User and system CPU the members running now have used so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        self.members
            .iter()
            .filter_map(|m| m.process.as_ref().map(|running| running.child.id()))
            .map(crate::process::cpu_time)
            .sum()
    }

    /// SIGSTOPs member `index` and returns once every thread of it is stopped: the process
    /// stays and accepts connections, but answers nothing.
    pub fn pause(&self, index: usize) -> Result<()> {
        crate::job_control::stop(self.pid(index)?)
    }

    /// SIGCONTs a paused member and returns once it runs again.
    pub fn resume(&self, index: usize) -> Result<()> {
        crate::job_control::resume(self.pid(index)?)
    }

    fn pid(&self, index: usize) -> Result<u32> {
        let member = &self.members[index];
        let running = member
            .process
            .as_ref()
            .ok_or_else(|| anyhow!("{} is not running", member.name))?;
        Ok(running.child.id())
    }

    /// Starts a stopped or killed member again on the same ports and data, and waits until
    /// it serves clients and follows the cluster's leader.
    pub async fn restart(&mut self, index: usize) -> Result<()> {
        if self.members[index].process.is_some() {
            bail!("{} is still running", self.members[index].name);
        }
        self.spawn(index)?;
        self.wait_ready(index)?;
        self.wait_for_leader().await?;
        Ok(())
    }

    /// Replaces member `index`'s binary with `version`'s, as an operator does in a rolling
    /// upgrade or downgrade: a clean stop, then the other release started on the same data
    /// directory and ports; waits until it serves and follows a leader.
    pub async fn replace_binary(&mut self, index: usize, version: EtcdVersion) -> Result<()> {
        self.stop(index)?;
        self.start_binary(index, &version.etcd()?).await
    }

    /// Starts stopped member `index` with the etcd binary at `binary` (one an operator's
    /// procedure put in place) on its data directory and ports; waits as [`Self::restart`].
    pub async fn start_binary(&mut self, index: usize, binary: &Path) -> Result<()> {
        self.members[index].binary = Some(binary.to_path_buf());
        self.restart(index).await
    }

    fn kill_all(&mut self) {
        for member in &mut self.members {
            if let Some(mut running) = member.process.take() {
                // SIGKILL also ends a paused (SIGSTOPped) member.
                let _ = running.child.kill();
                let _ = running.child.wait();
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn signal_child(child: &Child, signal: Signal) -> Result<()> {
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    kill(Pid::from_raw(pid), signal).with_context(|| format!("sending {signal} to {pid}"))
}

fn tail(log: &Mutex<VecDeque<String>>, lines: usize) -> String {
    let log = log.lock().unwrap_or_else(PoisonError::into_inner);
    let skip = log.len().saturating_sub(lines);
    log.iter()
        .skip(skip)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}
