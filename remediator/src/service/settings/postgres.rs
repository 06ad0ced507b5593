//! `remediator.postgres`: the service's state in PostgreSQL. The password comes only from a
//! file (a URL with one is refused: it would be printed, logged and kept in the config file).
//! TLS with the same `tls:` block as a cluster's; every connection then requires it. A
//! database beyond loopback needs TLS unless the URL says `sslmode=disable` on purpose.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::file::PostgresFile;
use etcdmedic_cluster::{tls, ConfigProblems};
use postgres::config::SslMode;

/// How long connecting may take, unless `connect_timeout` says otherwise.
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A dead peer (a node gone without closing its connections) is noticed after about this
/// long plus a few probes, rather than after the kernel's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct PostgresSettings {
    /// Everything to connect with, the password included.
    pub config: postgres::Config,
    /// The database as messages name it: `postgres://user@host:port/database`.
    pub place: String,
    /// TLS to PostgreSQL (`tls:`, or `sslmode=require` with the system's CAs); plain TCP
    /// without.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("database", &self.place)
            .finish()
    }
}

/// The settings of `remediator.postgres`, every problem named with its key.
pub(super) fn resolve(
    file: &PostgresFile,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<PostgresSettings> {
    let url_key = format!("{key}.url");
    if !file.url.starts_with("postgres://") && !file.url.starts_with("postgresql://") {
        problems.push(url_key, "must be a URL postgres://user@host:port/database");
        return None;
    }
    let mut config: postgres::Config = match file.url.parse() {
        Ok(config) => config,
        Err(err) => {
            // The URL is not repeated: it may hold a password.
            problems.push(url_key, format!("not a PostgreSQL URL: {err}"));
            return None;
        }
    };
    let before = problems.0.len();
    if config.get_password().is_some() {
        problems.push(
            url_key.clone(),
            "holds a password, which would be printed and kept in this file; put it in password_file",
        );
    }
    let Some(user) = config.get_user().map(str::to_string) else {
        problems.push(
            url_key,
            "names no user (postgres://user@host:port/database)",
        );
        return None;
    };
    let host = match config.get_hosts() {
        [postgres::config::Host::Tcp(host)] => host.clone(),
        [postgres::config::Host::Unix(path)] => path.display().to_string(),
        _ => {
            problems.push(url_key, "must name exactly one host");
            return None;
        }
    };
    let Some(database) = config.get_dbname().map(str::to_string) else {
        problems.push(
            url_key,
            "names no database (postgres://user@host:port/database)",
        );
        return None;
    };
    let tls_key = format!("{key}.tls");
    let tls = match (&file.tls, config.get_ssl_mode()) {
        (Some(_), SslMode::Disable) => {
            problems.push(tls_key, "set, but the URL says sslmode=disable");
            None
        }
        (Some(block), _) => {
            if block.server_name.is_some() {
                problems.push(
                    format!("{tls_key}.server_name"),
                    "not for PostgreSQL: the URL's host is the name its certificate must carry",
                );
            }
            tls::load_client(block, base, &tls_key, problems)
        }
        (None, SslMode::Require) => tls::system_default(&tls_key, problems),
        // Said on purpose in the URL: plain text.
        (None, SslMode::Disable) => None,
        (None, _) if beyond_loopback(config.get_hosts()) => {
            problems.push(
                tls_key,
                format!(
                    "needed for a database beyond loopback ({host}): the password and every \
                     alert would cross the network in plain text (libpq's sslmode=prefer \
                     falls back to it). Give tls: {{ca_file: ...}}, or ?sslmode=require in \
                     the URL to trust the system's CAs, or ?sslmode=disable to accept plain \
                     text on purpose"
                ),
            );
            None
        }
        (None, _) => None,
    };
    let tls = tls.map(|client| {
        // PostgreSQL negotiates TLS after its own request, and names no ALPN protocol that
        // etcd's (h2) would match.
        let mut config = (*client.config).clone();
        config.alpn_protocols.clear();
        Arc::new(config)
    });
    if tls.is_some() {
        config.ssl_mode(SslMode::Require);
    }
    if let Some(path) = &file.password_file {
        let password_key = format!("{key}.password_file");
        if let Some(password) = super::read_secret(base, path, &password_key, problems) {
            config.password(password.expose());
        }
    }
    let timeout = file.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    if timeout.is_zero() {
        problems.push(format!("{key}.connect_timeout"), "must be more than 0s");
    }
    if problems.0.len() > before {
        return None;
    }
    let port = config.get_ports().first().copied().unwrap_or(5432);
    config
        .connect_timeout(timeout)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .application_name(&application_name());
    Some(PostgresSettings {
        config,
        place: format!("postgres://{user}@{host}:{port}/{database}"),
        tls,
    })
}

/// Whether the database is reached over a network: a TCP host that is not a loopback
/// address or `localhost` (a Unix socket is local).
fn beyond_loopback(hosts: &[postgres::config::Host]) -> bool {
    hosts.iter().any(|host| match host {
        postgres::config::Host::Tcp(name) => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            !(name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()))
        }
        postgres::config::Host::Unix(_) => false,
    })
}

/// How the service's session shows in `pg_stat_activity`, and so in the message a second
/// service gets when this one holds the database.
fn application_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "an unnamed host".to_string());
    format!(
        "etcdmedic-remediator on {host} (pid {})",
        std::process::id()
    )
}
