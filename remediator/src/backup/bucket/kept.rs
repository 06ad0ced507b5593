//! Backups already in the bucket: listing them, their manifests, downloading one (for the
//! drill), and the retention.

use std::path::Path;
use std::time::SystemTime;

use crate::config::Kept;
use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload};
use tokio_util::sync::CancellationToken;

use super::lock::Held;
use super::{manifest_key, Bucket};
use crate::age_keys::Identities;
use crate::backup::retention::expired;
use crate::backup::stored::StoredCheck;
use crate::backup::{BackupError, Manifest};
use crate::snapshot;

impl Bucket {
    /// The backups in the bucket (objects with their manifest), oldest first, with when each
    /// was written.
    pub(crate) async fn listed(&self) -> Result<Vec<(String, SystemTime)>, BackupError> {
        let mut listed: Vec<(String, SystemTime)> = Vec::new();
        let mut manifests = std::collections::HashSet::new();
        let mut objects = self.store.list(Some(&self.dir));
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|err| self.failed(format!("listing backups: {err}")))?;
            let Some(name) = meta.location.filename().map(str::to_string) else {
                continue;
            };
            if name.ends_with(".json") {
                manifests.insert(name);
            } else if snapshot::is_snapshot_of(&name, &self.cluster) {
                listed.push((name, meta.last_modified.into()));
            }
        }
        listed.retain(|(name, _)| manifests.contains(&snapshot::manifest_name(name)));
        listed.sort();
        Ok(listed)
    }

    /// The size the store reports for the backup `file`: that it is there, readable and not
    /// empty, seen from the store's side.
    pub(crate) async fn stored_size(&self, file: &str) -> Result<u64, BackupError> {
        let key = self.dir.clone().join(file);
        let meta = self
            .store
            .head(&key)
            .await
            .map_err(|err| self.failed(format!("reading {}'s size: {err}", self.url(file))))?;
        Ok(meta.size)
    }

    /// The newest backup's file name.
    pub(crate) async fn newest(&self) -> Result<Option<String>, BackupError> {
        Ok(self.listed().await?.pop().map(|(name, _)| name))
    }

    /// The manifest of the backup `file`.
    pub(crate) async fn manifest(&self, file: &str) -> Result<Manifest, BackupError> {
        let key = manifest_key(&self.dir.clone().join(file));
        let shown = self.key_url(&key);
        let bytes = async { self.store.get(&key).await?.bytes().await }
            .await
            .map_err(|err| self.failed(format!("reading {shown}: {err}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|err| self.failed(format!("{shown} is not a manifest: {err}")))
    }

    /// Writes `manifest` beside its object (replacing the one there).
    pub(crate) async fn put_manifest(&self, manifest: &Manifest) -> Result<(), BackupError> {
        let key = manifest_key(&self.dir.clone().join(manifest.file.as_str()));
        let json = serde_json::to_vec_pretty(manifest).map_err(|err| self.failed(err))?;
        self.store
            .put(&key, PutPayload::from(json))
            .await
            .map_err(|err| self.failed(format!("writing the manifest: {err}")))?;
        // The new version is locked like the first.
        self.lock(&key, manifest)
            .await
            .map_err(|err| self.failed(err))
    }

    /// Downloads the backup `manifest` describes to `to` as it is stored, checking it against
    /// etcd's trailer on the way (decoded first when it is compressed or encrypted, which
    /// needs `identities`); the database's sha256.
    pub(crate) async fn download(
        &self,
        manifest: &Manifest,
        identities: Option<&Identities>,
        to: &Path,
        stop: &CancellationToken,
    ) -> Result<String, BackupError> {
        use tokio::io::AsyncWriteExt;
        let file = manifest.file.as_str();
        let key = self.dir.clone().join(file);
        let write_error = |source| BackupError::Write {
            path: to.to_path_buf(),
            source,
        };
        let unreadable =
            |what: String| BackupError::Snapshot(format!("{}: {what}", self.url(file)));
        let mut check = StoredCheck::new(manifest.form(), identities)
            .map_err(|err| unreadable(err.to_string()))?;
        let mut stream = self
            .store
            .get(&key)
            .await
            .map_err(|err| self.failed(format!("downloading {}: {err}", self.url(file))))?
            .into_stream();
        let mut out = snapshot::create_private_async(to)
            .await
            .map_err(write_error)?;
        while let Some(bytes) = stream.next().await {
            if stop.is_cancelled() {
                return Err(BackupError::Stopped);
            }
            let bytes = bytes.map_err(|err| self.failed(format!("downloading: {err}")))?;
            check
                .update(&bytes)
                .map_err(|err| unreadable(err.to_string()))?;
            out.write_all(&bytes).await.map_err(write_error)?;
        }
        out.flush().await.map_err(write_error)?;
        check
            .finish()
            .map(|(_, sha256)| sha256)
            .map_err(|err| unreadable(err.to_string()))
    }

    /// Removes the backups the retention names (manifest first), once the newest is in. A
    /// store that refuses a removal (a retention policy, an immutability policy, Object
    /// Lock) keeps that backup: logged and skipped, never a failed backup, and tried again
    /// by the next retention once the store allows it. With `object_lock`, a backup the
    /// store still holds locked is kept the same way without asking for its removal: in a
    /// versioned bucket that removal would succeed, hiding the backup behind a delete marker
    /// while its version stays.
    pub(crate) async fn retention(&self, kept: Kept) -> Result<Vec<String>, BackupError> {
        let listed = self.listed().await?;
        let written: Vec<SystemTime> = listed.iter().map(|(_, at)| *at).collect();
        let mut removed = Vec::new();
        'backups: for index in expired(&written, kept.keep, kept.max_age, SystemTime::now()) {
            let key = self.dir.clone().join(listed[index].0.as_str());
            if let Some(held) = self.locked(&key).await? {
                let until = chrono::DateTime::<chrono::Utc>::from(held.until);
                tracing::info!(
                    destination = %self.destination, %key, mode = ?held.mode,
                    locked_until = %until.to_rfc3339(),
                    "backup retention: an expired backup is still locked; kept"
                );
                continue;
            }
            for key in [manifest_key(&key), key.clone()] {
                if let Err(err) = self.store.delete(&key).await {
                    tracing::warn!(
                        destination = %self.destination, %key, error = %err,
                        "backup retention: the store refused to remove an expired backup; kept"
                    );
                    continue 'backups;
                }
            }
            removed.push(self.url(&listed[index].0));
        }
        Ok(removed)
    }

    /// With `object_lock`, the longest lock still held on the backup's object or its
    /// manifest; `None` when both may go (or nothing is locked here).
    async fn locked(&self, key: &Key) -> Result<Option<Held>, BackupError> {
        let Some(locker) = &self.locker else {
            return Ok(None);
        };
        let now = SystemTime::now();
        let mut longest: Option<Held> = None;
        for key in [key.clone(), manifest_key(key)] {
            let held = locker
                .held(&key)
                .await
                .map_err(|err| self.failed(format!("{}: {err}", self.key_url(&key))))?;
            if let Some(held) = held.filter(|held| held.until > now) {
                if longest.is_none_or(|longest| held.until > longest.until) {
                    longest = Some(held);
                }
            }
        }
        Ok(longest)
    }
}
