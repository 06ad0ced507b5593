//! `compression: zstd`: copies stored as `<snapshot>.db.zst`. The snapshot is streamed,
//! checked and drilled uncompressed; only the copies in the destinations are compressed, and
//! each is checked by decompressing it and checking etcd's trailer again, so the manifest's
//! sha256 (of the uncompressed database) keeps meaning what it says.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::Path;

use zstd::stream::write::{Decoder, Encoder};

use crate::snapshot::TrailerHasher;

/// zstd's default: fast, and etcd's free pages (zeros) compress to almost nothing.
const LEVEL: i32 = 3;
const BLOCK: usize = 1 << 20;

/// Compresses a stream as it goes (or passes it through when compression is off).
pub(crate) struct Compressor(Option<Encoder<'static, Vec<u8>>>);

impl Compressor {
    pub(crate) fn new(on: bool) -> std::io::Result<Compressor> {
        Ok(Compressor(match on {
            true => Some(Encoder::new(Vec::new(), LEVEL)?),
            false => None,
        }))
    }

    /// The bytes to store for `chunk`: the chunk itself, or what the encoder has ready.
    pub(crate) fn feed<'a>(&mut self, chunk: &'a [u8]) -> std::io::Result<Cow<'a, [u8]>> {
        match &mut self.0 {
            None => Ok(Cow::Borrowed(chunk)),
            Some(encoder) => {
                encoder.write_all(chunk)?;
                Ok(Cow::Owned(std::mem::take(encoder.get_mut())))
            }
        }
    }

    /// What remains to store once the input has ended.
    pub(crate) fn finish(self) -> std::io::Result<Vec<u8>> {
        match self.0 {
            None => Ok(Vec::new()),
            Some(encoder) => encoder.finish(),
        }
    }
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

/// Checks a stored copy as it is read: decompressed first when it is compressed, then etcd's
/// trailer over the database.
pub(crate) enum StoredCheck {
    Plain(TrailerHasher),
    Zstd(Box<Decoder<'static, HashSink>>),
}

impl StoredCheck {
    pub(crate) fn new(compressed: bool) -> std::io::Result<StoredCheck> {
        Ok(match compressed {
            true => StoredCheck::Zstd(Box::new(Decoder::new(HashSink(TrailerHasher::default()))?)),
            false => StoredCheck::Plain(TrailerHasher::default()),
        })
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            StoredCheck::Plain(hasher) => {
                hasher.update(bytes);
                Ok(())
            }
            StoredCheck::Zstd(decoder) => decoder.write_all(bytes),
        }
    }

    /// The database's size and sha256, once its trailer matches.
    pub(crate) fn finish(self) -> Result<(u64, String), String> {
        let hasher = match self {
            StoredCheck::Plain(hasher) => hasher,
            StoredCheck::Zstd(mut decoder) => {
                decoder
                    .flush()
                    .map_err(|err| format!("decompressing: {err}"))?;
                decoder.into_inner().0
            }
        };
        let sha256 = hasher.verify().map_err(|err| err.to_string())?;
        Ok((hasher.total, sha256))
    }
}

/// Compresses the file `from` into `to`; blocking.
pub(crate) fn compress_file(from: &Path, to: &Path) -> std::io::Result<()> {
    let input = std::fs::File::open(from)?;
    let output = std::fs::File::create(to)?;
    zstd::stream::copy_encode(input, &output, LEVEL)?;
    output.sync_all()
}

/// Decompresses `from` into `to`; blocking.
pub(crate) fn decompress_file(from: &Path, to: &Path) -> std::io::Result<()> {
    let input = std::fs::File::open(from)?;
    let mut output = std::fs::File::create(to)?;
    zstd::stream::copy_decode(input, &mut output)?;
    output.flush()
}

/// Reads the stored copy at `path` and checks it; blocking. The database's sha256.
pub(crate) fn check_file(path: &Path, compressed: bool) -> Result<String, String> {
    let mut file = std::fs::File::open(path).map_err(|err| format!("{}: {err}", path.display()))?;
    let mut check = StoredCheck::new(compressed).map_err(|err| err.to_string())?;
    let mut buffer = vec![0u8; BLOCK];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|err| format!("{}: {err}", path.display()))?;
        if read == 0 {
            break;
        }
        check
            .update(&buffer[..read])
            .map_err(|err| format!("{}: {err}", path.display()))?;
    }
    check.finish().map(|(_, sha256)| sha256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// A database of whole pages, mostly zeros like etcd's free pages, with its trailer.
    fn snapshot() -> (Vec<u8>, String) {
        let mut db = vec![0u8; 4096 * 300];
        for (i, byte) in db.iter_mut().enumerate().step_by(7) {
            *byte = (i % 251) as u8;
        }
        let digest = Sha256::digest(&db);
        let sha: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        db.extend_from_slice(&digest);
        (db, sha)
    }

    #[test]
    fn a_compressed_stream_checks_out_like_the_snapshot_whatever_the_chunks() {
        let (db, sha) = snapshot();
        for chunk in [1000, 32 * 1024, db.len()] {
            let mut compressor = Compressor::new(true).unwrap();
            let mut stored = Vec::new();
            for piece in db.chunks(chunk) {
                stored.extend_from_slice(&compressor.feed(piece).unwrap());
            }
            stored.extend_from_slice(&compressor.finish().unwrap());
            assert!(stored.len() < db.len() / 2, "compressed: {}", stored.len());
            let mut check = StoredCheck::new(true).unwrap();
            for piece in stored.chunks(777) {
                check.update(piece).unwrap();
            }
            assert_eq!(check.finish().unwrap(), (db.len() as u64, sha.clone()));
        }
        let mut damaged = Compressor::new(true).unwrap();
        let mut stored = damaged.feed(&db).unwrap().into_owned();
        stored.extend_from_slice(&damaged.finish().unwrap());
        stored.truncate(stored.len() - 10);
        let mut check = StoredCheck::new(true).unwrap();
        let fed = check.update(&stored);
        assert!(fed.is_err() || check.finish().is_err(), "a cut copy fails");
    }

    #[test]
    fn files_compress_decompress_and_check() {
        let dir = tempfile::tempdir().unwrap();
        let (db, sha) = snapshot();
        let plain = dir.path().join("s.db");
        std::fs::write(&plain, &db).unwrap();
        let packed = dir.path().join("s.db.zst");
        compress_file(&plain, &packed).unwrap();
        assert_eq!(check_file(&packed, true).unwrap(), sha);
        assert_eq!(check_file(&plain, false).unwrap(), sha);
        let unpacked = dir.path().join("back.db");
        decompress_file(&packed, &unpacked).unwrap();
        assert_eq!(std::fs::read(&unpacked).unwrap(), db);
    }
}
