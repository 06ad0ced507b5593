//! `etcdmedic-exporter serve` as a process: bad configs refused before anything starts,
//! `--config.check`, and a graceful stop on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::ports::free_port;
use etcdmedic_tests::{eventually, project_binary};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::{exporter_binary, stderr, stdout, write_file};

#[tokio::test]
async fn bad_configs_are_refused_at_start_naming_the_file_and_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let cases = [
        (
            "unknown-key.yaml",
            "clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n    tls: {ca_fle: ca.pem}\n",
            "clusters[0].tls.ca_fle: unknown key, did you mean `ca_file`? (expected one of `ca_file`,",
        ),
        (
            "missing-ca.yaml",
            "clusters:\n  - name: a\n    endpoints: [https://127.0.0.1:2379]\n    tls: {ca_file: /nonexistent/ca.pem}\n",
            "clusters[0].tls.ca_file: /nonexistent/ca.pem: no such file",
        ),
        (
            "bad-url.yaml",
            "clusters:\n  - name: a\n    endpoints: [\"10.0.0.1:2379\"]\n",
            r#"clusters[0].endpoints[0]: "10.0.0.1:2379" must start with http:// or https://"#,
        ),
        (
            "duplicate.yaml",
            "clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n  - name: a\n    endpoints: [http://127.0.0.1:2380]\n",
            r#"clusters[1].name: duplicate cluster name "a" (also clusters[0].name)"#,
        ),
    ];
    for (file, yaml, expected) in cases {
        let path = write_file(dir.path(), file, yaml)?;
        let output = exporter_binary(&[
            "serve",
            "--config",
            &path.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .await?;
        let message = stderr(&output);
        ensure!(
            output.status.code() == Some(2),
            "{file}: exit {:?}: {message}",
            output.status.code()
        );
        let expected = format!("etcdmedic-exporter: config {}: {expected}", path.display());
        ensure!(
            message.contains(&expected),
            "{file}:\nexpected: {expected}\ngot:      {message}"
        );
    }
    // Refused before binding: the port was never taken.
    ensure!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    Ok(())
}

#[tokio::test]
async fn config_check_validates_and_never_prints_the_password() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("password"), "s3cret-Value\n")?;
    let path = write_file(
        dir.path(),
        "ok.yaml",
        "clusters:\n  - name: prod\n    endpoints: [http://127.0.0.1:2379]\n    auth: {username: root, password_file: password}\n",
    )?;
    let output = exporter_binary(&[
        "--log-level",
        "trace",
        "serve",
        "--config",
        &path.display().to_string(),
        "--config.check",
    ])
    .await?;
    ensure!(
        output.status.code() == Some(0),
        "exit {:?}: {}",
        output.status.code(),
        stderr(&output)
    );
    ensure!(
        stdout(&output).trim() == format!("config {}: ok (1 clusters: prod)", path.display()),
        "stdout: {}",
        stdout(&output)
    );
    ensure!(
        !stdout(&output).contains("s3cret") && !stderr(&output).contains("s3cret"),
        "the password leaked"
    );
    Ok(())
}

#[tokio::test]
async fn serve_stops_gracefully_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = write_file(
        dir.path(),
        "c.yaml",
        &format!(
            "clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:{}]\n",
            free_port()?
        ),
    )?;
    let port = free_port()?;
    let child = tokio::process::Command::new(project_binary("etcdmedic-exporter")?)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let http = etcdmedic_tests::http_client();
    eventually(
        "the exporter answers /healthz",
        Duration::from_secs(10),
        || async {
            let response = http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await?;
            ensure!(response.status().is_success());
            Ok(())
        },
    )
    .await?;

    let pid = child.id().context("no pid")?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM)?;
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .context("the exporter did not stop within 10s of SIGTERM")??;
    let log = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "exit {:?}: {log}",
        output.status.code()
    );
    ensure!(
        log.contains("SIGTERM received") && log.contains("\"stopped\""),
        "log: {log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_post_reload_replace_the_clusters_and_a_bad_file_keeps_the_old_ones(
) -> Result<()> {
    use etcdmedic_tests::{EtcdCluster, EtcdVersion, ExporterProcess};

    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(1)
        .start()
        .await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("etcdmedic.yaml");
    let one = format!("clusters:\n{}", cluster.config_entry("first"));
    let two = format!("{one}{}", cluster.config_entry("second"));
    std::fs::write(&config, &one)?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let exporter = ExporterProcess::spawn(
        ExporterProcess::serve_command(&project_binary("etcdmedic-exporter")?, &config, listen),
        listen,
        Stdio::null(),
    )
    .await?;
    let http = etcdmedic_tests::http_client();
    let metrics = || {
        let request = http.get(format!("{}/metrics", exporter.base_url)).send();
        async move { anyhow::Ok(request.await?.text().await?) }
    };
    let reload_ok = |text: &str, value: &str| {
        text.lines()
            .any(|l| l == format!("etcdmedic_exporter_config_last_reload_successful {value}"))
    };
    ensure!(!metrics().await?.contains("etcd_cluster=\"second\""));

    // SIGHUP picks up a second cluster.
    std::fs::write(&config, &two)?;
    kill(Pid::from_raw(exporter.pid() as i32), Signal::SIGHUP)?;
    eventually(
        "the second cluster is scraped after SIGHUP",
        Duration::from_secs(20),
        || async {
            let text = metrics().await?;
            ensure!(
                text.contains("etcdmedic_cluster_up{etcd_cluster=\"second\"} 1"),
                "not yet"
            );
            ensure!(reload_ok(&text, "1"), "{text}");
            Ok(())
        },
    )
    .await?;

    // A broken file: 500 with the reason, both clusters still served, the metric says so.
    std::fs::write(&config, "clusters:\n  - name: [broken\n")?;
    let response = http
        .post(format!("{}/-/reload", exporter.base_url))
        .send()
        .await?;
    ensure!(response.status() == 500, "{}", response.status());
    let body = response.text().await?;
    ensure!(
        body.contains("still serving the previous configuration"),
        "{body}"
    );
    let text = metrics().await?;
    ensure!(reload_ok(&text, "0"), "{text}");
    ensure!(
        text.contains("etcdmedic_cluster_up{etcd_cluster=\"second\"} 1"),
        "{text}"
    );

    // Fixed and reloaded through the endpoint: back to one cluster.
    std::fs::write(&config, &one)?;
    let response = http
        .post(format!("{}/-/reload", exporter.base_url))
        .send()
        .await?;
    ensure!(response.status() == 200, "{}", response.status());
    let text = metrics().await?;
    ensure!(
        reload_ok(&text, "1") && !text.contains("etcd_cluster=\"second\""),
        "{text}"
    );
    Ok(())
}

/// `etcdmedic-remediator serve --config.check` checks the places on disk a run and the
/// service would write, as a run would find them, and creates nothing.
#[tokio::test]
async fn remediator_config_check_refuses_a_snapshot_dir_or_state_path_it_cannot_write() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "")?;
    let yaml = format!(
        "remediation: {{snapshot_dir: {0}/snapshots}}\nremediator: {{listen: '127.0.0.1:9380', state_path: {0}/state.sqlite}}\nclusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n",
        blocker.display()
    );
    let config = write_file(dir.path(), "places.yaml", &yaml)?;
    let output = tokio::process::Command::new(project_binary("etcdmedic-remediator")?)
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--config.check")
        .output()
        .await?;
    let err = stderr(&output);
    ensure!(
        output.status.code() == Some(2),
        "exit {:?}: {err}",
        output.status.code()
    );
    ensure!(
        err.contains(&format!(
            "clusters[0].remediation.snapshot_dir: snapshot directory {0}/snapshots/a: {0} is not a directory",
            blocker.display()
        )),
        "{err}"
    );
    ensure!(
        err.contains(&format!(
            "remediator.state_path: state directory {0}: {0} is not a directory",
            blocker.display()
        )),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn run_backup_and_drill_refuse_an_unwritable_snapshot_dir_before_contacting_etcd(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "")?;
    // Whoever connects here would be recorded: nothing may.
    let etcd = std::net::TcpListener::bind("127.0.0.1:0")?;
    etcd.set_nonblocking(true)?;
    let yaml = format!(
        "remediation: {{snapshot_dir: {}/snapshots}}\nbackup:\n  destinations: [{{name: near, kind: local, path: {}}}]\n  restore_drill: {{enabled: false}}\nclusters:\n  - name: a\n    endpoints: [http://{}]\n",
        blocker.display(),
        dir.path().join("backups").display(),
        etcd.local_addr()?
    );
    let config = write_file(dir.path(), "places.yaml", &yaml)?;
    for args in [&["run", "--dry-run"][..], &["run"], &["backup"], &["drill"]] {
        let output = tokio::process::Command::new(project_binary("etcdmedic-remediator")?)
            .args(args)
            .args(["--cluster", "a", "--config"])
            .arg(&config)
            .output()
            .await?;
        let err = stderr(&output);
        ensure!(
            output.status.code() == Some(2),
            "{args:?}: exit {:?}: {err}",
            output.status.code()
        );
        ensure!(
            err.contains(&format!(
                "clusters[0].remediation.snapshot_dir: snapshot directory {0}/snapshots/a: {0} is not a directory",
                blocker.display()
            )),
            "{args:?}: {err}"
        );
        match etcd.accept() {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            other => anyhow::bail!("{args:?} contacted etcd before refusing: {other:?}"),
        }
    }
    Ok(())
}
