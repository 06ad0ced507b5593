//! What ships, started as it ships: every etcdmedic container of every kustomization under
//! deploy/kubernetes, the image's own entry point, and the systemd units with their
//! `ExecStartPre` checks. Each runs with only what its manifest or host gives it (ConfigMaps
//! and Secrets as files at their mount paths, a node's files for a `hostPath`), its own
//! command, arguments and environment, as its own user, in a network namespace of its own
//! (nothing it does leaves the machine; its configuration's addresses become loopback ones).
//! Each must still run after five seconds, and none may be able to read a credential that
//! its own part of the configuration does not name.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::kustomize::{documents, kustomizations, render};
use etcdmedic_tests::shipped::systemd::{Host, Unit};
use etcdmedic_tests::shipped::{
    check_privileges, first_seconds, kubernetes, Image, Launch, Verdict,
};
use serde_json::Value;

/// How long each must keep running.
const GRACE: Duration = Duration::from_secs(5);
/// Exit status of a refused configuration (both binaries).
const BAD_INPUT: i32 = 2;

/// Why `verdict` is a failure: a process that refused its configuration. A process that
/// ended for another reason (its cluster unreachable, say) is not what this test is about.
fn refusal(launch: &Launch, verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::Exited { status, output } if status.code() == Some(BAD_INPUT) => Some(format!(
            "{}: exited {BAD_INPUT} (refused its configuration):\n{output}",
            launch.name
        )),
        Verdict::Exited { status, output } if status.code().is_none() => Some(format!(
            "{}: killed by a signal ({status}):\n{output}",
            launch.name
        )),
        _ => None,
    }
}

/// The base's Deployments with the exporter's `command`, `args` and user removed, so that
/// the image's `ENTRYPOINT`, `CMD` and `USER` apply, with the exporter's mounts.
fn with_the_images_defaults(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .filter(|doc| {
            doc["kind"] != "Deployment" || doc["metadata"]["name"] == "etcdmedic-exporter"
        })
        .cloned()
        .map(|mut doc| {
            let pod = &mut doc["spec"]["template"]["spec"];
            if let Some(context) = pod["securityContext"].as_object_mut() {
                context.remove("runAsUser");
                context.remove("runAsGroup");
            }
            for container in pod["containers"].as_array_mut().into_iter().flatten() {
                if let Some(container) = container.as_object_mut() {
                    container.remove("command");
                    container.remove("args");
                }
            }
            doc
        })
        .collect()
}

#[tokio::test]
async fn every_container_of_every_kustomization_starts_with_only_what_it_mounts() -> Result<()> {
    check_privileges()?;
    let image = Image::from_dockerfile()?;
    let mut containers = Vec::new();
    for dir in kustomizations()? {
        let label = dir
            .file_name()
            .and_then(|n| n.to_str())
            .context("a kustomization without a name")?;
        let docs = documents(&render(&dir)?.text)?;
        if label == "base" {
            let image_defaults = with_the_images_defaults(&docs);
            let label = "the image's ENTRYPOINT and CMD with the base's exporter mounts";
            containers.extend(kubernetes::containers(label, &image_defaults, &image)?);
        }
        containers.extend(kubernetes::containers(label, &docs, &image)?);
    }
    ensure!(
        containers.len() >= 9,
        "expected both containers of the base and of each overlay, and the image: {}",
        containers.len()
    );
    each_keeps_running_with_only_its_credentials(&containers).await
}

/// Starts `containers` together: each must still run after [`GRACE`] (or have ended for a
/// reason other than its configuration), and none may read a credential its configuration
/// does not name.
pub(crate) async fn each_keeps_running_with_only_its_credentials(
    containers: &[kubernetes::Container],
) -> Result<()> {
    let launches: Vec<Launch> = containers.iter().map(|c| c.launch.clone()).collect();
    let verdicts = first_seconds(&launches, GRACE).await?;
    let mut problems = Vec::new();
    for (container, verdict) in containers.iter().zip(&verdicts) {
        problems.extend(refusal(&container.launch, verdict));
        for credential in container.unneeded_credentials()? {
            problems.push(format!(
                "{}: can read {credential}, which its configuration does not name",
                container.launch.name
            ));
        }
        if let Verdict::Exited { status, output } = verdict {
            eprintln!("{} ended ({status}):\n{output}", container.launch.name);
        }
    }
    ensure!(problems.is_empty(), "\n{}", problems.join("\n\n"));
    Ok(())
}

#[tokio::test]
async fn the_systemd_units_pass_their_checks_and_start_with_only_what_they_need() -> Result<()> {
    check_privileges()?;
    let image = Image::from_dockerfile()?;
    let systemd = repository_root().join("deploy/systemd");
    let config = std::fs::read_to_string(systemd.join("etcdmedic.yaml"))?;
    let mut hosts = Vec::new();
    for name in ["etcdmedic-exporter.service", "etcdmedic-remediator.service"] {
        let unit = Unit::load(&systemd.join(name))?;
        ensure!(
            !unit.exec_start_pre.is_empty(),
            "{name}: no ExecStartPre check"
        );
        hosts.push(Host::install(&unit, &config, &image).with_context(|| name.to_string())?);
    }
    let mut problems = Vec::new();
    for host in &hosts {
        for check in &host.checks {
            let (status, output) = check.run(Duration::from_secs(30)).await?;
            if !status.success() {
                problems.push(format!("{}: {status}:\n{output}", check.name));
            }
        }
        for credential in host.unneeded_credentials()? {
            problems.push(format!(
                "{}: can read {credential}, which its part of the configuration does not name \
                 (InaccessiblePaths=)",
                host.service.name
            ));
        }
    }
    let launches: Vec<Launch> = hosts.iter().map(|h| h.service.clone()).collect();
    for (launch, verdict) in launches.iter().zip(first_seconds(&launches, GRACE).await?) {
        problems.extend(refusal(launch, &verdict));
    }
    ensure!(problems.is_empty(), "\n{}", problems.join("\n\n"));
    Ok(())
}
