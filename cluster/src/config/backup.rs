//! Backups: where `etcdmedic-remediator backup` writes a cluster's verified snapshots, and how
//! many it keeps. A cluster's `backup:` block overrides the top-level one key by key (its
//! `destinations` list replaces the default list whole).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::file::{BackupFile, DestinationKind, RetentionFile};
use super::name::ClusterName;
use crate::error::ConfigProblems;
use crate::tls;

/// Backups kept per destination when `retention.keep` is not set.
pub const DEFAULT_KEEP: usize = 7;

#[derive(Debug, Clone, Serialize)]
pub struct BackupSettings {
    /// Empty: no backups configured for the cluster.
    pub destinations: Vec<Destination>,
    pub keep: usize,
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            destinations: Vec::new(),
            keep: DEFAULT_KEEP,
            max_age: None,
        }
    }
}

/// A local directory; the cluster's backups go to `<path>/<cluster>/`.
#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    /// Checked like a cluster name: it appears in paths, output and (later) metric labels.
    pub name: ClusterName,
    pub path: PathBuf,
}

pub(crate) fn resolve(
    defaults: Option<&BackupFile>,
    own: Option<&BackupFile>,
    own_key: &str,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Option<BackupSettings> {
    let before = problems.0.len();
    let mut settings = BackupSettings::default();
    let (destinations, key) = match (own.and_then(|o| o.destinations.as_ref()), defaults) {
        (Some(list), _) => (Some(list), format!("{own_key}.destinations")),
        (None, Some(d)) => (d.destinations.as_ref(), "backup.destinations".to_string()),
        (None, None) => (None, String::new()),
    };
    let mut names = HashSet::new();
    for (index, file) in destinations.into_iter().flatten().enumerate() {
        let key = format!("{key}[{index}]");
        let name = ClusterName::new(&file.name).map_err(|_| {
            problems.push(
                format!("{key}.name"),
                format!(
                    "{:?} is not a destination name: letters, digits, '.', '_' and '-', \
                     starting with a letter or digit, at most 63 characters",
                    file.name
                ),
            )
        });
        if !names.insert(file.name.clone()) {
            problems.push(
                format!("{key}.name"),
                format!("duplicate destination name {:?}", file.name),
            );
        }
        if file.kind != DestinationKind::Local {
            problems.push(
                format!("{key}.kind"),
                "object storage destinations (s3, gcs, azure) are not available in this \
                 version yet; use kind: local",
            );
            continue;
        }
        let Some(path) = &file.path else {
            problems.push(
                format!("{key}.path"),
                "a local destination needs its directory",
            );
            continue;
        };
        if let Ok(name) = name {
            settings.destinations.push(Destination {
                name,
                path: tls::resolve(base, path),
            });
        }
    }
    if let Some((keep, key)) = retention_key(own, defaults, own_key, "keep", |r| r.keep) {
        if keep == 0 {
            problems.push(key, "must keep at least 1 backup");
        }
        settings.keep = keep;
    }
    if let Some((max_age, key)) = retention_key(own, defaults, own_key, "max_age", |r| r.max_age) {
        if max_age.is_zero() {
            problems.push(key, "must be longer than 0s");
        }
        settings.max_age = Some(max_age);
    }
    (problems.0.len() == before).then_some(settings)
}

/// The retention key `name` from the cluster's block when set there, else from the default
/// block, with the key it was written under.
fn retention_key<T>(
    own: Option<&BackupFile>,
    defaults: Option<&BackupFile>,
    own_key: &str,
    name: &str,
    field: impl Fn(&RetentionFile) -> Option<T>,
) -> Option<(T, String)> {
    let from = |block: Option<&BackupFile>, prefix: &str| {
        block
            .and_then(|b| b.retention.as_ref())
            .and_then(&field)
            .map(|value| (value, format!("{prefix}.retention.{name}")))
    };
    from(own, own_key).or_else(|| from(defaults, "backup"))
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn a_cluster_block_overrides_the_defaults_key_by_key() {
        let yaml = "backup:\n  destinations: [{name: near, kind: local, path: backups}]\n  \
                    retention: {keep: 3, max_age: 30d}\nclusters:\n  - name: a\n    endpoints: \
                    [http://127.0.0.1:2379]\n  - name: b\n    endpoints: [http://127.0.0.1:2379]\n    \
                    backup:\n      destinations: [{name: far, kind: local, path: /srv/far}]\n      \
                    retention: {keep: 1}\n";
        let config = Config::from_yaml(yaml, Path::new("/etc/etcdmedic/c.yaml")).unwrap();
        let a = &config.cluster("a").unwrap().backup;
        assert_eq!(a.destinations[0].name.as_str(), "near");
        assert_eq!(a.destinations[0].path, Path::new("/etc/etcdmedic/backups"));
        assert_eq!(
            (a.keep, a.max_age),
            (3, Some(Duration::from_secs(30 * 86400)))
        );
        let b = &config.cluster("b").unwrap().backup;
        assert_eq!(b.destinations.len(), 1);
        assert_eq!(b.destinations[0].name.as_str(), "far");
        assert_eq!(
            (b.keep, b.max_age),
            (1, Some(Duration::from_secs(30 * 86400))),
            "keep from the cluster, max_age from the defaults"
        );
        let none = Config::from_yaml(
            "clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n",
            Path::new("c.yaml"),
        )
        .unwrap();
        assert!(none.clusters[0].backup.destinations.is_empty());
    }

    #[test]
    fn duplicate_destination_names_are_refused() {
        let yaml = "backup:\n  destinations: [{name: d, kind: local, path: a}, {name: d, kind: \
                    local, path: b}]\nclusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n";
        let err = Config::from_yaml(yaml, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("backup.destinations[1].name: duplicate destination name \"d\""),
            "{err}"
        );
    }
}
