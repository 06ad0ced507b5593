//! Backups: what one holds (its manifest), where it lands (local directories, buckets),
//! how it is proven (the restore drill), and how many are kept. The engine's `backup` takes
//! the snapshot under the cluster's lock and hands the verified file to these.

pub(crate) mod bucket;
pub(crate) mod cluster;
pub(crate) mod drill;
pub(crate) mod drill_taken;
mod land;
pub(crate) mod local;
pub(crate) mod locked;
mod retention;
pub(crate) mod sealing;
pub(crate) mod stored;
pub(crate) mod take;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::snapshot::SnapshotError;
use crate::vocabulary::{timestamp, MemberRef};

/// A destination the backup did not reach, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Missed {
    pub destination: String,
    pub reason: String,
}

/// What a backup holds, written beside it as `<snapshot name minus .db>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub cluster: String,
    /// The member the snapshot was streamed from.
    pub member: MemberRef,
    /// The member's revision just before the snapshot began.
    pub revision: i64,
    pub etcd_version: String,
    pub size_bytes: u64,
    /// sha256 of the database (etcd's trailer, checked while streaming).
    pub sha256: String,
    /// The stored copy's name: `<snapshot>.db`, then `.zst` when compressed and `.age` when
    /// encrypted.
    pub file: String,
    /// `zstd` when the stored copies are compressed (`size_bytes` and `sha256` are the
    /// database's, uncompressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Present when the stored copies are encrypted (after compression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    #[serde(with = "timestamp")]
    pub created_at: SystemTime,
    pub etcdmedic_version: String,
    /// The source member's HashKV at `revision`, taken right after the snapshot: what a
    /// member restored from this backup must answer for the same revision. Absent when the
    /// member could not compute it (the revision compacted meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_kv: Option<RecordedHash>,
    /// The last restore drill of this backup; absent when drills are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_drill: Option<drill::DrillRecord>,
    /// The cluster's ID (MemberList's header, hex) when the backup was taken: `restore`
    /// refuses a backup of another cluster by it. Absent in backups of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The voting members then, with the peer URLs a restore recreates them at. Empty in
    /// backups of older versions (`restore --member` gives them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Topology>,
}

/// One voting member as the backup found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub name: String,
    pub peer_urls: Vec<String>,
}

impl Topology {
    /// The voting members of `status` that MemberList named, with their peer URLs.
    pub fn of(status: &etcdmedic_cluster::ClusterStatus) -> Vec<Topology> {
        status
            .members
            .iter()
            .filter(|m| !m.is_learner && !m.peer_urls.is_empty())
            .filter_map(|m| {
                m.name.clone().map(|name| Topology {
                    name,
                    peer_urls: m.peer_urls.clone(),
                })
            })
            .collect()
    }
}

/// The cluster's ID as manifests record it, from a collection that reached MemberList.
pub(crate) fn cluster_id(status: &etcdmedic_cluster::ClusterStatus) -> Option<String> {
    status
        .membership
        .as_ref()
        .ok()
        .map(|m| format!("{:x}", m.cluster_id))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedHash {
    pub revision: i64,
    pub hash: u32,
    pub compact_revision: i64,
}

/// How a backup's copies are encrypted: with age, to these recipients (public keys only;
/// any one of their identities decrypts it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `age` (age-encryption.org/v1, X25519 recipients).
    pub format: String,
    pub recipients: Vec<String>,
}

impl Encryption {
    pub(crate) fn age(recipients: &[String]) -> Encryption {
        Encryption {
            format: "age".into(),
            recipients: recipients.to_vec(),
        }
    }
}

impl Manifest {
    /// How its copies are stored.
    pub(crate) fn form(&self) -> stored::Form {
        stored::Form::of(self)
    }
}

/// One backup: its manifest and where it landed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupReport {
    pub manifest: Manifest,
    pub destinations: Vec<Landed>,
    /// Destinations the backup did not reach (the others still hold it).
    pub missed: Vec<Missed>,
    #[serde(with = "crate::vocabulary::seconds")]
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Landed {
    pub destination: String,
    /// `local`, `s3`, `gcs` or `azure`.
    pub kind: String,
    /// The file's path, or the object's `s3://bucket/key`, `gs://bucket/key` or blob URL.
    pub location: String,
    /// How the copy there was checked: `trailer` (etcd's sha256 over the file written,
    /// decoded first when compressed or encrypted), `sha256` (an encrypted file nobody here
    /// can decrypt: the sha256 of the bytes that were encrypted for it) or
    /// `etag` (the store's multipart ETag is the md5 of the parts' md5s computed from what
    /// was sent) or `read_back` (the object downloaded again and checked the same way).
    pub verified_by: String,
    /// Uploaded while the snapshot arrived, rather than from the saved file afterwards.
    #[serde(default)]
    pub streamed: bool,
    /// The stored copy's size as the destination reports it (the file's, or the object's
    /// from the store once written): compressed when the copies are. 0 in records of builds
    /// before it was recorded.
    #[serde(default)]
    pub stored_bytes: u64,
    /// Older backups the retention removed there.
    pub removed: Vec<String>,
}

/// What became of a run's snapshot kept as a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunBackup {
    pub destinations: Vec<Landed>,
    pub missed: Vec<Missed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_drill: Option<drill::DrillRecord>,
    /// Why it was not kept at all (its drill failed, the lock was held...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no backup destination is configured for cluster {0} (backup.destinations)")]
    NoDestination(String),
    #[error("unknown destination {name:?}; configured: {known}")]
    UnknownDestination { name: String, known: String },
    #[error("cannot take the cluster's lock (a run or a backup holds it): {0}")]
    Locked(String),
    #[error("no voting member answered Status; nothing to take a snapshot from")]
    NoMember,
    #[error("the snapshot failed: {0}")]
    Snapshot(String),
    #[error("{path}: {source}", path = .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("destination {destination}: {reason}")]
    Upload { destination: String, reason: String },
    #[error("the restore drill failed: {0}")]
    Drill(String),
    /// Asked for something the configuration does not allow; nothing was touched.
    #[error("{0}")]
    Config(String),
    #[error("no backup of cluster {cluster} in destination {destination}")]
    NoBackup {
        cluster: String,
        destination: String,
    },
    #[error("stopped on request; nothing partial was left")]
    Stopped,
}

impl From<SnapshotError> for BackupError {
    fn from(err: SnapshotError) -> Self {
        match err {
            SnapshotError::Stopped => BackupError::Stopped,
            err => BackupError::Snapshot(err.to_string()),
        }
    }
}
