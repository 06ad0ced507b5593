//! The remediator's configuration: the shared file as both binaries read it
//! ([`etcdmedic_cluster::Config`]: clusters, endpoints, TLS, auth), plus the blocks only the
//! remediator reads, checked and resolved here: `remediation:` and `backup:` (top level and
//! per cluster, merged key by key) and `remediator:` (resolved by the service's settings).
//! The exporter skips these blocks whole, so a credential file named here is opened by this
//! process only.
//!
//! # Layout
//! - [`file`]: the remediator's blocks exactly as written.
//! - `remediation`: a cluster's engine settings; `backup`, `destination`: where its backups go.
//! - [`when`]: cron schedules and maintenance windows in a time zone.

mod backup;
mod destination;
pub mod file;
mod remediation;
pub mod when;

pub use backup::{BackupSettings, Kept, RestoreDrill, RestoreTool};
pub use destination::{
    AzureTarget, Destination, GcsTarget, ObjectLock, Retention, S3Credentials, S3Target, Target,
};
pub use file::{Compression, LeaderMoveFailure, LeaderPolicy, LockMode, OnBusy, ServiceMode};
pub use remediation::RemediationSettings;

use std::ops::Deref;
use std::path::{Path, PathBuf};

use etcdmedic_cluster::config::{base_dir, parse, read};
use etcdmedic_cluster::{ClusterConfig, Config, ConfigProblems, Error, Result};
use serde::Deserialize;

use file::{BackupFile, RemediationFile, RemediatorFile};

/// A loaded, validated configuration, as the remediator needs it.
#[derive(Debug, Clone)]
pub struct RemediatorConfig {
    /// In the file's order: where to reach each cluster (what both binaries read), with the
    /// remediator's settings for it.
    pub clusters: Vec<ManagedCluster>,
    /// Where the file was read from, for messages.
    pub origin: String,
    base: PathBuf,
    /// The `remediator:` block as written: the webhook service resolves it (and reads its
    /// secrets) itself, only when it serves.
    service: Option<RemediatorFile>,
}

/// One cluster as the remediator treats it: how to reach it, plus its settings.
#[derive(Debug, Clone)]
pub struct ManagedCluster {
    pub etcd: ClusterConfig,
    pub remediation: RemediationSettings,
    /// Where `etcdmedic-remediator backup` writes, and how many backups it keeps.
    pub backup: BackupSettings,
}

/// A managed cluster is read like the cluster it manages (`cluster.name`, `cluster.endpoints`)
/// wherever the remediator's own settings do not matter.
impl Deref for ManagedCluster {
    type Target = ClusterConfig;

    fn deref(&self) -> &ClusterConfig {
        &self.etcd
    }
}

/// The remediator's blocks of the file. Unknown keys at the top level and in a cluster's
/// shared keys are the shared crate's to refuse; each block here refuses its own.
#[derive(Debug, Deserialize)]
struct Sections {
    #[serde(default)]
    remediation: Option<RemediationFile>,
    #[serde(default)]
    remediator: Option<RemediatorFile>,
    #[serde(default)]
    backup: Option<BackupFile>,
    #[serde(default)]
    clusters: Vec<ClusterSections>,
}

#[derive(Debug, Deserialize)]
struct ClusterSections {
    #[serde(default)]
    remediation: Option<RemediationFile>,
    #[serde(default)]
    backup: Option<BackupFile>,
}

/// A cluster's resolved blocks.
type Resolved = (RemediationSettings, BackupSettings);

impl RemediatorConfig {
    /// Reads and validates the file at `path`. Relative paths inside it are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<RemediatorConfig> {
        RemediatorConfig::from_yaml(&read(path)?, path)
    }

    /// Parses `text` as if read from `path`. Every problem of the file is reported at once,
    /// the shared part's and the remediator's blocks' together.
    pub fn from_yaml(text: &str, path: &Path) -> Result<RemediatorConfig> {
        let shared = Config::from_yaml(text, path);
        let mut problems = ConfigProblems::default();
        let sections = match parse::<Sections>(text, path) {
            Ok(sections) => Some(sections),
            Err(Error::ConfigInvalid { problems: own, .. }) => {
                problems.extend(own);
                None
            }
            // A file that is not YAML: the shared part says so with its line and column.
            Err(err) => return Err(shared.err().unwrap_or(err)),
        };
        let resolved = sections
            .as_ref()
            .map(|sections| resolve_sections(sections, base_dir(path), &mut problems));
        let origin = path.display().to_string();
        let shared = match shared {
            Ok(shared) => shared,
            Err(Error::ConfigInvalid {
                origin,
                problems: mut first,
            }) => {
                first.extend(problems);
                return Err(Error::ConfigInvalid {
                    origin,
                    problems: first,
                });
            }
            Err(err) => return Err(err),
        };
        let (Some(sections), Some(resolved), true) = (sections, resolved, problems.is_empty())
        else {
            return Err(Error::ConfigInvalid { origin, problems });
        };
        let base = shared.base_dir().to_path_buf();
        let clusters = shared
            .clusters
            .into_iter()
            .zip(resolved)
            .map(|(etcd, (remediation, backup))| ManagedCluster {
                etcd,
                remediation,
                backup,
            })
            .collect();
        Ok(RemediatorConfig {
            clusters,
            origin: shared.origin,
            base,
            service: sections.remediator,
        })
    }

    /// The `remediator:` block as written, for the webhook service to resolve.
    pub fn remediator_block(&self) -> Option<&RemediatorFile> {
        self.service.as_ref()
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    pub fn cluster(&self, name: &str) -> Option<&ManagedCluster> {
        self.clusters.iter().find(|cluster| cluster.name == name)
    }

    pub fn cluster_names(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }
}

/// Each cluster's remediation and backup blocks merged over the top-level ones. A cluster with
/// a problem (recorded in `problems`) is left out.
fn resolve_sections(
    sections: &Sections,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Vec<Resolved> {
    let mut resolved = Vec::with_capacity(sections.clusters.len());
    for (index, own) in sections.clusters.iter().enumerate() {
        let key = format!("clusters[{index}]");
        let remediation = remediation::resolve(
            sections.remediation.as_ref(),
            own.remediation.as_ref(),
            &format!("{key}.remediation"),
            base,
            problems,
        );
        let backup = backup::resolve(
            sections.backup.as_ref(),
            own.backup.as_ref(),
            &format!("{key}.backup"),
            base,
            problems,
        );
        if let (Some(remediation), Some(backup)) = (remediation, backup) {
            resolved.push((remediation, backup));
        }
    }
    resolved
}
