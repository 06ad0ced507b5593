//! Settings of the webhook service (the `remediator:` block of the shared file), resolved
//! here, when `etcdmedic-remediator serve` starts: only it reads the webhook secrets, so the
//! exporter can share the file without having them mounted. The block's keys are parsed
//! (and unknown keys refused) with the rest of the file in the shared crate.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::file::{GrafanaFile, RemediatorFile, SilencesFile};
use crate::config::RemediatorConfig as Config;
use crate::config::ServiceMode;
use etcdmedic_cluster::config::file::TlsFile;
use etcdmedic_cluster::config::read_secret_file;
use etcdmedic_cluster::listener;
use etcdmedic_cluster::tls::{self, ServerTls};
use etcdmedic_cluster::{ConfigProblems, Error, Secret};

mod auth;
mod postgres;

pub use self::auth::{Credential, ServiceAuth, ROLES};
pub use self::postgres::PostgresSettings;

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9380);
pub const DEFAULT_STATE_PATH: &str = "/var/lib/etcdmedic/state.sqlite";
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 1;
/// Alertmanager never retries a 413, so the notification is lost: leave room for large
/// groups (a few thousand alerts with long annotations).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = listener::DEFAULT_READ_HEADER_TIMEOUT;
pub const DEFAULT_READ_BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CONNECTIONS: usize = listener::DEFAULT_MAX_CONNECTIONS;
/// Long enough for an election or a restarted member to settle, short enough that NOSPACE
/// does not wait for Alertmanager's repeat_interval.
pub const DEFAULT_RETRY_AFTER_REFUSAL: Duration = Duration::from_secs(5 * 60);
/// This project's fragmentation, NOSPACE and quota alerts, and the etcd mixin's two that mean
/// the same, so kube-prometheus users get remediation without new rules.
pub const DEFAULT_TRIGGERS: [&str; 6] = [
    "EtcdmedicDatabaseHighFragmentation",
    "EtcdmedicNoSpaceAlarm",
    "EtcdmedicQuotaNearlyFull",
    "EtcdmedicDatabaseWillHitQuota",
    "etcdDatabaseHighFragmentationRatio",
    "etcdDatabaseQuotaLowSpace",
];

/// Triggers that act at once, outside maintenance windows: writes are refused, or soon will be.
pub const DEFAULT_URGENT_TRIGGERS: [&str; 3] = [
    "EtcdmedicNoSpaceAlarm",
    "EtcdmedicQuotaNearlyFull",
    "etcdDatabaseQuotaLowSpace",
];

/// The webhook service's settings, every key resolved and every secret read. (Each
/// cluster's engine settings are [`crate::config::RemediationSettings`].)
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Whether runs remediate (`act`) or are only planned and recorded (`observe`).
    pub mode: ServiceMode,
    pub listen: SocketAddr,
    /// Where people reach the service behind a proxy (`https://...`: session cookies are
    /// `Secure`, and forms posted from there are this service's).
    pub public_url: Option<url::Url>,
    /// The SQLite file, unless `postgres` is set.
    pub state_path: PathBuf,
    /// The state in PostgreSQL instead.
    pub postgres: Option<PostgresSettings>,
    pub auth: ServiceAuth,
    pub tls: Option<ServerTls>,
    pub triggers: Vec<String>,
    /// Triggers that ignore maintenance windows.
    pub urgent_triggers: Vec<String>,
    pub cooldown: Duration,
    pub max_concurrent_runs: usize,
    pub max_body_bytes: usize,
    pub read_header_timeout: Duration,
    pub read_body_timeout: Duration,
    pub max_connections: usize,
    pub retry_after_refusal: Duration,
    pub silences: Option<SilenceSettings>,
    pub grafana: Option<GrafanaSettings>,
    /// Initialise a state file that exists but is empty (`serve --init-state`; not a key of
    /// the file).
    pub init_state: bool,
    /// Where the other replicas reach this one (`serve --advertise-url`; not a key of the
    /// file, as each replica has its own).
    pub advertise_url: Option<url::Url>,
}

#[derive(Debug, Clone)]
pub struct SilenceSettings {
    pub alertmanager_url: url::Url,
    pub bearer_token: Option<Secret>,
    /// For `https://`: the CAs to trust (the system's unless `tls:` names one).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

#[derive(Debug, Clone)]
pub struct GrafanaSettings {
    pub url: url::Url,
    pub token: Secret,
    pub tags: Vec<String>,
    /// For `https://`: the CAs to trust (the system's unless `tls:` names one).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ServiceSettings {
    /// Where the state is kept, as messages name it.
    pub fn state_place(&self) -> String {
        match &self.postgres {
            Some(postgres) => postgres.place.clone(),
            None => self.state_path.display().to_string(),
        }
    }

    /// The settings of `config`'s `remediator:` block (the defaults without one), every
    /// problem named with its key; `listen` replaces `remediator.listen` (`serve --listen`),
    /// before the credentials a listener beyond loopback needs are checked.
    pub fn from_config(
        config: &Config,
        listen: Option<SocketAddr>,
    ) -> Result<ServiceSettings, Error> {
        let mut problems = ConfigProblems::default();
        let block = config.remediator_block();
        match resolve(block, listen, config.base_dir(), &mut problems) {
            Some(settings) if problems.is_empty() => Ok(settings),
            _ => Err(Error::ConfigInvalid {
                origin: config.origin.clone(),
                problems,
            }),
        }
    }
}

fn resolve(
    file: Option<&RemediatorFile>,
    listen: Option<SocketAddr>,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Option<ServiceSettings> {
    let default = RemediatorFile::default();
    let file = file.unwrap_or(&default);
    let key = "remediator";
    let before = problems.0.len();

    let listen = listen.or(file.listen).unwrap_or(DEFAULT_LISTEN);
    let auth = auth::resolve(
        file.auth.as_ref(),
        listen,
        base,
        &format!("{key}.auth"),
        problems,
    );
    let public_url = file
        .public_url
        .as_deref()
        .and_then(|raw| parse_public_url(raw, &format!("{key}.public_url"), problems));
    let tls = file
        .tls
        .as_ref()
        .and_then(|tls| tls::load_server(tls, base, &format!("{key}.tls"), problems));

    let triggers = match &file.triggers {
        Some(triggers) => {
            if triggers.is_empty() {
                problems.push(
                    format!("{key}.triggers"),
                    "is empty, so no alert could start a run; remove it for the defaults",
                );
            }
            for (index, name) in triggers.iter().enumerate() {
                if name.trim().is_empty() {
                    problems.push(format!("{key}.triggers[{index}]"), "must not be empty");
                }
            }
            triggers.clone()
        }
        None => DEFAULT_TRIGGERS
            .iter()
            .map(|name| name.to_string())
            .collect(),
    };
    let urgent_triggers = match &file.urgent_triggers {
        Some(urgent) => {
            for (index, name) in urgent.iter().enumerate() {
                if !triggers.contains(name) {
                    problems.push(
                        format!("{key}.urgent_triggers[{index}]"),
                        format!("{name:?} is not one of the triggers, so it never starts a run"),
                    );
                }
            }
            urgent.clone()
        }
        None => DEFAULT_URGENT_TRIGGERS
            .iter()
            .map(|name| name.to_string())
            .filter(|name| triggers.contains(name))
            .collect(),
    };
    let max_concurrent_runs = file
        .max_concurrent_runs
        .unwrap_or(DEFAULT_MAX_CONCURRENT_RUNS);
    if max_concurrent_runs == 0 {
        problems.push(
            format!("{key}.max_concurrent_runs"),
            "must be at least 1 (use POST /api/v1/pause to stop runs)",
        );
    }
    let max_body_bytes = file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes < 1024 {
        problems.push(
            format!("{key}.max_body_bytes"),
            format!(
                "{max_body_bytes} is too small for any Alertmanager payload; use at least 1024"
            ),
        );
    }
    let positive =
        |value: Option<Duration>, name: &str, default: Duration, problems: &mut ConfigProblems| {
            let value = value.unwrap_or(default);
            if value.is_zero() {
                problems.push(format!("{key}.{name}"), "must be longer than 0s");
            }
            value
        };
    let read_header_timeout = positive(
        file.read_header_timeout,
        "read_header_timeout",
        DEFAULT_READ_HEADER_TIMEOUT,
        problems,
    );
    let read_body_timeout = positive(
        file.read_body_timeout,
        "read_body_timeout",
        DEFAULT_READ_BODY_TIMEOUT,
        problems,
    );
    let retry_after_refusal = positive(
        file.retry_after_refusal,
        "retry_after_refusal",
        DEFAULT_RETRY_AFTER_REFUSAL,
        problems,
    );
    let max_connections = file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections < 4 {
        problems.push(
            format!("{key}.max_connections"),
            format!("{max_connections} leaves no room for Alertmanager, Prometheus and probes; use at least 4"),
        );
    }
    let silences = file
        .silences
        .as_ref()
        .and_then(|s| resolve_silences(s, base, &format!("{key}.silences"), problems));
    let grafana = file
        .grafana_annotations
        .as_ref()
        .and_then(|g| resolve_grafana(g, base, &format!("{key}.grafana_annotations"), problems));

    let postgres = file.postgres.as_ref().and_then(|p| {
        if file.state_path.is_some() {
            problems.push(
                format!("{key}.postgres"),
                "set one of state_path (SQLite) or postgres, not both",
            );
        }
        self::postgres::resolve(p, base, &format!("{key}.postgres"), problems)
    });

    if problems.0.len() > before {
        return None;
    }
    Some(ServiceSettings {
        mode: file.mode.unwrap_or_default(),
        listen,
        public_url,
        postgres,
        state_path: tls::resolve(
            base,
            file.state_path
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_STATE_PATH)),
        ),
        auth,
        tls,
        triggers,
        urgent_triggers,
        cooldown: file.cooldown.unwrap_or(DEFAULT_COOLDOWN),
        max_concurrent_runs,
        max_body_bytes,
        read_header_timeout,
        read_body_timeout,
        max_connections,
        retry_after_refusal,
        silences,
        grafana,
        init_state: false,
        advertise_url: None,
    })
}

/// `scheme://host[:port]`, http or https, and nothing after: what a browser's `Origin` says.
fn parse_public_url(raw: &str, key: &str, problems: &mut ConfigProblems) -> Option<url::Url> {
    match url::Url::parse(raw) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.has_host()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none() =>
        {
            Some(url)
        }
        Ok(_) => {
            problems.push(
                key,
                format!(
                    "{raw:?} must be an http:// or https:// address with a host and nothing \
                     after it, e.g. https://etcdmedic.example.com"
                ),
            );
            None
        }
        Err(err) => {
            problems.push(key, format!("{raw:?}: {err}"));
            None
        }
    }
}

/// A secret file's content without its trailing newline; empty is a mistake.
fn read_secret(
    base: &Path,
    path: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<Secret> {
    let value = read_secret_file(base, path, key, problems)?;
    if value.is_empty() {
        let path = tls::resolve(base, path);
        problems.push(key, format!("{}: the file is empty", path.display()));
        return None;
    }
    Some(Secret::new(value))
}

/// An `http://` or `https://` URL with a host, and the TLS to reach it with: `tls:` when
/// given (a private CA, a client certificate), the system's CAs for https otherwise.
fn parse_http_url(
    raw: &str,
    tls_file: Option<&TlsFile>,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<(url::Url, Option<Arc<rustls::ClientConfig>>)> {
    let url = match url::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
        Ok(_) => {
            problems.push(key, format!("{raw:?} is not an http:// or https:// URL"));
            return None;
        }
        Err(err) => {
            problems.push(key, format!("{raw:?}: {err}"));
            return None;
        }
    };
    let parent = key.rsplit_once('.').map_or(key, |(parent, _)| parent);
    let tls_key = format!("{parent}.tls");
    let tls = match (url.scheme(), tls_file) {
        ("http", Some(_)) => {
            problems.push(tls_key, format!("set, but {raw:?} is http://"));
            return None;
        }
        ("http", None) => None,
        (_, Some(file)) => Some(tls::load_client(file, base, &tls_key, problems)?.config),
        (_, None) => Some(tls::system_default(&tls_key, problems)?.config),
    };
    Some((url, tls))
}

fn resolve_silences(
    file: &SilencesFile,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<SilenceSettings> {
    let url = parse_http_url(
        &file.alertmanager_url,
        file.tls.as_ref(),
        base,
        &format!("{key}.alertmanager_url"),
        problems,
    );
    let bearer_token = file
        .bearer_token_file
        .as_ref()
        .map(|path| read_secret(base, path, &format!("{key}.bearer_token_file"), problems));
    let (alertmanager_url, tls) = url?;
    Some(SilenceSettings {
        alertmanager_url,
        tls,
        bearer_token: match bearer_token {
            Some(token) => Some(token?),
            None => None,
        },
    })
}

fn resolve_grafana(
    file: &GrafanaFile,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<GrafanaSettings> {
    let url = parse_http_url(
        &file.url,
        file.tls.as_ref(),
        base,
        &format!("{key}.url"),
        problems,
    );
    let token = read_secret(
        base,
        &file.token_file,
        &format!("{key}.token_file"),
        problems,
    );
    let (url, tls) = url?;
    Some(GrafanaSettings {
        url,
        token: token?,
        tags: file.tags.clone(),
        tls,
    })
}

#[cfg(test)]
mod tests;
