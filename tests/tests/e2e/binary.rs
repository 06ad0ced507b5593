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
            "clusters[0].tls: unknown field `ca_fle`",
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
