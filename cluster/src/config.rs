//! The shared configuration: the YAML file (see [`file`]) resolved into what both binaries
//! need to reach the clusters. Resolution reads every file it names once (certificates,
//! passwords), so a missing one stops the process at start-up with the key that names it.
//! The remediator's own blocks are resolved by the remediator, which reads the same file
//! through [`parse`] and reports its problems the same way.

pub mod file;
mod name;
mod unknown_keys;

pub use name::ClusterName;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{ConfigProblems, Error, Result};
use crate::secret::Secret;
use crate::tls::{self, ClientTls};
use file::{AuthFile, ClusterFile, ConfigFile};

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub clusters: Vec<ClusterConfig>,
    /// Where the file was read from, for messages.
    pub origin: String,
    base: PathBuf,
}

/// One etcd cluster, ready to connect to.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: ClusterName,
    /// Normalised to `scheme://host:port`.
    pub endpoints: Vec<String>,
    pub discover_members: bool,
    /// Present exactly when the endpoints are `https://`.
    pub tls: Option<ClientTls>,
    pub credentials: Option<Credentials>,
    /// The quota to assume when a member reports it neither in Status nor on `/metrics`.
    pub quota_backend_bytes: Option<u64>,
    /// `/metrics` location template with `{host}`; `None`: `<client URL>/metrics`.
    pub metrics_url: Option<String>,
    pub status_timeout: Duration,
    /// An alert names this cluster when it carries every one of these labels.
    pub alert_labels: BTreeMap<String, String>,
}

/// etcd username and password (the password only ever comes from a file or the environment).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Config {
    /// Reads and validates the file at `path`. Relative paths inside it are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config> {
        Config::from_yaml(&read(path)?, path)
    }

    /// Parses `text` as if read from `path`.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config> {
        let parsed: ConfigFile = parse(text, path)?;
        let base = base_dir(path);
        let mut problems = ConfigProblems::default();
        let clusters = resolve_clusters(&parsed.clusters, base, &mut problems);
        if !problems.is_empty() {
            return Err(Error::ConfigInvalid {
                origin: path.display().to_string(),
                problems,
            });
        }
        Ok(Config {
            clusters,
            origin: path.display().to_string(),
            base: base.to_path_buf(),
        })
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|cluster| cluster.name == name)
    }

    pub fn cluster_names(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }
}

/// The text of the configuration file at `path`.
pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|reason| Error::ConfigRead {
        path: path.to_path_buf(),
        reason,
    })
}

/// The directory relative paths in a file at `path` are resolved against.
pub fn base_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Deserializes `text` (read from `path`) as `T`. A refusal names every unknown key at once
/// with the closest known one (serde stops at the first), else the first other problem with
/// its line and column. Each binary parses the blocks it owns with it.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let err = match yaml_serde::from_str(text) {
        Ok(parsed) => return Ok(parsed),
        Err(err) => err,
    };
    let syntax = || Error::ConfigSyntax {
        path: path.to_path_buf(),
        message: err.to_string(),
    };
    let Ok(tree) = yaml_serde::from_str::<yaml_serde::Value>(text) else {
        return Err(syntax());
    };
    let mut problems = ConfigProblems::default();
    let other = unknown_keys::collect::<T>(tree, &mut problems)
        .err()
        .flatten();
    if problems.is_empty() {
        return Err(syntax());
    }
    if let Some(other) = other {
        problems.push(other.path, other.message);
    }
    Err(Error::ConfigInvalid {
        origin: path.display().to_string(),
        problems,
    })
}

impl ClusterConfig {
    /// Resolves a cluster that did not come from a file (command-line flags). `origin` names
    /// where it came from in error messages.
    pub fn resolve_standalone(file: &ClusterFile, origin: &str) -> Result<ClusterConfig> {
        let mut problems = ConfigProblems::default();
        let cluster = resolve_cluster(file, Path::new("."), "cluster", &mut problems);
        match cluster {
            Some(cluster) if problems.is_empty() => Ok(cluster),
            _ => Err(Error::ConfigInvalid {
                origin: origin.to_string(),
                problems,
            }),
        }
    }
}

fn resolve_clusters(
    files: &[ClusterFile],
    base: &Path,
    problems: &mut ConfigProblems,
) -> Vec<ClusterConfig> {
    if files.is_empty() {
        problems.push("clusters", "no cluster configured; add at least one");
    }
    let mut first_index_of: HashMap<&str, usize> = HashMap::new();
    let mut clusters = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        let key = format!("clusters[{index}]");
        if let Some(first) = first_index_of.insert(file.name.as_str(), index) {
            first_index_of.insert(file.name.as_str(), first);
            problems.push(
                format!("{key}.name"),
                format!(
                    "duplicate cluster name {:?} (also clusters[{first}].name); names must be unique",
                    file.name
                ),
            );
        }
        if let Some(cluster) = resolve_cluster(file, base, &key, problems) {
            clusters.push(cluster);
        }
    }
    check_alert_labels_unique(&clusters, problems);
    clusters
}

/// An alert names a cluster when it carries all of the cluster's alert labels. When one
/// cluster's labels are among another's, every alert for the second also names the first, and
/// the service could only ignore it as ambiguous: the second cluster could never be remediated
/// from an alert.
fn check_alert_labels_unique(clusters: &[ClusterConfig], problems: &mut ConfigProblems) {
    let within = |small: &BTreeMap<String, String>, large: &BTreeMap<String, String>| {
        small
            .iter()
            .all(|(label, value)| large.get(label) == Some(value))
    };
    for (index, cluster) in clusters.iter().enumerate() {
        for (other_index, other) in clusters[..index].iter().enumerate() {
            let (mine, theirs) = (&cluster.alert_labels, &other.alert_labels);
            let message = if mine == theirs {
                format!(
                    "{mine:?} are also cluster {:?}'s (clusters[{other_index}]); alerts could \
                     not tell the two apart: give each a label the other's alerts do not carry",
                    other.name.as_str()
                )
            } else if within(theirs, mine) || within(mine, theirs) {
                let (wide, narrow) = if within(theirs, mine) {
                    (cluster, other)
                } else {
                    (other, cluster)
                };
                format!(
                    "{:?} and cluster {:?}'s {:?} (clusters[{other_index}]) overlap: every alert \
                     for {} carries all of {}'s labels too, so it would be ignored as \
                     ambiguous. Add a label to {}'s alert_labels that {}'s alerts do not carry, \
                     such as {{cluster: {}}}",
                    mine,
                    other.name.as_str(),
                    theirs,
                    wide.name,
                    narrow.name,
                    narrow.name,
                    wide.name,
                    narrow.name
                )
            } else {
                continue;
            };
            problems.push(format!("clusters[{index}].alert_labels"), message);
        }
    }
}

/// A secret file's content without its trailing newline; an unreadable file is a problem
/// under `key`.
pub fn read_secret_file(
    base: &Path,
    path: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<String> {
    let path = tls::resolve(base, path);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            crate::secret::warn_if_world_readable(&path, key);
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        }
        Err(err) => {
            problems.push(key, format!("{}: {}", path.display(), tls::io_error(&err)));
            None
        }
    }
}

/// The default `{etcd_cluster: <name>}`, or the configured labels once checked.
fn resolve_alert_labels(
    file: &ClusterFile,
    key: &str,
    problems: &mut ConfigProblems,
) -> BTreeMap<String, String> {
    let Some(labels) = &file.alert_labels else {
        return BTreeMap::from([("etcd_cluster".to_string(), file.name.clone())]);
    };
    if labels.is_empty() {
        problems.push(
            key,
            "is empty, so every alert would match; remove it for {etcd_cluster: <name>}",
        );
    }
    for name in labels.keys() {
        let valid = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if name.is_empty() || !valid {
            problems.push(
                format!("{key}.{name}"),
                "is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
            );
        }
    }
    labels.clone()
}

fn resolve_cluster(
    file: &ClusterFile,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<ClusterConfig> {
    let before = problems.0.len();
    let name = ClusterName::new(&file.name)
        .map_err(|bad| problems.push(format!("{key}.name"), bad.to_string()))
        .ok();

    if file.endpoints.is_empty() {
        problems.push(
            format!("{key}.endpoints"),
            "no endpoints; list at least one client URL such as https://10.0.0.1:2379",
        );
    }
    let mut endpoints = Vec::with_capacity(file.endpoints.len());
    for (index, raw) in file.endpoints.iter().enumerate() {
        match normalize_endpoint(raw) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(bad) => problems.push(format!("{key}.endpoints[{index}]"), bad.to_string()),
        }
    }

    let https = endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    if https != 0 && https != endpoints.len() {
        problems.push(
            format!("{key}.endpoints"),
            "mixes http:// and https://; one cluster uses one scheme",
        );
    }
    let tls = match (&file.tls, https > 0) {
        (Some(tls_file), true) => tls::load(tls_file, base, &format!("{key}.tls"), problems),
        (Some(_), false) if !endpoints.is_empty() => {
            problems.push(
                format!("{key}.tls"),
                "is set but the endpoints are http://; use https:// endpoints or remove tls",
            );
            None
        }
        (None, true) => tls::system_default(&format!("{key}.tls"), problems),
        _ => None,
    };

    let credentials = file
        .auth
        .as_ref()
        .and_then(|auth| resolve_auth(auth, base, &format!("{key}.auth"), problems));

    if file.quota_backend_bytes == Some(0) {
        problems.push(
            format!("{key}.quota_backend_bytes"),
            "must be positive (etcd's default is 2147483648)",
        );
    }
    if let Some(template) = &file.metrics_url {
        check_metrics_url(
            template,
            tls.is_some(),
            &format!("{key}.metrics_url"),
            problems,
        );
    }
    if file.status_timeout.is_zero() {
        problems.push(format!("{key}.status_timeout"), "must be longer than 0s");
    }

    let alert_labels = resolve_alert_labels(file, &format!("{key}.alert_labels"), problems);

    if problems.0.len() > before {
        return None;
    }
    Some(ClusterConfig {
        name: name?,
        endpoints,
        discover_members: file.discover_members,
        tls,
        credentials,
        quota_backend_bytes: file.quota_backend_bytes,
        metrics_url: file.metrics_url.clone(),
        status_timeout: file.status_timeout,
        alert_labels,
    })
}

/// `metrics_url` must name each member's own host and be a plain URL once it does.
fn check_metrics_url(template: &str, tls: bool, key: &str, problems: &mut ConfigProblems) {
    let example = "such as http://{host}:2381/metrics";
    if !template.contains("{host}") {
        problems.push(
            key,
            format!("{template:?} has no {{host}}: each member serves its own metrics, {example}"),
        );
        return;
    }
    match url::Url::parse(&template.replace("{host}", "127.0.0.1")) {
        Ok(url) if url.scheme() == "https" && !tls => problems.push(
            key,
            format!("{template:?} is https:// but the cluster has no TLS settings; use http:// or https:// endpoints"),
        ),
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        Ok(_) => problems.push(key, format!("{template:?} must start with http:// or https://, {example}")),
        Err(err) => problems.push(key, format!("{template:?} is not a URL ({err}), {example}")),
    }
}

fn resolve_auth(
    auth: &AuthFile,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<Credentials> {
    if auth.username.is_empty() {
        problems.push(format!("{key}.username"), "must not be empty");
    }
    let password = match (&auth.password_file, &auth.password_env) {
        (Some(_), Some(_)) => {
            problems.push(
                key.to_string(),
                "set one of password_file or password_env, not both",
            );
            None
        }
        (None, None) => {
            problems.push(
                key.to_string(),
                "needs password_file or password_env (passwords are never written in the config)",
            );
            None
        }
        (Some(path), None) => {
            read_secret_file(base, path, &format!("{key}.password_file"), problems)
        }
        (None, Some(variable)) => match std::env::var(variable) {
            Ok(value) => Some(value),
            Err(_) => {
                problems.push(
                    format!("{key}.password_env"),
                    format!("environment variable {variable} is not set"),
                );
                None
            }
        },
    };
    let password = password?;
    if password.is_empty() {
        problems.push(key.to_string(), "the password is empty");
        return None;
    }
    if auth.username.is_empty() {
        return None;
    }
    Some(Credentials {
        username: auth.username.clone(),
        password: Secret::new(password),
    })
}

/// What is wrong with an etcd client URL; each says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEndpoint {
    #[error("{0:?} must start with http:// or https://, {EXAMPLE}")]
    NoScheme(String),
    #[error("{0:?} is not a URL ({1}); write a client URL {EXAMPLE}")]
    NotAUrl(String, url::ParseError),
    #[error("{0:?} has no host; write a client URL {EXAMPLE}")]
    NoHost(String),
    #[error("{0:?} carries credentials; put them in auth: with password_file")]
    Credentials(String),
    #[error("{0:?} has a path or query; an etcd client URL is only scheme://host:port")]
    PathOrQuery(String),
    #[error("{0:?} has no port; etcd listens on 2379 by default, {EXAMPLE}")]
    NoPort(String),
}

const EXAMPLE: &str = "such as https://10.0.0.1:2379";

/// Normalises a client URL to `scheme://host:port`, or says what is wrong with it.
/// Used for configured endpoints and for the client URLs that members advertise.
pub fn normalize_endpoint(raw: &str) -> std::result::Result<String, BadEndpoint> {
    let owned = || raw.to_string();
    if !(raw.starts_with("http://") || raw.starts_with("https://")) {
        return Err(BadEndpoint::NoScheme(owned()));
    }
    let url = url::Url::parse(raw).map_err(|err| BadEndpoint::NotAUrl(owned(), err))?;
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(BadEndpoint::NoHost(owned()));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BadEndpoint::Credentials(owned()));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(BadEndpoint::PathOrQuery(owned()));
    }
    let port = match url.port() {
        Some(port) => port,
        // The url crate hides a port equal to the scheme's default (80, 443); accept it only
        // when it was written out.
        None => match url.port_or_known_default() {
            Some(port) if raw.trim_end_matches('/').ends_with(&format!(":{port}")) => port,
            _ => return Err(BadEndpoint::NoPort(owned())),
        },
    };
    Ok(format!("{}://{host}:{port}", url.scheme()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised_to_scheme_host_port() {
        assert_eq!(
            normalize_endpoint("https://10.0.0.1:2379/").as_deref(),
            Ok("https://10.0.0.1:2379")
        );
        assert_eq!(
            normalize_endpoint("http://[::1]:2379").as_deref(),
            Ok("http://[::1]:2379")
        );
        assert_eq!(
            normalize_endpoint("https://etcd.example:443").as_deref(),
            Ok("https://etcd.example:443")
        );
    }

    #[test]
    fn endpoints_without_scheme_port_or_with_a_path_are_rejected_with_the_reason() {
        let cases = [
            ("10.0.0.1:2379", "must start with http:// or https://"),
            ("https://10.0.0.1", "has no port"),
            ("https://10.0.0.1:2379/v3", "has a path"),
            ("https://root:pw@10.0.0.1:2379", "carries credentials"),
            ("http://exa mple:2379", "is not a URL"),
        ];
        for (raw, expected) in cases {
            let got = normalize_endpoint(raw).unwrap_err().to_string();
            assert!(
                got.contains(expected),
                "for {raw:?}: expected {expected:?} in {got:?}"
            );
        }
    }
}
