//! Which backup a restore takes: every backup of the cluster with its manifest, from every
//! destination (or the one asked for), and the choice among them.

use std::path::PathBuf;

use etcdmedic_cluster::config::ClusterName;

use crate::backup::bucket::Bucket;
use crate::backup::{local, BackupError, Manifest};
use crate::config::{BackupSettings, Destination};
use crate::snapshot;

use super::RestoreError;

/// Where a backup is kept.
#[derive(Debug, Clone)]
pub enum Stored {
    /// A file in a local destination.
    File(PathBuf),
    /// An object in a bucket: the destination (to open it again) and the object's URL.
    Object {
        destination: Box<Destination>,
        url: String,
    },
}

/// One backup the restore could take.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub destination: String,
    pub stored: Stored,
    pub manifest: Manifest,
}

impl Candidate {
    pub fn location(&self) -> String {
        match &self.stored {
            Stored::File(path) => path.display().to_string(),
            Stored::Object { url, .. } => url.clone(),
        }
    }

    /// Whether its last restore drill passed.
    pub fn proven(&self) -> bool {
        self.manifest
            .restore_drill
            .as_ref()
            .is_some_and(|drill| drill.passed)
    }

    /// What its drill said, for a refusal.
    pub fn unproven_because(&self) -> String {
        match &self.manifest.restore_drill {
            None => "it was never drilled".to_string(),
            Some(drill) if drill.passed => "it passed".to_string(),
            Some(drill) => format!(
                "its restore drill failed: {}",
                drill.reason.as_deref().unwrap_or("no reason recorded")
            ),
        }
    }
}

/// Every backup of `cluster` in the destinations of `backup` (only `from`, when given), each
/// destination in the configuration's order, newest first within it.
pub async fn candidates(
    backup: &BackupSettings,
    from: Option<&str>,
    cluster: &ClusterName,
) -> Result<Vec<Candidate>, RestoreError> {
    let destinations = crate::backup::take::chosen(backup, from, cluster)?;
    let mut found = Vec::new();
    for destination in destinations {
        match destination.local_path() {
            Some(path) => {
                let dir = snapshot::cluster_dir(path, cluster);
                let mut files = snapshot::snapshots_of(&dir, cluster).unwrap_or_default();
                files.retain(|file| snapshot::manifest_path(file).exists());
                files.sort();
                for file in files.into_iter().rev() {
                    let manifest = local::read_manifest(&file).await?;
                    found.push(Candidate {
                        destination: destination.name.to_string(),
                        stored: Stored::File(file),
                        manifest,
                    });
                }
            }
            None => {
                let bucket = Bucket::open(destination, cluster)?;
                for (file, _) in bucket.listed().await?.into_iter().rev() {
                    let manifest = bucket.manifest(&file).await?;
                    found.push(Candidate {
                        destination: destination.name.to_string(),
                        stored: Stored::Object {
                            destination: Box::new(destination.clone()),
                            url: bucket.url(&file),
                        },
                        manifest,
                    });
                }
            }
        }
    }
    Ok(found)
}

/// The backup to restore: `file` when given (its first copy, a local one before a bucket's),
/// else the newest whose drill passed (the newest of all with `accept_unproven`). A backup
/// that is not proven is refused unless `accept_unproven`.
pub fn pick<'a>(
    candidates: &'a [Candidate],
    file: Option<&str>,
    accept_unproven: bool,
    cluster: &str,
) -> Result<&'a Candidate, RestoreError> {
    let local_first = |a: &&Candidate, b: &&Candidate| {
        let remote = |c: &Candidate| matches!(c.stored, Stored::Object { .. });
        remote(a).cmp(&remote(b))
    };
    let chosen = match file {
        Some(file) => {
            let mut copies: Vec<&Candidate> = candidates
                .iter()
                .filter(|c| c.manifest.file == file || snapshot_name(&c.manifest.file) == file)
                .collect();
            copies.sort_by(local_first);
            // A copy whose drill passed, if any copy's did.
            copies
                .iter()
                .find(|c| c.proven())
                .or(copies.first())
                .copied()
                .ok_or_else(|| RestoreError::NoBackup {
                    cluster: cluster.to_string(),
                    what: format!("named {file}"),
                })?
        }
        None => {
            let mut sorted: Vec<&Candidate> = candidates.iter().collect();
            sorted.sort_by(|a, b| {
                b.manifest
                    .created_at
                    .cmp(&a.manifest.created_at)
                    .then_with(|| local_first(a, b))
            });
            let newest = sorted
                .first()
                .copied()
                .ok_or_else(|| RestoreError::NoBackup {
                    cluster: cluster.to_string(),
                    what: "at all".to_string(),
                })?;
            if accept_unproven {
                newest
            } else {
                sorted.iter().find(|c| c.proven()).copied().ok_or_else(|| {
                    RestoreError::Unproven {
                        file: newest.manifest.file.clone(),
                        because: format!(
                            "no backup passed its restore drill; the newest: {}",
                            newest.unproven_because()
                        ),
                    }
                })?
            }
        }
    };
    if !chosen.proven() && !accept_unproven {
        return Err(RestoreError::Unproven {
            file: chosen.manifest.file.clone(),
            because: chosen.unproven_because(),
        });
    }
    Ok(chosen)
}

/// `<snapshot>.db` of a stored name (`<snapshot>.db.zst` when compressed).
pub fn snapshot_name(stored: &str) -> &str {
    snapshot::without_encoding(stored)
}

impl From<BackupError> for RestoreError {
    fn from(err: BackupError) -> Self {
        RestoreError::Backup(err)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::backup::drill::DrillRecord;

    fn candidate(file: &str, age_hours: u64, passed: Option<bool>, remote: bool) -> Candidate {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "cluster": "prod", "member": {"id": "1", "name": "m1", "endpoint": "http://a:2379"},
            "revision": 7, "etcd_version": "3.5.30", "size_bytes": 1, "sha256": "00",
            "file": file, "created_at": "2026-01-01T00:00:00Z", "etcdmedic_version": "test"
        }))
        .expect("a manifest");
        let mut manifest = manifest;
        manifest.created_at = SystemTime::now() - Duration::from_secs(age_hours * 3600);
        manifest.restore_drill = passed.map(|passed| DrillRecord {
            passed,
            at: SystemTime::now(),
            duration_seconds: 1.0,
            hash: None,
            reason: (!passed).then(|| "hash differs".to_string()),
            not_drilled: None,
        });
        Candidate {
            destination: if remote { "offsite" } else { "near" }.into(),
            stored: if remote {
                Stored::File(PathBuf::from("/unused"))
            } else {
                Stored::File(PathBuf::from(format!("/b/{file}")))
            },
            manifest,
        }
    }

    #[test]
    fn the_newest_proven_backup_is_taken_and_an_unproven_one_only_when_accepted() {
        let all = [
            candidate("new.db", 1, Some(false), false),
            candidate("mid.db", 2, Some(true), false),
            candidate("old.db", 3, Some(true), false),
        ];
        assert_eq!(
            pick(&all, None, false, "prod").expect("one").manifest.file,
            "mid.db"
        );
        assert_eq!(
            pick(&all, None, true, "prod").expect("one").manifest.file,
            "new.db"
        );
        let refused = pick(&all, Some("new.db"), false, "prod").expect_err("unproven");
        assert!(refused.to_string().contains("hash differs"), "{refused}");
        assert!(
            refused.to_string().contains("--accept-unproven"),
            "{refused}"
        );
        assert_eq!(
            pick(&all, Some("old.db"), false, "prod")
                .expect("named")
                .manifest
                .file,
            "old.db"
        );
    }

    #[test]
    fn nothing_proven_or_nothing_at_all_is_refused() {
        let never = [candidate("a.db", 1, None, false)];
        let refused = pick(&never, None, false, "prod").expect_err("never drilled");
        assert!(refused.to_string().contains("never drilled"), "{refused}");
        assert!(matches!(
            pick(&[], None, true, "prod"),
            Err(RestoreError::NoBackup { .. })
        ));
        assert!(matches!(
            pick(&never, Some("b.db"), true, "prod"),
            Err(RestoreError::NoBackup { .. })
        ));
    }

    #[test]
    fn a_compressed_copy_is_found_by_its_snapshot_name() {
        let all = [candidate("a.db.zst", 1, Some(true), false)];
        assert_eq!(
            pick(&all, Some("a.db"), false, "prod")
                .expect("found")
                .manifest
                .file,
            "a.db.zst"
        );
    }
}
