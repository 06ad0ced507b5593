//! The seed's "Downgrade v3.6 to v3.5" with etcdmedic's verbs: a 3-member 3.6.15 cluster
//! with data is validated (one minor at a time), enabled after a verified backup, and each
//! member's binary replaced with 3.5.30 in the order `downgrade status` names, the leader
//! last after `forfeit-leadership`; every key, equal HashKV everywhere, and `status` exit 0
//! at the end. A cancel before any member is replaced puts the storage back at 3.6, and a
//! cluster that cannot downgrade (3.4, 3.5) is told so with nothing changed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use etcdmedic_tests::{eventually, project_binary, EtcdCluster, EtcdVersion, RunningExporter};
use serde_json::Value;

use crate::documented::Document;
use crate::support::{remediator_exits, remediator_on_it, stderr, stdout, write_file};

const KEYS: usize = 100;
/// Long enough for a replaced member to start and the storage migration to happen.
const STEP: Duration = Duration::from_secs(60);

/// `downgrade status -o json`: the members and the next step.
async fn status(config: &Path) -> Result<Value> {
    let output = remediator_on_it(config, &["downgrade", "status", "-o", "json"]).await?;
    serde_json::from_str(&stdout(&output))
        .with_context(|| format!("status -o json: {}{}", stdout(&output), stderr(&output)))
}

/// A cluster of `version` with keys in it, and a configuration with a local backup
/// destination whose drill uses the cluster's own binaries.
async fn cluster_with_data(version: EtcdVersion) -> Result<(EtcdCluster, std::path::PathBuf)> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let mut client = cluster.client(0).await?;
    for i in 0..KEYS {
        client
            .put(format!("/downgrade/{i:03}"), format!("value-{i}"), None)
            .await?;
    }
    let yaml = format!(
        "remediation:\n  snapshot_dir: {}\nbackup:\n  destinations: [{{name: near, kind: local, \
         path: {}}}]\n  restore_drill: {{bin_dir: {}}}\nclusters:\n{}",
        cluster.dir().join("snapshots").display(),
        cluster.dir().join("backups").display(),
        version.bin_dir()?.display(),
        cluster.config_entry("it")
    );
    let config = write_file(cluster.dir(), "downgrade.yaml", &yaml)?;
    Ok((cluster, config))
}

/// Every member's storage version, once each reports `expected`.
async fn storage_becomes(config: &Path, expected: &str) -> Result<()> {
    eventually(
        &format!("every member's storage is {expected}"),
        STEP,
        || async {
            let status = status(config).await?;
            let members = status["members"].as_array().context("members")?;
            ensure!(
                members.len() == 3
                    && members
                        .iter()
                        .all(|m| m["status"]["ok"]["storage_version"] == expected),
                "{status:#}"
            );
            Ok(())
        },
    )
    .await
}

/// A kubeadm etcd manifest for 3.6 as kubeadm writes it (Kubernetes 1.34), the image from a
/// registry that does not exist.
const KUBEADM_MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://10.0.0.2:2379
  labels:
    component: etcd
    tier: control-plane
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://10.0.0.2:2379
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --client-cert-auth=true
    - --data-dir=/var/lib/etcd
    - --feature-gates=InitialCorruptCheck=true
    - --initial-advertise-peer-urls=https://10.0.0.2:2380
    - --initial-cluster=cp-2=https://10.0.0.2:2380
    - --key-file=/etc/kubernetes/pki/etcd/server.key
    - --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.2:2379
    - --listen-metrics-urls=http://127.0.0.1:2381
    - --listen-peer-urls=https://10.0.0.2:2380
    - --name=cp-2
    - --peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt
    - --peer-client-cert-auth=true
    - --peer-key-file=/etc/kubernetes/pki/etcd/peer.key
    - --peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    - --snapshot-count=10000
    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    - --watch-progress-notify-interval=5s
    image: example.invalid/etcd:3.6.5-0
    imagePullPolicy: IfNotPresent
    name: etcd
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
  hostNetwork: true
  volumes:
  - hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
";

/// Stand-ins for the node tools the document calls: each records its arguments in
/// `calls.log`; `talosctl` also keeps the patch it was given as `patch.yaml`.
fn node_tools(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let log = dir.join("calls.log");
    let scripts = [
        (
            "systemctl",
            format!("#!/bin/sh\necho \"systemctl $*\" >> '{}'\n", log.display()),
        ),
        (
            "talosctl",
            format!(
                "#!/bin/sh\necho \"talosctl $*\" >> '{}'\nfor a in \"$@\"; do case \"$a\" in @*) cp \"${{a#@}}\" '{}';; esac; done\n",
                log.display(),
                dir.join("patch.yaml").display()
            ),
        ),
    ];
    for (name, script) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// What the stand-ins were called with since the last look, and forgets it.
fn node_calls(dir: &Path) -> Result<String> {
    let log = dir.join("calls.log");
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::write(&log, "")?;
    Ok(calls)
}

/// docs/downgrade.md's `replace-*` block `variant` for member `index`, then the member
/// started on what the block left in place (for the node variants, the 3.5 binary the
/// kubelet or Talos would pull).
async fn replace_member(
    cluster: &mut EtcdCluster,
    doc: &Document,
    env: &[(&str, String)],
    index: usize,
    variant: &str,
) -> Result<()> {
    let node = cluster.dir().join("nodes").join(cluster.name(index));
    std::fs::create_dir_all(&node)?;
    let tools = cluster.dir().join("tools");
    let mut env = env.to_vec();
    match variant {
        "systemd" => {
            let installed = node.join("etcd");
            std::fs::copy(EtcdVersion::V3_6.etcd()?, &installed)?;
            env.push(("ETCD_BIN", installed.display().to_string()));
            env.push(("ETCD_35", EtcdVersion::V3_5.etcd()?.display().to_string()));
            cluster.stop(index)?;
            doc.run("replace-systemd", &env).await?;
            let calls = node_calls(&tools)?;
            ensure!(
                calls == "systemctl stop etcd\nsystemctl start etcd\n",
                "{calls}"
            );
            ensure!(
                node.join("etcd.3.6").is_file(),
                "the 3.6 binary was not kept"
            );
            cluster.start_binary(index, &installed).await?;
        }
        "kubeadm" => {
            let manifest = node.join("etcd.yaml");
            std::fs::write(&manifest, KUBEADM_MANIFEST)?;
            env.push(("MANIFEST", manifest.display().to_string()));
            env.push(("HOME", node.display().to_string()));
            let printed = doc.run("replace-kubeadm", &env).await?;
            ensure!(
                printed.trim() == "image: example.invalid/etcd:3.5.30-0",
                "{printed}"
            );
            ensure!(
                std::fs::read_to_string(node.join("etcd.yaml.3.6"))? == KUBEADM_MANIFEST,
                "the copy is not the 3.6 manifest"
            );
            // Only the image and the two renamed flags changed, and etcd 3.5.30 knows every
            // flag left.
            let edited = std::fs::read_to_string(&manifest)?;
            let changed: Vec<(&str, &str)> = KUBEADM_MANIFEST
                .lines()
                .zip(edited.lines())
                .filter(|(a, b)| a != b)
                .collect();
            ensure!(changed.len() == 3, "{changed:#?}");
            let help = std::process::Command::new(EtcdVersion::V3_5.etcd()?)
                .arg("--help")
                .output()?;
            let help = format!("{}{}", stdout(&help), stderr(&help));
            for flag in edited.lines().filter_map(|l| l.trim().strip_prefix("- --")) {
                let name = flag.split('=').next().unwrap_or(flag);
                ensure!(
                    help.contains(&format!("--{name} ")) || help.contains(&format!("--{name}\n")),
                    "etcd 3.5.30 has no --{name}"
                );
            }
            cluster.replace_binary(index, EtcdVersion::V3_5).await?;
        }
        "talos" => {
            env.push(("NODE", "10.0.0.3".to_string()));
            env.push(("ETCD_IMAGE_REPOSITORY", "example.invalid/etcd".to_string()));
            let mut command = doc.command("replace-talos", &env)?;
            let output = command.current_dir(&node).output().await?;
            ensure!(output.status.success(), "{}", stderr(&output));
            let calls = node_calls(&tools)?;
            ensure!(
                calls
                    == "talosctl -n 10.0.0.3 patch machineconfig --patch @etcd-3.5.yaml --mode reboot\n",
                "{calls}"
            );
            let patch: Value =
                yaml_serde::from_str(&std::fs::read_to_string(tools.join("patch.yaml"))?)?;
            ensure!(
                patch
                    == serde_json::json!({"cluster": {"etcd": {"image": "example.invalid/etcd:v3.5.30"}}}),
                "{patch}"
            );
            cluster.replace_binary(index, EtcdVersion::V3_5).await?;
        }
        other => bail!("no variant {other}"),
    }
    Ok(())
}

/// docs/downgrade.md, block by block: one member replaced with each variant of its step 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_6_cluster_is_downgraded_to_3_5_member_by_member_leader_last() -> Result<()> {
    let (mut cluster, config) = cluster_with_data(EtcdVersion::V3_6).await?;
    let tools = cluster.dir().join("tools");
    node_tools(&tools)?;
    let project_bin = project_binary("etcdmedic-remediator")?;
    let project_dir = project_bin.parent().context("the project's binaries")?;
    let doc = Document::new("downgrade.md", &[&tools, project_dir]);
    let env = vec![
        ("CONFIG", config.display().to_string()),
        ("CLUSTER", "it".to_string()),
    ];

    // A member that has just started reports storage 3.5.0 until the cluster version is
    // agreed: the document's check is looked at until it shows what the document asks for.
    eventually("the check shows every member on 3.6", STEP, || async {
        let checked = doc.run("check", &env).await?;
        ensure!(
            checked
                .lines()
                .filter(|l| l.contains("3.6.15") && l.contains("3.6.0"))
                .count()
                == 3,
            "{checked}"
        );
        Ok(())
    })
    .await?;
    let refused = remediator_exits(&config, &["downgrade", "validate", "3.4"], 1).await?;
    ensure!(refused.contains("refused by etcd"), "{refused}");
    let valid = doc.run("validate", &env).await?;
    ensure!(
        valid.contains("downgrade validate success, cluster version 3.6"),
        "{valid}"
    );
    let enabled = doc.run("enable", &env).await?;
    ensure!(
        enabled.contains("backup first: near ") && enabled.contains("downgrade enable success"),
        "{enabled}"
    );
    let waited = doc.run("wait-for-storage", &env).await?;
    ensure!(waited.contains("\nnext: replace "), "{waited}");
    storage_becomes(&config, "3.5.0").await?;

    // Each member in the order status names; at most one leadership move besides.
    let variants = ["systemd", "kubeadm", "talos"];
    let mut replaced = Vec::new();
    for _ in 0..5 {
        let next = eventually("a step to take", STEP, || async {
            let next = status(&config).await?["next"].clone();
            ensure!(
                !matches!(next["step"].as_str(), Some("wait" | "migrating")),
                "{next}"
            );
            Ok(next)
        })
        .await?;
        let member = next["member"].as_str().unwrap_or_default().to_string();
        let mut member_env = env.clone();
        member_env.push(("MEMBER", member.clone()));
        match next["step"].as_str() {
            Some("done") => break,
            Some("replace") => {
                ensure!(
                    next["leader"] == false,
                    "the leader is named while a follower is left: {next}"
                );
                let index = (0..cluster.len())
                    .find(|&i| cluster.name(i) == member)
                    .with_context(|| format!("no member {member}"))?;
                let variant = variants
                    .get(replaced.len())
                    .context("more replacements than members")?;
                replace_member(&mut cluster, &doc, &member_env, index, variant).await?;
                replaced.push(member.clone());
                let output = doc.command("next", &env)?.output().await?;
                let printed = stdout(&output);
                ensure!(
                    printed
                        .lines()
                        .any(|l| l.starts_with(&member) && l.contains("3.5.30")),
                    "{member} is not shown on 3.5.30: {printed}"
                );
                ensure!(
                    output.status.success() == (replaced.len() == 3),
                    "exit {:?} with {} replaced: {printed}",
                    output.status.code(),
                    replaced.len()
                );
            }
            Some("move_leadership") => {
                ensure!(
                    replaced.len() == 2,
                    "the leader before its followers: {next}"
                );
                let moved = doc.run("forfeit", &member_env).await?;
                ensure!(moved.contains("leadership moved to"), "{moved}");
            }
            other => bail!("unexpected step {other:?}: {next}"),
        }
    }
    ensure!(replaced.len() == 3, "replaced {replaced:?}");
    let done = doc.run("next", &env).await?;
    let promised = documented_done_line(&doc)?;
    ensure!(
        done.lines().any(|l| l == promised),
        "the document promises {promised:?}; status printed {done}"
    );

    let versions: Vec<String> = cluster
        .etcdctl_json(&["endpoint", "status"])?
        .as_array()
        .context("endpoint status")?
        .iter()
        .map(|e| {
            e["Status"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    ensure!(
        versions.len() == 3 && versions.iter().all(|v| v.starts_with("3.5.")),
        "{versions:?}"
    );
    let mut client = cluster.client(0).await?;
    let kept = client
        .get(
            "/downgrade/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    ensure!(
        kept.kvs().len() == KEYS,
        "{} keys of {KEYS}",
        kept.kvs().len()
    );
    let hashes: Vec<u64> = cluster
        .etcdctl_json(&["endpoint", "hashkv"])?
        .as_array()
        .context("hashkv")?
        .iter()
        .map(|e| e["HashKV"]["hash"].as_u64().unwrap_or(0))
        .collect();
    ensure!(
        hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0] && *h != 0),
        "HashKV differs: {hashes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_before_any_member_is_replaced_puts_the_storage_back_at_3_6() -> Result<()> {
    let (cluster, config) = cluster_with_data(EtcdVersion::V3_6).await?;
    remediator_exits(&config, &["downgrade", "enable", "3.5"], 0).await?;
    storage_becomes(&config, "3.5.0").await?;
    // The exporter shows it on every member.
    let exporter = RunningExporter::start(&config).await?;
    let scrape = exporter.scrape().await?;
    for index in 0..3 {
        let labels = [("member", cluster.name(index)), ("target_version", "3.5.0")];
        let enabled = scrape.value("etcdmedic_member_downgrade_enabled", &labels)?;
        ensure!(enabled == 1.0, "{}", scrape.text);
    }
    exporter.shutdown().await?;
    // Mid-downgrade a run is refused unless told otherwise.
    let refused = remediator_exits(&config, &["run", "--dry-run", "-o", "json"], 1).await?;
    ensure!(refused.contains("\"downgrade_under_way\""), "{refused}");
    remediator_exits(&config, &["run", "--dry-run", "--during-downgrade"], 0).await?;
    // docs/downgrade.md's way back.
    let project_bin = project_binary("etcdmedic-remediator")?;
    let doc = Document::new(
        "downgrade.md",
        &[project_bin.parent().context("the project's binaries")?],
    );
    let env = [
        ("CONFIG", config.display().to_string()),
        ("CLUSTER", "it".to_string()),
    ];
    let cancelled = doc.run("cancel", &env).await?;
    ensure!(
        cancelled.contains("downgrade cancel success"),
        "{cancelled}"
    );
    storage_becomes(&config, "3.6.0").await?;
    let idle = remediator_exits(&config, &["downgrade", "status"], 0).await?;
    ensure!(idle.contains("no downgrade is under way"), "{idle}");
    Ok(())
}

/// etcd 3.4 has no Downgrade call and 3.5's enable never completes: every verb says so and
/// nothing changes.
async fn a_cluster_before_3_6_is_told_it_cannot_downgrade(version: EtcdVersion) -> Result<()> {
    let (cluster, config) = cluster_with_data(version).await?;
    for verb in ["validate", "enable"] {
        let refused = remediator_exits(&config, &["downgrade", verb, "3.4"], 1).await?;
        ensure!(
            refused.contains("a downgrade needs every member on etcd 3.6 or later"),
            "{verb}: {refused}"
        );
    }
    ensure!(
        !cluster.dir().join("backups").exists(),
        "enable took a backup before refusing"
    );
    let bad = remediator_exits(&config, &["downgrade", "validate", "three"], 2).await?;
    ensure!(bad.contains("write MAJOR.MINOR"), "{bad}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_4_cluster_is_told_it_cannot_downgrade() -> Result<()> {
    a_cluster_before_3_6_is_told_it_cannot_downgrade(EtcdVersion::V3_4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_5_cluster_is_told_it_cannot_downgrade() -> Result<()> {
    a_cluster_before_3_6_is_told_it_cannot_downgrade(EtcdVersion::V3_5).await
}

/// The `next: done` line `doc` shows at the end.
fn documented_done_line(doc: &Document) -> Result<String> {
    doc.text()?
        .lines()
        .find(|l| l.starts_with("next: done"))
        .map(str::to_string)
        .context("no `next: done` line in docs/downgrade.md")
}
