use super::*;

const ENDPOINT: &str = "endpoints: [http://127.0.0.1:2379]";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_remediator_block_resolves_defaults_and_reads_its_secrets_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "remediator:\n  state_path: state/s.sqlite\n  auth: {{bearer_token_file: token}}\n  cooldown: 30m\nclusters:\n  - name: a\n    {ENDPOINT}\n"
    );
    let path = write(dir.path(), "etcdmedic.yaml", &yaml);
    // The exporter loads the same file without the token mounted.
    let config = Config::load(&path).unwrap();
    let err = ServiceSettings::from_config(&config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("remediator.auth.bearer_token_file") && err.contains("no such file"),
        "{err}"
    );
    write(dir.path(), "token", "s3cret\n");
    let settings = ServiceSettings::from_config(&config).unwrap();
    assert_eq!(settings.state_path, dir.path().join("state/s.sqlite"));
    assert_eq!(settings.cooldown, Duration::from_secs(1800));
    assert_eq!(settings.max_concurrent_runs, 1);
    assert_eq!(settings.max_body_bytes, 16 * 1024 * 1024);
    assert_eq!(settings.retry_after_refusal, Duration::from_secs(300));
    assert_eq!(settings.read_header_timeout, Duration::from_secs(10));
    assert_eq!(settings.max_connections, 256);
    assert_eq!(settings.listen.to_string(), "0.0.0.0:9380");
    assert!(settings
        .triggers
        .contains(&"etcdDatabaseHighFragmentationRatio".to_string()));
    assert_eq!(settings.auth, WebhookAuth::Bearer(Secret::new("s3cret")));
    assert!(!format!("{settings:?}").contains("s3cret"));
}

#[test]
fn remediator_mistakes_are_named_with_their_keys() {
    let problems = |remediator: &str| {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!("remediator:\n{remediator}clusters:\n  - name: a\n    {ENDPOINT}\n");
        let path = write(dir.path(), "etcdmedic.yaml", &yaml);
        let config = Config::load(&path).unwrap();
        ServiceSettings::from_config(&config)
            .unwrap_err()
            .to_string()
    };
    let message = problems("  max_concurrent_runs: 0\n  triggers: []\n  auth: {}\n");
    for expected in [
        "remediator.max_concurrent_runs: must be at least 1",
        "remediator.triggers: is empty",
        "remediator.auth: needs bearer_token_file or basic_auth",
    ] {
        assert!(
            message.contains(expected),
            "missing {expected:?} in {message}"
        );
    }
    let message = problems("  silences: {alertmanager_url: \"ftp://am\"}\n  tls: {cert_file: c.pem, key_file: k.pem}\n");
    assert!(
        message.contains("remediator.silences.alertmanager_url"),
        "{message}"
    );
    assert!(
        message.contains("remediator.tls.cert_file") && message.contains("c.pem: no such file"),
        "{message}"
    );
}

#[test]
fn the_mode_is_act_unless_the_file_says_observe_and_anything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "token", "t\n");
    let settings_of = |mode: &str| {
        let yaml = format!(
            "remediator:\n{mode}  auth: {{bearer_token_file: token}}\nclusters:\n  - name: a\n    {ENDPOINT}\n"
        );
        let path = write(dir.path(), "etcdmedic.yaml", &yaml);
        Config::load(&path).map(|config| ServiceSettings::from_config(&config).unwrap().mode)
    };
    assert_eq!(settings_of("").unwrap(), ServiceMode::Act);
    assert_eq!(settings_of("  mode: act\n").unwrap(), ServiceMode::Act);
    assert_eq!(
        settings_of("  mode: observe\n").unwrap(),
        ServiceMode::Observe
    );
    let err = settings_of("  mode: watch\n").unwrap_err().to_string();
    assert!(
        err.contains("remediator.mode") && err.contains("observe") && err.contains("act"),
        "{err}"
    );
}
