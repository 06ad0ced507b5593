//! docs/configuration.md against the configuration types: every key the types accept is
//! documented, and every documented key is accepted. The types say which keys they accept
//! through their own error: each block refuses an unknown key by listing the ones it knows.
//! The remediator reads every block (the exporter only the shared ones), so its loader is asked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{ensure, Context, Result};
use etcdmedic_remediator::config::RemediatorConfig as Config;
use etcdmedic_tests::generated::repository_root;

const PROBE: &str = "zz_not_a_key";

/// Each block's path in the reference, and a config that puts an unknown key in it.
fn probes() -> Vec<(&'static str, String)> {
    let cluster = |extra: &str| {
        format!("clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n{extra}")
    };
    vec![
        ("", format!("{PROBE}: 1\n{}", cluster(""))),
        ("clusters[]", cluster(&format!("    {PROBE}: 1\n"))),
        ("clusters[].tls", cluster(&format!("    tls: {{{PROBE}: 1}}\n"))),
        ("clusters[].auth", cluster(&format!("    auth: {{username: u, {PROBE}: 1}}\n"))),
        ("remediation", format!("remediation: {{{PROBE}: 1}}\n{}", cluster(""))),
        ("remediator", format!("remediator: {{{PROBE}: 1}}\n{}", cluster(""))),
        ("backup", format!("backup: {{{PROBE}: 1}}\n{}", cluster(""))),
        (
            "backup.destinations[]",
            format!(
                "backup: {{destinations: [{{name: n, kind: local, {PROBE}: 1}}]}}\n{}",
                cluster("")
            ),
        ),
        ("backup.retention", format!("backup: {{retention: {{{PROBE}: 1}}}}\n{}", cluster(""))),
        (
            "backup.destinations[].retention",
            format!(
                "backup: {{destinations: [{{name: n, kind: local, path: p, retention: {{{PROBE}: 1}}}}]}}\n{}",
                cluster("")
            ),
        ),
        (
            "backup.destinations[].object_lock",
            format!(
                "backup: {{destinations: [{{name: n, kind: s3, bucket: b-1, object_lock: {{mode: governance, days: 1, {PROBE}: 1}}}}]}}\n{}",
                cluster("")
            ),
        ),
        (
            "backup.restore_drill",
            format!("backup: {{restore_drill: {{{PROBE}: 1}}}}\n{}", cluster("")),
        ),
        (
            "backup.encryption",
            format!("backup: {{encryption: {{recipients: [], {PROBE}: 1}}}}\n{}", cluster("")),
        ),
        ("remediator.auth", format!("remediator: {{auth: {{{PROBE}: 1}}}}\n{}", cluster(""))),
        (
            "remediator.auth.webhook",
            format!("remediator: {{auth: {{webhook: {{{PROBE}: 1}}}}}}\n{}", cluster("")),
        ),
        (
            "remediator.auth.basic_auth",
            format!(
                "remediator: {{auth: {{basic_auth: {{username: u, password_file: p, {PROBE}: 1}}}}}}\n{}",
                cluster("")
            ),
        ),
        (
            "remediator.tls",
            format!("remediator: {{tls: {{cert_file: c, key_file: k, {PROBE}: 1}}}}\n{}", cluster("")),
        ),
        (
            "remediator.silences",
            format!("remediator: {{silences: {{alertmanager_url: u, {PROBE}: 1}}}}\n{}", cluster("")),
        ),
        (
            "remediator.postgres",
            format!("remediator: {{postgres: {{url: u, {PROBE}: 1}}}}\n{}", cluster("")),
        ),
        (
            "remediator.postgres.tls",
            format!(
                "remediator: {{postgres: {{url: u, tls: {{{PROBE}: 1}}}}}}\n{}",
                cluster("")
            ),
        ),
        (
            "remediator.grafana_annotations",
            format!(
                "remediator: {{grafana_annotations: {{url: u, token_file: t, {PROBE}: 1}}}}\n{}",
                cluster("")
            ),
        ),
    ]
}

/// The keys a block accepts, from the error it gives for an unknown one.
fn accepted_keys(yaml: &str) -> Result<BTreeSet<String>> {
    let err = Config::from_yaml(yaml, Path::new("probe.yaml"))
        .err()
        .with_context(|| format!("the unknown key was accepted in:\n{yaml}"))?
        .to_string();
    let expected = err
        .split_once("expected")
        .map(|(_, rest)| rest)
        .with_context(|| format!("no list of expected keys in: {err}"))?;
    Ok(expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect())
}

/// The documented keys, grouped by the block they belong to.
fn documented_keys() -> Result<BTreeMap<String, BTreeSet<String>>> {
    let text = std::fs::read_to_string(repository_root().join("docs/configuration.md"))?;
    let mut blocks: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let key = line.split('`').nth(1).context("a row without a key")?;
        let (block, leaf) = key.rsplit_once('.').unwrap_or(("", key));
        blocks
            .entry(block.to_string())
            .or_default()
            .insert(leaf.to_string());
    }
    Ok(blocks)
}

#[test]
fn the_reference_lists_exactly_the_keys_the_config_types_accept() -> Result<()> {
    let documented = documented_keys()?;
    let mut problems = Vec::new();
    let probed: BTreeSet<&str> = probes().iter().map(|(block, _)| *block).collect();
    for (block, yaml) in probes() {
        let accepted = accepted_keys(&yaml)?;
        let listed = documented.get(block).cloned().unwrap_or_default();
        for missing in accepted.difference(&listed) {
            problems.push(format!("{block}.{missing} is accepted but not documented"));
        }
        for extra in listed.difference(&accepted) {
            problems.push(format!("{block}.{extra} is documented but not accepted"));
        }
    }
    for block in documented.keys() {
        ensure!(
            probed.contains(block.as_str()),
            "docs/configuration.md documents a block no probe checks: {block}"
        );
    }
    ensure!(
        problems.is_empty(),
        "docs/configuration.md:\n{}",
        problems.join("\n")
    );
    Ok(())
}
