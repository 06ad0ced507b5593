//! A local directory destination: `<path>/<cluster>/<snapshot>.db` with its manifest beside
//! it. Everything is written to a `.part`, fsynced, renamed and the directory fsynced, so a
//! crash leaves a complete backup or nothing that counts.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Kept;
use etcdmedic_cluster::config::ClusterName;

use super::retention::expired;
use super::{compress, BackupError, Manifest};
use crate::snapshot;

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `manifest` as `path` (replacing any older one) durably.
pub(crate) async fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let json = serde_json::to_vec_pretty(manifest).map_err(|err| write_error(path)(err.into()))?;
    let part = path.with_extension("json.part");
    tokio::fs::write(&part, json)
        .await
        .map_err(write_error(path))?;
    sync_file(&part).await.map_err(write_error(path))?;
    tokio::fs::rename(&part, path)
        .await
        .map_err(write_error(path))?;
    snapshot::sync_dir(path.parent().unwrap_or(Path::new(".")))
        .await
        .map_err(write_error(path))
}

/// The manifest beside the snapshot at `db`.
pub(crate) async fn read_manifest(db: &Path) -> Result<Manifest, BackupError> {
    let path = snapshot::manifest_path(db);
    let text = tokio::fs::read(&path).await.map_err(write_error(&path))?;
    serde_json::from_slice(&text).map_err(|err| BackupError::Write {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, err),
    })
}

/// Writes the manifest beside the verified snapshot at `db`, then applies the retention in
/// its directory.
pub(crate) async fn finish(
    db: &Path,
    manifest: &Manifest,
    kept: Kept,
) -> Result<Vec<String>, BackupError> {
    write_manifest(&snapshot::manifest_path(db), manifest).await?;
    let dir = db.parent().unwrap_or(Path::new("."));
    let removed =
        retention(dir, &manifest.cluster, kept, SystemTime::now()).map_err(write_error(dir))?;
    Ok(removed
        .iter()
        .map(|path| path.display().to_string())
        .collect())
}

/// Copies the verified snapshot into the directory `dir` (compressed when the manifest says
/// so) and checks the copy against etcd's trailer again before it counts.
pub(crate) async fn copy_verified(
    from: &Path,
    dir: &Path,
    manifest: &Manifest,
) -> Result<PathBuf, BackupError> {
    snapshot::create_dir(dir)?;
    let path = dir.join(&manifest.file);
    let part = dir.join(format!("{}.part", manifest.file));
    let compressed = manifest.is_compressed();
    let copied = async {
        if compressed {
            let (from, to) = (from.to_path_buf(), part.clone());
            tokio::task::spawn_blocking(move || compress::compress_file(&from, &to))
                .await
                .map_err(std::io::Error::other)
                .and_then(|done| done)
                .map_err(write_error(&part))?;
        } else {
            tokio::fs::copy(from, &part)
                .await
                .map_err(write_error(&part))?;
            sync_file(&part).await.map_err(write_error(&part))?;
        }
        let checked = part.clone();
        let sha256 =
            tokio::task::spawn_blocking(move || compress::check_file(&checked, compressed))
                .await
                .map_err(|err| err.to_string())
                .and_then(|checked| checked)
                .map_err(BackupError::Snapshot)?;
        if sha256 != manifest.sha256 {
            return Err(BackupError::Snapshot(format!(
                "the copy in {} has sha256 {sha256}, not {}",
                part.display(),
                manifest.sha256
            )));
        }
        Ok(())
    }
    .await;
    if let Err(err) = copied {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(err);
    }
    tokio::fs::rename(&part, &path)
        .await
        .map_err(write_error(&part))?;
    snapshot::sync_dir(dir).await.map_err(write_error(dir))?;
    Ok(path)
}

/// The newest backup (a snapshot with its manifest) of `cluster` in `dir`.
pub(crate) fn newest(dir: &Path, cluster: &ClusterName) -> Option<PathBuf> {
    backups(dir, cluster).ok()?.pop()
}

/// Backups of `cluster` in `dir`, oldest first. Only snapshots with a manifest count: a
/// snapshot a run left in the same directory is not a backup.
fn backups(dir: &Path, cluster: &str) -> std::io::Result<Vec<PathBuf>> {
    Ok(snapshot::snapshots_of(dir, cluster)?
        .into_iter()
        .filter(|path| snapshot::manifest_path(path).exists())
        .collect())
}

pub(crate) async fn sync_file(path: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(path).await?.sync_all().await
}

/// Removes the backups [`expired`] names, each with its manifest (first, so a crash between
/// the two leaves a snapshot that no longer counts, never a manifest without its snapshot).
fn retention(
    dir: &Path,
    cluster: &str,
    kept: Kept,
    now: SystemTime,
) -> std::io::Result<Vec<PathBuf>> {
    let backups = backups(dir, cluster)?;
    let written: Vec<SystemTime> = backups
        .iter()
        .map(|path| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .unwrap_or(now)
        })
        .collect();
    let mut removed = Vec::new();
    'backups: for index in expired(&written, kept.keep, kept.max_age, now) {
        let path = &backups[index];
        // Manifest first: a copy without one no longer counts. A file the filesystem will not
        // let go (immutable, read-only) keeps its backup: logged, and tried again next time.
        for file in [snapshot::manifest_path(path), path.clone()] {
            if let Err(err) = std::fs::remove_file(&file) {
                tracing::warn!(file = %file.display(), error = %err, "backup retention: could not remove an expired backup; kept");
                continue 'backups;
            }
        }
        removed.push(path.clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A backup (snapshot and manifest) written `age` before `now`; `manifest: false` for a
    /// snapshot a run left, which is not a backup.
    fn write(dir: &Path, name: &str, age: Duration, now: SystemTime, manifest: bool) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"db").unwrap();
        if manifest {
            std::fs::write(path.with_extension("json"), b"{}").unwrap();
        }
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(now - age).unwrap();
        path
    }

    #[test]
    fn retention_removes_backups_with_their_manifest_and_never_a_run_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let old = write(
            dir.path(),
            "prod-20261101T000000.000Z-rev1.db",
            day * 28,
            now,
            true,
        );
        let new = write(
            dir.path(),
            "prod-20261128T000000.000Z-rev4.db",
            day,
            now,
            true,
        );
        let run_snapshot = write(
            dir.path(),
            "prod-20261001T000000.000Z-rev0.db",
            day * 60,
            now,
            false,
        );
        let kept = Kept {
            keep: 1,
            max_age: None,
        };
        let removed = retention(dir.path(), "prod", kept, now).unwrap();
        assert_eq!(removed, vec![old.clone()]);
        assert!(!old.with_extension("json").exists());
        assert!(new.exists() && new.with_extension("json").exists());
        assert!(
            run_snapshot.exists(),
            "a snapshot without a manifest is not a backup"
        );
        assert_eq!(
            newest(dir.path(), &ClusterName::new("prod").unwrap()),
            Some(new)
        );
    }
}
