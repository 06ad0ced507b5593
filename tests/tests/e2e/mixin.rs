//! etcdmedic beside the etcd mixin's alerts, as a kube-prometheus-stack user runs them: the
//! mixin's rules as the chart renders them (`tests/fixtures`), with the labels
//! deploy/kube-prometheus-stack/values.yaml adds to the chart's etcd group; etcd scraped as
//! the chart's `kube-etcd` job; etcdmedic scraped as prometheus-operator would from the base;
//! Alertmanager 0.33 configured as the operator configures it from the base's
//! AlertmanagerConfig, under a root route like the chart's (everything pages, grouped by
//! namespace). A cluster that fills up fires etcdmedic's quota alerts and the mixin's
//! `etcdDatabaseQuotaLowSpace`: the mixin's is inhibited and never pages, etcdmedic's does, once.
//! Without etcdmedic's rules, the mixin's alert reaches the remediator for the right cluster.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use etcdmedic_tests::alertmanager::Alertmanager;
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::kustomize::{documents, kind, render};
use etcdmedic_tests::operator::alertmanager::{merge, Webhook};
use etcdmedic_tests::prometheus::Prometheus;
use etcdmedic_tests::workload::fill_to_nospace;
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion, RemediatorService, RunningExporter};
use serde_json::{json, Value};

use crate::live_prometheus::{operator_prometheus, Beside};
use crate::service::{ServiceFiles, TOKEN};
use crate::support::serve_on_loopback;

/// The cluster's name in the shipped values (`etcd_cluster`) and so in etcdmedic's config.
const CLUSTER: &str = "kubernetes";
/// The mixin's alert with its `for` (10 s in the fixture), an evaluation and a notification.
const ALERT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the pager is watched for a page that must not come: several group intervals.
const WATCH: Duration = Duration::from_secs(8);
const MIXIN_TWIN: &str = "etcdDatabaseQuotaLowSpace";

type Pages = Arc<Mutex<Vec<Value>>>;

async fn page(State(pages): State<Pages>, Json(body): Json<Value>) -> &'static str {
    pages
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(body);
    "ok"
}

/// The alert names of every page received so far, with each page's group key.
fn paged(pages: &Pages) -> Vec<(String, String)> {
    let pages = pages.lock().unwrap_or_else(PoisonError::into_inner);
    pages
        .iter()
        .flat_map(|p| {
            let key = p["groupKey"].as_str().unwrap_or_default().to_string();
            p["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a["status"] == "firing")
                .map(move |a| {
                    (
                        a["labels"]["alertname"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        key.clone(),
                    )
                })
        })
        .collect()
}

/// The mixin's etcd group as kube-prometheus-stack renders it with the shipped values: the
/// values' `defaultRules.additionalRuleGroupLabels.etcd` added to every rule's labels.
fn mixin_rules() -> Result<Vec<Value>> {
    let fixture = repository_root().join("tests/fixtures/kube-prometheus-stack-etcd-rules.yaml");
    let text = std::fs::read_to_string(&fixture)
        .with_context(|| format!("reading {}", fixture.display()))?;
    let mut rules: Value = yaml_serde::from_str(&text)?;
    let values: Value = yaml_serde::from_str(&std::fs::read_to_string(
        repository_root().join("deploy/kube-prometheus-stack/values.yaml"),
    )?)?;
    let labels = values["defaultRules"]["additionalRuleGroupLabels"]["etcd"]
        .as_object()
        .context("the values give the etcd group no labels")?;
    ensure!(
        labels.get("etcd_cluster").and_then(Value::as_str) == Some(CLUSTER),
        "the values name the cluster {:?}",
        labels.get("etcd_cluster")
    );
    for group in rules["groups"].as_array_mut().into_iter().flatten() {
        ensure!(
            group["name"] == "etcd",
            "a group other than etcd: {}",
            group["name"]
        );
        for rule in group["rules"].as_array_mut().into_iter().flatten() {
            for (label, value) in labels {
                rule["labels"][label] = value.clone();
            }
        }
    }
    Ok(rules["groups"].as_array().cloned().unwrap_or_default())
}

struct Stack {
    cluster: EtcdCluster,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    remediator: RemediatorService,
    pages: Pages,
    _exporter: RunningExporter,
    _files: ServiceFiles,
    _pager: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A 3-member cluster with a 16 MiB quota, filled to NOSPACE, and everything around it;
/// `etcdmedic_rules` says whether the base's PrometheusRule is installed beside the mixin's.
async fn full_cluster_beside_the_mixin(etcdmedic_rules: bool) -> Result<Stack> {
    let cluster = EtcdCluster::builder(EtcdVersion::NEWEST)
        .members(3)
        .quota(16 * 1024 * 1024)
        .start()
        .await?;
    let files = ServiceFiles::new()?;
    let config = files.write_config(&cluster.config_entry(CLUSTER), "  mode: observe\n")?;
    let exporter = RunningExporter::start(&config).await?;
    let remediator = RemediatorService::start(&config, Some(TOKEN)).await?;

    let pages: Pages = Arc::default();
    let app = Router::new()
        .route("/pager", post(page))
        .with_state(pages.clone());
    let (address, pager) = serve_on_loopback(app).await?;
    let pager_url = format!("http://{address}/pager");

    // A root like the chart's, whose routes end in a catch-all to the pager: everything
    // pages, grouped by namespace; Watchdog goes nowhere. (An alert that matched a route, as
    // the AlertmanagerConfig's with `continue: true`, never falls back to the root's receiver.)
    let mut root = json!({
        "route": {"receiver": "null", "group_by": ["namespace"], "group_wait": "1s",
                  "group_interval": "2s", "repeat_interval": "1h",
                  "routes": [{"receiver": "null", "matchers": ["alertname=\"Watchdog\""]},
                             {"receiver": "pager"}]},
        "receivers": [{"name": "null"}, {"name": "pager", "webhook_configs": [{"url": pager_url}]}],
    });
    let docs = documents(&render(&repository_root().join("deploy/kubernetes/base"))?.text)?;
    let resources = kind(&docs, "AlertmanagerConfig");
    ensure!(
        resources.len() == 1,
        "{} AlertmanagerConfigs",
        resources.len()
    );
    // Timing only: the shipped 30 s / 5 m would make the test wait minutes.
    let mut resource = resources[0].clone();
    resource["spec"]["route"]["groupWait"] = "1s".into();
    resource["spec"]["route"]["groupInterval"] = "2s".into();
    let webhook = format!("{}/webhook/alertmanager", remediator.base_url);
    let token = files.path("token").display().to_string();
    merge(
        &mut root,
        &resource,
        &Webhook {
            url: &webhook,
            credentials_file: &token,
        },
    )?;
    let alertmanager = Alertmanager::start_with_config(&serde_json::to_string_pretty(&root)?)
        .await
        .with_context(|| format!("config:\n{root:#}"))?;

    // etcd's own /metrics as the chart's kube-etcd ServiceMonitor labels them.
    let etcd_targets: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_string())
        .collect();
    let kube_etcd = json!({
        "job_name": "serviceMonitor/monitoring/kube-prometheus-stack-kube-etcd/0",
        "scrape_interval": "1s", "scrape_timeout": "1s",
        "static_configs": [{"targets": etcd_targets, "labels": {
            "job": "kube-etcd", "namespace": "kube-system", "endpoint": "http-metrics",
            "service": "kube-prometheus-stack-kube-etcd"}}],
    });
    let exporter_address = exporter.base_url.trim_start_matches("http://").to_string();
    let remediator_address = remediator
        .base_url
        .trim_start_matches("http://")
        .to_string();
    let prometheus = operator_prometheus(
        |service, port| match (service, port) {
            ("etcdmedic-exporter", "metrics") => Some(exporter_address.clone()),
            ("etcdmedic-remediator", "http") => Some(remediator_address.clone()),
            _ => None,
        },
        Beside {
            scrape_configs: vec![kube_etcd],
            rule_groups: mixin_rules()?,
            without_base_rules: !etcdmedic_rules,
            alertmanagers: vec![alertmanager.url.trim_start_matches("http://").to_string()],
        },
    )
    .await?;

    let mut client = cluster.client(0).await?;
    fill_to_nospace(&mut client, 256 * 1024, 1000).await?;
    Ok(Stack {
        cluster,
        prometheus,
        alertmanager,
        remediator,
        pages,
        _exporter: exporter,
        _files: files,
        _pager: pager,
    })
}

/// The names of the alerts behind every run the remediator recorded, with the run's cluster.
async fn run_alerts(remediator: &RemediatorService) -> Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for run in remediator.runs().await? {
        let id = run["id"].as_i64().context("run id")?;
        let (_, detail) = remediator.get(&format!("/api/v1/runs/{id}")).await?;
        for alert in detail["alerts"].as_array().into_iter().flatten() {
            found.push((
                detail["cluster"].as_str().unwrap_or_default().to_string(),
                alert["alertname"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    Ok(found)
}

/// The alert named `name` as Alertmanager holds it, once it does.
async fn held(alertmanager: &Alertmanager, name: &str) -> Result<Value> {
    eventually(&format!("Alertmanager holds {name}"), ALERT_TIMEOUT, || {
        holding(alertmanager, name)
    })
    .await
}

/// The alert named `name` as Alertmanager holds it now.
async fn holding(alertmanager: &Alertmanager, name: &str) -> Result<Value> {
    alertmanager
        .alerts()
        .await?
        .into_iter()
        .find(|a| a["labels"]["alertname"] == name)
        .context("not held")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mixins_twin_is_inhibited_and_an_incident_pages_once() -> Result<()> {
    let stack = full_cluster_beside_the_mixin(true).await?;
    let twin = held(&stack.alertmanager, MIXIN_TWIN).await;
    let twin =
        twin.with_context(|| format!("Prometheus output:\n{}", stack.prometheus.output()))?;
    ensure!(
        twin["labels"]["etcd_cluster"] == CLUSTER && twin["labels"]["namespace"] == "etcdmedic",
        "the mixin's alert carries the values' labels: {twin}"
    );
    let twin = eventually("the mixin's alert is inhibited", ALERT_TIMEOUT, || async {
        let twin = holding(&stack.alertmanager, MIXIN_TWIN).await?;
        ensure!(
            twin["status"]["state"] == "suppressed"
                && twin["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|by| !by.is_empty()),
            "{twin}"
        );
        Ok(twin)
    })
    .await?;

    // etcdmedic's pages, and keeps paging without the twin while the pager is watched.
    eventually("etcdmedic's alert pages", ALERT_TIMEOUT, || async {
        let paged = paged(&stack.pages);
        ensure!(
            paged
                .iter()
                .any(|(name, _)| name == "EtcdmedicNoSpaceAlarm"),
            "{paged:?}"
        );
        Ok(())
    })
    .await?;
    let deadline = tokio::time::Instant::now() + WATCH;
    while tokio::time::Instant::now() < deadline {
        let paged = paged(&stack.pages);
        ensure!(
            !paged.iter().any(|(name, _)| name.starts_with("etcd")),
            "the mixin's alert paged beside etcdmedic's: {paged:?} (inhibited: {twin})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let paged = paged(&stack.pages);
    let groups: std::collections::BTreeSet<&str> = paged.iter().map(|(_, k)| k.as_str()).collect();
    ensure!(groups.len() == 1, "one incident, one page group: {paged:?}");

    // The remediator got etcdmedic's alert, mapped to the cluster, not the inhibited twin.
    let received = eventually("a run for the cluster", ALERT_TIMEOUT, || async {
        let received = run_alerts(&stack.remediator).await?;
        ensure!(!received.is_empty(), "no run yet");
        Ok(received)
    })
    .await?;
    ensure!(
        received
            .iter()
            .all(|(cluster, name)| cluster == CLUSTER && name != MIXIN_TWIN),
        "{received:?}"
    );
    drop(stack.cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mixins_alert_alone_reaches_the_remediator_for_the_right_cluster() -> Result<()> {
    let stack = full_cluster_beside_the_mixin(false).await?;
    let received = eventually("the mixin's alert queues a run", ALERT_TIMEOUT, || async {
        let received = run_alerts(&stack.remediator).await?;
        ensure!(
            received.iter().any(|(_, name)| name == MIXIN_TWIN),
            "runs' alerts: {received:?}"
        );
        Ok(received)
    })
    .await
    .with_context(|| format!("Alertmanager: {}", stack.alertmanager.output()))?;
    ensure!(
        received.iter().all(|(cluster, _)| cluster == CLUSTER),
        "{received:?}"
    );
    // Nothing inhibits it, so it pages too.
    eventually("the mixin's alert pages", ALERT_TIMEOUT, || async {
        let paged = paged(&stack.pages);
        ensure!(
            paged.iter().any(|(name, _)| name == MIXIN_TWIN),
            "{paged:?}"
        );
        Ok(())
    })
    .await?;
    drop(stack.cluster);
    Ok(())
}
