//! The chosen backup, fetched into the restore's directory as etcd wrote it and checked on
//! the way: etcd's sha256 trailer over the database, that sha256 against the manifest's, and
//! the size.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::choose::{Candidate, Stored};
use super::RestoreError;
use crate::age_keys::Identities;
use crate::backup::bucket::Bucket;
use crate::backup::local::blocking;
use crate::backup::stored;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the database of `chosen` to `to` (creating its directory, 0700), decoded when it
/// is compressed or encrypted (with `identities`), and returns its checked sha256.
pub(super) async fn checked_snapshot(
    chosen: &Candidate,
    to: &Path,
    identities: Option<&Identities>,
    stop: &CancellationToken,
) -> Result<String, RestoreError> {
    let manifest = &chosen.manifest;
    let dir = to.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let form = manifest.form();
    let damaged = |why: String| RestoreError::Damaged {
        file: manifest.file.clone(),
        why,
    };
    let sha256 = match &chosen.stored {
        Stored::File(path) => {
            let (from, into) = (path.clone(), to.to_path_buf());
            let identities = identities.cloned();
            blocking(move || {
                stored::decode_file(&from, &into, form, identities.as_ref())?;
                stored::check_file(&into, stored::Form::default(), None)
            })
            .await
            .map_err(|err| damaged(format!("{}: {err}", path.display())))?
        }
        Stored::Object { destination, .. } => {
            let cluster = etcdmedic_cluster::config::ClusterName::new(&manifest.cluster)
                .map_err(|err| damaged(err.to_string()))?;
            let bucket = Bucket::open(destination, &cluster)?;
            let stored = dir.join(format!(".download-{}", manifest.file));
            let downloaded = bucket.download(manifest, identities, &stored, stop).await;
            let sha256 = match downloaded {
                Ok(sha256) if !form.is_plain() => {
                    let (from, into) = (stored.clone(), to.to_path_buf());
                    let identities = identities.cloned();
                    blocking(move || stored::decode_file(&from, &into, form, identities.as_ref()))
                        .await
                        .map_err(|err| damaged(format!("decoding: {err}")))?;
                    Ok(sha256)
                }
                Ok(sha256) => std::fs::rename(&stored, to)
                    .map(|()| sha256)
                    .map_err(io(to)),
                Err(crate::backup::BackupError::Snapshot(why)) => Err(damaged(why)),
                Err(err) => Err(err.into()),
            };
            let _ = std::fs::remove_file(&stored);
            sha256?
        }
    };
    if sha256 != manifest.sha256 {
        return Err(damaged(format!(
            "its sha256 is {sha256}, its manifest says {}",
            manifest.sha256
        )));
    }
    let size = std::fs::metadata(to).map_err(io(to))?.len();
    if size != manifest.size_bytes {
        return Err(damaged(format!(
            "{size} bytes, its manifest says {}",
            manifest.size_bytes
        )));
    }
    Ok(sha256)
}
