//! The Grafana dashboard as a file (stable uid, variables, no hard-coded data source, every
//! panel described) and the generated Kubernetes copies of rules and dashboards, which must
//! match their sources (`make generate` rewrites them).

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::{self, repository_root};
use serde_json::Value;

pub fn dashboard() -> Result<Value> {
    let path = repository_root().join("dashboards/etcdmedic-overview.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every panel with queries (rows left out), with its targets' expressions.
pub fn panels_with_queries(dashboard: &Value) -> Vec<(String, Vec<String>)> {
    dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|panel| panel["type"] != "row")
        .map(|panel| {
            let exprs = panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str().map(str::to_string))
                .collect();
            (panel["title"].as_str().unwrap_or("?").to_string(), exprs)
        })
        .collect()
}

/// Every `datasource` object anywhere in the dashboard.
fn datasources<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "datasource" {
                    found.push(inner);
                }
                datasources(inner, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| datasources(item, found)),
        _ => {}
    }
}

#[test]
fn the_dashboard_has_a_stable_uid_variables_and_no_fixed_data_source() -> Result<()> {
    let dashboard = dashboard()?;
    ensure!(
        dashboard["uid"] == "etcdmedic-overview",
        "uid {}",
        dashboard["uid"]
    );
    let variables: Vec<(&str, &str)> = dashboard["templating"]["list"]
        .as_array()
        .context("no templating")?
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or(""),
                v["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for expected in [
        ("datasource", "datasource"),
        ("etcd_cluster", "query"),
        ("member", "query"),
    ] {
        ensure!(
            variables.contains(&expected),
            "variable {expected:?} missing: {variables:?}"
        );
    }
    let mut found = Vec::new();
    datasources(&dashboard, &mut found);
    ensure!(!found.is_empty());
    for datasource in found {
        ensure!(
            datasource["uid"] == "${datasource}",
            "a fixed data source: {datasource}"
        );
    }
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] != "row" {
            ensure!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "panel {} has no description",
                panel["title"]
            );
        }
    }
    for (title, exprs) in panels_with_queries(&dashboard) {
        ensure!(!exprs.is_empty(), "panel {title:?} has no query");
        for expr in exprs {
            ensure!(
                expr.contains("$etcd_cluster"),
                "panel {title:?} ignores the cluster variable: {expr}"
            );
            let windowed = ["rate(", "increase(", "changes("]
                .iter()
                .any(|f| expr.contains(f));
            ensure!(
                !windowed || expr.contains("[$__rate_interval]"),
                "panel {title:?} uses a fixed window instead of $__rate_interval: {expr}"
            );
        }
    }
    Ok(())
}

/// Imported from a file (grafana.com style), the dashboard asks for its Prometheus
/// (`__inputs`) and the `datasource` variable starts on it; provisioned (the sidecar's
/// ConfigMap), where inputs are ignored, nothing else names the input, so every query goes
/// through the variable and finds the default Prometheus.
#[test]
fn the_dashboard_asks_for_its_data_source_on_import() -> Result<()> {
    let dashboard = dashboard()?;
    let inputs = dashboard["__inputs"].as_array().context("no __inputs")?;
    ensure!(inputs.len() == 1, "{inputs:?}");
    let input = &inputs[0];
    ensure!(
        input["type"] == "datasource" && input["pluginId"] == "prometheus",
        "{input}"
    );
    let name = input["name"].as_str().context("input name")?;
    let reference = format!("${{{name}}}");
    let variable = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "datasource")
        .context("no datasource variable")?;
    ensure!(
        variable["current"]["value"] == reference.as_str(),
        "the datasource variable does not start on the input: {variable}"
    );
    let mut rest = dashboard.clone();
    if let Some(list) = rest["templating"]["list"].as_array_mut() {
        list.retain(|v| v["name"] != "datasource");
    }
    if let Some(object) = rest.as_object_mut() {
        object.remove("__inputs");
    }
    ensure!(
        !rest.to_string().contains(&reference),
        "something besides the datasource variable names {reference}: provisioning would break it"
    );
    ensure!(
        dashboard["__requires"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == "prometheus")),
        "no __requires for Prometheus"
    );
    Ok(())
}

/// A backup's age means something only against its schedule: the panel shows it in
/// `backup.schedule` intervals, and turns red where EtcdmedicBackupMissing fires.
#[test]
fn the_backup_age_is_measured_in_schedule_intervals_and_turns_red_with_the_alert() -> Result<()> {
    let dashboard = dashboard()?;
    let rules = std::fs::read_to_string(repository_root().join("alerts/etcdmedic.rules.yaml"))?;
    let missing = rules
        .split("- alert: EtcdmedicBackupMissing")
        .nth(1)
        .context("no EtcdmedicBackupMissing")?;
    let factor: f64 = missing
        .split(" * etcdmedic_backup_schedule_interval_seconds")
        .next()
        .and_then(|before| before.split_whitespace().last())
        .and_then(|f| f.parse().ok())
        .context("EtcdmedicBackupMissing's factor of the interval")?;
    let panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["targets"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["expr"].as_str().is_some_and(|e| {
                        e.contains("etcdmedic_backup_last_success_timestamp_seconds")
                    })
                })
            })
        })
        .collect();
    ensure!(!panels.is_empty(), "no backup-age panel");
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            ensure!(
                expr.contains("/ on (etcd_cluster, job, instance) group_left () etcdmedic_backup_schedule_interval_seconds"),
                "panel {title:?} shows the age without the schedule: {expr}"
            );
        }
        let steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .context("no thresholds")?;
        let red = steps
            .iter()
            .find(|s| s["color"] == "red")
            .and_then(|s| s["value"].as_f64());
        ensure!(
            red == Some(factor),
            "panel {title:?} turns red at {red:?}, the alert fires at {factor}"
        );
    }
    Ok(())
}

/// Member names repeat across clusters (m0, m1...): a legend that names a member names its
/// cluster, and a sum that keeps the member keeps the cluster, so two clusters' m0 never
/// share a line.
#[test]
fn every_member_in_a_legend_or_a_sum_comes_with_its_cluster() -> Result<()> {
    let dashboard = dashboard()?;
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let legend = target["legendFormat"].as_str().unwrap_or("");
            ensure!(
                !legend.contains("{{member}}") || legend.contains("{{etcd_cluster}}"),
                "{title}: legend {legend:?} names the member without its cluster"
            );
            let expr = target["expr"].as_str().unwrap_or("");
            for by in expr.split("by (").skip(1) {
                let labels = by.split(')').next().unwrap_or("");
                ensure!(
                    !labels.contains("member") || labels.contains("etcd_cluster"),
                    "{title}: `by ({labels})` merges same-named members of different clusters"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn the_kubernetes_copies_match_their_sources() -> Result<()> {
    let update = std::env::var_os("UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for file in generated::all()? {
        let current = std::fs::read_to_string(&file.path).unwrap_or_default();
        if current == file.content {
            continue;
        }
        if update {
            if let Some(dir) = file.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&file.path, &file.content)?;
        } else {
            stale.push(file.path.display().to_string());
        }
    }
    ensure!(
        stale.is_empty(),
        "out of date with their sources (run `make generate`): {}",
        stale.join(", ")
    );
    // The copies are valid YAML holding what they wrap.
    let rule: Value = yaml_serde::from_str(&generated::prometheus_rule()?.content)?;
    ensure!(
        rule["kind"] == "PrometheusRule"
            && rule["spec"]["groups"]
                .as_array()
                .is_some_and(|g| g.len() == 3)
    );
    let configmap: Value = yaml_serde::from_str(&generated::dashboards_configmap()?.content)?;
    let embedded: Value = serde_json::from_str(
        configmap["data"]["etcdmedic-overview.json"]
            .as_str()
            .context("no dashboard in the ConfigMap")?,
    )?;
    ensure!(
        embedded == dashboard()?,
        "the ConfigMap's dashboard differs from the source"
    );
    Ok(())
}
