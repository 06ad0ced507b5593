//! The README's quick start, as a new user follows it: its blocks run and written out as they
//! stand, in a directory beside a checkout (a link to this repository), rendered by kubectl's
//! kustomize, and every container of the render started the way the shipped manifests are
//! (`shipped.rs`): with only what it mounts, as its own user, in a network namespace of its
//! own. Each must keep running, none may read a credential its configuration does not name,
//! and the render is what the quick start promises: observe mode, the user's files in place of
//! the base's placeholders under the names the AlertmanagerConfig uses, and the label
//! kube-prometheus-stack selects monitors and rules by.

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::kustomize::{documents, kind, named, render};
use etcdmedic_tests::shipped::{check_privileges, kubernetes, Image};
use serde_json::Value;

use crate::documented::Document;
use crate::shipped::each_keeps_running_with_only_its_credentials;

#[tokio::test]
async fn the_quick_start_renders_and_every_container_starts_with_only_what_it_mounts() -> Result<()>
{
    // Beside a checkout, as the quick start assumes: a directory of the user's own next to
    // `etcdmedic`. kustomize takes no absolute paths, so both sit under target/.
    let target = repository_root().join("target");
    std::fs::create_dir_all(&target)?;
    let work = tempfile::Builder::new()
        .prefix("quickstart-")
        .tempdir_in(&target)?;
    std::os::unix::fs::symlink(repository_root(), work.path().join("etcdmedic"))?;
    let given = work.path().join("given");
    std::fs::create_dir(&given)?;
    for (name, text) in [
        ("ca.pem", "the etcd CA"),
        ("client.pem", "a client certificate"),
        ("client-key.pem", "its key"),
    ] {
        std::fs::write(given.join(name), text)?;
    }

    let readme = Document::at("README.md", &[]);
    let env = [
        ("ETCD_CA", given.join("ca.pem").display().to_string()),
        ("ETCD_CERT", given.join("client.pem").display().to_string()),
        (
            "ETCD_KEY",
            given.join("client-key.pem").display().to_string(),
        ),
        ("BACKUP_KEY_ID", "AKIAEXAMPLE".to_string()),
        ("BACKUP_SECRET_KEY", "example-secret".to_string()),
    ];
    let output = readme
        .command("quickstart-files", &env)?
        .current_dir(work.path())
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "the quick start's first step failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mine = work.path().join("my-etcdmedic");
    for (file, mode) in [
        ("client.key", 0o600),
        ("webhook-token", 0o600),
        ("operator-token", 0o600),
        ("viewer-token", 0o600),
    ] {
        let meta = std::fs::metadata(mine.join(file)).with_context(|| file.to_string())?;
        ensure!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777 == mode,
            "{file} is not {mode:o}"
        );
    }
    let mut tokens = std::collections::BTreeSet::new();
    for role in ["webhook", "operator", "viewer"] {
        let token = std::fs::read_to_string(mine.join(format!("{role}-token")))?;
        ensure!(token.trim().len() == 64, "the {role} token: {token:?}");
        tokens.insert(token);
    }
    ensure!(tokens.len() == 3, "two roles were given the same token");
    std::fs::write(
        mine.join("etcdmedic.yaml"),
        readme.block("quickstart-config")?,
    )?;
    std::fs::write(
        mine.join("kustomization.yaml"),
        readme.block("quickstart-kustomization")?,
    )?;

    let render = render(&mine)?;
    ensure!(
        render.warnings.trim().is_empty(),
        "kustomize warned: {}",
        render.warnings
    );
    let docs = documents(&render.text)?;
    let config =
        named(&docs, "ConfigMap", "etcdmedic-config").context("no etcdmedic-config ConfigMap")?;
    let text = config["data"]["etcdmedic.yaml"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        text == readme.block("quickstart-config")?,
        "the ConfigMap is not the quick start's file: {text}"
    );
    ensure!(text.contains("mode: observe"), "not in observe mode");
    // The AlertmanagerConfig's webhook reads the token from a Secret by name.
    let amc = kind(&docs, "AlertmanagerConfig");
    let secret_name = amc
        .first()
        .and_then(|a| {
            a["spec"]["receivers"][0]["webhookConfigs"][0]["httpConfig"]["authorization"]
                ["credentials"]["name"]
                .as_str()
        })
        .context("the AlertmanagerConfig names no token Secret")?;
    let token_secret = named(&docs, "Secret", secret_name)
        .with_context(|| format!("no Secret {secret_name}: the AlertmanagerConfig's token"))?;
    ensure!(
        token_secret["data"]["token"].is_string(),
        "{secret_name} has no token: {token_secret}"
    );
    let client = named(&docs, "Secret", "etcdmedic-etcd-client").context("no client Secret")?;
    for key in ["ca.crt", "client.crt", "client.key"] {
        ensure!(
            client["data"][key].is_string() && client["stringData"].is_null(),
            "the client Secret's {key} is not the user's file: {client}"
        );
    }
    let labelled: Vec<&Value> = docs
        .iter()
        .filter(|d| d["metadata"]["labels"]["release"] == "kube-prometheus-stack")
        .collect();
    ensure!(
        labelled.len() == 3,
        "the ServiceMonitors and the PrometheusRule carry the release label: {labelled:?}"
    );

    check_privileges()?;
    let image = Image::from_dockerfile()?;
    let containers = kubernetes::containers("the quick start", &docs, &image)?;
    ensure!(
        containers.len() == 2,
        "the exporter and the remediator: {}",
        containers.len()
    );
    each_keeps_running_with_only_its_credentials(&containers).await
}
