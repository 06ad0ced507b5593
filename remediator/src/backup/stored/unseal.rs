//! Checking an encrypted copy as its bytes go by. age decrypts from a reader, while uploads
//! and downloads hand over chunks: a thread reads the chunks from a short queue, decrypts
//! and decompresses them and checks etcd's trailer over the database, so the check holds a
//! few blocks at most whatever the backup's size.

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::{decoding, Form, StoredError, QUEUED};
use crate::age_keys::Identities;
use crate::snapshot::TrailerHasher;

pub(crate) struct Unsealing {
    chunks: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<Result<(u64, String), StoredError>>>,
}

impl Unsealing {
    pub(super) fn start(compressed: bool, identities: Identities) -> Unsealing {
        let (chunks, received) = sync_channel(QUEUED);
        let worker = std::thread::spawn(move || {
            let form = Form {
                compressed,
                encrypted: true,
            };
            let input = std::io::BufReader::new(Queue {
                received,
                current: Vec::new(),
                at: 0,
            });
            let mut database = decoding(input, form, Some(&identities))?;
            let mut hasher = TrailerHasher::default();
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = database.read(&mut buffer)?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
            }
            let sha256 = hasher.verify()?;
            Ok((hasher.total, sha256))
        });
        Unsealing {
            chunks: Some(chunks),
            worker: Some(worker),
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) -> Result<(), StoredError> {
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(bytes.to_vec()).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped reading: it failed, and says why.
        self.chunks = None;
        match self.outcome() {
            Err(err) => Err(err),
            Ok(_) => Err(StoredError::Decrypt(
                "bytes after the end of the encrypted copy".into(),
            )),
        }
    }

    pub(super) fn finish(mut self) -> Result<(u64, String), StoredError> {
        self.chunks = None;
        self.outcome()
    }

    fn outcome(&mut self) -> Result<(u64, String), StoredError> {
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => Err(StoredError::Decrypt(
                "the decrypting thread panicked".into(),
            )),
            None => Err(StoredError::Decrypt("already finished".into())),
        }
    }
}

impl Drop for Unsealing {
    fn drop(&mut self) {
        // Closing the queue ends the thread at its next read.
        self.chunks = None;
    }
}

/// The queued chunks as one reader; the end of the input once the sender is gone.
struct Queue {
    received: Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for Queue {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.received.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let take = buffer.len().min(self.current.len() - self.at);
        buffer[..take].copy_from_slice(&self.current[self.at..self.at + take]);
        self.at += take;
        Ok(take)
    }
}
