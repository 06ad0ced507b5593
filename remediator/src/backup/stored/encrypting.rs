//! Encrypting a copy beside the loop that stores it. age's encryption is the costliest step
//! of an encrypted backup (about a second of CPU per GiB on the benchmark machine), and in
//! line it lengthened the upload loop by as much: a thread encrypts what a short queue hands
//! it, writing into the encoder's output, while the loop hashes and sends what is ready.
//! etcd sends its snapshot in 32 KiB messages: they are handed over in batches, since a
//! hand-over per message (a wake-up on each side) cost a third as much as the encryption.

use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use age::x25519::Recipient;

use super::{Collected, StoredError, QUEUED};

/// What is handed to the thread at once: four of age's 64 KiB chunks.
const BATCH: usize = 256 * 1024;

pub(super) struct Encrypting {
    /// What was written since the last hand-over.
    pending: Vec<u8>,
    chunks: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<std::io::Result<()>>>,
}

impl Encrypting {
    /// Starts encrypting to `recipients` into `out`; the header is written at once.
    pub(super) fn start(recipients: &[Recipient], out: Collected) -> Result<Self, StoredError> {
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|err| StoredError::Decrypt(format!("encrypting: {err}")))?;
        let mut writer = encryptor.wrap_output(out)?;
        let (chunks, received) = sync_channel::<Vec<u8>>(QUEUED);
        let worker = std::thread::spawn(move || {
            for chunk in received {
                writer.write_all(&chunk)?;
            }
            writer.finish().map(drop)
        });
        Ok(Encrypting {
            pending: Vec::with_capacity(BATCH),
            chunks: Some(chunks),
            worker: Some(worker),
        })
    }

    /// Waits until everything sent is encrypted and the last block written.
    pub(super) fn finish(mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.hand_over()?;
        }
        self.chunks = None;
        self.outcome()
    }

    /// Hands what is pending to the thread, or says why the thread stopped taking it.
    fn hand_over(&mut self) -> std::io::Result<()> {
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(batch).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped taking batches: it failed, and says why.
        self.chunks = None;
        self.outcome()?;
        Err(std::io::Error::other("the encrypting thread ended early"))
    }

    fn outcome(&mut self) -> std::io::Result<()> {
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => Err(std::io::Error::other("the encrypting thread panicked")),
            None => Err(std::io::Error::other("already finished")),
        }
    }
}

impl Write for Encrypting {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= BATCH {
            self.hand_over()?;
        }
        Ok(bytes.len())
    }

    /// Everything written is encrypted by [`Encrypting::finish`]; nothing to do before.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Encrypting {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has encrypted what it holds.
        self.chunks = None;
    }
}
