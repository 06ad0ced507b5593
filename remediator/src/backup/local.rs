//! A local directory destination: `<path>/<cluster>/<snapshot>.db` with its manifest beside
//! it. Everything is written to a `.part`, fsynced, renamed and the directory fsynced, so a
//! crash leaves a complete backup or nothing that counts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Kept;
use etcdmedic_cluster::config::ClusterName;

use super::retention::expired;
use super::sealing::{produced_matches, Sealing};
use super::stored::{self, Encoded, StoredError};
use super::{BackupError, Manifest};
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
    {
        use tokio::io::AsyncWriteExt;
        let mut file = snapshot::create_private_async(&part)
            .await
            .map_err(write_error(path))?;
        file.write_all(&json).await.map_err(write_error(path))?;
    }
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

/// Copies the verified snapshot into the directory `dir` in the backup's stored form
/// (compressed, encrypted) and checks the copy before it counts: decoded back to the
/// database and etcd's trailer checked again; an encrypted copy nobody here can decrypt is
/// checked as the bytes the encoder produced. The copy's path, and how it was checked
/// (`trailer`, or `sha256` for the encrypted bytes alone).
pub(crate) async fn copy_verified(
    from: &Path,
    dir: &Path,
    manifest: &Manifest,
    sealing: &Sealing,
) -> Result<(PathBuf, &'static str), BackupError> {
    snapshot::create_dir(dir)?;
    let path = dir.join(&manifest.file);
    let part = dir.join(format!("{}.part", manifest.file));
    let form = manifest.form();
    let copied = async {
        let encoded = if form.is_plain() {
            tokio::fs::copy(from, &part)
                .await
                .map_err(write_error(&part))?;
            // A copy takes its source's mode: a snapshot of an older release may be 0644.
            tokio::fs::set_permissions(
                &part,
                std::fs::Permissions::from_mode(snapshot::PRIVATE_FILE),
            )
            .await
            .map_err(write_error(&part))?;
            sync_file(&part).await.map_err(write_error(&part))?;
            Encoded::default()
        } else {
            let (from, to, encoder) = (from.to_path_buf(), part.clone(), sealing.encoder(true));
            blocking(move || stored::encode_file(&from, &to, encoder?))
                .await
                .map_err(|err| stored_error(&part, err))?
        };
        produced_matches(&encoded, manifest)
            .map_err(|err| BackupError::Snapshot(err.to_string()))?;
        let verified_by = match (&encoded.produced_sha256, &encoded.decoded) {
            (Some(_), None) => "sha256",
            _ => "trailer",
        };
        let checked = part.clone();
        let identities = sealing.identities.clone();
        let found = match encoded.produced_sha256 {
            // Encrypted: the file holds what was produced (checked decrypting above when
            // there was an identity).
            Some(produced) => {
                let sha256 = blocking(move || stored::sha256_file(&checked))
                    .await
                    .map_err(|err| stored_error(&part, err))?;
                (sha256 != produced).then(|| format!("sha256 {sha256}, not the {produced} written"))
            }
            None => {
                let sha256 =
                    blocking(move || stored::check_file(&checked, form, identities.as_ref()))
                        .await
                        .map_err(|err| stored_error(&part, err))?;
                (sha256 != manifest.sha256)
                    .then(|| format!("sha256 {sha256}, not {}", manifest.sha256))
            }
        };
        match found {
            Some(mismatch) => Err(BackupError::Snapshot(format!(
                "the copy in {} has {mismatch}",
                part.display()
            ))),
            None => Ok(verified_by),
        }
    }
    .await;
    let verified_by = match copied {
        Ok(verified_by) => verified_by,
        Err(err) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(err);
        }
    };
    tokio::fs::rename(&part, &path)
        .await
        .map_err(write_error(&part))?;
    snapshot::sync_dir(dir).await.map_err(write_error(dir))?;
    Ok((path, verified_by))
}

/// Runs blocking file work off the runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoredError> + Send + 'static,
) -> Result<T, StoredError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StoredError::Io(std::io::Error::other(err)))?
}

fn stored_error(path: &Path, err: StoredError) -> BackupError {
    match err {
        StoredError::Io(source) => BackupError::Write {
            path: path.to_path_buf(),
            source,
        },
        err => BackupError::Snapshot(format!("{}: {err}", path.display())),
    }
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
