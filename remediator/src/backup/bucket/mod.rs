//! A bucket destination (S3 or S3-compatible, Google Cloud Storage, Azure Blob) through
//! `object_store`: the verified snapshot is uploaded in parts (memory bounded whatever its
//! size), confirmed by the store's multipart ETag (the md5 of each part's md5, computed here
//! from what was sent, as S3 gives it) or, where the store's ETag is not that (Azure's is
//! opaque), by reading it back and checking it against etcd's trailer; only
//! then is its manifest written: a backup without a manifest never counts, and a failed
//! attempt aborts its upload and removes what it wrote.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Destination;
use etcdmedic_cluster::config::ClusterName;
use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod etag;
mod kept;
mod lock;
mod open;
mod streamed;

pub(crate) use streamed::{StreamError, Streamed};

use super::sealing::{produced_matches, Sealing};
use super::stored::{Encoded, StoredCheck};
use super::{BackupError, Manifest};
use crate::snapshot;
use etag::{Etags, PartDigests};
use lock::{retain_until, BucketLock, Locker};

/// S3's smallest part, several in flight: the store works on a few at once (as boto3 sends
/// ten), while the upload holds about 30 MiB whatever the snapshot's size.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
pub const PARTS_IN_FLIGHT: usize = 6;
/// Whole attempts at one backup's upload, after `object_store`'s own per-request retries.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/<cluster>`: only checked names become key segments.
    dir: Key,
    /// The bucket's URL, for output.
    shown_as: String,
    destination: String,
    cluster: String,
    /// `object_lock`: every object written is locked before it counts.
    locker: Option<Locker>,
}

impl Bucket {
    pub(crate) fn open(
        destination: &Destination,
        cluster: &ClusterName,
    ) -> Result<Bucket, BackupError> {
        let opened = open::open(&destination.target).map_err(|err| BackupError::Upload {
            destination: destination.name.to_string(),
            reason: err.to_string(),
        })?;
        let dir = Key::from_iter(
            opened
                .prefix
                .iter()
                .map(|segment| segment.as_str())
                .chain([cluster.as_str()]),
        );
        Ok(Bucket {
            store: opened.store,
            dir,
            shown_as: opened.shown_as,
            destination: destination.name.to_string(),
            cluster: cluster.to_string(),
            locker: opened.locker,
        })
    }

    /// Where the object named `file` is: `s3://bucket/key`, `gs://bucket/key` or the blob's
    /// URL.
    pub(crate) fn url(&self, file: &str) -> String {
        self.key_url(&self.dir.clone().join(file))
    }

    /// Where the object at `key` (under this cluster's prefix) is, as [`Bucket::url`].
    fn key_url(&self, key: &Key) -> String {
        format!("{}/{key}", self.shown_as)
    }

    fn failed(&self, reason: impl std::fmt::Display) -> BackupError {
        BackupError::Upload {
            destination: self.destination.clone(),
            reason: reason.to_string(),
        }
    }

    /// Uploads the verified snapshot `db` with its manifest, retrying a failed attempt
    /// [`ATTEMPTS`] times in all with a doubling pause; each failed attempt leaves nothing.
    /// Returns how the object was confirmed: `etag` (the store's multipart ETag is the one
    /// computed from what was sent) or `read_back`.
    pub(crate) async fn upload(
        &self,
        db: &Path,
        manifest: &Manifest,
        sealing: &Sealing,
        stop: &CancellationToken,
    ) -> Result<&'static str, BackupError> {
        // Not retried: a bucket without Object Lock does not grow it between attempts.
        self.ensure_lockable().await?;
        let mut pause = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.upload_once(db, manifest, sealing, stop).await {
                Ok(verified_by) => return Ok(verified_by),
                Err(UploadFailure::Stopped) => return Err(BackupError::Stopped),
                Err(UploadFailure::Failed(reason)) if attempt >= ATTEMPTS => {
                    return Err(self.failed(format!(
                        "upload to {} failed {ATTEMPTS} times; last: {reason}",
                        self.url(&manifest.file)
                    )));
                }
                Err(UploadFailure::Failed(reason)) => {
                    tracing::warn!(
                        destination = %self.destination, attempt, retry_in = ?pause, %reason,
                        "backup: upload failed; retrying"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return Err(BackupError::Stopped),
            }
            pause *= 2;
            attempt += 1;
        }
    }

    async fn upload_once(
        &self,
        db: &Path,
        manifest: &Manifest,
        sealing: &Sealing,
        stop: &CancellationToken,
    ) -> Result<&'static str, UploadFailure> {
        let key = self.dir.clone().join(manifest.file.as_str());
        let result = async {
            let sent = self.put_parts(db, &key, sealing, stop).await?;
            self.confirm_and_record(&sent, manifest, sealing, stop)
                .await
        }
        .await;
        if result.is_err() {
            self.remove(&manifest.file).await;
        }
        result
    }

    /// Confirms the uploaded object (by its ETag, or else by reading it back), then writes
    /// its manifest: from then on it counts. How it was confirmed.
    async fn confirm_and_record(
        &self,
        sent: &Sent,
        manifest: &Manifest,
        sealing: &Sealing,
        stop: &CancellationToken,
    ) -> Result<&'static str, UploadFailure> {
        let key = self.dir.clone().join(manifest.file.as_str());
        produced_matches(&sent.encoded, manifest)
            .map_err(|err| UploadFailure::Failed(err.to_string()))?;
        // A store whose ETag is not the usual multipart one (encryption with a KMS key, some
        // S3-compatible servers) is confirmed by reading the object back instead.
        let verified_by = if sent.etags.agree() {
            "etag"
        } else if manifest.form().encrypted && sealing.identities.is_none() {
            // Encrypted and nothing here decrypts it: the object must be the bytes sent
            // (their multipart ETag computed again from what is read back).
            let found = self.read_back_etag(&key, stop).await?;
            if found != sent.etags.expected {
                return Err(UploadFailure::Failed(format!(
                    "read back parts with ETag {found}; uploaded {}",
                    sent.etags.expected
                )));
            }
            "read_back"
        } else {
            let (size, sha256) = self.read_back(&key, manifest, sealing, stop).await?;
            if (size, sha256.as_str()) != (manifest.size_bytes, manifest.sha256.as_str()) {
                return Err(UploadFailure::Failed(format!(
                    "read back {size} bytes with sha256 {sha256}; uploaded {} bytes with \
                     sha256 {}",
                    manifest.size_bytes, manifest.sha256
                )));
            }
            "read_back"
        };
        self.lock(&key, manifest)
            .await
            .map_err(|err| UploadFailure::Failed(err.to_string()))?;
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|err| UploadFailure::Failed(err.to_string()))?;
        self.store
            .put(&manifest_key(&key), PutPayload::from(json))
            .await
            .map_err(|err| UploadFailure::Failed(format!("writing the manifest: {err}")))?;
        self.lock(&manifest_key(&key), manifest)
            .await
            .map_err(|err| UploadFailure::Failed(err.to_string()))?;
        Ok(verified_by)
    }

    /// With `object_lock`, refuses a bucket without Object Lock before anything is written.
    pub(crate) async fn ensure_lockable(&self) -> Result<(), BackupError> {
        let Some(locker) = &self.locker else {
            return Ok(());
        };
        match locker.bucket().await.map_err(|err| self.failed(err))? {
            BucketLock::Enabled => Ok(()),
            BucketLock::NotEnabled => Err(self.failed(format!(
                "{} does not have Object Lock enabled, which object_lock needs (it is set when \
                 the bucket is created, or with versioning on and PutObjectLockConfiguration); \
                 nothing was written",
                self.shown_as
            ))),
        }
    }

    /// With `object_lock`, locks the object at `key` (written for `manifest`'s backup) until
    /// the backup's time plus the lock's days.
    async fn lock(&self, key: &Key, manifest: &Manifest) -> Result<(), NotLocked> {
        let Some(locker) = &self.locker else {
            return Ok(());
        };
        let until = retain_until(manifest.created_at, locker.lock.days);
        locker.retain(key, until).await.map_err(|source| NotLocked {
            url: self.key_url(key),
            source,
        })
    }

    /// Removes the object `file`: what an attempt completed does not count without its
    /// manifest. Removing it may fail too while the store is unreachable, and then it is only
    /// an object no backup listing counts.
    pub(crate) async fn remove(&self, file: &str) {
        let _ = self.store.delete(&self.dir.clone().join(file)).await;
    }

    async fn put_parts(
        &self,
        db: &Path,
        key: &Key,
        sealing: &Sealing,
        stop: &CancellationToken,
    ) -> Result<Sent, UploadFailure> {
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|err| UploadFailure::Failed(format!("starting the upload: {err}")))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let written = async {
            let mut file = tokio::fs::File::open(db)
                .await
                .map_err(|err| UploadFailure::Failed(format!("{}: {err}", db.display())))?;
            let mut buffer = vec![0u8; 1 << 20];
            let (mut sent, mut last_progress) = (0u64, Instant::now());
            let mut parts = PartDigests::default();
            let encoding = |err| UploadFailure::Failed(format!("encoding: {err}"));
            let mut encoder = sealing.encoder(false).map_err(encoding)?;
            loop {
                if stop.is_cancelled() {
                    return Err(UploadFailure::Stopped);
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|err| UploadFailure::Failed(format!("uploading a part: {err}")))?;
                let read = file
                    .read(&mut buffer)
                    .await
                    .map_err(|err| UploadFailure::Failed(format!("{}: {err}", db.display())))?;
                if read == 0 {
                    let (rest, encoded) = encoder.finish().map_err(encoding)?;
                    parts.update(&rest);
                    writer.write(&rest);
                    return Ok((parts.etag(), encoded));
                }
                let stored = encoder.feed(&buffer[..read]).map_err(encoding)?;
                parts.update(stored);
                writer.write(stored);
                sent += read as u64;
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    tracing::info!(destination = %self.destination, sent, "backup: uploading");
                    last_progress = Instant::now();
                }
            }
        }
        .await;
        match written {
            Ok((expected, encoded)) => writer
                .finish()
                .await
                .map(|put| Sent {
                    etags: Etags {
                        expected,
                        stored: put.e_tag,
                    },
                    encoded,
                })
                .map_err(|err| UploadFailure::Failed(format!("completing the upload: {err}"))),
            Err(err) => {
                let _ = writer.abort().await;
                Err(err)
            }
        }
    }

    /// Downloads the object and checks it as a stream from etcd is checked (decoded first
    /// when it is compressed or encrypted).
    async fn read_back(
        &self,
        key: &Key,
        manifest: &Manifest,
        sealing: &Sealing,
        stop: &CancellationToken,
    ) -> Result<(u64, String), UploadFailure> {
        let mut check = StoredCheck::new(manifest.form(), sealing.identities.as_ref())
            .map_err(|err| read_back_failed(err.to_string()))?;
        self.read_object(key, stop, |bytes| check.update(bytes))
            .await?;
        check
            .finish()
            .map_err(|err| read_back_failed(err.to_string()))
    }

    /// Downloads the object and computes its multipart ETag as it was sent: an encrypted
    /// copy's check where nothing here can decrypt it.
    async fn read_back_etag(
        &self,
        key: &Key,
        stop: &CancellationToken,
    ) -> Result<String, UploadFailure> {
        let mut parts = PartDigests::default();
        self.read_object(key, stop, |bytes| {
            parts.update(bytes);
            Ok::<_, std::convert::Infallible>(())
        })
        .await?;
        Ok(parts.etag())
    }

    /// Streams the object at `key` through `each`, chunk by chunk.
    async fn read_object<E: std::fmt::Display>(
        &self,
        key: &Key,
        stop: &CancellationToken,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), UploadFailure> {
        let mut stream = self
            .store
            .get(key)
            .await
            .map_err(|err| read_back_failed(err.to_string()))?
            .into_stream();
        while let Some(bytes) = stream.next().await {
            if stop.is_cancelled() {
                return Err(UploadFailure::Stopped);
            }
            let bytes = bytes.map_err(|err| read_back_failed(err.to_string()))?;
            each(&bytes).map_err(|err| read_back_failed(err.to_string()))?;
        }
        Ok(())
    }
}

fn read_back_failed(what: String) -> UploadFailure {
    UploadFailure::Failed(format!("reading the object back: {what}"))
}

/// What was sent for an object: its multipart ETag as computed here and as the store
/// answered, and what the encoder produced.
pub(super) struct Sent {
    etags: Etags,
    encoded: Encoded,
}

/// An object written that could not be locked.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {source}")]
struct NotLocked {
    url: String,
    source: lock::LockError,
}

enum UploadFailure {
    Failed(String),
    Stopped,
}

/// `x.db` -> `x.json`.
fn manifest_key(db: &Key) -> Key {
    let name = snapshot::manifest_name(db.filename().unwrap_or_default());
    db.parent().unwrap_or_default().join(name.as_str())
}

#[cfg(test)]
mod tests;
