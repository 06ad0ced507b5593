//! How a backup's copies are stored: the database as etcd wrote it, compressed with zstd
//! (`.zst`), encrypted with age (`.age`), or compressed then encrypted (`.zst.age`). The
//! snapshot is streamed, checked and drilled as etcd wrote it; only the copies are encoded,
//! as they are written, in constant memory. The manifest's sha256 stays the database's, so
//! a copy is checked by decoding it back to the database and checking etcd's trailer again.
//! An encrypted copy can be decoded only with an identity: without one, it is checked as
//! the bytes that were produced for it (their sha256), and its drill says "not drilled".

use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use age::x25519::Recipient;
use sha2::{Digest, Sha256};

mod encrypting;
mod unseal;

use self::encrypting::Encrypting;
use super::Manifest;
use crate::age_keys::Identities;
use crate::snapshot::{SnapshotError, TrailerHasher, AGE_SUFFIX, ZSTD_SUFFIX};

/// zstd's default: fast, and etcd's free pages (zeros) compress to almost nothing.
const LEVEL: i32 = 3;
const BLOCK: usize = 1 << 20;
/// Encrypted bytes queued for the thread that decrypts them to check them (1 MiB blocks at
/// most): the check's memory stays bounded whatever the backup's size.
pub(super) const QUEUED: usize = 8;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoredError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the backup is encrypted (age) and there is no identity to decrypt it with: give \
         --identity FILE (or restore_drill.identity_file for the drill)"
    )]
    NoIdentity,
    #[error("decrypting: {0}")]
    Decrypt(String),
    #[error("{0}")]
    Database(#[from] SnapshotError),
}

/// How the copies of a backup are stored, as its manifest says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Form {
    pub(crate) compressed: bool,
    pub(crate) encrypted: bool,
}

impl Form {
    pub(crate) fn of(manifest: &Manifest) -> Form {
        Form {
            compressed: manifest.compression.as_deref() == Some("zstd"),
            encrypted: manifest.encryption.is_some(),
        }
    }

    /// The stored copy's name for the snapshot `name`.
    pub(crate) fn stored_name(self, name: &str) -> String {
        let zst = if self.compressed { ZSTD_SUFFIX } else { "" };
        let age = if self.encrypted { AGE_SUFFIX } else { "" };
        format!("{name}{zst}{age}")
    }

    /// A copy of this form is the database itself.
    pub(crate) fn is_plain(self) -> bool {
        self == Form::default()
    }
}

/// Where the encoder's output collects until the caller takes it.
#[derive(Clone, Default)]
pub(super) struct Collected(Arc<Mutex<Vec<u8>>>);

impl Collected {
    /// Moves what collected into `ready` (emptied first), and keeps `ready`'s allocation to
    /// collect into next: the same two buffers serve a whole copy, where a new one per chunk
    /// cost a page fault per 4 KiB of output.
    fn swap_into(&self, ready: &mut Vec<u8>) {
        ready.clear();
        std::mem::swap(
            ready,
            &mut *self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }
}

impl Write for Collected {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut out = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        out.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The last layer: the output itself, or age's encryption into it.
enum Sink {
    Out(Collected),
    Age(Encrypting),
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Out(out) => out.write(bytes),
            Sink::Age(age) => age.write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Out(out) => out.flush(),
            Sink::Age(age) => age.flush(),
        }
    }
}

impl Sink {
    fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::Out(_) => Ok(()),
            Sink::Age(age) => age.finish(),
        }
    }
}

enum Layers {
    Plain,
    Sink(Sink),
    Zstd(Box<zstd::stream::write::Encoder<'static, Sink>>),
}

/// Encodes a stream into the stored form as it goes: zstd, then age. When an identity is
/// at hand, what it produces is decoded again as it goes, so a copy counts only once it is
/// known to decrypt to the database.
pub(crate) struct Encoder {
    layers: Layers,
    out: Collected,
    /// What the last [`Encoder::feed`] produced.
    ready: Vec<u8>,
    /// The sha256 of what was produced, for an encrypted copy checked by it.
    produced: Option<Sha256>,
    verify: Option<StoredCheck>,
}

/// What an encoder produced, once finished.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    /// sha256 of the encrypted bytes produced (for encrypted copies, when asked): what a
    /// file nobody here can decrypt is checked against.
    pub(crate) produced_sha256: Option<String>,
    /// The database's size and sha256, decoded again from what was produced, when it was.
    pub(crate) decoded: Option<(u64, String)>,
}

impl Encoder {
    /// An encoder into the form `compressed` and (with any) encrypted to `recipients`;
    /// `verify` decrypts what it produces as it goes; `hash_produced` keeps the sha256 of
    /// an encrypted copy's bytes (a bucket has the parts' ETag for that instead).
    pub(crate) fn new(
        compressed: bool,
        recipients: &[Recipient],
        verify: Option<&Identities>,
        hash_produced: bool,
    ) -> Result<Encoder, StoredError> {
        let out = Collected::default();
        let encrypted = !recipients.is_empty();
        let sink = if encrypted {
            Sink::Age(Encrypting::start(recipients, out.clone())?)
        } else {
            Sink::Out(out.clone())
        };
        let layers = match (compressed, encrypted) {
            (false, false) => Layers::Plain,
            (false, true) => Layers::Sink(sink),
            (true, _) => Layers::Zstd(Box::new(zstd::stream::write::Encoder::new(sink, LEVEL)?)),
        };
        let verify = match (encrypted, verify) {
            (true, Some(identities)) => Some(StoredCheck::new(
                Form {
                    compressed,
                    encrypted,
                },
                Some(identities),
            )?),
            _ => None,
        };
        Ok(Encoder {
            layers,
            out,
            ready: Vec::new(),
            produced: (encrypted && hash_produced).then(Sha256::new),
            verify,
        })
    }

    /// The bytes to store for `chunk`: the chunk itself, or what the layers have ready.
    pub(crate) fn feed<'a>(&'a mut self, chunk: &'a [u8]) -> Result<&'a [u8], StoredError> {
        match &mut self.layers {
            Layers::Plain => return Ok(chunk),
            Layers::Sink(sink) => sink.write_all(chunk)?,
            Layers::Zstd(zstd) => zstd.write_all(chunk)?,
        }
        self.out.swap_into(&mut self.ready);
        produced_more(&self.ready, &mut self.produced, &mut self.verify)?;
        Ok(&self.ready)
    }

    /// What remains to store once the input has ended, and what was produced in all.
    pub(crate) fn finish(mut self) -> Result<(Vec<u8>, Encoded), StoredError> {
        match std::mem::replace(&mut self.layers, Layers::Plain) {
            Layers::Plain => {}
            Layers::Sink(sink) => sink.finish()?,
            Layers::Zstd(zstd) => zstd.finish()?.finish()?,
        }
        let mut rest = Vec::new();
        self.out.swap_into(&mut rest);
        produced_more(&rest, &mut self.produced, &mut self.verify)?;
        let decoded = match self.verify.take() {
            Some(check) => Some(check.finish()?),
            None => None,
        };
        let produced_sha256 = self.produced.take().map(|hasher| hex(&hasher.finalize()));
        Ok((
            rest,
            Encoded {
                produced_sha256,
                decoded,
            },
        ))
    }
}

/// Passes what an encoder produced to its hash and its check, when it has them.
fn produced_more(
    bytes: &[u8],
    produced: &mut Option<Sha256>,
    verify: &mut Option<StoredCheck>,
) -> Result<(), StoredError> {
    if let Some(hasher) = produced {
        hasher.update(bytes);
    }
    if let Some(check) = verify {
        check.update(bytes)?;
    }
    Ok(())
}

/// Hashes what it is given, as [`TrailerHasher`] does.
pub(crate) struct HashSink(TrailerHasher);

impl Write for HashSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks a stored copy as it is read: decrypted and decompressed first as its form says,
/// then etcd's trailer over the database.
pub(crate) enum StoredCheck {
    Plain(TrailerHasher),
    Zstd(Box<zstd::stream::write::Decoder<'static, HashSink>>),
    Encrypted(unseal::Unsealing),
}

impl StoredCheck {
    /// A check of a copy of `form`; an encrypted one needs `identities`.
    pub(crate) fn new(form: Form, identities: Option<&Identities>) -> Result<Self, StoredError> {
        Ok(match (form.encrypted, form.compressed) {
            (true, _) => StoredCheck::Encrypted(unseal::Unsealing::start(
                form.compressed,
                identities.ok_or(StoredError::NoIdentity)?.clone(),
            )),
            (false, true) => StoredCheck::Zstd(Box::new(zstd::stream::write::Decoder::new(
                HashSink(TrailerHasher::default()),
            )?)),
            (false, false) => StoredCheck::Plain(TrailerHasher::default()),
        })
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) -> Result<(), StoredError> {
        match self {
            StoredCheck::Plain(hasher) => hasher.update(bytes),
            StoredCheck::Zstd(decoder) => decoder.write_all(bytes)?,
            StoredCheck::Encrypted(unsealing) => unsealing.update(bytes)?,
        }
        Ok(())
    }

    /// The database's size and sha256, once its trailer matches.
    pub(crate) fn finish(self) -> Result<(u64, String), StoredError> {
        let hasher = match self {
            StoredCheck::Plain(hasher) => hasher,
            StoredCheck::Zstd(mut decoder) => {
                decoder.flush()?;
                decoder.into_inner().0
            }
            StoredCheck::Encrypted(unsealing) => return unsealing.finish(),
        };
        let sha256 = hasher.verify()?;
        Ok((hasher.total, sha256))
    }
}

/// The database a reader of the stored form `form` yields, decrypted and decompressed.
pub(crate) fn decoding<'a, R: std::io::BufRead + 'a>(
    input: R,
    form: Form,
    identities: Option<&Identities>,
) -> Result<Box<dyn Read + 'a>, StoredError> {
    let decrypted: Box<dyn Read + 'a> = match form.encrypted {
        true => {
            let identities = identities.ok_or(StoredError::NoIdentity)?;
            let decrypt = |err: age::DecryptError| StoredError::Decrypt(err.to_string());
            let decryptor = age::Decryptor::new_buffered(input).map_err(decrypt)?;
            Box::new(decryptor.decrypt(identities.each()).map_err(decrypt)?)
        }
        false => Box::new(input),
    };
    Ok(match form.compressed {
        true => Box::new(zstd::stream::read::Decoder::new(decrypted)?),
        false => decrypted,
    })
}

/// Encodes the database `from` into the copy `to` and syncs it; blocking.
pub(crate) fn encode_file(
    from: &Path,
    to: &Path,
    mut encoder: Encoder,
) -> Result<Encoded, StoredError> {
    let mut input = std::fs::File::open(from)?;
    let mut output = crate::snapshot::create_private(to)?;
    let mut buffer = vec![0u8; BLOCK];
    loop {
        let read = input.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        output.write_all(encoder.feed(&buffer[..read])?)?;
    }
    let (rest, encoded) = encoder.finish()?;
    output.write_all(&rest)?;
    output.sync_all()?;
    Ok(encoded)
}

/// Decodes the stored copy `from` of `form` into the database `to`; blocking.
pub(crate) fn decode_file(
    from: &Path,
    to: &Path,
    form: Form,
    identities: Option<&Identities>,
) -> Result<(), StoredError> {
    let input = BufReader::with_capacity(BLOCK, std::fs::File::open(from)?);
    let mut database = decoding(input, form, identities)?;
    let mut output = crate::snapshot::create_private(to)?;
    std::io::copy(&mut database, &mut output)?;
    output.flush()?;
    Ok(())
}

/// Reads the stored copy at `path` and checks it; blocking. The database's sha256.
pub(crate) fn check_file(
    path: &Path,
    form: Form,
    identities: Option<&Identities>,
) -> Result<String, StoredError> {
    let mut file = std::fs::File::open(path)?;
    let mut check = StoredCheck::new(form, identities)?;
    let mut buffer = vec![0u8; BLOCK];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        check.update(&buffer[..read])?;
    }
    check.finish().map(|(_, sha256)| sha256)
}

/// The sha256 of the file at `path` as it is, what an encrypted copy nobody here can decrypt
/// is compared by; blocking.
pub(crate) fn sha256_file(path: &Path) -> Result<String, StoredError> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; BLOCK];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
