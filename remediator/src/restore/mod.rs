//! `etcdmedic-remediator restore`: the other half of a backup. It picks a backup (by default
//! the newest whose restore drill passed, from any destination), fetches it, checks it
//! against its manifest (the cluster, the size, etcd's sha256 trailer), and writes one data
//! directory per member with `etcdutl snapshot restore`, for the members the backup recorded
//! or the ones given. Kubernetes keeps caches of every object at the revisions it saw, so by
//! default the restored keyspace starts far above any revision the old cluster reached
//! (`--bump-revision`) with everything below marked compacted (`--mark-compacted`): a watch
//! or list from a revision the old cluster had gets "compacted" and starts over, instead of
//! silently missing what changed. Nothing is written before every check has passed, and a
//! failure removes what was written.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use etcdmedic_cluster::config::ClusterName;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backup::{BackupError, Topology};
use crate::config::{BackupSettings, RestoreTool};

pub mod choose;
mod fetch;
pub mod members;
pub mod next_steps;

pub use members::Bump;

use crate::age_keys::Identities;

/// How far above the backup's revision the restored keyspace starts by default: a billion
/// revisions, more than any cluster writes between its last backup and its loss (a
/// Kubernetes cluster busy at a thousand writes a second takes eleven days to write that
/// many), and far below where revisions run out (2^63).
pub const DEFAULT_BUMP: u64 = 1_000_000_000;

/// What a restore refuses or fails with. Refusals change nothing.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("no backup of cluster {cluster} {what}")]
    NoBackup { cluster: String, what: String },
    #[error("backup {file} is not proven: {because}; --accept-unproven restores it anyway")]
    Unproven { file: String, because: String },
    #[error("backup {file} is cluster {recorded}'s, not {cluster}'s (its manifest says so)")]
    OtherCluster {
        file: String,
        recorded: String,
        cluster: String,
    },
    #[error(
        "backup {file} is encrypted (age, to {recipients}): give --identity FILE, an age \
         identity file holding the secret key of one of them"
    )]
    NoIdentity { file: String, recipients: String },
    #[error(
        "--identity {path}: none of its identities ({public}) is among backup {file}'s \
         recipients ({recipients})", path = .path.display()
    )]
    NotARecipient {
        path: PathBuf,
        file: String,
        public: String,
        recipients: String,
    },
    #[error("--identity: {0}")]
    Identity(crate::age_keys::KeyError),
    #[error("backup {file} is damaged: {why}")]
    Damaged { file: String, why: String },
    #[error("{path} is not empty: restore writes into a new or empty directory", path = .0.display())]
    TargetNotEmpty(PathBuf),
    #[error("{path} is not a directory: restore writes into a new or empty directory", path = .0.display())]
    TargetNotADirectory(PathBuf),
    #[error(
        "the backup records no members (taken by an older etcdmedic): give each one with \
         --member NAME=PEER_URL"
    )]
    NoTopology,
    #[error("--member {given:?}: {why}")]
    BadMember { given: String, why: String },
    #[error(
        "{tool} (etcd 3.4's etcdctl) cannot --bump-revision: give --etcdutl (etcd 3.5 or \
         later; it restores 3.4 backups too) or --no-bump", tool = .0.display()
    )]
    ToolCannotBump(PathBuf),
    #[error("no snapshot restore tool: restore drills are off for the cluster; give --etcdutl")]
    NoTool,
    #[error("{tool} snapshot restore for member {member} exited with {status}: {message}", tool = .tool.display())]
    Tool {
        tool: PathBuf,
        member: String,
        status: String,
        message: String,
    },
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Backup(BackupError),
}

impl RestoreError {
    /// A refusal of what was asked (nothing was changed), rather than a failure on the way.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            RestoreError::Tool { .. }
                | RestoreError::Io { .. }
                | RestoreError::Backup(BackupError::Upload { .. })
                | RestoreError::Backup(BackupError::Write { .. })
                | RestoreError::Backup(BackupError::Stopped)
        )
    }
}

/// What was asked.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The backup's file name; `None`: the newest proven one.
    pub file: Option<String>,
    /// Only this destination.
    pub from: Option<String>,
    pub into: PathBuf,
    /// `--member`: a new topology; empty: the backup's.
    pub members: Vec<Topology>,
    /// `None`: `--no-bump`.
    pub bump: Option<Bump>,
    pub accept_unproven: bool,
    pub dry_run: bool,
    /// `--etcdutl`; `None`: the restore drill's tool.
    pub etcdutl: Option<PathBuf>,
    /// `--identity`: decrypts an encrypted backup; `None`: the drill's identity file.
    pub identity: Option<PathBuf>,
}

/// One data directory to write.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedMember {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub data_dir: PathBuf,
}

/// What a restore does (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub cluster: String,
    pub destination: String,
    pub location: String,
    pub file: String,
    pub revision: i64,
    #[serde(with = "crate::vocabulary::timestamp")]
    pub created_at: SystemTime,
    pub cluster_id: Option<String>,
    pub proven: bool,
    /// The snapshot, checked, as etcd wrote it: what `talosctl bootstrap --recover-from` takes.
    pub snapshot: PathBuf,
    pub members: Vec<PlannedMember>,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    /// `None`: `--no-bump`, the keyspace starts at the backup's revision.
    pub bump: Option<Bump>,
    pub tool: PathBuf,
}

/// The outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub plan: RestorePlan,
    pub dry_run: bool,
    /// The snapshot's sha256, checked against the manifest; absent in a dry run.
    pub sha256: Option<String>,
}

/// A target that does not exist yet, or is an empty directory.
fn check_target(into: &Path) -> Result<(), RestoreError> {
    if into.exists() && !into.is_dir() {
        return Err(RestoreError::TargetNotADirectory(into.to_path_buf()));
    }
    match std::fs::read_dir(into) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(RestoreError::TargetNotEmpty(into.to_path_buf())),
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RestoreError::Io {
            path: into.to_path_buf(),
            source,
        }),
    }
}

/// The tool that writes the data directories, and whether it can bump.
fn tool(request: &RestoreRequest, backup: &BackupSettings) -> Result<PathBuf, RestoreError> {
    if let Some(etcdutl) = &request.etcdutl {
        return Ok(etcdutl.clone());
    }
    match backup.restore_drill.as_ref().map(|d| &d.restore) {
        Some(RestoreTool::Etcdutl(path)) => Ok(path.clone()),
        Some(RestoreTool::Etcdctl(path)) if request.bump.is_some() => {
            Err(RestoreError::ToolCannotBump(path.clone()))
        }
        Some(RestoreTool::Etcdctl(path)) => Ok(path.clone()),
        None => Err(RestoreError::NoTool),
    }
}

/// Restores `cluster` as `request` says, from the backups of `backup`'s destinations.
pub async fn restore(
    cluster: &ClusterName,
    backup: &BackupSettings,
    request: &RestoreRequest,
    stop: &CancellationToken,
) -> Result<RestoreReport, RestoreError> {
    check_target(&request.into)?;
    let tool = tool(request, backup)?;
    let candidates = choose::candidates(backup, request.from.as_deref(), cluster).await?;
    let chosen = choose::pick(
        &candidates,
        request.file.as_deref(),
        request.accept_unproven,
        cluster,
    )?;
    let manifest = &chosen.manifest;
    if manifest.cluster != cluster.as_str() {
        return Err(RestoreError::OtherCluster {
            file: manifest.file.clone(),
            recorded: manifest.cluster.clone(),
            cluster: cluster.to_string(),
        });
    }
    let identities = identities(request, backup, manifest)?;
    let members = members::chosen(&request.members, &manifest.members)?;
    let snapshot = request.into.join(choose::snapshot_name(&manifest.file));
    let created = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace([':', '-'], "")
        .to_lowercase();
    let plan = RestorePlan {
        cluster: cluster.to_string(),
        destination: chosen.destination.clone(),
        location: chosen.location(),
        file: manifest.file.clone(),
        revision: manifest.revision,
        created_at: manifest.created_at,
        cluster_id: manifest.cluster_id.clone(),
        proven: chosen.proven(),
        snapshot: snapshot.clone(),
        initial_cluster: members::initial_cluster(&members),
        initial_cluster_token: format!("{cluster}-restored-{created}"),
        members: members
            .iter()
            .map(|m| PlannedMember {
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                data_dir: request.into.join(&m.name),
            })
            .collect(),
        bump: request.bump,
        tool,
    };
    if request.dry_run {
        return Ok(RestoreReport {
            plan,
            dry_run: true,
            sha256: None,
        });
    }
    let created_target = !request.into.exists();
    let written = async {
        let sha256 = fetch::checked_snapshot(chosen, &snapshot, identities.as_ref(), stop).await?;
        // The plan lists the members in the same order, each with its directory.
        for (member, planned) in members.iter().zip(&plan.members) {
            write_member(&plan, member, &members, &planned.data_dir).await?;
        }
        Ok::<_, RestoreError>(sha256)
    }
    .await;
    match written {
        Ok(sha256) => Ok(RestoreReport {
            plan,
            dry_run: false,
            sha256: Some(sha256),
        }),
        Err(err) => {
            undo(&request.into, created_target, &plan);
            Err(err)
        }
    }
}

/// The identities that decrypt the backup `manifest` describes, when it is encrypted: from
/// `--identity`, else the drill's identity file; refused when none is given or none of them
/// is one of the backup's recipients.
fn identities(
    request: &RestoreRequest,
    backup: &BackupSettings,
    manifest: &crate::backup::Manifest,
) -> Result<Option<Identities>, RestoreError> {
    let Some(encryption) = &manifest.encryption else {
        return Ok(None);
    };
    let recipients = encryption.recipients.join(", ");
    let drill_identity = backup
        .restore_drill
        .as_ref()
        .and_then(|d| d.identity_file.clone());
    let Some(path) = request.identity.clone().or(drill_identity) else {
        return Err(RestoreError::NoIdentity {
            file: manifest.file.clone(),
            recipients,
        });
    };
    let identities = Identities::read(&path).map_err(RestoreError::Identity)?;
    let public = identities.public();
    if !public.iter().any(|p| encryption.recipients.contains(p)) {
        return Err(RestoreError::NotARecipient {
            path,
            file: manifest.file.clone(),
            public: public.join(", "),
            recipients,
        });
    }
    Ok(Some(identities))
}

/// Removes what a failed restore wrote, so the target is as it was.
fn undo(into: &Path, created: bool, plan: &RestorePlan) {
    if created {
        let _ = std::fs::remove_dir_all(into);
        return;
    }
    let _ = std::fs::remove_file(&plan.snapshot);
    for member in &plan.members {
        let _ = std::fs::remove_dir_all(&member.data_dir);
    }
}

/// One member's data directory, from the checked snapshot.
async fn write_member(
    plan: &RestorePlan,
    member: &Topology,
    members: &[Topology],
    data_dir: &Path,
) -> Result<(), RestoreError> {
    let args = members::restore_args(
        &plan.snapshot,
        member,
        members,
        &plan.initial_cluster_token,
        data_dir,
        plan.bump,
    );
    tracing::info!(member = %member.name, data_dir = %data_dir.display(), "restore: writing the member's data directory");
    let output = tokio::process::Command::new(&plan.tool)
        .args(&args)
        // etcd 3.4's etcdctl restores only with the v3 API selected.
        .env("ETCDCTL_API", "3")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| RestoreError::Io {
            path: plan.tool.clone(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(RestoreError::Tool {
            tool: plan.tool.clone(),
            member: member.name.clone(),
            status: output.status.to_string(),
            message: last.unwrap_or("(no output)").trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_new_or_empty_directory_is_a_target() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        assert!(check_target(&dir.path().join("new")).is_ok());
        assert!(check_target(dir.path()).is_ok());
        std::fs::write(dir.path().join("file"), "x").expect("a file");
        assert!(matches!(
            check_target(dir.path()),
            Err(RestoreError::TargetNotEmpty(_))
        ));
        let refused = check_target(&dir.path().join("file")).expect_err("a file");
        assert!(matches!(refused, RestoreError::TargetNotADirectory(_)));
        assert!(refused.is_refusal());
    }
}
