//! The exporter's HTTP surface: `/probe`, `/metrics` with a dead cluster beside a live one,
//! health endpoints and the landing page.

use anyhow::{ensure, Result};
use etcdmedic_tests::ports::free_port;
use etcdmedic_tests::{EtcdCluster, EtcdVersion, RunningExporter};

use crate::support::write_file;

/// A config with a live cluster and one whose only endpoint has nothing listening.
fn two_clusters(live: &EtcdCluster) -> Result<String> {
    Ok(format!(
        "{}  - name: dead\n    endpoints: [http://127.0.0.1:{}]\n    status_timeout: 1s\n",
        live.config_yaml("live"),
        free_port()?
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_answers_for_the_named_cluster_only() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    let config = write_file(cluster.dir(), "two.yaml", &two_clusters(&cluster)?)?;
    let exporter = RunningExporter::start(&config).await?;

    let live = exporter.scrape_path("/probe?target=live").await?;
    ensure!(
        live.series("etcdmedic_member_up", &[("etcd_cluster", "live")])
            .len()
            == 3
    );
    ensure!(
        live.series("etcdmedic_cluster_up", &[("etcd_cluster", "dead")])
            .is_empty(),
        "/probe?target=live also reported the dead cluster"
    );
    ensure!(
        live.series("etcdmedic_build_info", &[]).is_empty(),
        "build info belongs on /metrics only"
    );

    let dead = exporter.scrape_path("/probe?target=dead").await?;
    ensure!(dead.value("etcdmedic_cluster_up", &[("etcd_cluster", "dead")])? == 0.0);
    ensure!(dead.value("etcdmedic_member_up", &[("etcd_cluster", "dead")])? == 0.0);

    // One dead cluster hides nothing of the live one on /metrics.
    let all = exporter.scrape().await?;
    ensure!(all.value("etcdmedic_cluster_up", &[("etcd_cluster", "dead")])? == 0.0);
    ensure!(all.value("etcdmedic_cluster_up", &[("etcd_cluster", "live")])? == 1.0);
    for endpoint in cluster.endpoints() {
        let labels = [("etcd_cluster", "live"), ("endpoint", endpoint.as_str())];
        ensure!(all.value("etcdmedic_member_up", &labels)? == 1.0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_without_or_with_an_unknown_target_is_a_400_naming_the_clusters() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let yaml = format!(
        "clusters:\n  - name: alpha\n    endpoints: [http://127.0.0.1:{}]\n  - name: beta\n    endpoints: [http://127.0.0.1:{}]\n",
        free_port()?,
        free_port()?
    );
    let exporter = RunningExporter::start(&write_file(dir.path(), "c.yaml", &yaml)?).await?;

    let (status, body) = exporter.get("/probe?target=gamma").await?;
    ensure!(status == 400, "unknown target answered {status}");
    ensure!(
        body.trim() == r#"unknown target "gamma"; configured clusters: alpha, beta"#,
        "unexpected body: {body:?}"
    );
    let (status, body) = exporter.get("/probe").await?;
    ensure!(status == 400, "missing target answered {status}");
    ensure!(
        body.trim() == "missing ?target=<cluster name>; configured clusters: alpha, beta",
        "unexpected body: {body:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_the_landing_page_answer_without_etcd() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let yaml = format!(
        "clusters:\n  - name: a.b-c_d\n    endpoints: [http://127.0.0.1:{}]\n",
        free_port()?
    );
    let exporter = RunningExporter::start(&write_file(dir.path(), "c.yaml", &yaml)?).await?;
    ensure!(exporter.get("/healthz").await? == (200, "ok\n".to_string()));
    ensure!(exporter.get("/readyz").await? == (200, "ready\n".to_string()));
    let (status, page) = exporter.get("/").await?;
    ensure!(status == 200);
    for link in [
        r#"href="/metrics""#,
        r#"href="/probe?target=a.b-c_d""#,
        r#"href="/healthz""#,
        r#"href="/readyz""#,
    ] {
        ensure!(page.contains(link), "landing page lacks {link}: {page}");
    }

    let posted = etcdmedic_tests::http_client()
        .post(format!("{}/metrics", exporter.base_url))
        .send()
        .await?;
    ensure!(
        posted.status().as_u16() == 405,
        "POST /metrics answered {}",
        posted.status()
    );
    Ok(())
}
