//! `serve` with its state in a real PostgreSQL (`remediator.postgres`): a run from an alert
//! recorded there, the pause switch and history kept across a restart of the service and of
//! the database, and bad settings (or a database that is not etcdmedic's) refused with their
//! key. Two replicas on one database: `replicas`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::postgres::Postgres;
use etcdmedic_tests::{eventually, EtcdVersion, RemediatorService};

use crate::service::{
    decision_for, fragmented_cluster, now_rfc3339, queue_run, unreachable_cluster, ServiceFiles,
    RUN_TIMEOUT, TOKEN,
};
use crate::support::SETTLE;

/// The `remediator:` lines that put the state in `postgres`, its password in a file.
pub(crate) fn postgres_state(files: &ServiceFiles, postgres: &Postgres) -> Result<String> {
    let password_file = files.path("postgres-password");
    std::fs::write(&password_file, format!("{}\n", postgres.password()))?;
    Ok(format!(
        "  postgres:\n    url: {}\n    password_file: {}\n",
        postgres.url_without_password(),
        password_file.display()
    ))
}

/// `serve` on `config` expected to refuse to start: its exit status and stderr.
async fn refused_start(config: &std::path::Path) -> Result<(Option<i32>, String)> {
    let binary = etcdmedic_tests::project_binary("etcdmedic-remediator")?;
    let port = etcdmedic_tests::ports::free_port()?;
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&binary)
            .args(["serve", "--config"])
            .arg(config)
            .arg(format!("--listen=127.0.0.1:{port}"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("serve neither started nor stopped within 30 s")??;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_postgres_remediates_and_keeps_its_state_across_restarts_of_both() -> Result<()>
{
    let mut postgres = Postgres::start().await?;
    let cluster = fragmented_cluster(EtcdVersion::V3_5).await?;
    let files = ServiceFiles::new()?;
    let state = postgres_state(&files, &postgres)?;
    let config = files.write_config_with_state(
        &cluster.config_entry("prod-a"),
        &state,
        "  cooldown: 1h\n",
    )?;
    let mut service = RemediatorService::start(&config, Some(TOKEN)).await?;

    let decision = decision_for(&service, "EtcdmedicDatabaseHighFragmentation", "prod-a").await?;
    ensure!(decision["action"] == "queued", "{decision}");
    let id = decision["run_id"].as_i64().context("run id")?;
    let run = service.wait_for_run(id, RUN_TIMEOUT).await?;
    ensure!(run["outcome"] == "succeeded", "{run}\n{}", service.output());
    // Schema versions are SQLite's: PostgreSQL's first is 7.
    ensure!(postgres.psql("SELECT version FROM etcdmedic_schema")? == "7");
    ensure!(
        postgres.psql(&format!("SELECT state, outcome FROM runs WHERE id = {id}"))?
            == "finished|succeeded"
    );
    let (status, _) = service.post("/api/v1/pause").await?;
    ensure!(status == 200, "pause: {status}");

    // The database stops: the service is not ready, and says why only to a viewer (the
    // store's error names the database's user and host).
    postgres.stop().await?;
    let anonymous = etcdmedic_tests::http_client();
    let readyz = format!("{}/readyz", service.base_url);
    let said = eventually("/readyz says the store is unavailable", SETTLE, || async {
        let response = anonymous.get(&readyz).send().await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status == 503, "{status} {body}");
        Ok(body)
    })
    .await?;
    let user_and_host = postgres
        .url_without_password()
        .trim_start_matches("postgres://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    ensure!(
        said.contains("in the log")
            && !said.contains("postgres://")
            && !said.contains(&user_and_host),
        "{said}"
    );
    let detail = anonymous.get(&readyz).bearer_auth(TOKEN).send().await?;
    ensure!(detail.status() == 503);
    let detail = detail.text().await?;
    ensure!(
        !detail.contains("in the log") && detail.contains("error"),
        "{detail}"
    );
    // It starts again (every session ended, as in a restart): the service connects again,
    // its lock taken back, and carries on with the same state.
    postgres.start_again().await?;
    let (status, body) = service.get("/api/v1/status").await?;
    ensure!(
        status == 200 && body["paused"] == true,
        "{status} {body}\n{}",
        service.output()
    );
    let decision = decision_for(&service, "EtcdmedicDatabaseHighFragmentation", "prod-a").await?;
    ensure!(decision["action"] == "ignored", "{decision}");
    ensure!(postgres.psql("SELECT count(*) FROM alerts")? == "2");

    // The service restarts: the history, the pause switch and the cooldown are all there. The
    // database says 1, as one set up before the versions were shared does: the same tables,
    // renumbered 7, nothing migrated again.
    let exit = service.terminate(Duration::from_secs(30)).await?;
    ensure!(exit.success(), "SIGTERM exit: {exit:?}");
    postgres.psql("UPDATE etcdmedic_schema SET version = 1")?;
    service.restart().await?;
    ensure!(postgres.psql("SELECT version FROM etcdmedic_schema")? == "7");
    let (status, body) = service.get("/api/v1/status").await?;
    ensure!(status == 200 && body["paused"] == true, "{status} {body}");
    let runs = service.runs().await?;
    ensure!(
        runs.len() == 1 && runs[0]["id"] == id && runs[0]["outcome"] == "succeeded",
        "{runs:?}"
    );
    let (status, _) = service.post("/api/v1/resume").await?;
    ensure!(status == 200);
    let second = queue_run(
        &service,
        "EtcdmedicDatabaseHighFragmentation",
        &now_rfc3339(),
    )
    .await?;
    let run = service.wait_for_run(second, RUN_TIMEOUT).await?;
    ensure!(
        run["outcome"] == "skipped"
            && run["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cooldown")),
        "{run}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_postgres_settings_and_a_database_that_is_not_ours_are_refused() -> Result<()> {
    let postgres = Postgres::start().await?;
    let files = ServiceFiles::new()?;
    let binary = etcdmedic_tests::project_binary("etcdmedic-remediator")?;
    let check = |config: &std::path::Path| -> Result<(Option<i32>, String, String)> {
        let output = std::process::Command::new(&binary)
            .args(["serve", "--config.check", "--config"])
            .arg(config)
            .output()?;
        Ok((
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };

    let state = postgres_state(&files, &postgres)?;
    let config = files.write_config_with_state(&unreachable_cluster(), &state, "")?;
    let (code, stdout, stderr) = check(&config)?;
    ensure!(code == Some(0), "{stdout}{stderr}");
    ensure!(
        stdout.contains(&format!("state in {}", postgres.url_without_password())),
        "{stdout}"
    );

    let cases = [
        (
            format!("  postgres:\n    url: {}\n", postgres.url),
            "remediator.postgres.url: holds a password",
        ),
        (
            format!(
                "  postgres:\n    url: {}\n    password_file: {}\n",
                postgres.url_without_password(),
                files.path("no-such-file").display()
            ),
            "remediator.postgres.password_file",
        ),
        (
            format!(
                "  state_path: {}\n{state}",
                files.path("s.sqlite").display()
            ),
            "remediator.postgres: set one of state_path (SQLite) or postgres, not both",
        ),
        (
            "  postgres:\n    url: mysql://etcdmedic@127.0.0.1/etcdmedic\n".to_string(),
            "remediator.postgres.url: must be a URL postgres://",
        ),
    ];
    for (state, expected) in &cases {
        let config = files.write_config_with_state(&unreachable_cluster(), state, "")?;
        let (code, stdout, stderr) = check(&config)?;
        ensure!(code == Some(2), "{state}: exit {code:?} {stdout}{stderr}");
        ensure!(stderr.contains(expected), "{state}: {stderr}");
        ensure!(
            !stderr.contains(postgres.password()),
            "the password is printed: {stderr}"
        );
    }

    // Someone else's tables: refused before anything is written, and left as they were.
    postgres.psql("CREATE TABLE invoices (id int); INSERT INTO invoices VALUES (7)")?;
    let config = files.write_config_with_state(&unreachable_cluster(), &state, "")?;
    // Where the other replicas reach this one must be a URL they can use.
    let output = std::process::Command::new(&binary)
        .args([
            "serve",
            "--advertise-url",
            "ftp://127.0.0.1:9380",
            "--config",
        ])
        .arg(&config)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(2)
            && stderr.contains("--advertise-url ftp://127.0.0.1:9380/: must be http://host:port"),
        "{output:?}"
    );

    let (code, stderr) = refused_start(&config).await?;
    ensure!(code == Some(2), "exit {code:?}: {stderr}");
    ensure!(
        stderr.contains("holds tables that are not etcdmedic's (invoices)"),
        "{stderr}"
    );
    ensure!(
        postgres
            .psql("SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'")?
            == "invoices"
    );
    ensure!(postgres.psql("SELECT id FROM invoices")? == "7");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_reaches_postgres_over_tls_and_an_untrusted_certificate_is_refused() -> Result<()>
{
    let files = ServiceFiles::new()?;
    let pki = etcdmedic_tests::certs::TestPki::generate(&files.path("pki"), true, "postgres")?;
    let postgres = Postgres::start_tls(&pki).await?;
    let plain = postgres_state(&files, &postgres)?;
    let with_ca = |ca: &std::path::Path| format!("{plain}    tls: {{ca_file: {}}}\n", ca.display());

    // Trusting the CA that signed PostgreSQL's certificate: the service's sessions are TLS.
    let config =
        files.write_config_with_state(&unreachable_cluster(), &with_ca(&pki.ca_file), "")?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let (status, _) = service.post("/api/v1/pause").await?;
    ensure!(status == 200, "pause: {status}");
    ensure!(
        postgres.psql(
            "SELECT count(*) > 0 AND bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a \
             USING (pid) WHERE a.application_name LIKE 'etcdmedic-remediator%'"
        )? == "t",
        "the service's sessions are not all TLS"
    );
    drop(service);

    // Another CA: refused, saying why; and without TLS the server refuses the session.
    for (state, expected) in [
        (with_ca(&pki.other_ca_file), "certificate"),
        (plain.clone(), "no encryption"),
    ] {
        let config = files.write_config_with_state(&unreachable_cluster(), &state, "")?;
        let (code, stderr) = refused_start(&config).await?;
        ensure!(code == Some(1), "{state}: exit {code:?}: {stderr}");
        ensure!(stderr.contains(expected), "{state}: {stderr}");
    }
    Ok(())
}
