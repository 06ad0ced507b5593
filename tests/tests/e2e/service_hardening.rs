//! The webhook service where operators' wiring and the real world push it: a refused run is
//! retried while its alerts fire (Alertmanager itself would only repeat them hours later), a
//! notification of thousands of alerts gets through, a state file that is not etcdmedic's is
//! refused, and bodies that are too large or too slow are refused before they are read
//! (slow connections: `connection_limits`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::alertmanager::{Alertmanager, Routing};
use etcdmedic_tests::ports::free_port;
use etcdmedic_tests::workload::{fragment, Fragmentation};
use etcdmedic_tests::{eventually, project_binary, EtcdCluster, EtcdVersion, RemediatorService};
use serde_json::{json, Value};

use crate::support::{assert_cluster_serves, SETTLE};

pub(crate) const TOKEN: &str = "hardening-token";
const TEST_RULE: &str = "dbSizeFree >= 4*1024*1024 && dbSizeInUse / dbSize < 0.5";

/// A config for `clusters` with a token file, state and snapshots in `dir`, and
/// `remediator_extra` lines (indented by two spaces).
pub(crate) fn write_config(dir: &Path, clusters: &str, remediator_extra: &str) -> Result<PathBuf> {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n"))?;
    let yaml = format!(
        "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\n  defrag_rule: \"{TEST_RULE}\"\n\
         remediator:\n  state_path: {}\n  auth: {{bearer_token_file: {}}}\n{remediator_extra}\
         clusters:\n{clusters}",
        dir.join("snapshots").display(),
        dir.join("state.sqlite").display(),
        dir.join("token").display(),
    );
    let path = dir.join("etcdmedic.yaml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// `serve --config <config>` on a free port, with `extra` arguments.
fn serve(config: &Path, extra: &[&str]) -> Result<tokio::process::Command> {
    let mut command = tokio::process::Command::new(project_binary("etcdmedic-remediator")?);
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .kill_on_drop(true);
    Ok(command)
}

/// Runs [`serve`], which must refuse to start (exit status 2, within 30 s): its stderr.
pub(crate) async fn refused_start(config: &Path) -> Result<String> {
    let output = tokio::time::timeout(Duration::from_secs(30), serve(config, &[])?.output())
        .await
        .context("serve did not exit")?
        .context("running serve")?;
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure!(
        output.status.code() == Some(2),
        "exit {:?}: {err}",
        output.status.code()
    );
    Ok(err)
}

/// A service for one cluster that never answers, paused (so its state file holds something):
/// its config file in `dir`, and the service.
async fn paused_service(dir: &Path) -> Result<(PathBuf, RemediatorService)> {
    let config = write_config(
        dir,
        "  - name: prod-a\n    endpoints: [http://127.0.0.1:1]\n",
        "",
    )?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    ensure!(service.post("/api/v1/pause").await?.0 == 200);
    Ok((config, service))
}

fn fragmentation_alert(cluster: &str, annotation: &str, instance: usize) -> Value {
    json!({
        "labels": {"alertname": "EtcdmedicDatabaseHighFragmentation", "etcd_cluster": cluster,
                   "severity": "warning", "instance": format!("member-{instance}")},
        "annotations": {"summary": "fragmented", "description": annotation},
        "startsAt": humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(60)).to_string(),
        "endsAt": humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(600)).to_string(),
    })
}

/// A member down refuses the run; Alertmanager repeats nothing for an hour, yet once the
/// member is back the service runs again by itself and the cluster is remediated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_run_is_retried_while_its_alerts_fire_and_then_succeeds() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5).start().await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let dir = tempfile::tempdir()?;
    let entry = cluster.config_entry("prod-a").replacen(
        "    endpoints:",
        "    status_timeout: 1s\n    endpoints:",
        1,
    );
    let config = write_config(dir.path(), &entry, "  retry_after_refusal: 3s\n")?;
    let port = free_port()?;
    let service = RemediatorService::start_on(&config, Some(TOKEN), port).await?;
    let routing = Routing {
        repeat_interval: Duration::from_secs(3600),
        ..Routing::default()
    };
    let alertmanager =
        Alertmanager::for_remediator_on(port, &dir.path().join("token"), &routing).await?;

    cluster.pause(2)?;
    alertmanager
        .post_alerts(&json!([fragmentation_alert("prod-a", "fragmented", 0)]))
        .await?;
    let refused = eventually(
        "the alert's run is refused",
        Duration::from_secs(60),
        || async {
            let runs = service.runs().await?;
            let run = runs
                .iter()
                .find(|r| r["outcome"] == "failed")
                .with_context(|| format!("no refused run yet: {runs:?}"))?;
            ensure!(run["refused"] == true, "{run}");
            Ok(run.clone())
        },
    )
    .await?;
    let refused_id = refused["id"].as_i64().context("run id")?;
    ensure!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("refused: member m2")),
        "{refused}"
    );
    cluster.resume(2)?;

    let retry = eventually(
        "a retry runs and succeeds",
        Duration::from_secs(90),
        || async {
            let runs = service.runs().await?;
            let run = runs
                .iter()
                .find(|r| r["retry_of"] == refused_id && r["outcome"] == "succeeded")
                .with_context(|| format!("no succeeded retry yet: {runs:#?}"))?;
            Ok(run.clone())
        },
    )
    .await?;
    let (_, original) = service.get(&format!("/api/v1/runs/{refused_id}")).await?;
    ensure!(
        original["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("Retried as run {} at", retry["id"]))),
        "{original}"
    );
    assert_cluster_serves(&cluster).await?;
    drop(alertmanager);
    Ok(())
}

/// Alertmanager groups every alert of a cluster into one notification; with thousands of
/// alerts that is megabytes, which must not be refused (a 413 is never retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_of_thousands_of_alerts_gets_through() -> Result<()> {
    const ALERTS: usize = 2000;
    let dir = tempfile::tempdir()?;
    let clusters = "  - name: prod-a\n    endpoints: [http://127.0.0.1:1]\n";
    let config = write_config(dir.path(), clusters, "")?;
    let port = free_port()?;
    let service = RemediatorService::start_on(&config, Some(TOKEN), port).await?;
    // Paused: every alert is received and recorded, none starts a run.
    ensure!(service.post("/api/v1/pause").await?.0 == 200);
    let alertmanager =
        Alertmanager::for_remediator_on(port, &dir.path().join("token"), &Routing::default())
            .await?;
    let description = "x".repeat(600);
    let alerts: Vec<Value> = (0..ALERTS)
        .map(|i| fragmentation_alert("prod-a", &description, i))
        .collect();
    alertmanager.post_alerts(&Value::Array(alerts)).await?;
    eventually("every alert arrives", Duration::from_secs(60), || async {
        let metrics = service.metrics().await?;
        let received: f64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("etcdmedic_webhook_alerts_total{") && l.contains("reason=\"paused\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        ensure!(
            received >= ALERTS as f64,
            "{received} of {ALERTS} alerts arrived"
        );
        ensure!(
            !metrics.contains("etcdmedic_webhook_requests_total{code=\"413\"}"),
            "a notification was refused:\n{metrics}"
        );
        Ok(())
    })
    .await?;
    drop(alertmanager);
    Ok(())
}

/// A state file that exists but holds no etcdmedic state is refused, naming the file and the
/// way to start afresh; `--init-state` starts afresh; the file is never silently replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_state_file_is_refused_unless_told_to_start_afresh() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (config, mut service) = paused_service(dir.path()).await?;
    service.terminate(Duration::from_secs(20)).await?;
    let state = dir.path().join("state.sqlite");
    std::fs::write(&state, "")?;
    for leftover in ["state.sqlite-wal", "state.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(leftover));
    }

    let err = refused_start(&config).await?;
    ensure!(
        err.contains(&format!(
            "state store {}: the file is empty (0 bytes), not etcdmedic's state",
            state.display()
        )) && err.contains("--init-state"),
        "{err}"
    );
    ensure!(
        std::fs::metadata(&state)?.len() == 0,
        "the file was changed"
    );

    // Told to, it starts afresh: not paused any more.
    let mut fresh = serve(&config, &["--init-state"])?.spawn()?;
    let started = eventually("the state is initialised", SETTLE, || async {
        let connection = rusqlite::Connection::open(&state)?;
        let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        ensure!(version > 0, "not initialised yet");
        let paused: i64 = connection.query_row(
            "SELECT count(*) FROM switches WHERE name = 'paused' AND value = 'true'",
            [],
            |row| row.get(0),
        )?;
        Ok(paused)
    })
    .await;
    fresh.kill().await?;
    ensure!(started? == 0, "the pause switch came back from nowhere");
    Ok(())
}

/// A second service on the same state file refuses to start, naming the file and the first
/// service's process, and changes nothing: it would otherwise take the first one's live run
/// for one a dead process left behind and mark it interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_service_on_the_same_state_file_refuses_to_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (config, first) = paused_service(dir.path()).await?;
    let state = dir.path().join("state.sqlite");
    let before = std::fs::read(&state)?;

    let err = refused_start(&config).await?;
    ensure!(
        err.contains(&format!(
            "state store {} is in use by another etcdmedic-remediator serve (pid {})",
            state.display(),
            first.pid()?
        )),
        "{err}"
    );
    ensure!(
        std::fs::read(&state)? == before,
        "the state file was changed"
    );
    let (code, status) = first.get("/api/v1/status").await?;
    ensure!(code == 200 && status["paused"] == true, "{status}");
    Ok(())
}

/// What a request may send depends on where it goes, and no body is read before its headers
/// pass: a login form or an API call with a large body is refused at once (413) and a
/// webhook without credentials before its body (401), whatever it declares; a body that
/// trickles in is answered 408 after `read_body_timeout`, and the service answers others
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_bodies_are_refused_before_they_are_read() -> Result<()> {
    use crate::service::raw_request;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let body_timeout = Duration::from_secs(2);
    let dir = tempfile::tempdir()?;
    let config = write_config(
        dir.path(),
        "  - name: prod-a\n    endpoints: [http://127.0.0.1:1]\n",
        "  read_body_timeout: 2s\n",
    )?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let port = service.port;
    // A login is a form; the API and the webhook take JSON (a form's content type on the
    // API is refused as a possible forgery, before the body).
    let head = |path: &str, auth: &str, length: usize| {
        let content_type = if path.starts_with("/ui/") {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    // Declared too large: answered from the head alone, nothing of the body sent.
    for (path, auth, length, status) in [
        ("/ui/login", "", 100_000, "413"),
        ("/api/v1/pause", bearer.as_str(), 100_000, "413"),
        ("/webhook/alertmanager", "", 10 << 20, "401"),
        (
            "/webhook/alertmanager",
            "Authorization: Bearer wrong\r\n",
            10 << 20,
            "401",
        ),
        ("/api/v1/pause", "", 10 << 20, "401"),
        ("/webhook/alertmanager", bearer.as_str(), 64 << 20, "413"),
    ] {
        let line = tokio::time::timeout(
            Duration::from_secs(5),
            raw_request(port, &head(path, auth, length)),
        )
        .await
        .with_context(|| format!("{path}: no answer before the body"))??;
        ensure!(
            line.contains(&format!(" {status} ")),
            "{path} ({length} bytes): {line}"
        );
    }
    // A body sent without a declared length is cut at the route's limit.
    let chunked = "POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(chunked.as_bytes()).await?;
    let chunk = vec![b'a'; 8192];
    for _ in 0..4 {
        let frame = format!("{:x}\r\n", chunk.len());
        if stream.write_all(frame.as_bytes()).await.is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(stream).read_line(&mut line),
    )
    .await
    .context("no answer to a login form of 32 KiB")??;
    ensure!(
        line.contains(" 413 "),
        "a chunked 32 KiB login form: {line}"
    );

    // Trickling bodies: one byte a second for at most 20 s, on a login and an API call.
    let started = Instant::now();
    let trickle = |path: &'static str, auth: String| async move {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(head(path, &auth, 100).as_bytes()).await?;
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        for _ in 0..20 {
            let _ = write.write_all(b"a").await;
            match tokio::time::timeout(Duration::from_secs(1), reader.read_line(&mut line)).await {
                Ok(_) => return anyhow::Ok((line, started.elapsed())),
                Err(_) => continue,
            }
        }
        anyhow::bail!("{path}: still reading after {:?}", started.elapsed())
    };
    let probe = async {
        eventually(
            "/healthz answers beside the slow bodies",
            Duration::from_secs(10),
            || async {
                let (status, _) = service.get("/healthz").await?;
                ensure!(status == 200, "{status}");
                Ok(())
            },
        )
        .await
    };
    let (login, api, answered) = tokio::join!(
        trickle("/ui/login", String::new()),
        trickle("/api/v1/pause", bearer.clone()),
        probe
    );
    answered?;
    for (what, outcome) in [("login", login?), ("pause", api?)] {
        let (line, after) = outcome;
        ensure!(line.contains(" 408 "), "a trickling {what}: {line}");
        ensure!(
            after >= body_timeout && after < body_timeout + Duration::from_secs(3),
            "a trickling {what} was answered after {after:?}"
        );
    }
    // The pause that never finished arriving did nothing.
    let (_, status) = service.get("/api/v1/status").await?;
    ensure!(status["paused"] == false, "{status}");
    Ok(())
}
