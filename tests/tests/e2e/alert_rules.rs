//! The alert rules as files: `promtool check rules`, the promtool unit tests in
//! `alerts/tests/`, and a lint that every alert carries what an on-call engineer needs (for,
//! severity, summary, templated description, a runbook that exists) and is unit-tested both
//! firing and not firing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::promtool;

use crate::support::{read_yaml, run_ok};
use serde_json::Value;

const RUNBOOK_BASE: &str = "https://github.com/etcdmedic/etcdmedic/blob/main/docs/runbooks/";
const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];
const RUNBOOK_SECTIONS: [&str; 4] = [
    "## What it means",
    "## How to confirm",
    "## What etcdmedic does automatically",
    "## What a human does otherwise",
];

pub fn rules_file() -> PathBuf {
    repository_root().join("alerts/etcdmedic.rules.yaml")
}

fn unit_test_files() -> Result<Vec<PathBuf>> {
    let dir = repository_root().join("alerts/tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every alerting rule of the rules file.
pub fn alert_rules() -> Result<Vec<Value>> {
    let rules = read_yaml(&rules_file())?;
    Ok(rules["groups"]
        .as_array()
        .context("no groups")?
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .filter(|rule| rule["alert"].is_string())
        .collect())
}

fn promtool_run(args: &[&str], files: &[PathBuf]) -> Result<String> {
    run_ok(Command::new(promtool()?).args(args).args(files))
}

#[test]
fn promtool_accepts_the_rules() -> Result<()> {
    let text = promtool_run(&["check", "rules"], &[rules_file()])?;
    ensure!(text.contains("SUCCESS"), "{text}");
    Ok(())
}

#[test]
fn the_promtool_unit_tests_pass() -> Result<()> {
    let files = unit_test_files()?;
    ensure!(!files.is_empty(), "no unit tests in alerts/tests");
    promtool_run(&["test", "rules"], &files)?;
    Ok(())
}

#[test]
fn every_alert_has_for_severity_summary_description_and_a_runbook() -> Result<()> {
    let rules = alert_rules()?;
    ensure!(rules.len() >= 16, "only {} alerting rules", rules.len());
    let mut problems = Vec::new();
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap_or_default();
        let mut problem = |what: String| problems.push(format!("{name}: {what}"));
        if !rule["for"].is_string() {
            problem("no `for`".into());
        }
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        if !SEVERITIES.contains(&severity) {
            problem(format!(
                "severity {severity:?} is not one of {SEVERITIES:?}"
            ));
        }
        let annotations = &rule["annotations"];
        let summary = annotations["summary"].as_str().unwrap_or_default();
        if summary.is_empty() || !summary.ends_with('.') || summary.contains("{{") {
            problem(format!("summary {summary:?} is not a plain sentence"));
        }
        let description = annotations["description"].as_str().unwrap_or_default();
        if !description.contains("{{") {
            problem("description is not templated".into());
        }
        let runbook = annotations["runbook_url"].as_str().unwrap_or_default();
        let expected = format!("{RUNBOOK_BASE}{name}.md");
        if runbook != expected {
            problem(format!("runbook_url {runbook:?}, expected {expected:?}"));
        }
        let file = repository_root().join(format!("docs/runbooks/{name}.md"));
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                for section in RUNBOOK_SECTIONS {
                    if !text.contains(section) {
                        problem(format!("{} has no {section:?}", file.display()));
                    }
                }
            }
            Err(err) => problem(format!("{}: {err}", file.display())),
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));

    // And no runbook without its alert.
    let names: BTreeSet<String> = rules
        .iter()
        .filter_map(|rule| rule["alert"].as_str().map(str::to_string))
        .collect();
    for entry in std::fs::read_dir(repository_root().join("docs/runbooks"))? {
        let path = entry?.path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        ensure!(names.contains(stem), "{} has no alert", path.display());
    }
    Ok(())
}

#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() -> Result<()> {
    // alertname -> (cases expecting alerts, cases expecting none)
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for file in unit_test_files()? {
        let tests = read_yaml(&file)?;
        for test in tests["tests"].as_array().into_iter().flatten() {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap_or_default().to_string();
                let firing = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
                let entry = cases.entry(name).or_default();
                if firing {
                    entry.0 += 1;
                } else {
                    entry.1 += 1;
                }
            }
        }
    }
    let mut missing = Vec::new();
    for rule in alert_rules()? {
        let name = rule["alert"].as_str().unwrap_or_default();
        let (firing, quiet) = cases.get(name).copied().unwrap_or_default();
        if firing == 0 || quiet == 0 {
            missing.push(format!(
                "{name}: {firing} firing and {quiet} not-firing cases"
            ));
        }
    }
    ensure!(missing.is_empty(), "{}", missing.join("\n"));
    Ok(())
}
