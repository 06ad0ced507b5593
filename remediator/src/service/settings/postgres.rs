//! `remediator.postgres`: the service's state in PostgreSQL. The password comes only from a
//! file (a URL with one is refused: it would be printed, logged and kept in the config file).

use std::path::Path;
use std::time::Duration;

use etcdmedic_cluster::config::file::PostgresFile;
use etcdmedic_cluster::ConfigProblems;

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
    if config.get_ssl_mode() == postgres::config::SslMode::Require {
        problems.push(
            url_key.clone(),
            "sslmode=require: this build connects without TLS; reach PostgreSQL over a trusted network (sslmode=disable)",
        );
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
