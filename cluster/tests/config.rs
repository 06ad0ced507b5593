//! Loading the configuration: each bad input gets its own message naming the file and key;
//! good input resolves relative paths and keeps secrets out of every printout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcdmedic_cluster::{Config, Error};

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
fn an_unknown_key_is_named_with_its_path() {
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n    status_timout: 5s\n"),
        "clusters[0].status_timout: unknown key, did you mean `status_timeout`? (expected one of",
    );
    assert_refused(
        "cluster: []\n",
        "cluster: unknown key, did you mean `clusters`? (expected one of `remediation`, `remediator`, `backup`, `clusters`)",
    );
}

#[test]
fn every_unknown_shared_key_is_reported_at_once_with_the_closest_known_key() {
    let (message, path, _dir) = error_for(&format!(
        "remediation:\n  setle_time: 1s\nclusters:\n  - name: a\n    {ENDPOINT}\n    tls: {{ca_fil: x, zzz: 1}}\n    discover_member: false\n"
    ));
    let expected = [
        "clusters[0].tls.ca_fil: unknown key, did you mean `ca_file`?",
        "clusters[0].tls.zzz: unknown key (expected one of `ca_file`,",
        "clusters[0].discover_member: unknown key, did you mean `discover_members`?",
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
    // The remediator's blocks are the remediator's to check.
    assert_eq!(message.matches("unknown key").count(), 3, "{message}");
}

#[test]
fn the_remediators_blocks_are_skipped_without_opening_a_file_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "etcdmedic.yaml",
        &format!(
            "remediation: {{snapshot_dir: /nonexistent/snapshots, setle_time: 1s}}\n\
             remediator:\n  auth: {{bearer_token_file: /nonexistent/token}}\n  postgres: {{url: x, password_file: /nonexistent/pw}}\n\
             backup:\n  destinations:\n    - {{name: offsite, kind: s3, bucket: b, access_key_id_file: /nonexistent/id, secret_access_key_file: /nonexistent/secret}}\n\
             clusters:\n  - name: a\n    {ENDPOINT}\n    remediation: {{defrag_rule: \"not a rule\"}}\n    backup: {{retention: {{keep: 0}}}}\n"
        ),
    );
    let config = Config::load(&path).expect("the shared part is valid");
    assert_eq!(config.cluster_names(), vec!["a"]);
}

#[test]
fn unknown_keys_and_a_wrong_value_are_reported_together() {
    let (message, _, _dir) = error_for(&format!(
        "clusters:\n  - name: a\n    {ENDPOINT}\n    setle: 1\n    status_timeout: fast\n"
    ));
    assert!(
        message.contains("clusters[0].setle: unknown key"),
        "{message}"
    );
    assert!(
        message.contains("clusters[0].status_timeout: invalid value: string \"fast\""),
        "{message}"
    );
}

#[test]
fn cluster_names_that_are_not_safe_as_paths_labels_and_url_segments_are_refused() {
    for name in ["../../etc", "/abs", "team/prod", "\"a b\"", "\".hidden\""] {
        assert_refused(
            &format!("clusters:\n  - name: {name}\n    {ENDPOINT}\n"),
            "clusters[0].name: ",
        );
        let (message, _, _dir) =
            error_for(&format!("clusters:\n  - name: {name}\n    {ENDPOINT}\n"));
        assert!(
            message.contains("is not a cluster name: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63 characters ([A-Za-z0-9][A-Za-z0-9._-]*)"),
            "{name}: {message}"
        );
    }
}

#[test]
fn a_value_of_the_wrong_type_is_named_with_its_path() {
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n    status_timeout: fast\n"),
        "clusters[0].status_timeout: invalid value: string \"fast\", expected a duration",
    );
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n    quota_backend_bytes: -1\n"),
        "clusters[0].quota_backend_bytes: invalid type: integer `-1`, expected u64",
    );
}

#[test]
fn a_missing_certificate_file_is_named_with_its_key_and_path() {
    assert_refused(
        "clusters:\n  - name: a\n    endpoints: [https://127.0.0.1:2379]\n    tls: {ca_file: /x/ca.pem}\n",
        "clusters[0].tls.ca_file: /x/ca.pem: no such file",
    );
}

#[test]
fn a_certificate_without_its_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "client.pem", "");
    let path = write(
        dir.path(),
        "c.yaml",
        &format!(
            "clusters:\n  - name: a\n    endpoints: [https://127.0.0.1:2379]\n    tls: {{insecure_skip_verify: true, cert_file: {}}}\n",
            cert.display()
        ),
    );
    let message = Config::load(&path).unwrap_err().to_string();
    assert!(
        message.contains("clusters[0].tls.key_file: cert_file is set but key_file is not"),
        "got: {message}"
    );
}

#[test]
fn a_file_that_is_not_pem_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", "hello, I am not a certificate\n");
    let path = write(
        dir.path(),
        "c.yaml",
        "clusters:\n  - name: a\n    endpoints: [https://127.0.0.1:2379]\n    tls: {ca_file: ca.pem}\n",
    );
    let message = Config::load(&path).unwrap_err().to_string();
    let expected = format!(
        "clusters[0].tls.ca_file: {}: no PEM certificate in the file",
        dir.path().join("ca.pem").display()
    );
    assert!(
        message.contains(&expected),
        "expected {expected}\ngot: {message}"
    );
}

#[test]
fn bad_urls_are_refused_each_with_its_index() {
    assert_refused(
        "clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379, \"127.0.0.1:2379\", https://10.0.0.1]\n",
        "clusters[0].endpoints[1]: \"127.0.0.1:2379\" must start with http:// or https://, such as https://10.0.0.1:2379; \
         clusters[0].endpoints[2]: \"https://10.0.0.1\" has no port",
    );
}

#[test]
fn tls_settings_with_http_endpoints_are_refused() {
    assert_refused(
        &format!(
            "clusters:\n  - name: a\n    {ENDPOINT}\n    tls: {{insecure_skip_verify: true}}\n"
        ),
        "clusters[0].tls: is set but the endpoints are http://",
    );
}

#[test]
fn duplicate_cluster_names_are_refused() {
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n  - name: b\n    {ENDPOINT}\n  - name: a\n    {ENDPOINT}\n"),
        "clusters[2].name: duplicate cluster name \"a\" (also clusters[0].name)",
    );
}

#[test]
fn an_empty_cluster_list_or_endpoint_list_is_refused() {
    assert_refused("clusters: []\n", "clusters: no cluster configured");
    assert_refused(
        "clusters:\n  - name: a\n    endpoints: []\n",
        "clusters[0].endpoints: no endpoints",
    );
    assert_refused(
        &format!("clusters:\n  - name: \"\"\n    {ENDPOINT}\n"),
        "clusters[0].name: \"\" is not a cluster name",
    );
}

#[test]
fn a_missing_password_file_or_variable_is_refused() {
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n    auth: {{username: root, password_file: /x/pw}}\n"),
        "clusters[0].auth.password_file: /x/pw: no such file",
    );
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n    auth: {{username: root, password_env: ETCDMEDIC_TEST_UNSET_VARIABLE}}\n"),
        "clusters[0].auth.password_env: environment variable ETCDMEDIC_TEST_UNSET_VARIABLE is not set",
    );
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n    auth: {{username: root}}\n"),
        "clusters[0].auth: needs password_file or password_env",
    );
}

#[test]
fn a_missing_config_file_or_broken_yaml_is_reported_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, Error::ConfigRead { .. }), "{err:?}");
    assert_eq!(err.kind(), "config_read");
    assert!(err
        .to_string()
        .starts_with(&format!("config {}: ", missing.display())));

    let (message, path, _dir) = error_for("clusters: [\n");
    assert!(
        message.starts_with(&format!("config {}: ", path.display())) && message.contains("line 2"),
        "got: {message}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let (message, _, _dir) = error_for(
        "clusters:\n  - name: a\n    endpoints: [\"x\"]\n    quota_backend_bytes: 0\n    status_timeout: 0s\n",
    );
    for expected in [
        "clusters[0].endpoints[0]",
        "clusters[0].quota_backend_bytes: must be positive",
        "clusters[0].status_timeout: must be longer than 0s",
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing from: {message}"
        );
    }
}

#[test]
fn a_valid_config_resolves_defaults_relative_paths_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "password", "s3cret\n");
    let path = write(
        dir.path(),
        "etcdmedic.yaml",
        "clusters:\n  - name: prod-a\n    endpoints: [http://127.0.0.1:2379/]\n    auth: {username: root, password_file: password}\n  - name: prod-b\n    endpoints: [http://127.0.0.2:2379]\n    discover_members: false\n    quota_backend_bytes: 8589934592\n    status_timeout: 1500ms\n",
    );
    let config = Config::load(&path).unwrap();
    let a = config.cluster("prod-a").unwrap();
    assert_eq!(a.endpoints, vec!["http://127.0.0.1:2379"]);
    assert!(a.discover_members);
    assert_eq!(a.quota_backend_bytes, None);
    assert_eq!(a.status_timeout, Duration::from_secs(5));
    let credentials = a.credentials.as_ref().unwrap();
    assert_eq!(credentials.username, "root");
    assert_eq!(credentials.password.expose(), "s3cret");
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "the password leaked into Debug"
    );

    let b = config.cluster("prod-b").unwrap();
    assert!(!b.discover_members);
    assert_eq!(b.quota_backend_bytes, Some(8 * 1024 * 1024 * 1024));
    assert_eq!(b.status_timeout, Duration::from_millis(1500));
    assert_eq!(config.cluster_names(), vec!["prod-a", "prod-b"]);
}

#[test]
fn alert_labels_default_to_the_cluster_name_and_must_tell_clusters_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "etcdmedic.yaml",
        &format!(
            "clusters:\n  - name: a\n    {ENDPOINT}\n  - name: b\n    {ENDPOINT}\n    alert_labels: {{job: kube-etcd}}\n"
        ),
    );
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.clusters[0].alert_labels,
        [("etcd_cluster".to_string(), "a".to_string())].into()
    );
    assert_eq!(
        config.clusters[1].alert_labels,
        [("job".to_string(), "kube-etcd".to_string())].into()
    );
    assert_refused(
        &format!(
            "clusters:\n  - name: a\n    {ENDPOINT}\n    alert_labels: {{job: x}}\n  - name: b\n    {ENDPOINT}\n    alert_labels: {{job: x}}\n"
        ),
        "clusters[1].alert_labels: {\"job\": \"x\"} are also cluster \"a\"'s (clusters[0])",
    );
    // The etcd mixin's alerts carry job; a second cluster told apart by one more label
    // would leave the first one matching every alert of the second.
    assert_refused(
        &format!(
            "clusters:\n  - name: a\n    {ENDPOINT}\n    alert_labels: {{job: kube-etcd}}\n  - name: b\n    {ENDPOINT}\n    alert_labels: {{job: kube-etcd, cluster: b}}\n"
        ),
        "clusters[1].alert_labels: {\"cluster\": \"b\", \"job\": \"kube-etcd\"} and cluster \"a\"'s {\"job\": \"kube-etcd\"} (clusters[0]) overlap: every alert for b carries all of a's labels too, so it would be ignored as ambiguous. Add a label to a's alert_labels that b's alerts do not carry, such as {cluster: a}",
    );
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n    alert_labels: {{}}\n"),
        "clusters[0].alert_labels: is empty",
    );
    assert_refused(
        &format!("clusters:\n  - name: a\n    {ENDPOINT}\n    alert_labels: {{1job: x}}\n"),
        "clusters[0].alert_labels.1job: is not a Prometheus label name",
    );
}
