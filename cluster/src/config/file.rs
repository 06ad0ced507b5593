//! The configuration file exactly as written, as far as both binaries read it. Every struct
//! denies unknown keys, so a typo is an error that names the key instead of a setting silently
//! left at its default. The remediator's sections are kept as opaque YAML
//! ([`RemediatorSection`]): the remediator checks and resolves them, and nothing here opens a
//! file they name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// etcd's own default for `--quota-backend-bytes` (2 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
pub const DEFAULT_STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Remediation defaults for every cluster (the remediator's).
    #[serde(default)]
    pub remediation: Option<RemediatorSection>,
    /// The webhook service (`etcdmedic-remediator serve`).
    #[serde(default)]
    pub remediator: Option<RemediatorSection>,
    /// Backup defaults for every cluster (the remediator's).
    #[serde(default)]
    pub backup: Option<RemediatorSection>,
    pub clusters: Vec<ClusterFile>,
}

/// A block only the remediator reads (`remediation:`, `backup:`, `remediator:`), kept as
/// written. The exporter accepts the same file and skips these blocks whole: it neither
/// checks their keys nor opens the credential files they name, which its pod does not mount.
pub type RemediatorSection = yaml_serde::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Becomes the `etcd_cluster` label and the `/probe?target=` name.
    pub name: String,
    /// Where to start: with `discover_members`, any one live member is enough.
    pub endpoints: Vec<String>,
    /// Ask MemberList for every member's client URL instead of probing `endpoints` only.
    #[serde(default = "default_true")]
    pub discover_members: bool,
    #[serde(default)]
    pub tls: Option<TlsFile>,
    #[serde(default)]
    pub auth: Option<AuthFile>,
    /// Used only when a member reports its quota neither in Status (etcd 3.6+) nor on its
    /// `/metrics`; then etcd's default, 2 GiB.
    #[serde(default)]
    pub quota_backend_bytes: Option<u64>,
    /// Where members serve `/metrics` when not on their client URL (`--listen-metrics-urls`),
    /// with `{host}` for the member's host: `http://{host}:2381/metrics`.
    #[serde(default)]
    pub metrics_url: Option<String>,
    /// How long one member may take to answer one call.
    #[serde(default = "default_status_timeout", with = "humantime_serde")]
    pub status_timeout: Duration,
    /// Overrides of the top-level `remediation:` defaults for this cluster (the remediator's).
    #[serde(default)]
    pub remediation: Option<RemediatorSection>,
    /// Overrides of the top-level `backup:` defaults for this cluster (the remediator's).
    #[serde(default)]
    pub backup: Option<RemediatorSection>,
    /// The alert labels that name this cluster, all of which an alert must carry with these
    /// values. Default `{etcd_cluster: <name>}`; `{job: kube-etcd}` suits the etcd mixin.
    #[serde(default)]
    pub alert_labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// CA bundle that signed the members' serving certificates; the system roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate, for members started with `--client-cert-auth`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name to verify the serving certificate against, when it does not carry the endpoint's
    /// address.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any serving certificate. Only for a first look at a cluster; never in production.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A server's TLS settings (the remediator's listener): built by [`crate::ServerTls`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFile {
    /// Serving certificate chain (PEM).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    pub username: String,
    /// File holding the password (a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_status_timeout() -> Duration {
    DEFAULT_STATUS_TIMEOUT
}
