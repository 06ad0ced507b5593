//! A container of a rendered manifest, laid out as the kubelet would: each `volumeMount` at
//! its `mountPath` (a ConfigMap's and a Secret's keys as files, with the volume's
//! `defaultMode` and the pod's `fsGroup`; a `hostPath` as the node has it; a claim or an
//! `emptyDir` writable by the `fsGroup`), its `command` and `args` (or the image's), its
//! `env`, and the user of its security context (or the image's).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::sandbox::ROOT;
use super::{named_files, Identity, Image, Launch, Sandbox};
use crate::kustomize::{kind, named};

/// The files kubeadm keeps in a node's `/etc/kubernetes/pki/etcd`, keys 0600, certificates
/// 0644: what a pod mounting the whole directory can read.
const KUBEADM_ETCD_PKI: &[&str] = &[
    "ca.crt",
    "ca.key",
    "healthcheck-client.crt",
    "healthcheck-client.key",
    "peer.crt",
    "peer.key",
    "server.crt",
    "server.key",
];

pub struct Container {
    pub launch: Launch,
    /// `etcdmedic-exporter` or `etcdmedic-remediator`.
    pub binary: String,
    pub sandbox: Sandbox,
    /// The configuration file it is given, as written in the render.
    pub config: Option<Value>,
}

/// Every etcdmedic container of the Deployments in `docs`, `label` naming the render.
pub fn containers(label: &str, docs: &[Value], image: &Image) -> Result<Vec<Container>> {
    let mut containers = Vec::new();
    for deployment in kind(docs, "Deployment") {
        let pod = &deployment["spec"]["template"]["spec"];
        for container in pod["containers"].as_array().into_iter().flatten() {
            let name = format!(
                "{label}: Deployment {}, container {}",
                deployment["metadata"]["name"].as_str().unwrap_or("?"),
                container["name"].as_str().unwrap_or("?")
            );
            containers
                .push(lay_out(&name, docs, pod, container, image).with_context(|| name.clone())?);
        }
    }
    Ok(containers)
}

fn lay_out(
    name: &str,
    docs: &[Value],
    pod: &Value,
    container: &Value,
    image: &Image,
) -> Result<Container> {
    let security = |key: &str| {
        container["securityContext"][key]
            .as_u64()
            .or_else(|| pod["securityContext"][key].as_u64())
            .map(|id| id as u32)
    };
    let fs_group = pod["securityContext"]["fsGroup"].as_u64().map(|g| g as u32);
    let identity = Identity {
        uid: security("runAsUser").unwrap_or(image.user.0),
        gid: security("runAsGroup").unwrap_or(image.user.1),
        groups: fs_group.into_iter().collect(),
    };
    let mut sandbox = Sandbox::new()?;
    let mut configs = BTreeMap::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let at = mount["mountPath"]
            .as_str()
            .context("a mount without mountPath")?;
        let volume_name = &mount["name"];
        let volume = pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == *volume_name))
            .with_context(|| format!("no volume {volume_name}"))?;
        mount_volume(&mut sandbox, docs, volume, at, fs_group, &mut configs)?;
    }

    let env = environment(container, image);
    let (command, args) = match (
        container["command"].as_array(),
        container["args"].as_array(),
    ) {
        (Some(command), args) => (
            strings(command),
            args.map(|a| strings(a)).unwrap_or_default(),
        ),
        (None, Some(args)) => (image.entrypoint.clone(), strings(args)),
        (None, None) => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let mut line = command
        .into_iter()
        .chain(args)
        .map(|arg| expand(&arg, &env));
    let program = line
        .next()
        .context("no command, in the container or the image")?;
    let binary = Path::new(&program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let args: Vec<String> = line.collect();
    let config_path = args
        .iter()
        .position(|arg| arg == "--config")
        .and_then(|at| args.get(at + 1))
        .cloned()
        .or_else(|| {
            env.iter()
                .find(|(name, _)| name == "ETCDMEDIC_CONFIG")
                .map(|(_, value)| value.clone())
        });
    let config = match config_path {
        Some(path) => Some(
            configs
                .get(&path)
                .with_context(|| format!("the configuration {path} is not in a mount"))?
                .clone(),
        ),
        None => None,
    };
    let launch = Launch {
        name: name.to_string(),
        program: image.program(&program)?,
        args: args.iter().map(|arg| sandbox.rebase(arg)).collect(),
        env: env
            .into_iter()
            .map(|(name, value)| {
                let value = if name == "PATH" {
                    value
                } else {
                    sandbox.rebase(&value)
                };
                (name, value)
            })
            .collect(),
        identity,
    };
    Ok(Container {
        launch,
        binary,
        sandbox,
        config,
    })
}

fn mount_volume(
    sandbox: &mut Sandbox,
    docs: &[Value],
    volume: &Value,
    at: &str,
    fs_group: Option<u32>,
    configs: &mut BTreeMap<String, Value>,
) -> Result<()> {
    let group = fs_group.unwrap_or(0);
    // The kubelet gives the fsGroup read access to what it projects.
    let projected_mode = |volume: &Value| {
        let mode = volume["defaultMode"].as_u64().unwrap_or(0o644) as u32;
        if fs_group.is_some() {
            mode | 0o040
        } else {
            mode
        }
    };
    if let Some(config_map) = volume.get("configMap") {
        let name = config_map["name"].as_str().unwrap_or_default();
        let document = named(docs, "ConfigMap", name)
            .with_context(|| format!("no ConfigMap {name} in the render"))?;
        sandbox.dir(at, 0o755, (0, group))?;
        for (key, text) in document["data"].as_object().into_iter().flatten() {
            let text = text.as_str().context("ConfigMap data that is not text")?;
            let path = format!("{at}/{key}");
            let content = match yaml_serde::from_str::<Value>(text) {
                Ok(config) if config.get("clusters").is_some() => {
                    configs.insert(path.clone(), config);
                    sandbox.rebase_config(text)?
                }
                _ => text.to_string(),
            };
            let mode = projected_mode(config_map);
            sandbox.file(&path, content.as_bytes(), mode, (0, group), None)?;
        }
    } else if let Some(secret) = volume.get("secret") {
        let name = secret["secretName"].as_str().unwrap_or_default();
        let document = named(docs, "Secret", name)
            .with_context(|| format!("no Secret {name} in the render"))?;
        sandbox.dir(at, 0o755, (0, group))?;
        let keys: BTreeSet<&String> = ["stringData", "data"]
            .iter()
            .flat_map(|field| document[field].as_object().into_iter().flatten())
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            // Each Secret's keys hold their own values, as real ones do (three Secrets with
            // a `token` key are three tokens).
            let content = sandbox.plausible_from(name, key)?;
            let mode = projected_mode(secret);
            let from = format!("Secret {name}");
            sandbox.file(
                &format!("{at}/{key}"),
                &content,
                mode,
                (0, group),
                Some(&from),
            )?;
        }
    } else if let Some(host) = volume.get("hostPath") {
        let path = host["path"].as_str().context("hostPath without a path")?;
        let from = format!("hostPath {path}");
        let node_mode = |file: &str| if file.ends_with(".key") { 0o600 } else { 0o644 };
        match host["type"].as_str().unwrap_or_default() {
            "File" => {
                let file = Path::new(path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let content = sandbox.plausible(file)?;
                sandbox.file(at, &content, node_mode(file), ROOT, Some(&from))?;
            }
            "Directory" if path == "/etc/kubernetes/pki/etcd" => {
                sandbox.dir(at, 0o755, ROOT)?;
                for file in KUBEADM_ETCD_PKI {
                    let content = sandbox.plausible(file)?;
                    let inside = format!("{at}/{file}");
                    sandbox.file(&inside, &content, node_mode(file), ROOT, Some(&from))?;
                }
            }
            other => {
                bail!("hostPath {path} of type {other:?}: the test knows no node layout for it")
            }
        }
    } else if volume.get("persistentVolumeClaim").is_some() || volume.get("emptyDir").is_some() {
        match fs_group {
            Some(group) => sandbox.dir(at, 0o2775, (0, group))?,
            None => sandbox.dir(at, 0o755, ROOT)?,
        };
    } else {
        bail!(
            "volume {} of a kind the test does not lay out",
            volume["name"]
        );
    }
    Ok(())
}

/// The container's environment: the image's `PATH`, then its own variables (a pod's address
/// is loopback's).
fn environment(container: &Value, image: &Image) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), image.path_env())];
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap_or_default().to_string();
        let value = match (
            &variable["value"],
            &variable["valueFrom"]["fieldRef"]["fieldPath"],
        ) {
            (Value::String(value), _) => value.clone(),
            (_, Value::String(field)) if field == "status.podIP" => "127.0.0.1".to_string(),
            _ => format!("example-{name}"),
        };
        env.push((name, value));
    }
    env
}

/// `$(NAME)` replaced by the variable's value, as the kubelet does in `command` and `args`.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    env.iter().fold(arg.to_string(), |arg, (name, value)| {
        arg.replace(&format!("$({name})"), value)
    })
}

fn strings(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
        .collect()
}

impl Container {
    /// The credentials the process can read that its configuration does not name: for the
    /// exporter, anything beyond the clusters' own; for the remediator, anything the file
    /// does not name at all.
    pub fn unneeded_credentials(&self) -> Result<Vec<String>> {
        let needed = match &self.config {
            Some(config) => named_files(config, self.binary == "etcdmedic-exporter"),
            None => BTreeSet::new(),
        };
        let unneeded = self
            .sandbox
            .unneeded_credentials(&needed, &self.launch.identity)?;
        Ok(unneeded
            .into_iter()
            .map(|credential| format!("{} (from {})", credential.path, credential.from))
            .collect())
    }
}
