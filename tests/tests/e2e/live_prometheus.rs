//! The rules and the dashboard against a real Prometheus 3.5 scraping a real exporter (two
//! real 3-member clusters) and a real remediator service as prometheus-operator would: the
//! scrape configuration it generates from the shipped kustomize base's ServiceMonitors
//! (`etcdmedic_tests::operator`) and the rules of the base's PrometheusRule. Fragmentation,
//! NOSPACE and a killed member make their alerts fire, read back from `/api/v1/alerts`; then
//! every dashboard query and every selector of every rule returns data with the labels it
//! promises: the etcd member's URL as `endpoint`, the cluster, the job names the rules expect,
//! and the exporter-down alerts silent.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::kustomize::{documents, kind, render};
use etcdmedic_tests::prometheus::{Prometheus, INTERVAL};
use etcdmedic_tests::workload::{fill_to_nospace, fragment, Fragmentation};
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion, RemediatorService, RunningExporter};
use serde_json::{json, Value};
use std::path::Path;

use crate::alert_rules::alert_rules;
use crate::dashboards::dashboard;

const TOKEN: &str = "live-test-token";
/// Alerts need a scrape, an evaluation and their shortened `for`: seconds.
const ALERT_TIMEOUT: Duration = Duration::from_secs(60);

/// The dashboard's variables, as "All" selects them; `$__rate_interval` as Grafana computes
/// it for a 1 s scrape would be 4 s, a minute keeps a few scrapes in every window.
fn substitute(expr: &str) -> String {
    expr.replace("$etcd_cluster", ".+")
        .replace("$member", ".*")
        .replace("$__rate_interval", "1m")
}

/// The labels a legend (`{{member}} file`) needs from every series.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| {
            part.split_once("}}")
                .map(|(label, _)| label.trim().to_string())
        })
        .collect()
}

/// What a Prometheus runs besides the operator's scrape configs and the base's rules.
#[derive(Default)]
pub struct Beside {
    /// Scrape configs after the operator's.
    pub scrape_configs: Vec<Value>,
    /// Rule groups (as in a rules file) after the base's, as they are.
    pub rule_groups: Vec<Value>,
    /// Leaves the base's PrometheusRule out (a user of the etcd mixin alone).
    pub without_base_rules: bool,
    /// `host:port` of Alertmanagers the alerts go to.
    pub alertmanagers: Vec<String>,
}

/// Prometheus 3.5 with the scrape configuration prometheus-operator generates from the
/// shipped base's ServiceMonitors, each Service's port listening where `address` says, and
/// the rules of the base's PrometheusRule with every `for` 1 s and `keep_firing_for` 3 s.
pub async fn operator_prometheus(
    address: impl Fn(&str, &str) -> Option<String>,
    beside: Beside,
) -> Result<Prometheus> {
    let docs = documents(&render(&repository_root().join("deploy/kubernetes/base"))?.text)?;
    let rule = kind(&docs, "PrometheusRule");
    ensure!(
        rule.len() == 1,
        "the base ships {} PrometheusRules",
        rule.len()
    );
    let mut groups = if beside.without_base_rules {
        json!([])
    } else {
        rule[0]["spec"]["groups"].clone()
    };
    for group in groups.as_array_mut().into_iter().flatten() {
        for rule in group["rules"].as_array_mut().into_iter().flatten() {
            if rule.get("for").is_some() {
                rule["for"] = "1s".into();
            }
            if rule.get("keep_firing_for").is_some() {
                rule["keep_firing_for"] = "3s".into();
            }
        }
    }
    if let Some(list) = groups.as_array_mut() {
        list.extend(beside.rule_groups);
    }
    let (mut scrape_configs, targets) = etcdmedic_tests::operator::from_manifests(
        &docs,
        Path::new("targets.json"),
        INTERVAL,
        address,
    )?;
    scrape_configs.extend(beside.scrape_configs);
    // Prometheus reads YAML, of which JSON is a subset. The external label is the one the
    // operator gives a Prometheus; it reaches Alertmanager with every alert.
    let config = json!({
        "global": {"evaluation_interval": format!("{}s", INTERVAL.as_secs()),
                   "external_labels": {"prometheus": "monitoring/kube-prometheus-stack-prometheus"}},
        "rule_files": ["etcdmedic.rules.yaml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": beside.alertmanagers}]}]},
        "scrape_configs": scrape_configs,
    });
    Prometheus::start_with(
        &serde_json::to_string_pretty(&config)?,
        &[
            (
                "etcdmedic.rules.yaml",
                serde_json::to_string(&json!({ "groups": groups }))?,
            ),
            ("targets.json", serde_json::to_string_pretty(&targets)?),
        ],
    )
    .await
}

/// Both targets are up under the job names the rules expect, labelled as the operator labels
/// them: `endpoint` the port's name, `namespace`, `service`, `pod`, `container`.
pub async fn targets_carry_the_operators_labels(prometheus: &Prometheus) -> Result<()> {
    for (job, port) in [
        ("etcdmedic-exporter", "metrics"),
        ("etcdmedic-remediator", "http"),
    ] {
        let up = eventually(&format!("{job} is scraped"), ALERT_TIMEOUT, || async {
            let up = prometheus
                .query(&format!("up{{job=\"{job}\"}} == 1"))
                .await?;
            ensure!(up.len() == 1, "up{{job={job}}}: {up:?}");
            Ok(up)
        })
        .await?;
        let labels = &up[0]["metric"];
        for (label, value) in [
            ("endpoint", port),
            ("namespace", "etcdmedic"),
            ("service", job),
            ("container", job.trim_start_matches("etcdmedic-")),
        ] {
            ensure!(
                labels[label] == value,
                "{job}'s up has {label}={} (wanted {value}): {labels}",
                labels[label]
            );
        }
        ensure!(
            labels["pod"].as_str().is_some_and(|p| p.starts_with(job)),
            "{job}'s pod: {labels}"
        );
    }
    Ok(())
}

/// Waits until at least `count` instances of the alert fire (members' scrapes do not all
/// change at the same moment), and returns them.
async fn fires(prometheus: &Prometheus, name: &str, count: usize) -> Result<Vec<Value>> {
    let firing = eventually(&format!("{count} {name} fire"), ALERT_TIMEOUT, || async {
        let firing = prometheus.firing(name).await?;
        ensure!(
            firing.len() >= count,
            "{} firing; active alerts: {:?}",
            firing.len(),
            prometheus.alerts().await?
        );
        Ok(firing)
    })
    .await;
    firing.with_context(|| format!("Prometheus output:\n{}", prometheus.output()))
}

fn has_labels(alert: &Value, expected: &[(&str, &str)]) -> bool {
    expected
        .iter()
        .all(|(label, value)| alert["labels"][label] == *value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_on_real_data_and_every_query_returns_labelled_data() -> Result<()> {
    // "frag" gets fragmented past the 100 MiB floor; "full" has a small quota. "frag" runs
    // the newest etcd, whose members report what only 3.6+ reports (the downgrade state).
    let frag = EtcdCluster::builder(EtcdVersion::NEWEST)
        .members(3)
        .start()
        .await?;
    let mut full = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .quota(16 * 1024 * 1024)
        .start()
        .await?;
    let dir = tempfile::Builder::new()
        .prefix("etcdmedic-live-")
        .tempdir()?;
    std::fs::write(dir.path().join("token"), TOKEN)?;
    // "full" backs up with an etcd that will not start: its backups fail their drill.
    let broken = dir.path().join("broken-bin");
    std::fs::create_dir_all(&broken)?;
    std::os::unix::fs::symlink(
        full.version().bin_dir()?.join("etcdutl"),
        broken.join("etcdutl"),
    )?;
    std::fs::write(broken.join("etcd"), "#!/bin/sh\nexit 3\n")?;
    std::fs::set_permissions(
        broken.join("etcd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let full_entry = format!(
        "{}    backup: {{restore_drill: {{bin_dir: {}}}}}\n",
        full.config_entry("full"),
        broken.display()
    );
    let config = dir.path().join("etcdmedic.yaml");
    std::fs::write(
        &config,
        format!(
            "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\nremediator:\n  state_path: {}\n  \
             auth: {{bearer_token_file: {}}}\nbackup:\n  schedule: '0 3 1 1 *'\n  destinations: [{{name: near, kind: \
             local, path: {}}}]\n  restore_drill: {{bin_dir: {}}}\nclusters:\n{}{}",
            dir.path().join("snapshots").display(),
            dir.path().join("state.sqlite").display(),
            dir.path().join("token").display(),
            dir.path().join("backups").display(),
            frag.version().bin_dir()?.display(),
            frag.config_entry("frag"),
            full_entry,
        ),
    )?;
    let exporter = RunningExporter::start(&config).await?;
    let remediator = RemediatorService::start(&config, Some(TOKEN)).await?;
    let exporter_address = exporter.base_url.trim_start_matches("http://").to_string();
    let prometheus = operator_prometheus(
        |service, port| match (service, port) {
            ("etcdmedic-exporter", "metrics") => Some(exporter_address.clone()),
            ("etcdmedic-remediator", "http") => Some(
                remediator
                    .base_url
                    .trim_start_matches("http://")
                    .to_string(),
            ),
            _ => None,
        },
        Beside::default(),
    )
    .await?;
    targets_carry_the_operators_labels(&prometheus).await?;

    // Fragmentation: 160 MiB written over 20 MiB kept, so well over 100 MiB free.
    let spec = Fragmentation {
        keys: 20,
        value_bytes: 1024 * 1024,
        rounds: 8,
    };
    fragment(&frag.clients().await?, spec).await?;
    let firing = fires(&prometheus, "EtcdmedicDatabaseHighFragmentation", 3).await?;
    ensure!(
        firing.len() == 3
            && firing
                .iter()
                .all(|a| has_labels(a, &[("etcd_cluster", "frag"), ("severity", "warning")])),
        "{firing:?}"
    );
    for member in ["m0", "m1", "m2"] {
        ensure!(
            firing.iter().any(|a| a["labels"]["member"] == member),
            "no alert for {member}: {firing:?}"
        );
    }
    ensure!(
        firing[0]["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/docs/runbooks/EtcdmedicDatabaseHighFragmentation.md")),
        "{firing:?}"
    );

    // NOSPACE.
    let mut client = full.client(0).await?;
    fill_to_nospace(&mut client, 256 * 1024, 1000).await?;
    let firing = fires(&prometheus, "EtcdmedicNoSpaceAlarm", 1).await?;
    ensure!(
        firing.iter().all(|a| has_labels(
            a,
            &[
                ("etcd_cluster", "full"),
                ("alarm", "NOSPACE"),
                ("severity", "critical")
            ]
        )),
        "{firing:?}"
    );
    let quota = fires(&prometheus, "EtcdmedicQuotaNearlyFull", 1).await?;
    ensure!(
        quota.iter().all(|a| a["labels"]["etcd_cluster"] == "full"),
        "{quota:?}"
    );

    // A killed member.
    full.kill(2)?;
    let firing = fires(&prometheus, "EtcdmedicMemberUnreachable", 1).await?;
    let killed = full.endpoints()[2].clone();
    ensure!(
        firing.len() == 1
            && has_labels(
                &firing[0],
                &[
                    ("etcd_cluster", "full"),
                    ("member", "m2"),
                    ("endpoint", &killed)
                ]
            ),
        "{firing:?}"
    );
    fires(&prometheus, "EtcdmedicQuorumAtRisk", 1).await?;

    // Remediation data: a successful run of "frag", a refused one of "full" (member down).
    for (cluster, outcome) in [("frag", "succeeded"), ("full", "failed")] {
        let (status, answer) = remediator
            .post(&format!("/api/v1/clusters/{cluster}/remediate"))
            .await?;
        ensure!(status == 202, "{status} {answer}");
        let id = answer["decision"]["run_id"].as_i64().context("run id")?;
        let run = remediator
            .wait_for_run(id, Duration::from_secs(120))
            .await?;
        ensure!(run["outcome"] == outcome, "{cluster}: {run}");
    }
    // Backup data: a backup of "frag", and one of "full" that fails its drill.
    for (cluster, outcome) in [("frag", "succeeded"), ("full", "failed")] {
        let (status, answer) = remediator
            .post(&format!("/api/v1/clusters/{cluster}/backup"))
            .await?;
        ensure!(status == 202, "{status} {answer}");
        eventually(
            &format!("the backup of {cluster} is recorded"),
            Duration::from_secs(120),
            || async {
                let (_, body) = remediator
                    .get(&format!("/api/v1/backups?cluster={cluster}"))
                    .await?;
                ensure!(body["backups"][0]["outcome"] == outcome, "{body}");
                Ok(())
            },
        )
        .await?;
    }
    let drill = fires(&prometheus, "EtcdmedicRestoreDrillFailed", 1).await?;
    ensure!(
        drill.iter().all(|a| a["labels"]["etcd_cluster"] == "full"),
        "{drill:?}"
    );
    let failed = fires(&prometheus, "EtcdmedicRemediationFailed", 1).await?;
    ensure!(
        failed.iter().all(|a| a["labels"]["etcd_cluster"] == "full"),
        "{failed:?}"
    );
    eventually(
        "Prometheus has the snapshot of the run",
        ALERT_TIMEOUT,
        || async {
            ensure!(!prometheus
                .query("etcdmedic_snapshot_last_success_timestamp_seconds")
                .await?
                .is_empty());
            Ok(())
        },
    )
    .await?;

    // Every dashboard query returns data carrying the labels its legend uses.
    let dashboard = dashboard()?;
    let mut empty = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let result = prometheus.query(&substitute(expr)).await?;
            if result.is_empty() {
                empty.push(format!("panel {title:?}: {expr}"));
                continue;
            }
            let mut wanted = legend_labels(target["legendFormat"].as_str().unwrap_or(""));
            if target["format"] == "table" {
                wanted = vec!["etcd_cluster".into(), "member".into()];
            }
            for series in &result {
                for label in &wanted {
                    ensure!(
                        series["metric"][label].is_string(),
                        "panel {title:?}: {expr} returned a series without {label}: {series}"
                    );
                }
            }
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let expr = annotation["expr"].as_str().unwrap_or_default();
        if prometheus.query(&substitute(expr)).await?.is_empty() {
            empty.push(format!("annotation {}: {expr}", annotation["name"]));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(definition) = variable["definition"].as_str() else {
            continue;
        };
        // label_values(<selector>, <label>)
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .context("variable query")?;
        let (selector, label) = inner.rsplit_once(',').context("label_values arguments")?;
        let result = prometheus.query(&substitute(selector.trim())).await?;
        if !result.iter().any(|s| s["metric"][label.trim()].is_string()) {
            empty.push(format!("variable {}: {definition}", variable["name"]));
        }
    }
    ensure!(
        empty.is_empty(),
        "queries that returned nothing:\n{}",
        empty.join("\n")
    );

    // Every rule evaluates cleanly, and every selector in it has data with the labels the
    // alert keeps.
    for rule in prometheus.rules().await? {
        ensure!(
            rule["health"] == "ok",
            "rule {} is unhealthy: {}",
            rule["name"],
            rule["lastError"]
        );
    }
    for rule in alert_rules()? {
        let name = rule["alert"].as_str().unwrap_or("?");
        let expr = rule["expr"].as_str().unwrap_or_default();
        prometheus
            .query(expr)
            .await
            .with_context(|| format!("{name}'s expression"))?;
        for (selector, labels) in selectors(expr) {
            let result = prometheus.query(&selector).await?;
            ensure!(!result.is_empty(), "{name}: {selector} returned nothing");
            for label in labels {
                ensure!(
                    result.iter().all(|s| s["metric"][label].is_string()),
                    "{name}: {selector} has series without {label}: {result:?}"
                );
            }
        }
    }

    // Under the operator's labels the exporter's own `endpoint` (the member's URL) stays
    // itself, nothing is renamed `exported_*`, and the down alerts stayed silent.
    let members: Vec<String> = frag
        .endpoints()
        .into_iter()
        .chain(full.endpoints())
        .collect();
    let per_member = prometheus
        .query("{job=\"etcdmedic-exporter\", __name__=~\"etcdmedic_member_.+\"}")
        .await?;
    ensure!(!per_member.is_empty(), "no per-member series");
    for series in &per_member {
        let endpoint = series["metric"]["endpoint"].as_str().unwrap_or_default();
        ensure!(
            members.iter().any(|m| m == endpoint),
            "a per-member series whose endpoint is not a member's URL: {series}"
        );
    }
    for label in [
        "endpoint",
        "job",
        "instance",
        "namespace",
        "service",
        "pod",
        "container",
    ] {
        let renamed = prometheus
            .query(&format!("{{exported_{label}=~\".+\"}}"))
            .await?;
        ensure!(
            renamed.is_empty(),
            "series with exported_{label}: {renamed:?}"
        );
    }
    let down: Vec<Value> = prometheus
        .alerts()
        .await?
        .into_iter()
        .filter(|a| {
            a["labels"]["alertname"]
                .as_str()
                .is_some_and(|n| n == "EtcdmedicExporterDown" || n == "EtcdmedicRemediatorDown")
        })
        .collect();
    ensure!(down.is_empty(), "a down alert while both are up: {down:?}");
    Ok(())
}

/// The vector selectors of an expression (`metric{matchers}`), with the labels their series
/// must carry.
fn selectors(expr: &str) -> Vec<(String, Vec<&'static str>)> {
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    let mut index = 0;
    while index < expr.len() {
        let rest = &expr[index..];
        let starts_word =
            index == 0 || !(bytes[index - 1].is_ascii_alphanumeric() || bytes[index - 1] == b'_');
        let name_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if name_len == 0 {
            index += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let name = &rest[..name_len];
        let after = &rest[name_len..];
        let metric = starts_word
            && (name.starts_with("etcdmedic_") || (name == "up" && after.starts_with('{')));
        if metric {
            let selector_len = if after.starts_with('{') {
                after.find('}').map_or(0, |end| end + 1)
            } else {
                0
            };
            let selector = format!("{name}{}", &after[..selector_len]);
            let labels = if name == "up" {
                vec!["job", "instance"]
            } else if name.starts_with("etcdmedic_member_") {
                vec!["etcd_cluster", "member"]
            } else {
                vec!["etcd_cluster"]
            };
            if !found.iter().any(|(s, _)| *s == selector) {
                found.push((selector, labels));
            }
            index += name_len + selector_len;
        } else {
            index += name_len;
        }
    }
    found
}

#[test]
fn selectors_are_found_with_their_matchers() {
    let found = selectors(
        "max by (etcd_cluster) (etcdmedic_remediation_last_run_timestamp_seconds{outcome=~\"failed|partial\"}) > up{job=\"x\"} and etcdmedic_member_up == 0",
    );
    let names: Vec<&str> = found.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcdmedic_remediation_last_run_timestamp_seconds{outcome=~\"failed|partial\"}",
            "up{job=\"x\"}",
            "etcdmedic_member_up"
        ]
    );
}
