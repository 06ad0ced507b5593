//! Release hygiene: `make` alone lists every target; the licence is the one Cargo.toml names;
//! the image tag in the Dockerfile, the README's build command, the Kubernetes manifests and
//! the changelog is the workspace's version; every binary answers `--version` with it.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::project_binary;

use crate::support::{run_ok, stdout};

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(repository_root().join(path)).with_context(|| path.to_string())
}

/// `key = "value"` of Cargo.toml's `[workspace.package]`.
fn workspace_package(key: &str) -> Result<String> {
    let cargo = read("Cargo.toml")?;
    let (_, table) = cargo
        .split_once("[workspace.package]\n")
        .context("no [workspace.package]")?;
    table
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .with_context(|| format!("no workspace.package.{key}"))
}

fn workspace_version() -> Result<String> {
    workspace_package("version")
}

#[test]
fn make_alone_lists_every_target() -> Result<()> {
    let makefile = read("Makefile")?;
    let phony: BTreeSet<&str> = makefile
        .lines()
        .find_map(|l| l.strip_prefix(".PHONY:"))
        .context("no .PHONY line")?
        .split_whitespace()
        .collect();
    let help = run_ok(
        std::process::Command::new("make")
            .arg("--no-print-directory")
            .current_dir(repository_root()),
    )?;
    let listed: BTreeSet<&str> = help
        .lines()
        .filter_map(|l| l.trim().strip_prefix("make "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ensure!(
        listed == phony,
        "`make` lists {listed:?}; .PHONY has {phony:?}:\n{help}"
    );
    Ok(())
}

#[test]
fn the_licence_and_the_image_tag_agree_with_cargo() -> Result<()> {
    let licence = read("LICENSE")?;
    ensure!(
        licence.contains("Apache License") && licence.contains("Version 2.0, January 2004"),
        "LICENSE is not the Apache License 2.0"
    );
    ensure!(
        workspace_package("license")? == "Apache-2.0",
        "Cargo.toml's license is not Apache-2.0"
    );
    let version = workspace_version()?;
    let image = format!("ghcr.io/etcdmedic/etcdmedic:{version}");
    let build = format!("docker build -t {image} .");
    ensure!(
        read("Dockerfile")?.contains(&build),
        "the Dockerfile does not say `{build}`"
    );
    ensure!(
        read("docs/deploy.md")?.contains(&build),
        "docs/deploy.md does not say `{build}`"
    );
    let kustomization = read("deploy/kubernetes/base/kustomization.yaml")?;
    ensure!(
        kustomization.contains("name: ghcr.io/etcdmedic/etcdmedic")
            && kustomization.contains(&format!("newTag: {version}")),
        "the kustomization does not deploy {image}"
    );
    ensure!(
        read("CHANGELOG.md")?.contains(&format!("\n## {version} - ")),
        "CHANGELOG.md has no section for {version}"
    );
    Ok(())
}

#[tokio::test]
async fn every_binary_answers_version() -> Result<()> {
    let version = workspace_version()?;
    for binary in [
        "etcdmedic-exporter",
        "etcdmedic-remediator",
        "etcdmedic-demo",
        "etcdmedic-bench",
    ] {
        let output = tokio::process::Command::new(project_binary(binary)?)
            .arg("--version")
            .output()
            .await?;
        ensure!(
            output.status.success() && stdout(&output).starts_with(&format!("{binary} {version}")),
            "{binary} --version: {output:?}"
        );
    }
    Ok(())
}
