//! Scrape configs from ServiceMonitors, as the operator generates them (see the module above).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::unsupported;
use serde_json::{json, Map, Value};

/// The ServiceMonitor endpoint fields reproduced here.
const ENDPOINT_FIELDS: &[&str] = &[
    "port",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "relabelings",
    "metricRelabelings",
];

/// The ServiceMonitor spec fields reproduced here.
const SPEC_FIELDS: &[&str] = &["selector", "endpoints", "jobLabel"];

/// Kubernetes discovery's and the operator's label-name sanitising: every character that
/// may not appear in a Prometheus label name becomes `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A ServiceMonitor `relabelings` entry (camelCase) as a Prometheus `relabel_configs` entry.
fn relabeling(entry: &Value) -> Result<Value> {
    let fields = entry.as_object().context("a relabeling is not a mapping")?;
    let mut out = Map::new();
    for (key, value) in fields {
        let name = match key.as_str() {
            "sourceLabels" => "source_labels",
            "targetLabel" => "target_label",
            "separator" | "regex" | "modulus" | "replacement" => key.as_str(),
            "action" => {
                out.insert(
                    "action".into(),
                    Value::String(value.as_str().unwrap_or_default().to_lowercase()),
                );
                continue;
            }
            other => bail!("relabeling field {other} is not reproduced"),
        };
        out.insert(name.into(), value.clone());
    }
    Ok(Value::Object(out))
}

/// The scrape configs the operator generates for `monitor` (one per endpoint, named
/// `serviceMonitor/<namespace>/<name>/<index>`), discovering its targets from `targets_file`
/// (written by [`targets_file`]) and scraping every `interval`.
pub fn scrape_configs(
    monitor: &Value,
    targets_file: &Path,
    interval: Duration,
) -> Result<Vec<Value>> {
    let name = monitor["metadata"]["name"]
        .as_str()
        .context("monitor name")?;
    let namespace = monitor["metadata"]["namespace"]
        .as_str()
        .context("monitor namespace")?;
    let spec = monitor["spec"].as_object().context("monitor spec")?;
    unsupported(spec, SPEC_FIELDS, &format!("ServiceMonitor {name}"))?;
    let mut selection = Vec::new();
    if let Some(labels) = spec
        .get("selector")
        .and_then(|s| s["matchLabels"].as_object())
    {
        // Sorted by label name, as the operator writes them.
        let mut labels: Vec<_> = labels.iter().collect();
        labels.sort_by(|a, b| a.0.cmp(b.0));
        for (label, value) in labels {
            let label = sanitize(label);
            selection.push(json!({
                "action": "keep",
                "source_labels": [format!("__meta_kubernetes_service_label_{label}"),
                                  format!("__meta_kubernetes_service_labelpresent_{label}")],
                "regex": format!("({});true", value.as_str().context("selector value")?),
            }));
        }
    }
    if spec
        .get("selector")
        .is_some_and(|s| s.get("matchExpressions").is_some())
    {
        bail!("ServiceMonitor {name} uses matchExpressions, which are not reproduced");
    }
    let job_source = match spec.get("jobLabel").and_then(Value::as_str) {
        Some(label) => format!("__meta_kubernetes_service_label_{}", sanitize(label)),
        None => "__meta_kubernetes_service_name".to_string(),
    };
    let seconds = format!("{}s", interval.as_secs().max(1));
    let mut configs = Vec::new();
    let endpoints = spec
        .get("endpoints")
        .and_then(Value::as_array)
        .context("monitor endpoints")?;
    for (index, endpoint) in endpoints.iter().enumerate() {
        let fields = endpoint
            .as_object()
            .context("an endpoint is not a mapping")?;
        unsupported(
            fields,
            ENDPOINT_FIELDS,
            &format!("ServiceMonitor {name}'s endpoint {index}"),
        )?;
        let port = endpoint["port"]
            .as_str()
            .context("only named ports are reproduced")?;
        let mut relabel =
            vec![json!({"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"})];
        relabel.extend(selection.iter().cloned());
        relabel.push(json!({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": port}));
        for kind in ["Node", "Pod"] {
            relabel.push(json!({
                "source_labels": ["__meta_kubernetes_endpoint_address_target_kind",
                                  "__meta_kubernetes_endpoint_address_target_name"],
                "separator": ";",
                "regex": format!("{kind};(.*)"),
                "replacement": "${1}",
                "target_label": kind.to_lowercase(),
            }));
        }
        for (source, target) in [
            ("__meta_kubernetes_namespace", "namespace"),
            ("__meta_kubernetes_service_name", "service"),
            ("__meta_kubernetes_pod_name", "pod"),
            ("__meta_kubernetes_pod_container_name", "container"),
        ] {
            relabel.push(json!({"source_labels": [source], "target_label": target}));
        }
        relabel.push(json!({"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"}));
        relabel.push(
            json!({"source_labels": [job_source], "target_label": "job", "replacement": "${1}"}),
        );
        relabel.push(json!({"target_label": "endpoint", "replacement": port}));
        for entry in endpoint["relabelings"].as_array().into_iter().flatten() {
            relabel.push(relabeling(entry)?);
        }
        // One shard: the operator's hashmod with $(SHARD) = 0.
        relabel.push(json!({"source_labels": ["__address__", "__tmp_hash"], "target_label": "__tmp_hash", "regex": "(.+);", "replacement": "$1", "action": "replace"}));
        relabel.push(json!({"source_labels": ["__tmp_hash"], "target_label": "__tmp_hash", "modulus": 1, "action": "hashmod"}));
        relabel.push(json!({"source_labels": ["__tmp_hash", "__tmp_disable_sharding"], "regex": "0;|.+;.+", "action": "keep"}));
        let mut config = json!({
            "job_name": format!("serviceMonitor/{namespace}/{name}/{index}"),
            "honor_labels": endpoint["honorLabels"].as_bool().unwrap_or(false),
            "file_sd_configs": [{"files": [targets_file.display().to_string()]}],
            "scrape_interval": seconds,
            "scrape_timeout": seconds,
            "relabel_configs": relabel,
        });
        if let Some(path) = endpoint["path"].as_str() {
            config["metrics_path"] = path.into();
        }
        if let Some(scheme) = endpoint["scheme"].as_str() {
            config["scheme"] = scheme.into();
        }
        let metric_relabel: Vec<Value> = endpoint["metricRelabelings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(relabeling)
            .collect::<Result<_>>()?;
        if !metric_relabel.is_empty() {
            config["metric_relabel_configs"] = Value::Array(metric_relabel);
        }
        configs.push(config);
    }
    Ok(configs)
}

/// One endpoint of a Service as Kubernetes discovery (role `endpoints`) reports it: a ready
/// address of a running pod, on the Service port named `port`.
pub struct Endpoint<'a> {
    pub service: &'a Value,
    pub port: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    /// `host:port` where the container really listens (on loopback here).
    pub address: String,
}

/// The `file_sd` target group of an endpoint, with the `__meta_kubernetes_*` labels
/// Kubernetes discovery gives it.
pub fn target_group(endpoint: &Endpoint<'_>) -> Result<Value> {
    let metadata = &endpoint.service["metadata"];
    let mut labels = Map::new();
    let mut put = |name: String, value: &str| {
        labels.insert(name, Value::String(value.to_string()));
    };
    put(
        "__meta_kubernetes_namespace".into(),
        metadata["namespace"]
            .as_str()
            .context("service namespace")?,
    );
    put(
        "__meta_kubernetes_service_name".into(),
        metadata["name"].as_str().context("service name")?,
    );
    for (label, value) in metadata["labels"].as_object().into_iter().flatten() {
        let label = sanitize(label);
        put(
            format!("__meta_kubernetes_service_label_{label}"),
            value.as_str().unwrap_or_default(),
        );
        put(
            format!("__meta_kubernetes_service_labelpresent_{label}"),
            "true",
        );
    }
    put("__meta_kubernetes_endpoint_port_name".into(), endpoint.port);
    put("__meta_kubernetes_endpoint_port_protocol".into(), "TCP");
    put("__meta_kubernetes_endpoint_ready".into(), "true");
    put(
        "__meta_kubernetes_endpoint_address_target_kind".into(),
        "Pod",
    );
    put(
        "__meta_kubernetes_endpoint_address_target_name".into(),
        endpoint.pod,
    );
    put("__meta_kubernetes_pod_name".into(), endpoint.pod);
    put(
        "__meta_kubernetes_pod_container_name".into(),
        endpoint.container,
    );
    put("__meta_kubernetes_pod_phase".into(), "Running");
    put("__meta_kubernetes_pod_ready".into(), "true");
    Ok(json!({"targets": [endpoint.address], "labels": labels}))
}

fn has_labels(labels: &Value, wanted: &Value) -> bool {
    wanted
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| labels[key] == *value)
}

/// Every ServiceMonitor of the rendered manifests `docs` as the operator generates it, and
/// the `file_sd` targets Kubernetes would discover in their namespace: every named port of
/// every Service backed by a Deployment's container, listening at `address(service, port)`
/// (a port it returns `None` for is left out). The targets are written to `targets_file`
/// by the caller; every monitor's configs read it, and the operator's rules keep their own.
pub fn from_manifests(
    docs: &[Value],
    targets_file: &Path,
    interval: Duration,
    address: impl Fn(&str, &str) -> Option<String>,
) -> Result<(Vec<Value>, Value)> {
    let mut configs = Vec::new();
    for monitor in crate::kustomize::kind(docs, "ServiceMonitor") {
        configs.extend(scrape_configs(monitor, targets_file, interval)?);
    }
    let mut groups = Vec::new();
    for service in crate::kustomize::kind(docs, "Service") {
        let name = service["metadata"]["name"]
            .as_str()
            .context("service name")?;
        let deployment = crate::kustomize::kind(docs, "Deployment")
            .into_iter()
            .find(|d| {
                d["metadata"]["namespace"] == service["metadata"]["namespace"]
                    && has_labels(
                        &d["spec"]["template"]["metadata"]["labels"],
                        &service["spec"]["selector"],
                    )
            })
            .with_context(|| format!("no Deployment backs Service {name}"))?;
        let deployment_name = deployment["metadata"]["name"]
            .as_str()
            .context("deployment name")?;
        for port in service["spec"]["ports"].as_array().into_iter().flatten() {
            let Some(port_name) = port["name"].as_str() else {
                continue;
            };
            let Some(listening) = address(name, port_name) else {
                continue;
            };
            let target = &port["targetPort"];
            let container = deployment["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| {
                    c["ports"].as_array().into_iter().flatten().any(|p| {
                        (target.is_string() && p["name"] == *target)
                            || (target.is_number() && p["containerPort"] == *target)
                    })
                })
                .and_then(|c| c["name"].as_str())
                .with_context(|| {
                    format!(
                        "no container of {deployment_name} has Service {name}'s port {port_name}"
                    )
                })?;
            // One replica: a name shaped like the ReplicaSet's pods'.
            let pod = format!("{deployment_name}-6d5f8b7c9-q2x7m");
            groups.push(target_group(&Endpoint {
                service,
                port: port_name,
                pod: &pod,
                container,
                address: listening,
            })?);
        }
    }
    Ok((configs, Value::Array(groups)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor() -> Value {
        json!({
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": "x"}},
                "endpoints": [{"port": "metrics", "honorLabels": true,
                               "relabelings": [{"action": "Replace", "targetLabel": "job", "replacement": "j"}]}]
            }
        })
    }

    #[test]
    fn the_operators_rules_come_in_its_order_with_the_endpoints_own_last_before_sharding() {
        let configs = scrape_configs(&monitor(), Path::new("/t.json"), Duration::from_secs(1))
            .expect("a supported monitor");
        let config = &configs[0];
        assert_eq!(config["job_name"], "serviceMonitor/ns/m/0");
        assert_eq!(config["honor_labels"], true);
        let rules = config["relabel_configs"]
            .as_array()
            .expect("relabel_configs");
        assert_eq!(
            rules[1]["source_labels"][0],
            "__meta_kubernetes_service_label_app_kubernetes_io_name"
        );
        assert_eq!(rules[1]["regex"], "(x);true");
        let targets: Vec<&str> = rules
            .iter()
            .filter_map(|r| r["target_label"].as_str())
            .collect();
        assert_eq!(
            targets,
            [
                "__tmp_prometheus_job_name",
                "node",
                "pod",
                "namespace",
                "service",
                "pod",
                "container",
                "job",
                "endpoint",
                "job",
                "__tmp_hash",
                "__tmp_hash"
            ]
        );
        assert_eq!(rules[rules.len() - 4]["action"], "replace");
    }

    #[test]
    fn a_field_it_does_not_reproduce_is_an_error() {
        let mut with_tls = monitor();
        with_tls["spec"]["endpoints"][0]["tlsConfig"] = json!({});
        let err = scrape_configs(&with_tls, Path::new("/t.json"), Duration::from_secs(1))
            .expect_err("tlsConfig is not reproduced");
        assert!(err.to_string().contains("tlsConfig"), "{err}");
    }
}
