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
    let err = ServiceSettings::from_config(&config, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("remediator.auth.bearer_token_file") && err.contains("no such file"),
        "{err}"
    );
    write(dir.path(), "token", "s3cret\n");
    let settings = ServiceSettings::from_config(&config, None).unwrap();
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
    assert_eq!(
        settings.auth,
        ServiceAuth::shared(Credential::Bearer(Secret::new("s3cret")))
    );
    assert!(!format!("{settings:?}").contains("s3cret"));
}

#[test]
fn remediator_mistakes_are_named_with_their_keys() {
    let problems = |remediator: &str| {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!("remediator:\n{remediator}clusters:\n  - name: a\n    {ENDPOINT}\n");
        let path = write(dir.path(), "etcdmedic.yaml", &yaml);
        let config = Config::load(&path).unwrap();
        ServiceSettings::from_config(&config, None)
            .unwrap_err()
            .to_string()
    };
    let message = problems("  max_concurrent_runs: 0\n  triggers: []\n  auth: {}\n");
    for expected in [
        "remediator.max_concurrent_runs: must be at least 1",
        "remediator.triggers: is empty",
        "remediator.auth: needs credentials: webhook, operator and viewer",
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
        Config::load(&path).map(|config| ServiceSettings::from_config(&config, None).unwrap().mode)
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

/// The settings of a `remediator:` block of `remediator` lines, or its problems.
fn settings_of(dir: &Path, remediator: &str) -> Result<ServiceSettings, String> {
    let yaml = format!("remediator:\n{remediator}clusters:\n  - name: a\n    {ENDPOINT}\n");
    let path = write(dir, "etcdmedic.yaml", &yaml);
    let config = Config::load(&path).map_err(|err| err.to_string())?;
    ServiceSettings::from_config(&config, None).map_err(|err| err.to_string())
}

/// What `auth` and `listen` in `remediator` give, or the problems they have.
fn auth_of(dir: &Path, remediator: &str) -> Result<ServiceAuth, String> {
    settings_of(dir, remediator).map(|settings| settings.auth)
}

#[test]
fn each_role_reads_its_own_credential() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "webhook-token", "from-alertmanager\n");
    write(dir.path(), "operator-password", "pw\n");
    let auth = auth_of(
        dir.path(),
        "  auth:\n    webhook: {bearer_token_file: webhook-token}\n    operator: {basic_auth: {username: sre, password_file: operator-password}}\n",
    )
    .unwrap();
    assert_eq!(
        auth,
        ServiceAuth::Roles {
            webhook: Some(Credential::Bearer(Secret::new("from-alertmanager"))),
            operator: Some(Credential::Basic {
                username: "sre".into(),
                password: Secret::new("pw")
            }),
            viewer: None,
        }
    );
}

#[test]
fn roles_are_written_one_way_and_never_share_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", "same\n");
    write(dir.path(), "b", "same\n");
    let cases = [
        (
            "  auth: {bearer_token_file: a, viewer: {bearer_token_file: b}}\n",
            "remediator.auth: set either one credential for every role",
        ),
        (
            "  auth:\n    webhook: {bearer_token_file: a}\n    operator: {bearer_token_file: b}\n",
            "remediator.auth.operator: is the same secret as remediator.auth.webhook",
        ),
        (
            "  auth: {viewer: {}}\n",
            "remediator.auth.viewer: needs bearer_token_file or basic_auth",
        ),
        (
            "  auth: {webhook: {bearer_token_file: a, basic_auth: {username: u, password_file: b}}}\n",
            "remediator.auth.webhook: set one of bearer_token_file or basic_auth, not both",
        ),
        (
            "  auth: {operator: {basic_auth: {username: 'a:b', password_file: b}}}\n",
            "remediator.auth.operator.basic_auth.username: must be non-empty and without ':'",
        ),
        ("  auth: {admin: {bearer_token_file: a}}\n", "remediator.auth.admin: unknown key"),
        ("  auth: nobody\n", "`none`, or credentials"),
    ];
    for (remediator, expected) in cases {
        let message = auth_of(dir.path(), remediator).unwrap_err();
        assert!(message.contains(expected), "{remediator}: {message}");
    }
}

#[test]
fn a_listener_beyond_loopback_needs_credentials_or_auth_none() {
    let dir = tempfile::tempdir().unwrap();
    // The default listener is 0.0.0.0:9380.
    for listen in ["", "  listen: 10.0.0.1:9380\n", "  listen: \"[::]:9380\"\n"] {
        let message = auth_of(dir.path(), listen).unwrap_err();
        assert!(
            message.contains("remediator.auth: is required when listening on")
                && message.contains("auth: none"),
            "{listen}: {message}"
        );
    }
    assert_eq!(
        auth_of(dir.path(), "  auth: none\n").unwrap(),
        ServiceAuth::Open { explicit: true }
    );
    for listen in ["  listen: 127.0.0.1:9380\n", "  listen: \"[::1]:9380\"\n"] {
        assert_eq!(
            auth_of(dir.path(), listen).unwrap(),
            ServiceAuth::Open { explicit: false },
            "{listen}"
        );
    }
    // `serve --listen` is what counts, whichever way it moves the listener.
    let config = Config::load(&dir.path().join("etcdmedic.yaml")).unwrap();
    let wide = ServiceSettings::from_config(&config, Some("0.0.0.0:9380".parse().unwrap()));
    assert!(wide
        .unwrap_err()
        .to_string()
        .contains("listening on 0.0.0.0:9380"));
    let yaml = format!("clusters:\n  - name: a\n    {ENDPOINT}\n");
    let config = Config::load(&write(dir.path(), "etcdmedic.yaml", &yaml)).unwrap();
    let local = ServiceSettings::from_config(&config, Some("127.0.0.1:9380".parse().unwrap()));
    assert_eq!(local.unwrap().listen.to_string(), "127.0.0.1:9380");
}

#[test]
fn the_public_url_is_an_origin_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let public_url = |value: &str| {
        let lines = format!("  listen: 127.0.0.1:9380\n  public_url: \"{value}\"\n");
        settings_of(dir.path(), &lines)
            .map(|settings| settings.public_url.map(|url| url.to_string()))
    };
    assert_eq!(
        public_url("https://etcdmedic.example.com")
            .unwrap()
            .as_deref(),
        Some("https://etcdmedic.example.com/")
    );
    assert!(public_url("http://10.0.0.1:9380/").is_ok());
    for wrong in [
        "https://etcdmedic.example.com/remediator",
        "https://etcdmedic.example.com/?a=b",
        "ftp://etcdmedic.example.com",
        "https://user:pw@etcdmedic.example.com",
        "etcdmedic.example.com",
    ] {
        let message = public_url(wrong).unwrap_err();
        assert!(
            message.contains("remediator.public_url"),
            "{wrong}: {message}"
        );
    }
}

#[test]
fn alertmanager_and_grafana_may_be_reached_over_https() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "grafana-token", "g\n");
    let resolve = |remediator: &str| {
        settings_of(
            dir.path(),
            &format!("  listen: 127.0.0.1:9380\n{remediator}"),
        )
    };
    let settings = resolve(
        "  silences: {alertmanager_url: \"https://alertmanager.example:9093\"}\n  grafana_annotations: {url: \"http://grafana:3000\", token_file: grafana-token}\n",
    )
    .unwrap();
    let silences = settings.silences.unwrap();
    assert_eq!(silences.alertmanager_url.scheme(), "https");
    assert!(silences.tls.is_some(), "https trusts the system's CAs");
    assert!(settings.grafana.unwrap().tls.is_none(), "http has no TLS");
    let message =
        resolve("  silences: {alertmanager_url: \"http://am:9093\", tls: {ca_file: ca.pem}}\n")
            .unwrap_err();
    assert!(
        message.contains("remediator.silences.tls: set, but \"http://am:9093\" is http://"),
        "{message}"
    );
    let message = resolve(
        "  grafana_annotations: {url: \"https://grafana\", token_file: grafana-token, tls: {ca_file: missing.pem}}\n",
    )
    .unwrap_err();
    assert!(
        message.contains("remediator.grafana_annotations.tls.ca_file")
            && message.contains("missing.pem"),
        "{message}"
    );
    let message = resolve("  silences: {alertmanager_url: \"ftp://am\"}\n").unwrap_err();
    assert!(
        message.contains("is not an http:// or https:// URL"),
        "{message}"
    );
}

#[test]
fn a_database_beyond_loopback_needs_tls_unless_the_url_says_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = |url: &str| {
        let lines = format!("  listen: 127.0.0.1:9380\n  postgres: {{url: \"{url}\"}}\n");
        settings_of(dir.path(), &lines)
            .map(|settings| settings.postgres.is_some_and(|p| p.tls.is_some()))
    };
    let message = postgres("postgres://etcdmedic@db.example.internal:5432/etcdmedic").unwrap_err();
    assert!(
        message.contains("remediator.postgres.tls: needed for a database beyond loopback")
            && message.contains("sslmode=disable"),
        "{message}"
    );
    assert!(postgres("postgres://etcdmedic@10.0.0.4/etcdmedic?sslmode=prefer").is_err());
    // Plain text said on purpose, or TLS asked for; loopback and sockets need neither.
    assert_eq!(
        postgres("postgres://etcdmedic@db.example.internal/etcdmedic?sslmode=disable"),
        Ok(false)
    );
    assert_eq!(
        postgres("postgres://etcdmedic@db.example.internal/etcdmedic?sslmode=require"),
        Ok(true)
    );
    for local in [
        "postgres://etcdmedic@127.0.0.1:5432/etcdmedic",
        "postgres://etcdmedic@localhost/etcdmedic",
        "postgres://etcdmedic@[::1]:5432/etcdmedic",
        "postgres://etcdmedic@%2Frun%2Fpostgresql/etcdmedic",
    ] {
        assert_eq!(postgres(local), Ok(false), "{local}");
    }
}
