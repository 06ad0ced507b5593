//! The upload beside the stream: the bucket receives the snapshot while it arrives, and the
//! object counts only once the snapshot passed its checks.

use object_store::{ObjectStoreExt, WriteMultipart};
use tokio_util::sync::CancellationToken;

use super::etag::{Etags, PartDigests};
use super::{Bucket, Sent, UploadFailure, PARTS_IN_FLIGHT, PART_SIZE};
use crate::backup::sealing::Sealing;
use crate::backup::stored::StoredError;
use crate::backup::{BackupError, Manifest};

/// Why the object uploaded beside the stream does not count; the saved file is uploaded
/// instead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("starting the upload: {0}")]
    Start(object_store::Error),
    #[error("uploading a part: {0}")]
    Part(object_store::Error),
    #[error("completing the upload: {0}")]
    Complete(object_store::Error),
    #[error("encoding: {0}")]
    Encoding(#[from] StoredError),
    #[error("streamed {streamed}, not {manifest}")]
    OtherFile { streamed: String, manifest: String },
    #[error("{0}")]
    NotConfirmed(String),
    #[error("stopped on request")]
    Stopped,
}

impl Bucket {
    /// Uploads what arrives on `chunks` as the object `file` while the snapshot streams
    /// (see `snapshot::save_teed`), completing the upload when the channel closes. The
    /// snapshot is not known good yet: the object counts only once [`Bucket::record_streamed`]
    /// writes its manifest, and is removed otherwise.
    pub(crate) async fn receive(
        self,
        mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
        file: String,
        sealing: Sealing,
        stop: CancellationToken,
    ) -> Result<Streamed, StreamError> {
        self.ensure_lockable().await?;
        let key = self.dir.clone().join(file.as_str());
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(StreamError::Start)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut parts = PartDigests::default();
        let received = async {
            let mut encoder = sealing.encoder(false)?;
            while let Some(chunk) = chunks.recv().await {
                if stop.is_cancelled() {
                    return Err(StreamError::Stopped);
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(StreamError::Part)?;
                let stored = encoder.feed(&chunk)?;
                parts.update(stored);
                writer.write(stored);
            }
            let (rest, encoded) = encoder.finish()?;
            parts.update(&rest);
            writer.write(&rest);
            Ok(encoded)
        }
        .await;
        let encoded = match received {
            Ok(encoded) => encoded,
            Err(reason) => {
                // Keep draining nothing more: the sender sees the channel closed and stops
                // sending; the snapshot itself goes on.
                drop(chunks);
                let _ = writer.abort().await;
                return Err(reason);
            }
        };
        let completing = tokio::time::Instant::now();
        let finished = writer.finish().await;
        tracing::info!(
            destination = %self.destination,
            seconds = completing.elapsed().as_secs_f64(),
            "backup: the upload beside the stream is complete"
        );
        match finished {
            Ok(put) => Ok(Streamed {
                bucket: self,
                file,
                sent: Sent {
                    etags: Etags {
                        expected: parts.etag(),
                        stored: put.e_tag,
                    },
                    encoded,
                },
                sealing,
            }),
            Err(err) => Err(StreamError::Complete(err)),
        }
    }
}

/// An object uploaded while the snapshot streamed, not yet counted.
pub(crate) struct Streamed {
    bucket: Bucket,
    file: String,
    sent: Sent,
    sealing: Sealing,
}

impl Streamed {
    /// The bucket the object was uploaded to.
    pub(crate) fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Confirms the object against the verified snapshot's manifest and records it; on
    /// failure the object is removed and the caller uploads from the file instead.
    pub(crate) async fn record(
        &self,
        manifest: &Manifest,
        stop: &CancellationToken,
    ) -> Result<&'static str, StreamError> {
        if manifest.file != self.file {
            return Err(StreamError::OtherFile {
                streamed: self.file.clone(),
                manifest: manifest.file.clone(),
            });
        }
        match self
            .bucket
            .confirm_and_record(&self.sent, manifest, &self.sealing, stop)
            .await
        {
            Ok(verified_by) => Ok(verified_by),
            Err(UploadFailure::Failed(reason)) => {
                self.discard().await;
                Err(StreamError::NotConfirmed(reason))
            }
            Err(UploadFailure::Stopped) => {
                self.discard().await;
                Err(StreamError::Stopped)
            }
        }
    }

    /// Removes the object: the snapshot it copies failed its checks or its drill.
    pub(crate) async fn discard(&self) {
        self.bucket.remove(&self.file).await;
    }
}
