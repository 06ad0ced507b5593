//! The job names the alert rules look for (`up{job="etcdmedic-exporter"}` in
//! `EtcdmedicExporterDown`, which also fires on `absent()`) are the ones every shipped or
//! documented way of scraping gives: the README's Prometheus examples, `deploy/prometheus/`
//! and the ServiceMonitors' job relabeling. A job named otherwise would make the rule fire
//! forever, or never.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;

/// `job="name"` in `text`.
fn jobs_asked(text: &str) -> BTreeSet<String> {
    text.split("job=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

/// `job_name: name` of each scrape config in `text` (YAML).
fn job_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("- job_name:"))
        .map(|name| name.split('#').next().unwrap_or(name).trim().to_string())
        .collect()
}

/// The documentation's fenced blocks that configure Prometheus scrapes.
fn readme_scrape_blocks(readme: &str) -> Vec<String> {
    crate::readme::blocks(readme)
        .into_iter()
        .filter(|block| block.contains("job_name:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_scrape_config_names_the_jobs_the_rules_look_for() -> Result<()> {
    let root = repository_root();
    let rules = std::fs::read_to_string(root.join("alerts/etcdmedic.rules.yaml"))?;
    let asked = jobs_asked(&rules);
    ensure!(
        asked == BTreeSet::from(["etcdmedic-exporter".into(), "etcdmedic-remediator".into()]),
        "the rules ask for {asked:?}"
    );
    let ours = |names: &BTreeSet<String>| -> BTreeSet<String> {
        names
            .iter()
            .filter(|n| n.starts_with("etcdmedic"))
            .cloned()
            .collect()
    };

    let mut sources = Vec::new();
    for entry in std::fs::read_dir(root.join("deploy/prometheus"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            sources.push((path.display().to_string(), std::fs::read_to_string(&path)?));
        }
    }
    let documentation = crate::readme::documentation()?;
    let blocks = readme_scrape_blocks(&documentation);
    ensure!(
        blocks.len() >= 3,
        "the documentation's scrape examples: {blocks:?}"
    );
    for (index, block) in blocks.into_iter().enumerate() {
        sources.push((
            format!("the documentation's scrape example {}", index + 1),
            block,
        ));
    }
    for (name, text) in &sources {
        let named = ours(&job_names(text));
        ensure!(!named.is_empty(), "{name} scrapes no etcdmedic job");
        ensure!(
            named.is_subset(&asked),
            "{name} names {:?}, which no rule looks for",
            named.difference(&asked).collect::<Vec<_>>()
        );
        // A whole Prometheus configuration scrapes both; the README's examples show one
        // component each.
        if text.contains("rule_files:") {
            ensure!(
                named == asked,
                "{name} scrapes {named:?}, the rules want {asked:?}"
            );
        }
    }

    let monitors =
        std::fs::read_to_string(root.join("deploy/kubernetes/base/servicemonitor.yaml"))?;
    let relabeled: BTreeSet<String> = monitors
        .lines()
        .filter(|l| l.contains("targetLabel: job"))
        .filter_map(|l| l.split("replacement:").nth(1))
        .map(|r| r.trim().trim_end_matches('}').trim().to_string())
        .collect();
    ensure!(
        relabeled == asked,
        "the ServiceMonitors set job to {relabeled:?}, the rules want {asked:?}"
    );
    Ok(())
}

#[test]
fn job_names_are_read_from_scrape_configs_and_rules() -> Result<()> {
    assert_eq!(
        job_names("scrape_configs:\n  - job_name: etcdmedic-exporter    # note\n  - job_name: x\n"),
        BTreeSet::from(["etcdmedic-exporter".to_string(), "x".to_string()])
    );
    assert_eq!(
        jobs_asked("up{job=\"a\"} == 0 or absent(up{job=\"b\"})"),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    readme_scrape_blocks("```yaml\nscrape_configs:\n  - job_name: a\n```\n")
        .first()
        .context("a block")?;
    Ok(())
}
