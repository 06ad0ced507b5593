//! An S3 destination (AWS or any S3-compatible store) through `object_store`: the verified
//! snapshot is uploaded in parts (memory bounded whatever its size), confirmed by the store's
//! multipart ETag (the md5 of each part's md5, computed here from what was sent) or, where the
//! store's ETag is not that, by reading it back and checking it against etcd's trailer; only
//! then is its manifest written: a backup without a manifest never counts, and a failed
//! attempt aborts its upload and removes what it wrote.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcdmedic_cluster::config::{BackupSettings, ClusterName, S3Target};
use futures::StreamExt;
use md5::{Digest, Md5};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::compress::{Compressor, StoredCheck};
use super::retention::expired;
use super::{BackupError, Manifest};
use crate::snapshot;

/// S3 takes parts of at least 5 MiB; with a few in flight, the upload holds a bounded
/// amount of memory whatever the snapshot's size.
const PART_SIZE: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 4;
/// Whole attempts at one backup's upload, after `object_store`'s own per-request retries.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/<cluster>`: only checked names become key segments.
    dir: Key,
    bucket: String,
    destination: String,
    cluster: String,
}

impl Bucket {
    pub(crate) fn open(
        destination: &str,
        target: &S3Target,
        cluster: &ClusterName,
    ) -> Result<Bucket, BackupError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&target.bucket)
            .with_virtual_hosted_style_request(!target.path_style)
            // The payload is confirmed by the multipart ETag (or read back) instead: hashing
            // every part again for the signature halves the upload's speed for nothing.
            .with_unsigned_payload(true)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(60),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some(endpoint) = &target.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &target.region {
            builder = builder.with_region(region);
        }
        if let Some(credentials) = &target.credentials {
            builder = builder
                .with_access_key_id(credentials.access_key_id.expose())
                .with_secret_access_key(credentials.secret_access_key.expose());
        }
        let store = builder.build().map_err(|err| BackupError::Upload {
            destination: destination.to_string(),
            reason: format!("cannot set up the S3 client: {err}"),
        })?;
        let dir = Key::from_iter(
            target
                .prefix
                .iter()
                .map(|segment| segment.as_str())
                .chain([cluster.as_str()]),
        );
        Ok(Bucket {
            store: Arc::new(store),
            dir,
            bucket: target.bucket.clone(),
            destination: destination.to_string(),
            cluster: cluster.to_string(),
        })
    }

    /// `s3://bucket/key` of the object named `file`.
    pub(crate) fn url(&self, file: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.dir.clone().join(file))
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
        stop: &CancellationToken,
    ) -> Result<&'static str, BackupError> {
        let mut pause = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.upload_once(db, manifest, stop).await {
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
        stop: &CancellationToken,
    ) -> Result<&'static str, UploadFailure> {
        let key = self.dir.clone().join(manifest.file.as_str());
        let result = async {
            let etags = self
                .put_parts(db, &key, manifest.is_compressed(), stop)
                .await?;
            self.confirm_and_record(&etags, manifest, stop).await
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
        etags: &Etags,
        manifest: &Manifest,
        stop: &CancellationToken,
    ) -> Result<&'static str, UploadFailure> {
        let key = self.dir.clone().join(manifest.file.as_str());
        // A store whose ETag is not the usual multipart one (encryption with a KMS key, some
        // S3-compatible servers) is confirmed by reading the object back instead.
        let verified_by = if etags.agree() {
            "etag"
        } else {
            let (size, sha256) = self.read_back(&key, manifest.is_compressed(), stop).await?;
            if (size, sha256.as_str()) != (manifest.size_bytes, manifest.sha256.as_str()) {
                return Err(UploadFailure::Failed(format!(
                    "read back {size} bytes with sha256 {sha256}; uploaded {} bytes with \
                     sha256 {}",
                    manifest.size_bytes, manifest.sha256
                )));
            }
            "read_back"
        };
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|err| UploadFailure::Failed(err.to_string()))?;
        self.store
            .put(&manifest_key(&key), PutPayload::from(json))
            .await
            .map_err(|err| UploadFailure::Failed(format!("writing the manifest: {err}")))?;
        Ok(verified_by)
    }

    /// Removes the object `file`: what an attempt completed does not count without its
    /// manifest. Removing it may fail too while the store is unreachable, and then it is only
    /// an object no backup listing counts.
    pub(crate) async fn remove(&self, file: &str) {
        let _ = self.store.delete(&self.dir.clone().join(file)).await;
    }

    /// Uploads what arrives on `chunks` as the object `file` while the snapshot streams
    /// (see `snapshot::save_teed`), completing the upload when the channel closes. The
    /// snapshot is not known good yet: the object counts only once [`Bucket::record_streamed`]
    /// writes its manifest, and is removed otherwise.
    pub(crate) async fn receive(
        self,
        mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
        file: String,
        compressed: bool,
        stop: CancellationToken,
    ) -> Result<Streamed, String> {
        let key = self.dir.clone().join(file.as_str());
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(|err| format!("starting the upload: {err}"))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut parts = PartDigests::default();
        let received = async {
            let mut compressor =
                Compressor::new(compressed).map_err(|err| format!("compressing: {err}"))?;
            while let Some(chunk) = chunks.recv().await {
                if stop.is_cancelled() {
                    return Err("stopped on request".to_string());
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|err| format!("uploading a part: {err}"))?;
                let stored = compressor
                    .feed(&chunk)
                    .map_err(|err| format!("compressing: {err}"))?;
                parts.update(&stored);
                writer.write(&stored);
            }
            let rest = compressor
                .finish()
                .map_err(|err| format!("compressing: {err}"))?;
            parts.update(&rest);
            writer.write(&rest);
            Ok(())
        }
        .await;
        if let Err(reason) = received {
            // Keep draining nothing more: the sender sees the channel closed and stops
            // sending; the snapshot itself goes on.
            drop(chunks);
            let _ = writer.abort().await;
            return Err(reason);
        }
        match writer.finish().await {
            Ok(put) => Ok(Streamed {
                bucket: self,
                file,
                etags: Etags {
                    expected: parts.etag(),
                    stored: put.e_tag,
                },
            }),
            Err(err) => Err(format!("completing the upload: {err}")),
        }
    }

    async fn put_parts(
        &self,
        db: &Path,
        key: &Key,
        compressed: bool,
        stop: &CancellationToken,
    ) -> Result<Etags, UploadFailure> {
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
            let compressing =
                |err: std::io::Error| UploadFailure::Failed(format!("compressing: {err}"));
            let mut compressor = Compressor::new(compressed).map_err(compressing)?;
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
                    let rest = compressor.finish().map_err(compressing)?;
                    parts.update(&rest);
                    writer.write(&rest);
                    return Ok(parts.etag());
                }
                let stored = compressor.feed(&buffer[..read]).map_err(compressing)?;
                parts.update(&stored);
                writer.write(&stored);
                sent += read as u64;
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    tracing::info!(destination = %self.destination, sent, "backup: uploading");
                    last_progress = Instant::now();
                }
            }
        }
        .await;
        match written {
            Ok(expected) => writer
                .finish()
                .await
                .map(|put| Etags {
                    expected,
                    stored: put.e_tag,
                })
                .map_err(|err| UploadFailure::Failed(format!("completing the upload: {err}"))),
            Err(err) => {
                let _ = writer.abort().await;
                Err(err)
            }
        }
    }

    /// Downloads the object and checks it as a stream from etcd is checked (decompressed
    /// first when it is compressed).
    async fn read_back(
        &self,
        key: &Key,
        compressed: bool,
        stop: &CancellationToken,
    ) -> Result<(u64, String), UploadFailure> {
        let failed =
            |what: String| UploadFailure::Failed(format!("reading the object back: {what}"));
        let mut stream = self
            .store
            .get(key)
            .await
            .map_err(|err| failed(err.to_string()))?
            .into_stream();
        let mut check = StoredCheck::new(compressed).map_err(|err| failed(err.to_string()))?;
        while let Some(bytes) = stream.next().await {
            if stop.is_cancelled() {
                return Err(UploadFailure::Stopped);
            }
            let bytes = bytes.map_err(|err| failed(err.to_string()))?;
            check
                .update(&bytes)
                .map_err(|err| failed(err.to_string()))?;
        }
        check.finish().map_err(failed)
    }

    /// The backups in the bucket (objects with their manifest), oldest first, with when each
    /// was written.
    async fn listed(&self) -> Result<Vec<(String, SystemTime)>, BackupError> {
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

    /// The newest backup's file name.
    pub(crate) async fn newest(&self) -> Result<Option<String>, BackupError> {
        Ok(self.listed().await?.pop().map(|(name, _)| name))
    }

    /// The manifest of the backup `file`.
    pub(crate) async fn manifest(&self, file: &str) -> Result<Manifest, BackupError> {
        let key = manifest_key(&self.dir.clone().join(file));
        let bytes = async { self.store.get(&key).await?.bytes().await }
            .await
            .map_err(|err| self.failed(format!("reading {}: {err}", self.url(key.as_ref()))))?;
        serde_json::from_slice(&bytes)
            .map_err(|err| self.failed(format!("{} is not a manifest: {err}", key)))
    }

    /// Writes `manifest` beside its object (replacing the one there).
    pub(crate) async fn put_manifest(&self, manifest: &Manifest) -> Result<(), BackupError> {
        let key = manifest_key(&self.dir.clone().join(manifest.file.as_str()));
        let json = serde_json::to_vec_pretty(manifest).map_err(|err| self.failed(err))?;
        self.store
            .put(&key, PutPayload::from(json))
            .await
            .map(drop)
            .map_err(|err| self.failed(format!("writing the manifest: {err}")))
    }

    /// Downloads the backup `file` to `to` as it is stored, checking it against etcd's
    /// trailer on the way (decompressed first when it is compressed); the database's sha256.
    pub(crate) async fn download(
        &self,
        file: &str,
        to: &Path,
        stop: &CancellationToken,
    ) -> Result<String, BackupError> {
        use tokio::io::AsyncWriteExt;
        let key = self.dir.clone().join(file);
        let write_error = |source| BackupError::Write {
            path: to.to_path_buf(),
            source,
        };
        let mut stream = self
            .store
            .get(&key)
            .await
            .map_err(|err| self.failed(format!("downloading {}: {err}", self.url(file))))?
            .into_stream();
        let mut out = tokio::fs::File::create(to).await.map_err(write_error)?;
        let compressed = file.ends_with(snapshot::ZSTD_SUFFIX);
        let unreadable =
            |what: String| BackupError::Snapshot(format!("{}: {what}", self.url(file)));
        let mut check = StoredCheck::new(compressed).map_err(|err| unreadable(err.to_string()))?;
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
        check.finish().map(|(_, sha256)| sha256).map_err(unreadable)
    }

    /// Removes the backups the retention names (manifest first), once the newest is in.
    pub(crate) async fn retention(
        &self,
        backup: &BackupSettings,
    ) -> Result<Vec<String>, BackupError> {
        let listed = self.listed().await?;
        let written: Vec<SystemTime> = listed.iter().map(|(_, at)| *at).collect();
        let mut removed = Vec::new();
        for index in expired(&written, backup.keep, backup.max_age, SystemTime::now()) {
            let key = self.dir.clone().join(listed[index].0.as_str());
            for key in [manifest_key(&key), key.clone()] {
                self.store
                    .delete(&key)
                    .await
                    .map_err(|err| self.failed(format!("removing {key}: {err}")))?;
            }
            removed.push(self.url(&listed[index].0));
        }
        Ok(removed)
    }
}

/// The ETag S3 gives a multipart object: the md5 of the parts' md5s, then `-<parts>`.
#[derive(Default)]
struct PartDigests {
    current: Md5,
    in_part: usize,
    digests: Vec<u8>,
    parts: usize,
}

impl PartDigests {
    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (PART_SIZE - self.in_part).min(bytes.len());
            self.current.update(&bytes[..take]);
            self.in_part += take;
            bytes = &bytes[take..];
            if self.in_part == PART_SIZE {
                self.close_part();
            }
        }
    }

    fn close_part(&mut self) {
        let digest = std::mem::take(&mut self.current).finalize();
        self.digests.extend_from_slice(&digest);
        self.parts += 1;
        self.in_part = 0;
    }

    fn etag(mut self) -> String {
        if self.in_part > 0 || self.parts == 0 {
            self.close_part();
        }
        let digest = Md5::digest(&self.digests);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{}", self.parts)
    }
}

/// An object uploaded while the snapshot streamed, not yet counted.
pub(crate) struct Streamed {
    bucket: Bucket,
    file: String,
    etags: Etags,
}

impl Streamed {
    /// Confirms the object against the verified snapshot's manifest and records it; on
    /// failure the object is removed and the caller uploads from the file instead.
    pub(crate) async fn record(
        &self,
        manifest: &Manifest,
        stop: &CancellationToken,
    ) -> Result<&'static str, String> {
        if manifest.file != self.file {
            return Err(format!("streamed {}, not {}", self.file, manifest.file));
        }
        match self
            .bucket
            .confirm_and_record(&self.etags, manifest, stop)
            .await
        {
            Ok(verified_by) => Ok(verified_by),
            Err(UploadFailure::Failed(reason)) => {
                self.discard().await;
                Err(reason)
            }
            Err(UploadFailure::Stopped) => {
                self.discard().await;
                Err("stopped on request".into())
            }
        }
    }

    /// Removes the object: the snapshot it copies failed its checks or its drill.
    pub(crate) async fn discard(&self) {
        self.bucket.remove(&self.file).await;
    }
}

/// The multipart ETag computed from what was sent, and the one the store answered.
struct Etags {
    expected: String,
    stored: Option<String>,
}

impl Etags {
    fn agree(&self) -> bool {
        self.stored
            .as_deref()
            .is_some_and(|stored| stored.trim_matches('"') == self.expected)
    }
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
mod tests {
    use super::*;

    /// Values from Python's hashlib, computed the way S3 documents the multipart ETag.
    #[test]
    fn the_multipart_etag_is_the_md5_of_the_parts_md5s_whatever_the_writes() {
        let data: Vec<u8> = (0..PART_SIZE + 1000).map(|i| (i % 251) as u8).collect();
        for write in [1000, 4096, 1 << 20, PART_SIZE + 1000] {
            let mut parts = PartDigests::default();
            for piece in data.chunks(write) {
                parts.update(piece);
            }
            assert_eq!(
                parts.etag(),
                "a3978943bb7b29c282ed8975ea70cc2f-2",
                "writes of {write}"
            );
        }
        let mut small = PartDigests::default();
        small.update(b"hello");
        assert_eq!(small.etag(), "62109206880d38a4010a98e11243924a-1");
        let agree = Etags {
            expected: small_etag(),
            stored: Some(format!("\"{}\"", small_etag())),
        };
        assert!(agree.agree());
        let kms = Etags {
            expected: small_etag(),
            stored: Some("\"5d41402abc4b2a76b9719d911017c592\"".into()),
        };
        assert!(
            !kms.agree(),
            "a store whose ETag is not md5-of-md5s is read back"
        );
    }

    /// A snapshot with etcd's trailer, as a file.
    fn snapshot_file(dir: &Path) -> (std::path::PathBuf, Manifest) {
        use sha2::{Digest as _, Sha256};
        let db: Vec<u8> = (0..(PART_SIZE + 512 * 7))
            .map(|i| (i % 253) as u8)
            .collect();
        let digest = Sha256::digest(&db);
        let mut file = db.clone();
        file.extend_from_slice(&digest);
        let path = dir.join("prod-20261129T000000.000Z-rev7.db");
        std::fs::write(&path, &file).unwrap();
        let manifest = Manifest {
            cluster: "prod".into(),
            member: crate::report::MemberRef {
                id: etcdmedic_cluster::model::MemberId(1),
                name: "m1".into(),
                endpoint: "http://127.0.0.1:1".into(),
            },
            revision: 7,
            etcd_version: "3.5.1".into(),
            size_bytes: file.len() as u64,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            file: "prod-20261129T000000.000Z-rev7.db".into(),
            created_at: std::time::SystemTime::now(),
            etcdmedic_version: "test".into(),
            hash_kv: None,
            restore_drill: None,
            compression: None,
        };
        (path, manifest)
    }

    /// object_store's in-memory store numbers its ETags: not the multipart md5, so the
    /// upload is confirmed by reading it back.
    #[tokio::test]
    async fn a_store_with_other_etags_is_read_back_and_the_manifest_goes_up_last() {
        let dir = tempfile::tempdir().unwrap();
        let (db, manifest) = snapshot_file(dir.path());
        let bucket = Bucket {
            store: Arc::new(object_store::memory::InMemory::new()),
            dir: Key::from_iter(["backups", "prod"]),
            bucket: "b".into(),
            destination: "offsite".into(),
            cluster: "prod".into(),
        };
        let stop = CancellationToken::new();
        let verified_by = bucket.upload(&db, &manifest, &stop).await.unwrap();
        assert_eq!(verified_by, "read_back");
        let key = bucket.dir.clone().join(manifest.file.as_str());
        let stored = bucket.store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(stored.as_ref(), std::fs::read(&db).unwrap().as_slice());
        let json = bucket.store.get(&manifest_key(&key)).await.unwrap();
        let back: Manifest = serde_json::from_slice(&json.bytes().await.unwrap()).unwrap();
        assert_eq!(back.sha256, manifest.sha256);
        let kept = BackupSettings {
            keep: 1,
            ..BackupSettings::default()
        };
        assert!(
            bucket.retention(&kept).await.unwrap().is_empty(),
            "the only backup stays"
        );
    }

    fn small_etag() -> String {
        "62109206880d38a4010a98e11243924a-1".to_string()
    }
}
