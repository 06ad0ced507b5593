//! `remediator.mode: observe`, the shipped configs' mode: a fragmentation alert delivered by a
//! real Alertmanager is decided as in `act` mode, and its run is planned (with the plan's
//! predicted durations) and recorded with the reason it was not executed, while etcd is left
//! exactly as it was; the API and every page that lists runs say the mode.

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::alertmanager::{Alertmanager, Routing};
use etcdmedic_tests::{EtcdCluster, EtcdVersion, RemediatorService};
use reqwest::header;

use crate::service::{alert_queues_a_run, fragmented_cluster, ServiceFiles, RUN_TIMEOUT, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_in_observe_mode_is_planned_and_recorded_and_etcd_is_untouched() -> Result<()> {
    let cluster = fragmented_cluster(EtcdVersion::NEWEST).await?;
    let files = ServiceFiles::new()?;
    let port = etcdmedic_tests::ports::free_port()?;
    let alertmanager =
        Alertmanager::for_remediator_on(port, &files.path("token"), &Routing::default()).await?;
    let config = files.write_config(&cluster.config_entry("prod-a"), "  mode: observe\n")?;
    let service = RemediatorService::start_on(&config, Some(TOKEN), port).await?;
    let (_, status) = service.get("/api/v1/status").await?;
    ensure!(status["mode"] == "observe", "{status}");

    let before = db_sizes(&cluster).await?;

    let run_id = alert_queues_a_run(&alertmanager, &service, "prod-a").await?;
    let run = service.wait_for_run(run_id, RUN_TIMEOUT).await?;
    ensure!(
        run["outcome"] == "planned" && run["dry_run"] == true,
        "{run:#}\n{}",
        service.output()
    );
    ensure!(
        run["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("observe mode (remediator.mode: observe)")),
        "{run:#}"
    );
    let plan = &run["report"]["plan"];
    ensure!(
        plan["defragment"].as_array().map(Vec::len) == Some(3)
            && plan["forecast"]["total"].as_f64().is_some_and(|t| t > 0.0),
        "the run that would happen, with its prediction: {plan:#}"
    );
    ensure!(
        run["alerts"][0]["alertname"] == "EtcdmedicDatabaseHighFragmentation",
        "{run}"
    );

    // Nothing in etcd changed: no defragmentation in any member's log, the same sizes, and
    // no silence (a dry run silences nothing).
    for index in 0..cluster.len() {
        ensure!(
            cluster.defrag_intervals(index)?.is_empty(),
            "{} was defragmented",
            cluster.name(index)
        );
    }
    ensure!(
        db_sizes(&cluster).await? == before,
        "the database sizes changed"
    );
    ensure!(
        alertmanager.silences().await?.is_empty(),
        "observe mode silenced an alert"
    );

    // The pages say so.
    let http = etcdmedic_tests::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = &service.base_url;
    let login = http
        .post(format!("{base}/ui/login"))
        .header(header::ORIGIN, base.as_str())
        .form(&[("token", TOKEN), ("next", "/")])
        .send()
        .await?;
    ensure!(login.status() == 303, "{}", login.status());
    let cookie = login.headers()[header::SET_COOKIE]
        .to_str()?
        .split(';')
        .next()
        .context("cookie")?
        .to_string();
    for path in ["/", "/ui/runs", &format!("/ui/runs/{run_id}")] {
        let page = http
            .get(format!("{base}{path}"))
            .header(header::COOKIE, &cookie)
            .send()
            .await?
            .text()
            .await?;
        ensure!(
            page.contains("Observe mode") && page.contains("remediator.mode: observe"),
            "{path} does not say observe mode:\n{page}"
        );
    }
    Ok(())
}

/// Each member's database size, as it reports it.
async fn db_sizes(cluster: &EtcdCluster) -> Result<Vec<i64>> {
    let mut sizes = Vec::new();
    for index in 0..cluster.len() {
        sizes.push(cluster.client(index).await?.status().await?.db_size());
    }
    Ok(sizes)
}
