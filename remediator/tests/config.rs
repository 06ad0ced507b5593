//! Loading the configuration as the remediator does: the shared clusters plus its own blocks,
//! every problem of both reported at once, each naming its key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcdmedic_remediator::config::RemediatorConfig as Config;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Loads `yaml` from a file in a fresh directory and returns the error message.
fn error_for(yaml: &str) -> (String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "etcdmedic.yaml", yaml);
    let err = Config::load(&path).expect_err("this config must be refused");
    (err.to_string(), path, dir)
}

fn assert_refused(yaml: &str, expected: &str) {
    let (message, path, _dir) = error_for(yaml);
    let expected = format!("config {}: {expected}", path.display());
    assert!(
        message.starts_with(&expected),
        "\nexpected: {expected}\ngot:      {message}"
    );
}

const ENDPOINT: &str = "endpoints: [http://127.0.0.1:2379]";

#[test]
fn every_unknown_key_is_reported_at_once_with_the_closest_known_key() {
    let (message, path, _dir) = error_for(&format!(
        "remediation:\n  setle_time: 1s\nremediator:\n  cooldwn: 1h\n  listen: 127.0.0.1:1\nclusters:\n  - name: a\n    {ENDPOINT}\n    tls: {{ca_fil: x, zzz: 1}}\n  - name: b\n    {ENDPOINT}\n    remediation: {{compact_frist: true}}\n"
    ));
    let expected = [
        "remediation.setle_time: unknown key, did you mean `settle_time`?",
        "remediator.cooldwn: unknown key, did you mean `cooldown`?",
        "clusters[0].tls.ca_fil: unknown key, did you mean `ca_file`?",
        "clusters[0].tls.zzz: unknown key (expected one of `ca_file`,",
        "clusters[1].remediation.compact_frist: unknown key, did you mean `compact_first`?",
    ];
    assert!(
        message.starts_with(&format!("config {}: ", path.display())),
        "{message}"
    );
    for problem in expected {
        assert!(
            message.contains(problem),
            "expected {problem:?} in:\n{message}"
        );
    }
    assert_eq!(message.matches("unknown key").count(), 5, "{message}");
}

#[test]
fn a_clusters_remediation_block_overrides_the_defaults_key_by_key() {
    use etcdmedic_remediator::config::{LeaderMoveFailure, LeaderPolicy};
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "etcdmedic.yaml",
        &format!(
            "remediation:\n  snapshot_dir: snaps\n  snapshot_retention: 3\n  settle_time: 2s\n  leader: skip\n\
             clusters:\n  - name: a\n    {ENDPOINT}\n    remediation:\n      settle_time: 0s\n      defrag_rule: dbQuotaUsage > 0.5\n\
             \x20 - name: b\n    {ENDPOINT}\n"
        ),
    );
    let config = Config::load(&path).unwrap();
    let a = &config.cluster("a").unwrap().remediation;
    let b = &config.cluster("b").unwrap().remediation;
    // From the cluster's own block.
    assert_eq!(a.settle_time, Duration::ZERO);
    assert_eq!(a.defrag_rule.to_string(), "dbQuotaUsage > 0.5");
    // From the top-level block, resolved against the config file's directory.
    assert_eq!(a.snapshot_dir, dir.path().join("snaps"));
    assert_eq!((a.snapshot_retention, a.leader), (3, LeaderPolicy::Skip));
    assert_eq!(b.settle_time, Duration::from_secs(2));
    // Built-in defaults.
    assert!(b.defrag_rule.to_string().starts_with("built-in"));
    assert_eq!(b.defrag_timeout, Duration::from_secs(600));
    assert_eq!(b.on_leader_move_failure, LeaderMoveFailure::Stop);
    assert_eq!(b.disarm_nospace_below, 0.9);
    assert!(!b.allow_single_member && !b.compact_first);
}

#[test]
fn an_invalid_defrag_rule_or_threshold_is_refused_at_load_with_its_key() {
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n    remediation: {{defrag_rule: \"dbSize >\"}}\n"),
        "clusters[0].remediation.defrag_rule: \"dbSize >\" does not parse: unexpected the end of the rule where a value should be (at byte 8)",
    );
    assert_refused(
        &format!("remediation: {{defrag_rule: \"free > 1\"}}\nclusters:\n  - name: a\n    {ENDPOINT}\n  - name: b\n    {ENDPOINT}\n"),
        "remediation.defrag_rule: \"free > 1\" uses unknown variable free",
    );
    let (message, _, _dir) = error_for(&format!(
        "remediation: {{disarm_nospace_below: 1.5, snapshot_retention: 0}}\nclusters:\n  - name: a\n    {ENDPOINT}\n  - name: b\n    {ENDPOINT}\n"
    ));
    // Said once, although both clusters inherit it.
    assert_eq!(
        message.matches("disarm_nospace_below").count(),
        1,
        "{message}"
    );
    assert!(
        message.contains("remediation.snapshot_retention: must be at least 1"),
        "{message}"
    );
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n    remediation: {{leader: last}}\n"),
        "clusters[0].remediation.leader: unknown variant `last`",
    );
}

#[test]
fn a_shared_problem_and_a_remediator_problem_are_reported_together() {
    let (message, _, _dir) = error_for(
        "backup:\n  destinations: [{name: o, kind: s3, bucket: b, access_key_id_file: /nonexistent/id, secret_access_key_file: /nonexistent/secret}]\n\
         clusters:\n  - name: a\n    endpoints: [https://127.0.0.1:2379]\n    tls: {ca_file: /nonexistent/ca.pem}\n",
    );
    for expected in [
        "clusters[0].tls.ca_file: /nonexistent/ca.pem: no such file",
        "backup.destinations[0].access_key_id_file: /nonexistent/id: no such file",
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing from: {message}"
        );
    }
}
