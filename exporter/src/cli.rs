//! Command-line interface of `etcdmedic-exporter`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use etcdmedic_cluster::binary::LogArgs;
use etcdmedic_cluster::config::file::{AuthFile, ClusterFile, TlsFile};

use crate::targets::{DEFAULT_MAX_CONCURRENT_CLUSTERS, DEFAULT_MAX_KEPT_CONNECTIONS};
use etcdmedic_cluster::listener::DEFAULT_MAX_CONNECTIONS;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:9379";

const EXIT_STATUS: &str = "\
Exit status:
  0  success; for `status`, every member answered
  1  `status`: at least one member did not answer; `serve`: failed while running (e.g. cannot bind)
  2  bad usage or invalid configuration (nothing was started)";

#[derive(Debug, Parser)]
#[command(
    name = "etcdmedic-exporter",
    version = etcdmedic_cluster::build_info::VERSION_LONG,
    about = "Per-member etcd status (db size, in-use size, leader, alarms, raft progress, quota) as Prometheus metrics and as a table.",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter when `--log-level` is not given.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Serve(_) => "info",
            Command::Status(_) => "error",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /metrics, /probe?target=<cluster>, /healthz and /readyz.
    Serve(ServeArgs),
    /// Print one row per member, like `talosctl etcd status`.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The etcdmedic YAML configuration.
    #[arg(long, env = "ETCDMEDIC_CONFIG")]
    pub config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN, env = "ETCDMEDIC_EXPORTER_LISTEN")]
    pub listen: SocketAddr,
    /// Clusters collected at once, across all scrapes.
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENT_CLUSTERS)]
    pub max_concurrent_clusters: usize,
    /// Members whose connections are kept between scrapes (about 40 KB each), in
    /// configuration order, each cluster counted as its configured endpoints (at least 3 with
    /// member discovery); the clusters beyond reconnect on every scrape.
    #[arg(long, default_value_t = DEFAULT_MAX_KEPT_CONNECTIONS)]
    pub max_kept_connections: usize,
    /// Validate the configuration, print a summary and exit.
    #[arg(long = "config.check")]
    pub config_check: bool,
    /// How long a client may take to send a request's head; it is disconnected after
    /// (the default is the listener's `DEFAULT_READ_HEADER_TIMEOUT`, a test keeps them equal).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub read_header_timeout: std::time::Duration,
    /// Connections open at once; more are closed on arrival (Prometheus needs one or two
    /// per exporter).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(4..))]
    pub max_connections: u64,
    /// Accept `POST /-/reload` from any address. Without it only loopback clients may reload
    /// (a sidecar in the same pod, `curl` on the host); SIGHUP always reloads.
    #[arg(long = "web.remote-reload")]
    pub remote_reload: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["config", "endpoints"]))]
pub struct StatusArgs {
    /// The etcdmedic YAML configuration (all clusters, or one with --cluster).
    #[arg(long, env = "ETCDMEDIC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Only this cluster from the configuration.
    #[arg(long, requires = "config")]
    pub cluster: Option<String>,
    /// Client URLs, comma separated, instead of a configuration file.
    #[arg(long, value_delimiter = ',', conflicts_with = "config")]
    pub endpoints: Vec<String>,
    /// CA bundle for the members' serving certificates.
    #[arg(long, requires = "endpoints")]
    pub cacert: Option<PathBuf>,
    /// Client certificate.
    #[arg(long, requires_all = ["endpoints", "key"])]
    pub cert: Option<PathBuf>,
    /// Client certificate key.
    #[arg(long, requires_all = ["endpoints", "cert"])]
    pub key: Option<PathBuf>,
    /// Name to check the serving certificate against.
    #[arg(long, requires = "endpoints")]
    pub server_name: Option<String>,
    /// Accept any serving certificate.
    #[arg(long, requires = "endpoints")]
    pub insecure_skip_tls_verify: bool,
    /// etcd user; the password comes from --password-file.
    #[arg(long, requires_all = ["endpoints", "password_file"])]
    pub user: Option<String>,
    /// File holding the etcd user's password.
    #[arg(long, requires = "user")]
    pub password_file: Option<PathBuf>,
    /// Only ask the given endpoints; do not discover other members through MemberList.
    #[arg(long, requires = "endpoints")]
    pub no_discovery: bool,
    /// Quota to assume for members that report theirs neither in Status (etcd 3.6+) nor on
    /// their /metrics (default: etcd's, 2 GiB).
    #[arg(long, requires = "endpoints")]
    pub quota_backend_bytes: Option<u64>,
    /// How long each member may take to answer (default: the config's status_timeout, or 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

impl StatusArgs {
    /// The cluster described by --endpoints and its companion flags, in the config file's
    /// shape so that it is validated by the same rules.
    pub fn adhoc_cluster(&self) -> ClusterFile {
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        let tls = (https
            || self.cacert.is_some()
            || self.cert.is_some()
            || self.server_name.is_some()
            || self.insecure_skip_tls_verify)
            .then(|| TlsFile {
                ca_file: self.cacert.clone(),
                cert_file: self.cert.clone(),
                key_file: self.key.clone(),
                server_name: self.server_name.clone(),
                insecure_skip_verify: self.insecure_skip_tls_verify,
            });
        ClusterFile {
            name: "endpoints".into(),
            endpoints: self.endpoints.clone(),
            discover_members: !self.no_discovery,
            tls,
            auth: self.user.as_ref().map(|user| AuthFile {
                username: user.clone(),
                password_file: self.password_file.clone(),
                password_env: None,
            }),
            quota_backend_bytes: self.quota_backend_bytes,
            metrics_url: None,
            status_timeout: self
                .timeout
                .unwrap_or(etcdmedic_cluster::config::file::DEFAULT_STATUS_TIMEOUT),
            remediation: None,
            backup: None,
            alert_labels: None,
        }
    }
}

/// A listener timeout: a duration (`10s`, `2m`) longer than zero (which would close every
/// connection at once; the remediator refuses it the same way).
fn positive_duration(text: &str) -> Result<Duration, DurationError> {
    match humantime::parse_duration(text)? {
        duration if duration.is_zero() => Err(DurationError::Zero),
        duration => Ok(duration),
    }
}

#[derive(Debug, thiserror::Error)]
enum DurationError {
    #[error(transparent)]
    Unreadable(#[from] humantime::DurationError),
    #[error("must be longer than 0s")]
    Zero,
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcdmedic_cluster::listener::DEFAULT_READ_HEADER_TIMEOUT;

    #[test]
    fn the_listener_defaults_are_the_remediators_and_too_few_connections_are_refused() {
        let parse = |extra: &[&str]| {
            let args = ["etcdmedic-exporter", "serve", "--config", "c.yaml"];
            Cli::try_parse_from(args.iter().chain(extra)).map(|cli| match cli.command {
                Command::Serve(serve) => Some((serve.read_header_timeout, serve.max_connections)),
                Command::Status(_) => None,
            })
        };
        assert_eq!(
            parse(&[]).unwrap(),
            Some((DEFAULT_READ_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS as u64))
        );
        assert_eq!(
            parse(&["--read-header-timeout", "2s", "--max-connections", "8"]).unwrap(),
            Some((Duration::from_secs(2), 8))
        );
        let refused = parse(&["--max-connections", "2"]).unwrap_err().to_string();
        assert!(refused.contains("--max-connections"), "{refused}");
        assert!(parse(&["--read-header-timeout", "soon"]).is_err());
        let refused = parse(&["--read-header-timeout", "0s"])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("longer than 0s"), "{refused}");
    }
}
