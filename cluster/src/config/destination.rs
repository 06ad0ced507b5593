//! One backup destination: a local directory or an S3 bucket, checked as it loads. Every
//! name that becomes part of a path or an object key (destination name, prefix) is checked
//! like a cluster name; credentials come only from files (or the environment), never inline.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::file::{DestinationFile, DestinationKind};
use super::name::ClusterName;
use super::read_secret_file;
use crate::error::ConfigProblems;
use crate::secret::Secret;
use crate::tls;

#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    /// Checked like a cluster name: it appears in paths, output and metric labels.
    pub name: ClusterName,
    #[serde(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// The cluster's backups go to `<path>/<cluster>/`.
    Local { path: PathBuf },
    /// The cluster's backups go to `<prefix>/<cluster>/` in the bucket.
    S3(S3Target),
}

#[derive(Debug, Clone, Serialize)]
pub struct S3Target {
    pub bucket: String,
    /// `/`-separated segments, each checked like a cluster name; empty for none.
    pub prefix: Vec<ClusterName>,
    /// Checked to be an http:// or https:// URL.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// `None`: the environment's or the instance's credentials.
    pub credentials: Option<S3Credentials>,
}

#[derive(Debug, Clone, Serialize)]
pub struct S3Credentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
}

impl Destination {
    /// `local` or `s3`, for output.
    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Local { .. } => "local",
            Target::S3(_) => "s3",
        }
    }
}

/// The keys each kind takes, so a key written for another kind is refused by name rather
/// than ignored.
fn foreign_keys(file: &DestinationFile) -> Vec<&'static str> {
    let s3_only = [
        ("bucket", file.bucket.is_some()),
        ("prefix", file.prefix.is_some()),
        ("endpoint", file.endpoint.is_some()),
        ("region", file.region.is_some()),
        ("path_style", file.path_style.is_some()),
        ("access_key_id_file", file.access_key_id_file.is_some()),
        (
            "secret_access_key_file",
            file.secret_access_key_file.is_some(),
        ),
    ];
    let local_only = [("path", file.path.is_some())];
    let foreign: &[(&'static str, bool)] = match file.kind {
        DestinationKind::Local => &s3_only,
        _ => &local_only,
    };
    foreign
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
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
        problems.push(
            format!("{key}.{foreign}"),
            format!("does not apply to kind: {}", kind_name(file.kind)),
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
        DestinationKind::S3 => s3(file, key, base, problems).map(Target::S3),
        DestinationKind::Gcs | DestinationKind::Azure => {
            problems.push(
                format!("{key}.kind"),
                "gcs and azure destinations are not available in this version yet; use kind: \
                 s3 (any S3-compatible store) or local",
            );
            None
        }
    };
    let (Ok(name), Some(target)) = (name, target) else {
        return None;
    };
    (problems.0.len() == before).then_some(Destination { name, target })
}

fn kind_name(kind: DestinationKind) -> &'static str {
    match kind {
        DestinationKind::Local => "local",
        DestinationKind::S3 => "s3",
        DestinationKind::Gcs => "gcs",
        DestinationKind::Azure => "azure",
    }
}

fn s3(
    file: &DestinationFile,
    key: &str,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Option<S3Target> {
    let bucket = match &file.bucket {
        Some(bucket) if is_bucket_name(bucket) => Some(bucket.clone()),
        Some(bucket) => {
            problems.push(
                format!("{key}.bucket"),
                format!(
                    "{bucket:?} is not a bucket name: 3 to 63 lowercase letters, digits, '.' \
                     and '-', starting and ending with a letter or digit"
                ),
            );
            None
        }
        None => {
            problems.push(
                format!("{key}.bucket"),
                "an s3 destination needs its bucket",
            );
            None
        }
    };
    let prefix = match &file.prefix {
        None => Some(Vec::new()),
        Some(raw) => {
            let segments: Result<Vec<_>, _> = raw.split('/').map(ClusterName::new).collect();
            segments
                .map_err(|_| {
                    problems.push(
                        format!("{key}.prefix"),
                        format!(
                            "{raw:?} is not a prefix: '/'-separated segments of letters, \
                             digits, '.', '_' and '-', each starting with a letter or digit \
                             (no leading, trailing or doubled '/')"
                        ),
                    )
                })
                .ok()
        }
    };
    let endpoint = match &file.endpoint {
        None => Some(None),
        Some(raw) => match url::Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(Some(raw.clone()))
            }
            _ => {
                problems.push(
                    format!("{key}.endpoint"),
                    format!("{raw:?} is not an http:// or https:// URL"),
                );
                None
            }
        },
    };
    if file.region.as_deref() == Some("") {
        problems.push(
            format!("{key}.region"),
            "is empty; leave it out for the default",
        );
    }
    let read = |field: &str, path: &Path, problems: &mut ConfigProblems| {
        let key = format!("{key}.{field}");
        let value = read_secret_file(base, path, &key, problems)?;
        if value.is_empty() {
            problems.push(key, format!("{} is empty", path.display()));
            return None;
        }
        Some(Secret::new(value))
    };
    let credentials = match (&file.access_key_id_file, &file.secret_access_key_file) {
        (None, None) => Some(None),
        (Some(id), Some(secret)) => {
            let id = read("access_key_id_file", id, problems);
            let secret = read("secret_access_key_file", secret, problems);
            id.zip(secret).map(|(access_key_id, secret_access_key)| {
                Some(S3Credentials {
                    access_key_id,
                    secret_access_key,
                })
            })
        }
        (Some(_), None) | (None, Some(_)) => {
            let missing = if file.access_key_id_file.is_none() {
                "access_key_id_file"
            } else {
                "secret_access_key_file"
            };
            problems.push(
                format!("{key}.{missing}"),
                "set both credential files, or neither (to use the environment's credentials)",
            );
            None
        }
    };
    Some(S3Target {
        bucket: bucket?,
        prefix: prefix?,
        endpoint: endpoint?,
        region: file.region.clone(),
        path_style: file.path_style.unwrap_or(false),
        credentials: credentials?,
    })
}

/// S3's rules for bucket names (those that matter for a URL and a host name).
fn is_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use crate::config::Target;
    use crate::Config;
    use std::path::Path;

    fn config_with(destination: &str, base: &Path) -> Result<Config, String> {
        let yaml = format!(
            "backup:\n  destinations:\n    - {destination}\nclusters:\n  - name: a\n    \
             endpoints: [http://127.0.0.1:2379]\n"
        );
        Config::from_yaml(&yaml, &base.join("c.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn an_s3_destination_reads_its_credentials_from_files_and_never_prints_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("id"), "AKIDEXAMPLE\n").unwrap();
        std::fs::write(dir.path().join("secret"), "wJalrXUtnFEMI\n").unwrap();
        let config = config_with(
            "{name: offsite, kind: s3, bucket: etcd-backups, prefix: prod/eu-1, endpoint: \
             'http://127.0.0.1:9000', region: eu-west-1, path_style: true, access_key_id_file: \
             id, secret_access_key_file: secret}",
            dir.path(),
        )
        .unwrap();
        let destination = &config.clusters[0].backup.destinations[0];
        let Target::S3(s3) = &destination.target else {
            panic!("{destination:?}")
        };
        assert_eq!(s3.bucket, "etcd-backups");
        assert_eq!(
            s3.prefix.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            ["prod", "eu-1"]
        );
        assert!(s3.path_style);
        let credentials = s3.credentials.as_ref().unwrap();
        assert_eq!(credentials.secret_access_key.expose(), "wJalrXUtnFEMI");
        let shown = format!(
            "{destination:?} {}",
            serde_json::to_string(destination).unwrap()
        );
        assert!(!shown.contains("wJalrXUtnFEMI") && !shown.contains("AKIDEXAMPLE"));
        assert!(shown.contains("<secret>"), "{shown}");
    }

    #[test]
    fn bad_s3_destinations_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "{name: o, kind: s3, bucket: Etcd_Backups}",
                "backup.destinations[0].bucket: \"Etcd_Backups\" is not a bucket name",
            ),
            (
                "{name: o, kind: s3}",
                "backup.destinations[0].bucket: an s3 destination needs its bucket",
            ),
            (
                "{name: o, kind: s3, bucket: b-1, prefix: '../up'}",
                "backup.destinations[0].prefix: \"../up\" is not a prefix",
            ),
            (
                "{name: o, kind: s3, bucket: b-1, endpoint: 'ftp://x'}",
                "backup.destinations[0].endpoint: \"ftp://x\" is not an http:// or https:// URL",
            ),
            (
                "{name: o, kind: s3, bucket: b-1, access_key_id_file: /nonexistent/id, \
                 secret_access_key_file: /nonexistent/secret}",
                "backup.destinations[0].access_key_id_file: /nonexistent/id:",
            ),
            (
                "{name: o, kind: s3, bucket: b-1, access_key_id_file: id}",
                "backup.destinations[0].secret_access_key_file: set both credential files",
            ),
            (
                "{name: o, kind: s3, bucket: b-1, path: /srv}",
                "backup.destinations[0].path: does not apply to kind: s3",
            ),
            (
                "{name: o, kind: local, path: /srv, bucket: b-1}",
                "backup.destinations[0].bucket: does not apply to kind: local",
            ),
            (
                "{name: o, kind: gcs}",
                "backup.destinations[0].kind: gcs and azure destinations are not available",
            ),
        ];
        for (destination, expected) in cases {
            let err = config_with(destination, dir.path()).unwrap_err();
            assert!(err.contains(expected), "{destination}: {err}");
        }
    }
}
