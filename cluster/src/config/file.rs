//! The configuration file exactly as written. Every struct denies unknown keys, so a typo is
//! an error that names the key instead of a setting silently left at its default.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// etcd's own default for `--quota-backend-bytes` (2 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
pub const DEFAULT_STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub clusters: Vec<ClusterFile>,
}

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
    /// Used when the server does not report its quota (etcd before 3.6).
    #[serde(default = "default_quota")]
    pub quota_backend_bytes: u64,
    /// How long one member may take to answer one call.
    #[serde(default = "default_status_timeout", with = "humantime_serde")]
    pub status_timeout: Duration,
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

fn default_quota() -> u64 {
    DEFAULT_QUOTA_BACKEND_BYTES
}

fn default_status_timeout() -> Duration {
    DEFAULT_STATUS_TIMEOUT
}
