//! One dead cluster must not cost another cluster its series: twenty clusters that accept
//! connections and never answer, configured before one healthy cluster, with the exporter's
//! default settings. Every scrape ends within its timeout and reports the healthy cluster up,
//! alone or fifty at once; a `/probe` of it is not held up by probes of the dead ones. And a
//! configured endpoint that never answers keeps its `up 0` row after discovery.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::ports::free_port;
use etcdmedic_tests::silent::{fleet_yaml, SilentServer};
use etcdmedic_tests::{EtcdCluster, EtcdVersion, Exposition, RunningExporter};

use crate::support::{stdout, write_file};

const SILENT_CLUSTERS: usize = 20;

/// GET `path` with Prometheus' scrape-timeout header: how long it took, and the exposition.
async fn scrape(
    http: &reqwest::Client,
    exporter: &RunningExporter,
    path: &str,
    timeout_seconds: u64,
) -> Result<(Duration, Exposition)> {
    let started = Instant::now();
    let response = http
        .get(format!("{}{path}", exporter.base_url))
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            timeout_seconds.to_string(),
        )
        .send()
        .await?;
    ensure!(response.status() == 200, "{path}: {}", response.status());
    let body = response.text().await?;
    Ok((started.elapsed(), Exposition::parse(&body)?))
}

fn ensure_healthy_up(exposition: &Exposition, cluster: &EtcdCluster) -> Result<()> {
    let healthy = [("etcd_cluster", "healthy")];
    ensure!(
        exposition.value("etcdmedic_cluster_up", &healthy)? == 1.0,
        "the healthy cluster is reported down:\n{}",
        exposition.text
    );
    for index in 0..cluster.len() {
        let member = [("etcd_cluster", "healthy"), ("member", cluster.name(index))];
        ensure!(
            exposition.value("etcdmedic_member_up", &member)? == 1.0,
            "{} is reported down:\n{}",
            cluster.name(index),
            exposition.text
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clusters_cost_a_healthy_cluster_nothing_on_metrics_and_probe() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5).start().await?;
    let silent = SilentServer::start().await?;
    let config = write_file(
        cluster.dir(),
        "fleet.yaml",
        &fleet_yaml(&cluster, &silent, SILENT_CLUSTERS),
    )?;
    let exporter = RunningExporter::start(&config).await?;
    let http = etcdmedic_tests::http_client();

    // The first scrape, before anything is known about any cluster.
    let (took, first) = scrape(&http, &exporter, "/metrics", 10).await?;
    ensure!(
        took < Duration::from_secs(10),
        "a 10 s scrape took {took:?}"
    );
    ensure_healthy_up(&first, &cluster)?;
    ensure!(
        first.value("etcdmedic_cluster_up", &[("etcd_cluster", "silent-00")])? == 0.0,
        "{}",
        first.text
    );

    // Fifty at once.
    let scrapes = (0..50).map(|_| scrape(&http, &exporter, "/metrics", 10));
    for (index, result) in futures::future::join_all(scrapes)
        .await
        .into_iter()
        .enumerate()
    {
        let (took, exposition) = result.with_context(|| format!("concurrent scrape {index}"))?;
        ensure!(
            took < Duration::from_secs(10),
            "scrape {index} took {took:?}"
        );
        ensure_healthy_up(&exposition, &cluster).with_context(|| format!("scrape {index}"))?;
    }

    // Eight probes of silent clusters in flight, then one of the healthy one.
    let dead = (0..8).map(|index| {
        let path = format!("/probe?target=silent-{index:02}");
        let http = http.clone();
        let exporter = &exporter;
        async move { scrape(&http, exporter, &path, 10).await }
    });
    let live = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        scrape(&http, &exporter, "/probe?target=healthy", 3).await
    };
    let (dead, live) = tokio::join!(futures::future::join_all(dead), live);
    let (took, probe) = live?;
    ensure!(took < Duration::from_secs(3), "a 3 s probe took {took:?}");
    ensure_healthy_up(&probe, &cluster)?;
    for result in dead {
        let (took, exposition) = result?;
        ensure!(took < Duration::from_secs(10), "a dead probe took {took:?}");
        ensure!(exposition.series("etcdmedic_cluster_up", &[]).len() == 1);
    }
    exporter.shutdown().await
}

/// A typo in the configured endpoints must stay visible, even though discovery finds the
/// real members through the endpoint that works; and the remediator ignores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_endpoint_that_never_answers_keeps_its_up_0_row() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_4).start().await?;
    let typo = format!("http://127.0.0.1:{}", free_port()?);
    let yaml = format!(
        "remediation: {{snapshot_dir: {}, defrag_rule: \"\", settle_time: 0s}}\nclusters:\n  - name: typo\n    endpoints: [{}, {typo}]\n    status_timeout: 1s\n",
        cluster.dir().join("snapshots").display(),
        cluster.endpoint(0)
    );
    let config = write_file(cluster.dir(), "typo.yaml", &yaml)?;
    let exporter = RunningExporter::start(&config).await?;
    for attempt in 0..3 {
        let exposition = exporter.scrape().await?;
        let row = [
            ("endpoint", typo.as_str()),
            ("member", ""),
            ("member_id", ""),
        ];
        ensure!(
            exposition.value("etcdmedic_member_up", &row)? == 0.0,
            "scrape {attempt}: {}",
            exposition.text
        );
        for index in 0..cluster.len() {
            let member = [("member", cluster.name(index))];
            ensure!(exposition.value("etcdmedic_member_up", &member)? == 1.0);
        }
    }
    exporter.shutdown().await?;

    // Not a member: the plan goes ahead (every member, by the empty rule) without it.
    let output =
        tokio::process::Command::new(etcdmedic_tests::project_binary("etcdmedic-remediator")?)
            .args(["run", "--config"])
            .arg(&config)
            .args(["--cluster", "typo", "--dry-run"])
            .output()
            .await?;
    let text = stdout(&output);
    ensure!(text.contains("planned: cluster typo"), "{text}");
    ensure!(text.matches("): follower;").count() == 2, "{text}");
    ensure!(
        text.contains(&format!(
            "configured endpoint {typo} is not a member (MemberList does not list it) and does not answer; ignored"
        )),
        "{text}"
    );
    Ok(())
}
