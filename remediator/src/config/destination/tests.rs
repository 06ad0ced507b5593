use crate::config::RemediatorConfig as Config;
use crate::config::Target;
use std::path::Path;

fn config_with(destination: &str, base: &Path) -> Result<Config, String> {
    let yaml = format!(
        "backup:\n  destinations:\n    - {destination}\nclusters:\n  - name: a\n    \
         endpoints: [http://127.0.0.1:2379]\n"
    );
    Config::from_yaml(&yaml, &base.join("c.yaml")).map_err(|e| e.to_string())
}

#[test]
fn an_s3_destination_reads_its_credentials_from_files_and_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("id"), "AKIDEXAMPLE\n").unwrap();
    std::fs::write(dir.path().join("secret"), "wJalrXUtnFEMI\n").unwrap();
    let config = config_with(
        "{name: offsite, kind: s3, bucket: etcd-backups, prefix: prod/eu-1, endpoint: \
         'http://127.0.0.1:9000', region: eu-west-1, path_style: true, access_key_id_file: \
         id, secret_access_key_file: secret}",
        dir.path(),
    )
    .unwrap();
    let destination = &config.clusters[0].backup.destinations[0];
    let Target::S3(s3) = &destination.target else {
        panic!("{destination:?}")
    };
    assert_eq!(s3.bucket, "etcd-backups");
    assert_eq!(
        s3.prefix.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        ["prod", "eu-1"]
    );
    assert!(s3.path_style);
    assert_eq!(s3.object_lock, None);
    let credentials = s3.credentials.as_ref().unwrap();
    assert_eq!(credentials.secret_access_key.expose(), "wJalrXUtnFEMI");
    let shown = format!(
        "{destination:?} {}",
        serde_json::to_string(destination).unwrap()
    );
    assert!(!shown.contains("wJalrXUtnFEMI") && !shown.contains("AKIDEXAMPLE"));
    assert!(shown.contains("<secret>"), "{shown}");
}

#[test]
fn bad_s3_destinations_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("id"), "AKIDEXAMPLE\n").unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    std::fs::write(dir.path().join("partial.json"), r#"{"client_email": "x"}"#).unwrap();
    let cases = [
        (
            "{name: o, kind: s3, bucket: Etcd_Backups}",
            "backup.destinations[0].bucket: \"Etcd_Backups\" is not a valid bucket name",
        ),
        (
            "{name: o, kind: s3}",
            "backup.destinations[0].bucket: an s3 destination needs its bucket",
        ),
        (
            "{name: o, kind: s3, bucket: b-1, prefix: '../up'}",
            "backup.destinations[0].prefix: \"../up\" is not a prefix",
        ),
        (
            "{name: o, kind: s3, bucket: b-1, endpoint: 'ftp://x'}",
            "backup.destinations[0].endpoint: \"ftp://x\" is not an http:// or https:// URL",
        ),
        (
            "{name: o, kind: s3, bucket: b-1, access_key_id_file: /nonexistent/id, \
             secret_access_key_file: /nonexistent/secret}",
            "backup.destinations[0].access_key_id_file: /nonexistent/id:",
        ),
        (
            "{name: o, kind: s3, bucket: b-1, access_key_id_file: id}",
            "backup.destinations[0].secret_access_key_file: set both credential files",
        ),
        (
            "{name: o, kind: s3, bucket: b-1, path: /srv}",
            "backup.destinations[0].path: does not apply to kind: s3",
        ),
        (
            "{name: o, kind: local, path: /srv, bucket: b-1}",
            "backup.destinations[0].bucket: does not apply to kind: local",
        ),
        (
            "{name: o, kind: gcs}",
            "backup.destinations[0].bucket: a gcs destination needs its bucket",
        ),
        (
            "{name: o, kind: gcs, bucket: b_1, region: x}",
            "backup.destinations[0].region: does not apply to kind: gcs",
        ),
        (
            "{name: o, kind: gcs, bucket: b-1, service_account_file: id}",
            "backup.destinations[0].service_account_file: id: not a JSON object",
        ),
        (
            "{name: o, kind: gcs, bucket: b-1, service_account_file: partial.json}",
            "service_account_file: partial.json: a service account key needs client_email",
        ),
        (
            "{name: o, kind: azure, container: c-1}",
            "backup.destinations[0].account: an azure destination needs its storage account",
        ),
        (
            "{name: o, kind: azure, account: Prod, container: c-1}",
            "backup.destinations[0].account: \"Prod\" is not a valid account name",
        ),
        (
            "{name: o, kind: azure, account: prod, container: 'a--b'}",
            "backup.destinations[0].container: \"a--b\" is not a valid container name",
        ),
        (
            "{name: o, kind: azure, account: prod, container: c-1, bucket: b-1}",
            "backup.destinations[0].bucket: does not apply to kind: azure",
        ),
        (
            "{name: o, kind: azure, account: prod, container: c-1, account_key_file: empty}",
            "backup.destinations[0].account_key_file: empty is empty",
        ),
        (
            "{name: o, kind: s3, bucket: b-1, object_lock: {mode: governance, days: 0}}",
            "backup.destinations[0].object_lock.days: 0 is not from 1 to 36500",
        ),
        (
            "{name: o, kind: s3, bucket: b-1, object_lock: {mode: legal_hold, days: 7}}",
            "unknown variant `legal_hold`, expected `governance` or `compliance`",
        ),
        (
            "{name: o, kind: s3, bucket: b-1, object_lock: {mode: compliance}}",
            "missing field `days`",
        ),
        (
            "{name: o, kind: gcs, bucket: b-1, object_lock: {mode: compliance, days: 7}}",
            "backup.destinations[0].object_lock: does not apply to kind: gcs; a gcs bucket's \
             retention policy",
        ),
        (
            "{name: o, kind: local, path: /srv, object_lock: {mode: compliance, days: 7}}",
            "backup.destinations[0].object_lock: does not apply to kind: local",
        ),
    ];
    for (destination, expected) in cases {
        let err = config_with(destination, dir.path()).unwrap_err();
        assert!(err.contains(expected), "{destination}: {err}");
    }
}

#[test]
fn gcs_and_azure_destinations_read_their_keys_from_files_and_never_print_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = r#"{"type": "service_account", "client_email": "b@p.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n", "private_key_id": "k1"}"#;
    std::fs::write(dir.path().join("sa.json"), key).unwrap();
    std::fs::write(dir.path().join("account-key"), "c2VjcmV0LWtleQ==\n").unwrap();
    let config = config_with(
        "{name: g, kind: gcs, bucket: etcd_backups, prefix: prod, service_account_file: \
         sa.json}\n    - {name: a, kind: azure, account: prodbackups, container: etcd, \
         endpoint: 'http://127.0.0.1:10000/prodbackups/', account_key_file: account-key}",
        dir.path(),
    )
    .unwrap();
    let [gcs, azure] = &config.clusters[0].backup.destinations[..] else {
        panic!("{:?}", config.clusters[0].backup.destinations)
    };
    let (Target::Gcs(g), Target::Azure(a)) = (&gcs.target, &azure.target) else {
        panic!("{gcs:?} {azure:?}")
    };
    assert_eq!((g.bucket.as_str(), gcs.kind()), ("etcd_backups", "gcs"));
    assert!(g
        .service_account
        .as_ref()
        .unwrap()
        .expose()
        .contains("PRIVATE KEY"));
    assert_eq!(a.account, "prodbackups");
    assert_eq!(
        a.endpoint.as_deref(),
        Some("http://127.0.0.1:10000/prodbackups")
    );
    assert_eq!(a.account_key.as_ref().unwrap().expose(), "c2VjcmV0LWtleQ==");
    let shown = format!(
        "{:?} {}",
        config.clusters[0].backup,
        serde_json::to_string(&config.clusters[0].backup.destinations).unwrap()
    );
    assert!(
        !shown.contains("PRIVATE") && !shown.contains("c2VjcmV0"),
        "{shown}"
    );
    assert!(shown.contains("\"kind\":\"azure\""), "{shown}");
}

#[test]
fn an_s3_destination_locks_for_its_mode_and_days() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        "{name: vault, kind: s3, bucket: etcd-backups, object_lock: {mode: compliance, days: \
         30}}",
        dir.path(),
    )
    .unwrap();
    let Target::S3(s3) = &config.clusters[0].backup.destinations[0].target else {
        panic!("{:?}", config.clusters[0].backup.destinations)
    };
    assert_eq!(
        s3.object_lock,
        Some(crate::config::ObjectLock {
            mode: crate::config::LockMode::Compliance,
            days: 30
        })
    );
}
