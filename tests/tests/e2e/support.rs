//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::{project_binary, EtcdCluster};
use serde::Deserialize;

/// Generous bound for conditions that settle within a second or two.
pub const SETTLE: Duration = Duration::from_secs(20);

/// Runs an async check once per etcd version users run, as `<check>::on_etcd_3_4` ...
/// `<check>::on_etcd_3_7`.
#[macro_export]
macro_rules! on_each_etcd_version {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_etcd_3_4() -> anyhow::Result<()> {
                    super::$check(etcdmedic_tests::EtcdVersion::V3_4).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_etcd_3_5() -> anyhow::Result<()> {
                    super::$check(etcdmedic_tests::EtcdVersion::V3_5).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_etcd_3_6() -> anyhow::Result<()> {
                    super::$check(etcdmedic_tests::EtcdVersion::V3_6).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_etcd_3_7() -> anyhow::Result<()> {
                    super::$check(etcdmedic_tests::EtcdVersion::V3_7).await
                }
            }
        )*
    };
}

/// One entry of `etcdctl endpoint status -w json`.
#[derive(Debug, Clone, Deserialize)]
pub struct EtcdctlEndpoint {
    #[serde(rename = "Endpoint")]
    pub endpoint: String,
    #[serde(rename = "Status")]
    pub status: EtcdctlStatus,
}

/// Go omits zero values (`isLearner: false`, an empty `errors`), hence the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdctlStatus {
    pub header: EtcdctlHeader,
    pub version: String,
    pub db_size: u64,
    #[serde(default)]
    pub db_size_in_use: u64,
    pub leader: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    #[serde(default)]
    pub is_learner: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EtcdctlHeader {
    pub member_id: u64,
    pub cluster_id: u64,
}

pub fn etcdctl_endpoint_status(cluster: &EtcdCluster) -> Result<Vec<EtcdctlEndpoint>> {
    let json = cluster.etcdctl(&["endpoint", "status", "-w", "json"])?;
    serde_json::from_str(&json).with_context(|| format!("parsing etcdctl output: {json}"))
}

/// Like [`etcdctl_endpoint_status`], asking only the members that run.
pub fn etcdctl_running_status(cluster: &EtcdCluster) -> Result<Vec<EtcdctlEndpoint>> {
    let running: Vec<String> = cluster
        .running()
        .iter()
        .map(|&i| cluster.endpoint(i))
        .collect();
    let json = cluster.etcdctl_at(&running, &["endpoint", "status", "-w", "json"])?;
    serde_json::from_str(&json).with_context(|| format!("parsing etcdctl output: {json}"))
}

/// `(member id, alarm)` pairs from `etcdctl alarm list`.
pub fn etcdctl_alarms(cluster: &EtcdCluster) -> Result<Vec<(u64, String)>> {
    let text = cluster.etcdctl(&["alarm", "list"])?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut id = None;
            let mut alarm = None;
            for field in line.split_whitespace() {
                if let Some(value) = field.strip_prefix("memberID:") {
                    id = value.parse::<u64>().ok();
                }
                if let Some(value) = field.strip_prefix("alarm:") {
                    alarm = Some(value.to_string());
                }
            }
            id.zip(alarm)
                .with_context(|| format!("unexpected etcdctl alarm list line: {line:?}"))
        })
        .collect()
}

/// Writes `yaml` as `name` in `dir`.
pub fn write_file(dir: &Path, name: &str, yaml: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// Runs `etcdmedic-exporter` with `args` and waits for it.
pub async fn exporter_binary(args: &[&str]) -> Result<Output> {
    let binary = project_binary("etcdmedic-exporter")?;
    let output = tokio::process::Command::new(&binary)
        .args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .context("etcdmedic-exporter did not finish within 60s")?
        .context("running etcdmedic-exporter")
}

/// Lowercase hex, as sha256 sums are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `db` is the snapshot `manifest` describes: its size, and etcd's sha256 trailer, which is
/// both the manifest's sha256 and the hash of everything before it.
pub fn ensure_snapshot_of(db: &[u8], manifest: &serde_json::Value) -> Result<()> {
    use sha2::{Digest, Sha256};
    ensure!(
        db.len() as u64 == manifest["size_bytes"] && db.len() > 32,
        "{} bytes: {manifest}",
        db.len()
    );
    let (body, trailer) = db.split_at(db.len() - 32);
    ensure!(hex(trailer) == manifest["sha256"], "trailer: {manifest}");
    ensure!(
        hex(&Sha256::digest(body)) == manifest["sha256"],
        "sha256 of the database: {manifest}"
    );
    Ok(())
}

/// Writes `/registry/pods/<index>` = `<tag>-<index>` for each index, as a Kubernetes keyspace
/// sees pods created (`v1`) and updated (`v2`).
pub async fn write_pods(
    client: &mut etcd_client::Client,
    indices: impl IntoIterator<Item = usize>,
    tag: &str,
) -> Result<()> {
    for index in indices {
        client
            .put(
                format!("/registry/pods/{index:03}"),
                format!("{tag}-{index}"),
                None,
            )
            .await?;
    }
    Ok(())
}

/// Serves `app` on a free loopback port: the address, and the task to abort (or drop) when
/// done. The stand-ins of peers (Grafana, a pager, a member's /metrics) run this way.
pub async fn serve_on_loopback(
    app: axum::Router,
) -> Result<(
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    Ok((
        address,
        tokio::spawn(async move { axum::serve(listener, app).await }),
    ))
}

/// A key with its value and revisions: `(key, value, create, mod, version)`.
pub type Kv = (Vec<u8>, Vec<u8>, i64, i64, i64);

/// Every key with its value and revisions, at `revision` (or the current one).
pub async fn keyspace(client: &mut etcd_client::Client, revision: Option<i64>) -> Result<Vec<Kv>> {
    let mut options = etcd_client::GetOptions::new().with_all_keys();
    if let Some(revision) = revision {
        options = options.with_revision(revision);
    }
    let response = client.get("", Some(options)).await?;
    Ok(response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
            )
        })
        .collect())
}

/// The cluster's current revision, as a read's header gives it.
pub async fn current_revision(client: &mut etcd_client::Client) -> Result<i64> {
    Ok(client
        .get("/", None)
        .await?
        .header()
        .context("a read without a header")?
        .revision())
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// After any remediation the cluster must still take writes and serve reads, through every
/// running member.
pub async fn assert_cluster_serves(cluster: &EtcdCluster) -> Result<()> {
    for index in cluster.running() {
        let mut client = cluster.client(index).await?;
        let key = format!("/etcdmedic/after-run/{index}");
        client.put(key.as_str(), "ok", None).await?;
        let got = client.get(key.as_str(), None).await?;
        anyhow::ensure!(
            got.kvs().first().map(|kv| kv.value()) == Some(b"ok".as_slice()),
            "member {index} did not read back its write"
        );
    }
    Ok(())
}

/// Runs `command`; its stdout and stderr together, or an error with both when it fails.
pub fn run_ok(command: &mut std::process::Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let text = format!("{}{}", stdout(&output), stderr(&output));
    anyhow::ensure!(output.status.success(), "{command:?} failed:\n{text}");
    Ok(text)
}

/// A YAML file as JSON values.
pub fn read_yaml(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    yaml_serde::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `promtool check metrics` on an exposition: it must pass without a single complaint.
pub async fn promtool_check_metrics(body: &str) -> Result<()> {
    let mut child = tokio::process::Command::new(etcdmedic_tests::promtool()?)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().context("promtool stdin")?;
        stdin.write_all(body.as_bytes()).await?;
    }
    let output = child.wait_with_output().await?;
    let complaints = format!("{}{}", stdout(&output), stderr(&output));
    anyhow::ensure!(
        output.status.success() && complaints.trim().is_empty(),
        "promtool check metrics: {} {complaints}",
        output.status
    );
    Ok(())
}

/// `etcdmedic-remediator <args> --cluster prod-a -o json --config <config>`, within 180 s.
pub(crate) async fn remediator_json(config: &Path, args: &[&str]) -> Result<Output> {
    let run = tokio::process::Command::new(project_binary("etcdmedic-remediator")?)
        .args(args)
        .args(["--cluster", "prod-a", "-o", "json", "--config"])
        .arg(config)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .with_context(|| format!("{args:?} did not finish within 180s"))?
        .map_err(Into::into)
}

/// `drill --destination D` with `extra` passes for each of `destinations` of cluster prod-a.
pub(crate) async fn ensure_drills_pass(
    config: &Path,
    destinations: &[&str],
    extra: &[&str],
) -> Result<()> {
    for destination in destinations {
        let args = [&["drill", "--destination", destination][..], extra].concat();
        let drilled = remediator_json(config, &args).await?;
        ensure!(
            drilled.status.success(),
            "{destination}: {}",
            stderr(&drilled)
        );
        let drilled: serde_json::Value = serde_json::from_str(&stdout(&drilled))?;
        ensure!(drilled["drill"]["passed"] == true, "{drilled}");
    }
    Ok(())
}

/// A line of output as words, with what varies from run to run (the first word, numbers,
/// paths, ids, sizes and their units) as `_`: two outputs of the same kind have the same shape.
pub fn shape(line: &str) -> Vec<String> {
    line.split_whitespace()
        .enumerate()
        .map(|(index, word)| {
            let unit = matches!(
                word.trim_end_matches([',', ')']),
                "B" | "kB" | "MB" | "GB" | "KiB" | "MiB" | "GiB"
            );
            let variable =
                index == 0 || unit || word.chars().any(|c| c.is_ascii_digit() || c == '/');
            if variable {
                "_".to_string()
            } else {
                word.to_string()
            }
        })
        .collect()
}

/// A series line of an exposition as its metric name and label names (values ignored).
pub fn series_labels(line: &str) -> Option<(String, Vec<String>)> {
    let (name, rest) = line.split_once('{')?;
    let labels = rest
        .split(',')
        .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    Some((name.to_string(), labels))
}

/// `etcdmedic-remediator <args> --config <config> --cluster it`, bounded to 120 s.
pub async fn remediator_on_it(config: &Path, args: &[&str]) -> Result<Output> {
    let run = tokio::process::Command::new(project_binary("etcdmedic-remediator")?)
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--cluster", "it"])
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .with_context(|| format!("{args:?} did not finish within 120s"))?
        .map_err(Into::into)
}

/// [`remediator_on_it`], which must exit `code`; what it printed, stdout then stderr.
pub async fn remediator_exits(config: &Path, args: &[&str], code: i32) -> Result<String> {
    let output = remediator_on_it(config, args).await?;
    ensure!(
        output.status.code() == Some(code),
        "{args:?}: expected exit {code}, got {:?}\n{}{}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    Ok(format!("{}{}", stdout(&output), stderr(&output)))
}

/// `cargo` as someone would run it in the repository, for a test that runs cargo itself:
/// without what cargo and rustup set for this test's process (its package's `CARGO_PKG_*` and
/// `CARGO_MANIFEST_DIR`, the toolchain pin, `LD_LIBRARY_PATH`), which cargo would take for a
/// changed environment and build the whole workspace again for. What configures cargo
/// (`CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_INCREMENTAL`, `CARGO_PROFILE_*`...) stays, as it
/// was for the build under test: without `.ci/run`'s `CARGO_INCREMENTAL=0` the first build
/// here compiled everything again, with incremental state.
pub(crate) fn cargo() -> std::process::Command {
    let mut command = std::process::Command::new("cargo");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        // As listed in the Cargo book's "Environment variables Cargo sets for crates".
        let set_by_cargo = ["CARGO_PKG_", "CARGO_BIN_", "CARGO_MANIFEST_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || matches!(
                name.as_ref(),
                "CARGO"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        let set_by_rustup = matches!(
            name.as_ref(),
            "RUSTUP_TOOLCHAIN"
                | "RUSTUP_TOOLCHAIN_SOURCE"
                | "RUST_RECURSION_COUNT"
                | "LD_LIBRARY_PATH"
        );
        if set_by_cargo || set_by_rustup {
            command.env_remove(name.as_ref());
        }
    }
    command.current_dir(etcdmedic_tests::generated::repository_root());
    command
}
