//! The Kubernetes copies of the rules and the dashboard, rendered from their one source
//! (`alerts/etcdmedic.rules.yaml`, `dashboards/*.json`). The rendering is textual: the source
//! goes in whole, comments and all, indented under its Kubernetes wrapper.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The repository's top directory.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A generated file: where it goes and what it must contain.
pub struct Generated {
    pub path: PathBuf,
    pub content: String,
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const HEADER: &str =
    "# Generated from {source} by `make generate`; edit the source, not this file.\n";

/// `deploy/kubernetes/base/prometheusrule.yaml`: the rules file as a prometheus-operator
/// PrometheusRule.
pub fn prometheus_rule() -> Result<Generated> {
    let root = repository_root();
    let source = root.join("alerts/etcdmedic.rules.yaml");
    let rules = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    let groups_at = rules
        .find("\ngroups:")
        .context("the rules file has no top-level `groups:`")?;
    let content = format!(
        "{}apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: etcdmedic\n  \
         labels:\n    app.kubernetes.io/name: etcdmedic\n    app.kubernetes.io/component: alert-rules\n\
         spec:\n{}\n",
        HEADER.replace("{source}", "alerts/etcdmedic.rules.yaml"),
        indent(rules[groups_at + 1..].trim_end(), 2)
    );
    Ok(Generated {
        path: root.join("deploy/kubernetes/base/prometheusrule.yaml"),
        content,
    })
}

/// `deploy/kubernetes/base/grafana-dashboards.yaml`: every dashboard in a ConfigMap labelled for
/// Grafana's dashboard sidecar (kube-prometheus-stack's `grafana_dashboard: "1"`).
pub fn dashboards_configmap() -> Result<Generated> {
    let root = repository_root();
    let dir = root.join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(std::result::Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut data = String::new();
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .context("dashboard file name")?;
        let json =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        data.push_str(&format!("  {name}: |\n{}\n", indent(json.trim_end(), 4)));
    }
    let content = format!(
        "{}apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: etcdmedic-dashboards\n  labels:\n    \
         app.kubernetes.io/name: etcdmedic\n    grafana_dashboard: \"1\"\ndata:\n{data}",
        HEADER.replace("{source}", "dashboards/"),
    );
    Ok(Generated {
        path: root.join("deploy/kubernetes/base/grafana-dashboards.yaml"),
        content,
    })
}

/// Every generated file.
pub fn all() -> Result<Vec<Generated>> {
    Ok(vec![prometheus_rule()?, dashboards_configmap()?])
}
