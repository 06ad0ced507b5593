//! One backup destination: a local directory or a bucket (S3 or S3-compatible, Google Cloud
//! Storage, Azure Blob), checked as it loads. Every name that becomes part of a path, a URL or
//! an object key (destination name, bucket, container, prefix) is checked; credentials come
//! only from files (or the environment and the cloud's own chain), never inline.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::file::{DestinationFile, DestinationKind};
use etcdmedic_cluster::config::read_secret_file;
use etcdmedic_cluster::config::ClusterName;
use etcdmedic_cluster::tls;
use etcdmedic_cluster::ConfigProblems;
use etcdmedic_cluster::Secret;

mod azure;
mod gcs;
mod s3;
#[cfg(test)]
mod tests;

pub use azure::AzureTarget;
pub use gcs::GcsTarget;
pub use s3::{ObjectLock, S3Credentials, S3Target};

#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    /// Checked like a cluster name: it appears in paths, output and metric labels.
    pub name: ClusterName,
    #[serde(flatten)]
    pub target: Target,
    /// Its own `retention`, key by key; `None` keys are the backup's.
    #[serde(skip_serializing_if = "Retention::is_unset")]
    pub retention: Retention,
}

/// A destination's own retention: each key set overrides `backup.retention`'s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    pub keep: Option<usize>,
    #[serde(with = "humantime_serde")]
    pub max_age: Option<std::time::Duration>,
}

impl Retention {
    fn is_unset(&self) -> bool {
        *self == Retention::default()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// The cluster's backups go to `<path>/<cluster>/`.
    Local {
        path: PathBuf,
    },
    /// The cluster's backups go to `<prefix>/<cluster>/` in the bucket (or container).
    S3(S3Target),
    Gcs(GcsTarget),
    Azure(AzureTarget),
}

impl Destination {
    /// `local`, `s3`, `gcs` or `azure`, for output.
    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Local { .. } => "local",
            Target::S3(_) => "s3",
            Target::Gcs(_) => "gcs",
            Target::Azure(_) => "azure",
        }
    }

    /// The directory of a local destination; `None` for a bucket.
    pub fn local_path(&self) -> Option<&Path> {
        match &self.target {
            Target::Local { path } => Some(path),
            _ => None,
        }
    }
}

/// Which kinds take each kind-specific key, so a key written for another kind is refused by
/// name rather than ignored.
fn foreign_keys(file: &DestinationFile) -> Vec<&'static str> {
    use DestinationKind::{Azure, Gcs, Local, S3};
    let keys: [(&'static str, bool, &[DestinationKind]); 14] = [
        ("path", file.path.is_some(), &[Local]),
        ("bucket", file.bucket.is_some(), &[S3, Gcs]),
        ("prefix", file.prefix.is_some(), &[S3, Gcs, Azure]),
        ("endpoint", file.endpoint.is_some(), &[S3, Gcs, Azure]),
        ("region", file.region.is_some(), &[S3]),
        ("path_style", file.path_style.is_some(), &[S3]),
        (
            "access_key_id_file",
            file.access_key_id_file.is_some(),
            &[S3],
        ),
        (
            "secret_access_key_file",
            file.secret_access_key_file.is_some(),
            &[S3],
        ),
        (
            "service_account_file",
            file.service_account_file.is_some(),
            &[Gcs],
        ),
        ("account", file.account.is_some(), &[Azure]),
        ("container", file.container.is_some(), &[Azure]),
        (
            "account_key_file",
            file.account_key_file.is_some(),
            &[Azure],
        ),
        ("object_lock", file.object_lock.is_some(), &[S3]),
        ("name", false, &[Local, S3, Gcs, Azure]),
    ];
    keys.iter()
        .filter(|(_, set, kinds)| *set && !kinds.contains(&file.kind))
        .map(|(key, _, _)| *key)
        .collect()
}

pub(crate) fn resolve(
    file: &DestinationFile,
    key: &str,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Option<Destination> {
    let before = problems.0.len();
    let name = ClusterName::new(&file.name).map_err(|_| {
        problems.push(
            format!("{key}.name"),
            format!(
                "{:?} is not a destination name: letters, digits, '.', '_' and '-', starting \
                 with a letter or digit, at most 63 characters",
                file.name
            ),
        )
    });
    for foreign in foreign_keys(file) {
        // The other stores lock in the store itself, with nothing for etcdmedic to set.
        let hint = match foreign {
            "object_lock" => {
                "; a gcs bucket's retention policy or an azure container's immutability \
                 policy does this in the store (docs/backups.md)"
            }
            _ => "",
        };
        problems.push(
            format!("{key}.{foreign}"),
            format!("does not apply to kind: {}{hint}", kind_name(file.kind)),
        );
    }
    let target = match file.kind {
        DestinationKind::Local => match &file.path {
            Some(path) => Some(Target::Local {
                path: tls::resolve(base, path),
            }),
            None => {
                problems.push(
                    format!("{key}.path"),
                    "a local destination needs its directory",
                );
                None
            }
        },
        DestinationKind::S3 => s3::resolve(file, key, base, problems).map(Target::S3),
        DestinationKind::Gcs => gcs::resolve(file, key, base, problems).map(Target::Gcs),
        DestinationKind::Azure => azure::resolve(file, key, base, problems).map(Target::Azure),
    };
    let retention = file.retention.as_ref().map_or(Retention::default(), |own| {
        if own.keep == Some(0) {
            problems.push(
                format!("{key}.retention.keep"),
                "must keep at least 1 backup",
            );
        }
        if own.max_age.is_some_and(|max_age| max_age.is_zero()) {
            problems.push(format!("{key}.retention.max_age"), "must be longer than 0s");
        }
        Retention {
            keep: own.keep,
            max_age: own.max_age,
        }
    });
    let (Ok(name), Some(target)) = (name, target) else {
        return None;
    };
    (problems.0.len() == before).then_some(Destination {
        name,
        target,
        retention,
    })
}

fn kind_name(kind: DestinationKind) -> &'static str {
    match kind {
        DestinationKind::Local => "local",
        DestinationKind::S3 => "s3",
        DestinationKind::Gcs => "gcs",
        DestinationKind::Azure => "azure",
    }
}

/// `<prefix>`: `/`-separated segments, each checked like a cluster name; empty for none.
fn prefix(
    file: &DestinationFile,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<Vec<ClusterName>> {
    let Some(raw) = &file.prefix else {
        return Some(Vec::new());
    };
    let segments: Result<Vec<_>, _> = raw.split('/').map(ClusterName::new).collect();
    segments
        .map_err(|_| {
            problems.push(
                format!("{key}.prefix"),
                format!(
                    "{raw:?} is not a prefix: '/'-separated segments of letters, digits, '.', \
                     '_' and '-', each starting with a letter or digit (no leading, trailing or \
                     doubled '/')"
                ),
            )
        })
        .ok()
}

/// `Some(None)` without an endpoint; `None` (and a problem) when it is not an http(s) URL.
fn endpoint(
    file: &DestinationFile,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<Option<String>> {
    let Some(raw) = &file.endpoint else {
        return Some(None);
    };
    match url::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Some(Some(raw.trim_end_matches('/').to_string()))
        }
        _ => {
            problems.push(
                format!("{key}.endpoint"),
                format!("{raw:?} is not an http:// or https:// URL"),
            );
            None
        }
    }
}

/// The non-empty content of the credential file `field` names.
fn secret(
    key: &str,
    field: &str,
    path: &Path,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Option<Secret> {
    let key = format!("{key}.{field}");
    let value = read_secret_file(base, path, &key, problems)?;
    if value.trim().is_empty() {
        problems.push(key, format!("{} is empty", path.display()));
        return None;
    }
    Some(Secret::new(value))
}

/// A required name checked by `valid`: `missing` is the error without it, `rule` the one
/// for a name that breaks the rule.
fn required_name(
    value: Option<&String>,
    field: (&str, &str),
    missing: &str,
    (valid, rule): (fn(&str) -> bool, &str),
    problems: &mut ConfigProblems,
) -> Option<String> {
    let (key, name) = field;
    match value {
        Some(value) if valid(value) => Some(value.clone()),
        Some(value) => {
            problems.push(
                format!("{key}.{name}"),
                format!("{value:?} is not a valid {name} name: {rule}"),
            );
            None
        }
        None => {
            problems.push(format!("{key}.{name}"), missing);
            None
        }
    }
}

/// S3's rules for bucket names (those that matter for a URL and a host name); Google Cloud
/// Storage's are the same plus `_`.
fn is_bucket_name(name: &str, underscore: bool) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'.' | b'-')
                || (underscore && *b == b'_')
        })
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}
