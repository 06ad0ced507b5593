//! Every deployment file, checked by the ecosystem's own validators: `promtool check config`,
//! `amtool check-config`, each kustomize overlay rendered by kubectl's kustomize and validated
//! against the Kubernetes schemas with `kubernetes-validate --strict`, the operator's custom
//! resources checked for the fields the operator needs, and every example configuration
//! (deploy/ and the README) loaded by both binaries' `--config.check`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use etcdmedic_tests::certs::TestPki;
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::kustomize::{documents, kind, kustomizations, render};
use etcdmedic_tests::{project_binary, promtool};

use crate::support::{read_yaml, run_ok};
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    repository_root().join("deploy").join(path)
}

fn files_in(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
        })
        .collect();
    files.sort();
    ensure!(
        !files.is_empty(),
        "no {extensions:?} files in {}",
        dir.display()
    );
    Ok(files)
}

/// A tool a test needs, installed by scripts/install-deps.sh.
fn tool(name: &str) -> Result<PathBuf> {
    etcdmedic_tests::python::tool(name).with_context(|| {
        format!("could not find {name} in the deps' virtual environment or on PATH; run scripts/install-deps.sh")
    })
}

#[test]
fn the_prometheus_configs_pass_promtool_check_config() -> Result<()> {
    // Every rule of the file, as promtool counts them: each alert and each recording rule.
    let rules_file =
        std::fs::read_to_string(repository_root().join("alerts/etcdmedic.rules.yaml"))?;
    let rules = rules_file
        .lines()
        .filter(|l| {
            matches!(
                l.trim_start().split(':').next(),
                Some("- alert" | "- record")
            )
        })
        .count();
    ensure!(rules > 20, "{rules} rules in alerts/etcdmedic.rules.yaml");
    for file in files_in(&deploy("prometheus"), &["yml", "yaml"])? {
        // The configs load the rules from rules/ next to themselves.
        let dir = tempfile::tempdir()?;
        let copy = dir.path().join(file.file_name().context("name")?);
        std::fs::copy(&file, &copy)?;
        std::fs::create_dir(dir.path().join("rules"))?;
        std::fs::copy(
            repository_root().join("alerts/etcdmedic.rules.yaml"),
            dir.path().join("rules/etcdmedic.rules.yaml"),
        )?;
        let text = run_ok(
            Command::new(promtool()?)
                .args(["check", "config"])
                .arg(&copy),
        )
        .with_context(|| file.display().to_string())?;
        ensure!(
            text.contains(&format!("{rules} rules found")),
            "{}: {text}",
            file.display()
        );
    }
    Ok(())
}

#[test]
fn the_alertmanager_configs_pass_amtool_check_config() -> Result<()> {
    for file in files_in(&deploy("alertmanager"), &["yml", "yaml"])? {
        let text = run_ok(
            Command::new(etcdmedic_tests::prometheus_tool("amtool")?)
                .arg("check-config")
                .arg(&file),
        )?;
        ensure!(text.contains("SUCCESS"), "{}: {text}", file.display());
        let config = read_yaml(&file)?;
        let route = config["route"]["routes"]
            .as_array()
            .and_then(|routes| {
                routes
                    .iter()
                    .find(|r| r["receiver"] == "etcdmedic-remediator")
            })
            .context("no route to etcdmedic-remediator")?;
        ensure!(
            route["group_by"] == serde_json::json!(["etcd_cluster"]),
            "{route}"
        );
        ensure!(
            route["continue"] == true,
            "the route must let humans see the alerts too"
        );
        // Alertmanager's own route tester: a trigger reaches the remediator and the humans,
        // anything else only the humans.
        let amtool = etcdmedic_tests::prometheus_tool("amtool")?;
        // It warns on stderr that --config.file overrides --alertmanager.url: stdout only.
        let receivers = |labels: &[&str]| -> Result<String> {
            let output = Command::new(&amtool)
                .args(["config", "routes", "test", "--config.file"])
                .arg(&file)
                .args(labels)
                .output()?;
            ensure!(output.status.success(), "amtool: {output:?}");
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        };
        for trigger in [
            "EtcdmedicNoSpaceAlarm",
            "etcdDatabaseHighFragmentationRatio",
        ] {
            let to = receivers(&[&format!("alertname={trigger}"), "etcd_cluster=a"])?;
            ensure!(
                to == "etcdmedic-remediator,team",
                "{}: {trigger} goes to {to}",
                file.display()
            );
        }
        let to = receivers(&["alertname=EtcdmedicNoLeader", "etcd_cluster=a"])?;
        ensure!(
            to == "team",
            "{}: EtcdmedicNoLeader goes to {to}",
            file.display()
        );
        let receiver = config["receivers"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "etcdmedic-remediator"))
            .context("no etcdmedic-remediator receiver")?;
        let webhook = &receiver["webhook_configs"][0];
        ensure!(
            webhook["http_config"]["authorization"]["credentials_file"].is_string(),
            "{webhook}"
        );
        ensure!(
            webhook["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("/webhook/alertmanager")),
            "{webhook}"
        );
    }
    Ok(())
}

/// kubernetes-validate --strict; returns the resources it could not find a schema for.
fn validate_strictly(file: &Path) -> Result<BTreeSet<String>> {
    let text = run_ok(
        Command::new(tool("kubernetes-validate")?)
            .arg("--strict")
            .arg(file),
    )?;
    let mut unknown = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("ERROR") {
            bail!("{}: {line}", file.display());
        }
        if let Some(rest) = line.split("Couldn't find schema for kind ").nth(1) {
            unknown.insert(rest.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    Ok(unknown)
}

/// The fields the prometheus-operator needs in its custom resources, cross-checked against
/// the Services and Secrets of the same render.
fn check_custom_resources(docs: &[Value]) -> Result<()> {
    let services = kind(docs, "Service");
    let monitors = kind(docs, "ServiceMonitor");
    ensure!(monitors.len() == 2, "expected 2 ServiceMonitors");
    for monitor in monitors {
        let selector = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .context("ServiceMonitor without spec.selector.matchLabels")?;
        let service = services
            .iter()
            .find(|s| {
                selector
                    .iter()
                    .all(|(k, v)| s["metadata"]["labels"][k] == *v)
            })
            .with_context(|| format!("no Service matches {}", monitor["metadata"]["name"]))?;
        for endpoint in monitor["spec"]["endpoints"]
            .as_array()
            .context("no endpoints")?
        {
            // The exporter's own `endpoint` label (the member's URL) must survive the
            // operator's target label of the same name (the port's name).
            if monitor["metadata"]["name"] == "etcdmedic-exporter" {
                ensure!(
                    endpoint["honorLabels"] == true,
                    "the exporter's ServiceMonitor must honor its labels: {endpoint}"
                );
            }
            let port = endpoint["port"]
                .as_str()
                .context("endpoint without a port name")?;
            ensure!(
                service["spec"]["ports"]
                    .as_array()
                    .is_some_and(|ports| ports.iter().any(|p| p["name"] == port)),
                "ServiceMonitor {} scrapes port {port:?}, which its Service does not name",
                monitor["metadata"]["name"]
            );
        }
    }
    let rules = kind(docs, "PrometheusRule");
    ensure!(rules.len() == 1, "expected one PrometheusRule");
    for group in rules[0]["spec"]["groups"].as_array().context("no groups")? {
        ensure!(group["name"].is_string(), "a group without a name");
        for rule in group["rules"].as_array().context("a group without rules")? {
            ensure!(
                (rule["alert"].is_string() || rule["record"].is_string())
                    && rule["expr"].is_string(),
                "a rule without alert/record and expr: {rule}"
            );
        }
    }
    let configs = kind(docs, "AlertmanagerConfig");
    ensure!(configs.len() == 1, "expected one AlertmanagerConfig");
    let spec = &configs[0]["spec"];
    let receiver = spec["route"]["receiver"]
        .as_str()
        .context("route without a receiver")?;
    let receivers = spec["receivers"].as_array().context("no receivers")?;
    let named = receivers
        .iter()
        .find(|r| r["name"] == receiver)
        .with_context(|| format!("the route's receiver {receiver:?} is not defined"))?;
    let webhook = &named["webhookConfigs"][0];
    ensure!(webhook["url"].is_string(), "{webhook}");
    let credentials = &webhook["httpConfig"]["authorization"]["credentials"];
    let secret = kind(docs, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == credentials["name"])
        .with_context(|| {
            format!(
                "the webhook's credentials Secret {} is not in the render",
                credentials["name"]
            )
        })?;
    let key = credentials["key"]
        .as_str()
        .context("credentials without a key")?;
    ensure!(
        secret["stringData"][key].is_string() || secret["data"][key].is_string(),
        "Secret {} has no key {key}",
        credentials["name"]
    );
    Ok(())
}

/// The configuration file a render's etcdmedic-config ConfigMap holds.
fn config_text(docs: &[Value]) -> Result<String> {
    let configmap = kind(docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "etcdmedic-config")
        .context("no etcdmedic-config ConfigMap")?;
    configmap["data"]["etcdmedic.yaml"]
        .as_str()
        .map(str::to_string)
        .context("no etcdmedic.yaml")
}

/// Whether the render's configuration keeps the remediator's state in PostgreSQL.
fn shares_postgres(docs: &[Value]) -> Result<bool> {
    let config: Value = yaml_serde::from_str(&config_text(docs)?)?;
    Ok(config["remediator"]["postgres"].is_object())
}

/// What every render must keep: one remediator that never overlaps itself (on SQLite; on
/// PostgreSQL two replicas, one of them a standby), probes,
/// requests, a read-only root filesystem and no privilege escalation.
fn check_workloads(docs: &[Value], non_root: bool) -> Result<()> {
    let deployments = kind(docs, "Deployment");
    ensure!(deployments.len() == 2, "expected 2 Deployments");
    for deployment in deployments {
        let name = deployment["metadata"]["name"].as_str().unwrap_or("?");
        let pod = &deployment["spec"]["template"]["spec"];
        if non_root {
            ensure!(
                pod["securityContext"]["runAsNonRoot"] == true,
                "{name} may run as root"
            );
        }
        for container in pod["containers"].as_array().context("no containers")? {
            let security = &container["securityContext"];
            ensure!(
                security["readOnlyRootFilesystem"] == true,
                "{name}: writable root filesystem"
            );
            ensure!(
                security["allowPrivilegeEscalation"] == false,
                "{name}: privilege escalation allowed"
            );
            ensure!(
                security["capabilities"]["drop"] == serde_json::json!(["ALL"]),
                "{name}: capabilities kept"
            );
            ensure!(
                container["livenessProbe"].is_object() && container["readinessProbe"].is_object(),
                "{name}: probes missing"
            );
            ensure!(
                container["resources"]["requests"].is_object(),
                "{name}: no resource requests"
            );
        }
        let on_volume = pod["volumes"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["persistentVolumeClaim"].is_object()));
        if name == "etcdmedic-remediator" && !shares_postgres(docs)? {
            ensure!(
                deployment["spec"]["replicas"] == 1,
                "more than one remediator on SQLite"
            );
            ensure!(
                deployment["spec"]["strategy"]["type"] == "Recreate",
                "the remediator must be Recreate"
            );
            ensure!(on_volume, "the remediator's state is not on a volume");
        } else if name == "etcdmedic-remediator" {
            // Replicas on PostgreSQL: a standby to take over, announcing where it is
            // reached, no volume, and a disruption budget that keeps one.
            ensure!(deployment["spec"]["replicas"] == 2, "not two replicas");
            ensure!(
                deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0,
                "a rollout may stop both replicas"
            );
            ensure!(!on_volume, "replicas on PostgreSQL need no volume");
            let container = &pod["containers"][0];
            ensure!(
                container["args"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a == "--advertise-url")),
                "the replicas announce no URL to forward to"
            );
            ensure!(
                kind(docs, "PodDisruptionBudget")
                    .iter()
                    .any(|pdb| pdb["spec"]["minAvailable"] == 1
                        && pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
                            == "remediator"),
                "no PodDisruptionBudget keeps a remediator"
            );
        }
    }
    Ok(())
}

#[test]
fn every_kustomization_renders_without_a_warning_and_passes_strict_schema_validation() -> Result<()>
{
    let kubernetes = deploy("kubernetes");
    let mut targets = vec![(kubernetes.join("base"), true)];
    for overlay in std::fs::read_dir(kubernetes.join("overlays"))? {
        let path = overlay?.path();
        // kubeadm reads root-only files from the node: it runs as uid 0 (capabilities dropped).
        let non_root = !path.ends_with("kubeadm");
        targets.push((path, non_root));
    }
    ensure!(targets.len() >= 3, "base, kubeadm and talos expected");
    for (dir, non_root) in targets {
        let render = render(&dir)?;
        ensure!(
            render.warnings.trim().is_empty(),
            "kubectl kustomize {} warned: {}",
            dir.display(),
            render.warnings
        );
        let rendered = render.text;
        let file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
        std::fs::write(file.path(), &rendered)?;
        let unknown = validate_strictly(file.path()).with_context(|| dir.display().to_string())?;
        let expected: BTreeSet<String> = ["AlertmanagerConfig", "PrometheusRule", "ServiceMonitor"]
            .into_iter()
            .map(String::from)
            .collect();
        ensure!(
            unknown == expected,
            "{}: no schema for {unknown:?}",
            dir.display()
        );
        let docs = documents(&rendered)?;
        check_custom_resources(&docs).with_context(|| dir.display().to_string())?;
        check_workloads(&docs, non_root).with_context(|| dir.display().to_string())?;
    }
    // Plain YAML: each file of the base validates on its own, for `kubectl apply -f`.
    for file in files_in(&kubernetes.join("base"), &["yaml"])? {
        if file.ends_with("kustomization.yaml") {
            continue;
        }
        validate_strictly(&file)?;
    }
    Ok(())
}

/// The kube-prometheus-stack component, added to the base as a user's overlay adds it, labels
/// exactly the objects that stack's Prometheus selects by `release:`, and renders cleanly.
#[test]
fn the_kube_prometheus_stack_component_labels_the_monitors_and_rules_only() -> Result<()> {
    // kustomize takes other kustomizations only by relative path: the overlay sits in the
    // repository's target directory, as a user's sits next to their checkout.
    let target = repository_root().join("target");
    std::fs::create_dir_all(&target)?;
    let overlay = tempfile::Builder::new()
        .prefix("kps-overlay-")
        .tempdir_in(&target)?;
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  \
         - ../../deploy/kubernetes/base\ncomponents:\n  \
         - ../../deploy/kubernetes/components/kube-prometheus-stack\n",
    )?;
    let rendered = render(overlay.path())?;
    ensure!(rendered.warnings.trim().is_empty(), "{}", rendered.warnings);
    let docs = documents(&rendered.text)?;
    let labelled: BTreeSet<String> = docs
        .iter()
        .filter(|d| d["metadata"]["labels"]["release"] == "kube-prometheus-stack")
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    let expected: BTreeSet<String> = [
        "PrometheusRule/etcdmedic",
        "ServiceMonitor/etcdmedic-exporter",
        "ServiceMonitor/etcdmedic-remediator",
    ]
    .map(String::from)
    .into();
    ensure!(labelled == expected, "labelled: {labelled:?}");
    let base = documents(&render(&deploy("kubernetes/base"))?.text)?;
    ensure!(
        base.len() == docs.len(),
        "the component added or removed objects"
    );
    Ok(())
}

#[test]
fn the_dockerfile_builds_a_non_root_multi_stage_image_of_both_binaries() -> Result<()> {
    let text = std::fs::read_to_string(repository_root().join("Dockerfile"))?;
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    ensure!(stages >= 2, "not multi-stage");
    ensure!(
        text.contains("distroless"),
        "the runtime image is not distroless"
    );
    ensure!(
        text.lines().any(|l| l.starts_with("USER 65532")),
        "no non-root USER"
    );
    for binary in ["etcdmedic-exporter", "etcdmedic-remediator"] {
        ensure!(
            text.contains(&format!("target/release/{binary}")),
            "{binary} is not in the image"
        );
    }
    ensure!(
        text.contains("--locked"),
        "the build does not use Cargo.lock"
    );
    Ok(())
}

#[test]
fn the_systemd_units_are_hardened_and_check_their_config_first() -> Result<()> {
    for unit in files_in(&deploy("systemd"), &["service"])? {
        let text = std::fs::read_to_string(&unit)?;
        for directive in [
            "User=etcdmedic",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=",
            "SystemCallFilter=@system-service",
            "RestrictAddressFamilies=",
            "MemoryDenyWriteExecute=yes",
        ] {
            ensure!(
                text.contains(directive),
                "{}: no {directive}",
                unit.display()
            );
        }
        ensure!(
            text.contains("--config.check"),
            "{}: no ExecStartPre config check",
            unit.display()
        );
        ensure!(
            text.contains("/etc/etcdmedic/etcdmedic.yaml"),
            "{}",
            unit.display()
        );
    }
    Ok(())
}

/// Example configurations: deploy/systemd's file, the ConfigMaps of the base and every
/// overlay, and the complete examples of the README and the book.
fn example_configs() -> Result<Vec<(String, String)>> {
    let mut configs = vec![(
        "deploy/systemd/etcdmedic.yaml".to_string(),
        std::fs::read_to_string(deploy("systemd/etcdmedic.yaml"))?,
    )];
    for dir in kustomizations()? {
        let docs = documents(&render(&dir)?.text)?;
        configs.push((format!("{} ConfigMap", dir.display()), config_text(&docs)?));
    }
    for file in crate::readme::documentation_files()? {
        let text = std::fs::read_to_string(repository_root().join(&file))?;
        for block in text.split("```yaml\n").skip(1) {
            let block = block.split("```").next().unwrap_or_default();
            if block.lines().any(|l| l.starts_with("clusters:")) {
                configs.push((file.clone(), block.to_string()));
            }
        }
    }
    ensure!(
        configs.len() >= 5,
        "expected more examples, found {}",
        configs.len()
    );
    Ok(configs)
}

/// Gives every `*_file` of a config a real file under `root` (PEM where a certificate or key
/// is expected), so `--config.check` can read what it names.
fn with_files(value: &mut Value, root: &Path, pki: &TestPki, in_server_tls: bool) -> Result<()> {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                let server = in_server_tls || key == "remediator";
                if let (true, Value::String(path)) = (key.ends_with("_file"), &*inner) {
                    let source = match (key.as_str(), server) {
                        ("ca_file" | "client_ca_file", _) => Some(&pki.ca_file),
                        ("cert_file", true) => Some(&pki.server_cert_file),
                        ("key_file", true) => Some(&pki.server_key_file),
                        ("cert_file", false) => Some(&pki.client_cert_file),
                        ("key_file", false) => Some(&pki.client_key_file),
                        _ => None,
                    };
                    let target = root.join(path.trim_start_matches('/'));
                    if let Some(dir) = target.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    match source {
                        Some(source) => {
                            std::fs::copy(source, &target)?;
                        }
                        // Each secret file its own secret, as in the field (the roles of
                        // remediator.auth refuse two with the same).
                        None => std::fs::write(&target, format!("example-secret {path}\n"))?,
                    }
                    *inner = Value::String(target.display().to_string());
                } else {
                    with_files(inner, root, pki, server && key != "clusters")?;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                with_files(item, root, pki, in_server_tls)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[test]
fn every_example_config_passes_config_check_in_both_binaries() -> Result<()> {
    let exporter = project_binary("etcdmedic-exporter")?;
    let remediator = project_binary("etcdmedic-remediator")?;
    for (origin, text) in example_configs()? {
        let dir = tempfile::tempdir()?;
        let pki = TestPki::generate(&dir.path().join("pki"), true, "localhost")?;
        let mut config: Value =
            yaml_serde::from_str(&text).with_context(|| format!("parsing {origin}"))?;
        with_files(&mut config, &dir.path().join("root"), &pki, false)?;
        let path = dir.path().join("etcdmedic.yaml");
        std::fs::write(&path, yaml_serde::to_string(&config)?)?;
        // An example written for the exporter alone has no `remediator:` block: the
        // remediator's service would listen on 0.0.0.0 without credentials, which it refuses.
        let open_service = config["remediator"].get("auth").is_none();
        for (binary, name) in [(&exporter, "exporter"), (&remediator, "remediator")] {
            let mut command = Command::new(binary);
            command
                .args(["serve", "--config.check", "--config"])
                .arg(&path);
            if name == "remediator" && open_service {
                let output = command.output()?;
                let stderr = String::from_utf8_lossy(&output.stderr);
                ensure!(
                    output.status.code() == Some(2)
                        && stderr.contains("remediator.auth: is required when listening on"),
                    "{origin}: the remediator started an open service: {output:?}"
                );
                continue;
            }
            let text =
                run_ok(&mut command).with_context(|| format!("{origin} with etcdmedic-{name}"))?;
            ensure!(text.contains(": ok ("), "{origin}, {name}: {text}");
        }
    }
    Ok(())
}
