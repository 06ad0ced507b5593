//! An S3 destination (AWS or any S3-compatible store) through `object_store`: the verified
//! snapshot is uploaded in parts (memory bounded whatever its size), read back and checked
//! against etcd's trailer, and only then is its manifest written: a backup without a
//! manifest never counts, and a failed attempt aborts its upload and removes what it wrote.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcdmedic_cluster::config::{BackupSettings, ClusterName, S3Target};
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::retention::expired;
use super::{BackupError, Manifest};
use crate::snapshot::{self, TrailerHasher};

/// S3 takes parts of at least 5 MiB; with a few in flight, the upload holds a bounded
/// amount of memory whatever the snapshot's size.
const PART_SIZE: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 3;
/// Whole attempts at one backup's upload, after `object_store`'s own per-request retries.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
    pub(crate) async fn upload(
        &self,
        db: &Path,
        manifest: &Manifest,
        stop: &CancellationToken,
    ) -> Result<(), BackupError> {
        let mut pause = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.upload_once(db, manifest, stop).await {
                Ok(()) => return Ok(()),
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
    ) -> Result<(), UploadFailure> {
        let key = self.dir.clone().join(manifest.file.as_str());
        let result = async {
            self.put_parts(db, &key, stop).await?;
            let (size, sha256) = self.read_back(&key, stop).await?;
            if (size, sha256.as_str()) != (manifest.size_bytes, manifest.sha256.as_str()) {
                return Err(UploadFailure::Failed(format!(
                    "read back {size} bytes with sha256 {sha256}; uploaded {} bytes with \
                     sha256 {}",
                    manifest.size_bytes, manifest.sha256
                )));
            }
            let json = serde_json::to_vec_pretty(manifest)
                .map_err(|err| UploadFailure::Failed(err.to_string()))?;
            self.store
                .put(&manifest_key(&key), PutPayload::from(json))
                .await
                .map_err(|err| UploadFailure::Failed(format!("writing the manifest: {err}")))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // Whatever this attempt completed does not count without its manifest; removing
            // it may fail too while the store is unreachable, and then it is only an object
            // no backup listing counts.
            let _ = self.store.delete(&key).await;
        }
        result
    }

    async fn put_parts(
        &self,
        db: &Path,
        key: &Key,
        stop: &CancellationToken,
    ) -> Result<(), UploadFailure> {
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
                    return Ok(());
                }
                writer.write(&buffer[..read]);
                sent += read as u64;
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    tracing::info!(destination = %self.destination, sent, "backup: uploading");
                    last_progress = Instant::now();
                }
            }
        }
        .await;
        match written {
            Ok(()) => writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|err| UploadFailure::Failed(format!("completing the upload: {err}"))),
            Err(err) => {
                let _ = writer.abort().await;
                Err(err)
            }
        }
    }

    /// Downloads the object and checks it as a stream from etcd is checked.
    async fn read_back(
        &self,
        key: &Key,
        stop: &CancellationToken,
    ) -> Result<(u64, String), UploadFailure> {
        let read_error = |err: object_store::Error| {
            UploadFailure::Failed(format!("reading the object back: {err}"))
        };
        let mut stream = self.store.get(key).await.map_err(read_error)?.into_stream();
        let mut trailer = TrailerHasher::default();
        while let Some(bytes) = stream.next().await {
            if stop.is_cancelled() {
                return Err(UploadFailure::Stopped);
            }
            trailer.update(&bytes.map_err(read_error)?);
        }
        let sha256 = trailer
            .verify()
            .map_err(|err| UploadFailure::Failed(format!("the object read back: {err}")))?;
        Ok((trailer.total, sha256))
    }

    /// Removes the backups the retention names (manifest first), once the newest is in.
    pub(crate) async fn retention(
        &self,
        backup: &BackupSettings,
    ) -> Result<Vec<String>, BackupError> {
        let mut listed: Vec<(String, SystemTime)> = Vec::new();
        let mut manifests = std::collections::HashSet::new();
        let mut objects = self.store.list(Some(&self.dir));
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|err| self.failed(format!("listing backups: {err}")))?;
            let Some(name) = meta.location.filename().map(str::to_string) else {
                continue;
            };
            if let Some(db) = name.strip_suffix(".json") {
                manifests.insert(format!("{db}.db"));
            } else if snapshot::is_snapshot_of(&name, &self.cluster) {
                listed.push((name, meta.last_modified.into()));
            }
        }
        listed.retain(|(name, _)| manifests.contains(name));
        listed.sort();
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

enum UploadFailure {
    Failed(String),
    Stopped,
}

/// `x.db` -> `x.json`.
fn manifest_key(db: &Key) -> Key {
    let text = db.as_ref();
    Key::from(format!("{}.json", text.strip_suffix(".db").unwrap_or(text)))
}
