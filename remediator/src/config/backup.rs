//! Backups: where `etcdmedic-remediator backup` writes a cluster's verified snapshots, and how
//! many it keeps. A cluster's `backup:` block overrides the top-level one key by key (its
//! `destinations` list replaces the default list whole).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

mod encryption;

use super::destination::{self, Destination};
use super::file::{BackupFile, Compression};
use super::when::{zone, CronIn};
use etcdmedic_cluster::tls;
use etcdmedic_cluster::ConfigProblems;

/// Backups kept per destination when `retention.keep` is not set.
const DEFAULT_KEEP: usize = 7;

#[derive(Debug, Clone, Serialize)]
pub struct BackupSettings {
    /// Empty: no backups configured for the cluster.
    pub destinations: Vec<Destination>,
    pub keep: usize,
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// `None`: drills are off (`restore_drill.enabled: false`, or no destinations).
    pub restore_drill: Option<RestoreDrill>,
    /// When `serve` takes backups by itself; `None`: only when asked.
    pub schedule: Option<CronIn>,
    pub compression: Compression,
    /// age recipients (checked public keys) the copies are encrypted to; `None`: plain.
    pub encryption: Option<Vec<String>>,
}

/// What a destination keeps: its own `retention` keys, else the backup's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    pub keep: usize,
    pub max_age: Option<Duration>,
}

impl BackupSettings {
    /// The retention that applies in `destination`.
    pub fn kept_in(&self, destination: &Destination) -> Kept {
        Kept {
            keep: destination.retention.keep.unwrap_or(self.keep),
            max_age: destination.retention.max_age.or(self.max_age),
        }
    }
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            destinations: Vec::new(),
            keep: DEFAULT_KEEP,
            max_age: None,
            restore_drill: None,
            schedule: None,
            compression: Compression::None,
            encryption: None,
        }
    }
}

/// How each new backup is proven: restored with `restore` into a temporary directory and
/// started as a throwaway single-member etcd on loopback, whose HashKV must equal the one the
/// cluster answered for the backup's revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreDrill {
    pub etcd: PathBuf,
    pub restore: RestoreTool,
    /// Decrypts encrypted backups; without it their drill is "not drilled: no identity".
    pub identity_file: Option<PathBuf>,
}

/// etcd 3.5 moved `snapshot restore` from etcdctl to etcdutl; 3.4 has only etcdctl's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "tool", content = "path", rename_all = "snake_case")]
pub enum RestoreTool {
    Etcdutl(PathBuf),
    Etcdctl(PathBuf),
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
        if !names.insert(file.name.clone()) {
            problems.push(
                format!("{key}.name"),
                format!("duplicate destination name {:?}", file.name),
            );
        }
        if let Some(destination) = destination::resolve(file, &key, base, problems) {
            settings.destinations.push(destination);
        }
    }
    if let Some((keep, key)) = setting(own, defaults, own_key, "retention.keep", |b| {
        b.retention.as_ref()?.keep
    }) {
        if keep == 0 {
            problems.push(key, "must keep at least 1 backup");
        }
        settings.keep = keep;
    }
    if let Some((max_age, key)) = setting(own, defaults, own_key, "retention.max_age", |b| {
        b.retention.as_ref()?.max_age
    }) {
        if max_age.is_zero() {
            problems.push(key, "must be longer than 0s");
        }
        settings.max_age = Some(max_age);
    }
    if let Some((compression, _)) =
        setting(own, defaults, own_key, "compression", |b| b.compression)
    {
        settings.compression = compression;
    }
    let time_zone = setting(own, defaults, own_key, "time_zone", |b| b.time_zone.clone());
    let zone = match &time_zone {
        Some((name, key)) => zone(Some(name)).unwrap_or_else(|err| {
            problems.push(key.clone(), err.to_string());
            chrono_tz::UTC
        }),
        None => chrono_tz::UTC,
    };
    if let Some((schedule, key)) =
        setting(own, defaults, own_key, "schedule", |b| b.schedule.clone())
    {
        match CronIn::parse(&schedule, zone) {
            Ok(_) if settings.destinations.is_empty() && destinations.is_none() => {
                problems.push(key, "a schedule needs backup.destinations to write to")
            }
            Ok(schedule) => settings.schedule = Some(schedule),
            Err(err) => problems.push(key, err.to_string()),
        }
    }
    if destinations.is_some_and(|list| !list.is_empty()) {
        settings.restore_drill = restore_drill(own, defaults, own_key, base, problems);
    }
    encryption::resolve(own, defaults, own_key, base, &mut settings, problems);
    (problems.0.len() == before).then_some(settings)
}

/// The drill's binaries, found when the configuration loads: a drill that cannot run is a
/// configuration error, never a silent skip.
fn restore_drill(
    own: Option<&BackupFile>,
    defaults: Option<&BackupFile>,
    own_key: &str,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Option<RestoreDrill> {
    let drill = |name: &str| format!("restore_drill.{name}");
    let enabled = setting(own, defaults, own_key, &drill("enabled"), |b| {
        b.restore_drill.as_ref()?.enabled
    });
    if enabled.is_some_and(|(enabled, _)| !enabled) {
        return None;
    }
    let bin_dir = setting(own, defaults, own_key, &drill("bin_dir"), |b| {
        b.restore_drill.as_ref()?.bin_dir.clone()
    });
    let (dirs, key): (Vec<PathBuf>, String) = match bin_dir {
        Some((dir, key)) => (vec![tls::resolve(base, &dir)], key),
        None => (
            std::env::var_os("PATH")
                .map(|path| std::env::split_paths(&path).collect())
                .unwrap_or_default(),
            format!("{own_key}.restore_drill"),
        ),
    };
    let find = |binary: &str| {
        dirs.iter()
            .map(|d| d.join(binary))
            .find(|p| is_executable(p))
    };
    let where_ = match dirs.as_slice() {
        [one] => one.display().to_string(),
        _ => "PATH".to_string(),
    };
    let etcd = find("etcd");
    let restore = find("etcdutl")
        .map(RestoreTool::Etcdutl)
        .or_else(|| find("etcdctl").map(RestoreTool::Etcdctl));
    match (etcd, restore) {
        (Some(etcd), Some(restore)) => Some(RestoreDrill {
            etcd,
            restore,
            identity_file: None,
        }),
        (etcd, _) => {
            let missing = if etcd.is_none() {
                "etcd"
            } else {
                "etcdutl (or etcdctl)"
            };
            problems.push(
                key,
                format!(
                    "the restore drill needs {missing}, not found in {where_}; set \
                     restore_drill.bin_dir, or restore_drill.enabled: false to take backups \
                     nobody proves"
                ),
            );
            None
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A setting from the cluster's block when set there, else from the default block, with the
/// key it was written under (`name` is its path inside the block).
pub(super) fn setting<T>(
    own: Option<&BackupFile>,
    defaults: Option<&BackupFile>,
    own_key: &str,
    name: &str,
    field: impl Fn(&BackupFile) -> Option<T>,
) -> Option<(T, String)> {
    let from = |block: Option<&BackupFile>, prefix: &str| {
        block
            .and_then(&field)
            .map(|value| (value, format!("{prefix}.{name}")))
    };
    from(own, own_key).or_else(|| from(defaults, "backup"))
}

#[cfg(test)]
mod tests {
    use crate::config::RemediatorConfig as Config;
    use crate::config::Target;
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn a_destination_keeps_its_own_count_and_age_key_by_key() {
        let yaml = "backup:\n  destinations:\n    - {name: near, kind: local, path: n, retention: {keep: 2}}\n    \
                    - {name: far, kind: local, path: f, retention: {max_age: 90d}}\n    \
                    - {name: plain, kind: local, path: p}\n  retention: {keep: 7, max_age: 30d}\n\
                    clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n";
        let config = Config::from_yaml(yaml, Path::new("/etc/etcdmedic/c.yaml")).unwrap();
        let backup = &config.cluster("a").unwrap().backup;
        let kept: Vec<(usize, Option<Duration>)> = backup
            .destinations
            .iter()
            .map(|d| backup.kept_in(d))
            .map(|k| (k.keep, k.max_age))
            .collect();
        let days = |n: u64| Some(Duration::from_secs(n * 86400));
        assert_eq!(kept, [(2, days(30)), (7, days(90)), (7, days(30))]);
    }

    #[test]
    fn a_destination_that_keeps_nothing_is_refused_by_its_key() {
        let yaml = "backup:\n  destinations: [{name: near, kind: local, path: n, retention: {keep: 0, max_age: 0s}}]\n\
                    clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n";
        let err = Config::from_yaml(yaml, Path::new("/etc/etcdmedic/c.yaml"))
            .expect_err("keep 0 is refused")
            .to_string();
        assert!(
            err.contains("backup.destinations[0].retention.keep"),
            "{err}"
        );
        assert!(
            err.contains("backup.destinations[0].retention.max_age"),
            "{err}"
        );
    }

    #[test]
    fn a_cluster_block_overrides_the_defaults_key_by_key() {
        let yaml = "backup:\n  destinations: [{name: near, kind: local, path: backups}]\n  \
                    compression: zstd\n  retention: {keep: 3, max_age: 30d}\nclusters:\n  - name: a\n    endpoints: \
                    [http://127.0.0.1:2379]\n  - name: b\n    endpoints: [http://127.0.0.1:2379]\n    \
                    backup:\n      destinations: [{name: far, kind: local, path: /srv/far}]\n      \
                    retention: {keep: 1}\n";
        let config = Config::from_yaml(yaml, Path::new("/etc/etcdmedic/c.yaml")).unwrap();
        let a = &config.cluster("a").unwrap().backup;
        assert_eq!(a.destinations[0].name.as_str(), "near");
        assert!(
            matches!(&a.destinations[0].target, Target::Local { path } if path == Path::new("/etc/etcdmedic/backups"))
        );
        assert_eq!(
            (a.keep, a.max_age),
            (3, Some(Duration::from_secs(30 * 86400)))
        );
        assert_eq!(a.compression, super::Compression::Zstd);
        let b = &config.cluster("b").unwrap().backup;
        assert_eq!(b.compression, super::Compression::Zstd, "inherited");
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

    #[test]
    fn the_restore_drill_finds_its_binaries_or_names_the_key() {
        use super::RestoreTool;
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let yaml = |drill: &str| {
            format!(
                "backup:\n  destinations: [{{name: d, kind: local, path: b}}]\n  restore_drill: \
                 {drill}\nclusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n"
            )
        };
        let with_bin_dir = yaml(&format!("{{bin_dir: {}}}", bin.path().display()));
        let err = Config::from_yaml(&with_bin_dir, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("backup.restore_drill.bin_dir: the restore drill needs etcd, not found"),
            "{err}"
        );
        for binary in ["etcd", "etcdctl"] {
            let path = bin.path().join(binary);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let config = Config::from_yaml(&with_bin_dir, Path::new("c.yaml")).unwrap();
        let drill = config.clusters[0].backup.restore_drill.clone().unwrap();
        assert_eq!(drill.etcd, bin.path().join("etcd"));
        assert_eq!(
            drill.restore,
            RestoreTool::Etcdctl(bin.path().join("etcdctl")),
            "etcd 3.4 has no etcdutl"
        );
        let off = Config::from_yaml(&yaml("{enabled: false}"), Path::new("c.yaml")).unwrap();
        assert!(off.clusters[0].backup.restore_drill.is_none());
    }

    #[test]
    fn a_backup_schedule_is_read_in_its_zone_and_a_bad_one_names_its_key() {
        let yaml = "backup:\n  schedule: '0 3 * * *'\n  time_zone: Europe/Berlin\n  \
                    restore_drill: {enabled: false}\n  destinations: [{name: d, kind: local, \
                    path: b}]\nclusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n  \
                    - name: b\n    endpoints: [http://127.0.0.1:2379]\n    backup: {schedule: \
                    'every day'}\n";
        let err = Config::from_yaml(yaml, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("clusters[1].backup.schedule: "), "{err}");
        let config = Config::from_yaml(
            &yaml.replace("'every day'", "'30 1 * * *'"),
            Path::new("c.yaml"),
        )
        .unwrap();
        let a = config.clusters[0].backup.schedule.as_ref().unwrap();
        assert_eq!(a.to_string(), "0 3 * * * (Europe/Berlin)");
        let b = config.clusters[1].backup.schedule.as_ref().unwrap();
        assert_eq!(b.to_string(), "30 1 * * * (Europe/Berlin)");
        let err = Config::from_yaml(
            "backup: {schedule: '0 3 * * *'}\nclusters:\n  - name: a\n    endpoints: \
             [http://127.0.0.1:2379]\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("backup.schedule: a schedule needs backup.destinations"),
            "{err}"
        );
    }
}
