//! Snapshots that count only once they are known good: streamed to a `.part` file, checked
//! against the sha256 trailer etcd appends, fsynced, renamed into place, and the directory
//! fsynced, so a crash leaves either a complete verified file or a `.part` to ignore.
//! Retention keeps the newest few per cluster.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use etcdmedic_cluster::config::ClusterName;
use etcdmedic_cluster::table::human_bytes;
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

/// etcd appends the sha256 of the database to the stream; bbolt files are whole pages, so a
/// file with a trailer is 32 bytes past a multiple of 512 (the check etcdutl makes).
const TRAILER_LEN: usize = 32;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The snapshot is written to disk in steps of this size. Left to the page cache, a large
/// snapshot is flushed all at once by its final fsync, and every etcd member whose WAL shares
/// the disk (or the file system's journal) waits behind that flush: a stall for the whole
/// cluster's writes at the end of the snapshot.
const SYNC_EVERY: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    #[error("snapshot directory {}: {source}", .dir.display())]
    Directory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("streaming from the member failed: {0}")]
    Stream(String),
    #[error("streaming did not finish within {0:?}")]
    Timeout(Duration),
    #[error("stopped on request while streaming; the partial file was removed")]
    Stopped,
    #[error("the stream has no sha256 trailer ({0} bytes is not a multiple of 512 plus 32); not a usable snapshot")]
    NoTrailer(u64),
    #[error("the sha256 of the received database ({computed}) differs from etcd's trailer ({expected}); the copy is damaged")]
    Checksum { computed: String, expected: String },
}

/// A verified snapshot on disk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Saved {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
    pub duration: Duration,
}

/// `<dir>/<cluster>`: only a checked [`ClusterName`] becomes a path component.
pub(crate) fn cluster_dir(dir: &Path, cluster: &ClusterName) -> PathBuf {
    dir.join(cluster)
}

/// Creates `dir` (a [`cluster_dir`]) if missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(|source| SnapshotError::Directory {
            dir: dir.to_path_buf(),
            source,
        })
}

/// Every snapshot, copy and manifest holds the whole keyspace (every Kubernetes Secret) or
/// describes it: readable by its owner alone, whatever the process's umask (0022 in most
/// containers). Directories etcdmedic creates are its own the same way.
pub(crate) const PRIVATE_FILE: u32 = 0o600;
pub(crate) const PRIVATE_DIR: u32 = 0o700;

/// Creates (or truncates) `path` for writing, readable by its owner alone; blocking.
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)
}

/// [`create_private`] for async code.
pub(crate) async fn create_private_async(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)
        .await
}

/// Why a snapshot cannot be written where it should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomError {
    /// Not a directory, or not writable.
    Directory(String),
    /// Too little free space.
    Space(String),
}

impl std::fmt::Display for RoomError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomError::Directory(reason) | RoomError::Space(reason) => f.write_str(reason),
        }
    }
}

/// How the free bytes on the file system holding a directory are read: [`available_bytes`]
/// in the field; a scenario test gives a disk of a known size, so its verdict does not
/// depend on the machine's free space.
pub(crate) type FreeSpace = fn(&Path) -> Option<u64>;

/// Whether a snapshot of about `needed` bytes can be written to `dir`, judged on the nearest
/// directory that exists (the run would create the rest). Creates nothing, so a refusal
/// leaves nothing behind.
pub(crate) fn check_room(dir: &Path, needed: u64, free_space: FreeSpace) -> Result<(), RoomError> {
    use nix::unistd::{access, AccessFlags};
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(RoomError::Directory(format!(
            "snapshot directory {}: {} is not a directory",
            dir.display(),
            existing.display()
        )));
    }
    access(existing, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|err| {
        RoomError::Directory(format!(
            "snapshot directory {}: {} is not writable ({err})",
            dir.display(),
            existing.display()
        ))
    })?;
    if let Some(available) = free_space(existing) {
        if available < needed {
            return Err(RoomError::Space(format!(
                "{} has {} free, the snapshot needs about {}",
                existing.display(),
                human_bytes(available),
                human_bytes(needed)
            )));
        }
    }
    Ok(())
}

/// Free bytes on the file system holding `dir`, when it can be read.
pub(crate) fn available_bytes(dir: &Path) -> Option<u64> {
    let stats = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stats.blocks_available() as u64 * stats.fragment_size() as u64)
}

/// The file name of a snapshot: `<cluster>-<UTC time>-rev<N>.db`.
pub(crate) fn file_name(cluster: &ClusterName, at: SystemTime, revision: i64) -> String {
    // 2026-11-21T06:19:00.123Z -> 20261121T061900.123Z: sortable, no colons.
    let time: String = humantime::format_rfc3339_millis(at)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{cluster}-{time}-rev{revision}.db")
}

/// A member's snapshot, as it streams.
pub type ChunkStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<Chunk, crate::call::CallError>> + Send>>;

/// One message of a snapshot stream, as etcd sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub blob: Vec<u8>,
    /// Bytes etcd says are still to come.
    pub remaining: u64,
}

/// Writes the snapshot `stream` (one member's) to `dir/name`, verifying it. `progress` is
/// called every few seconds with the bytes received and the bytes etcd says remain. A stop
/// request ends the stream; the partial file is removed, as on any failure.
pub(crate) async fn save(
    stream: impl Stream<Item = Result<Chunk, impl std::fmt::Display>> + Unpin,
    dir: &Path,
    name: &str,
    timeout: Duration,
    stop: &CancellationToken,
    progress: impl FnMut(u64, u64),
) -> Result<Saved, SnapshotError> {
    save_teed(stream, dir, name, timeout, stop, progress, None).await
}

/// Where [`save_teed`] also sends every chunk it writes, as it writes it (an upload under
/// way while the snapshot arrives). The channel's bound holds the stream back when the
/// receiver is slower; a receiver that goes away only stops the copies.
pub(crate) type Tee = tokio::sync::mpsc::Sender<Vec<u8>>;

/// [`save`], sending each chunk to `tee` too. The tee's receiver sees the channel close when
/// the stream ends; whether the snapshot is good is this function's answer, not the tee's.
pub(crate) async fn save_teed(
    stream: impl Stream<Item = Result<Chunk, impl std::fmt::Display>> + Unpin,
    dir: &Path,
    name: &str,
    timeout: Duration,
    stop: &CancellationToken,
    mut progress: impl FnMut(u64, u64),
    tee: Option<Tee>,
) -> Result<Saved, SnapshotError> {
    let started = Instant::now();
    let path = dir.join(name);
    let part = dir.join(format!("{name}.part"));
    let streamed = tokio::select! {
        result = tokio::time::timeout(timeout, stream_to(stream, &part, &mut progress, tee)) => {
            result.unwrap_or(Err(SnapshotError::Timeout(timeout)))
        }
        _ = stop.cancelled() => Err(SnapshotError::Stopped),
    };
    let (size_bytes, sha256) = match streamed {
        Ok(done) => done,
        Err(err) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(err);
        }
    };
    let write_error = |source| SnapshotError::Write {
        path: path.clone(),
        source,
    };
    tokio::fs::rename(&part, &path).await.map_err(write_error)?;
    sync_dir(dir).await.map_err(write_error)?;
    Ok(Saved {
        path,
        size_bytes,
        sha256,
        duration: started.elapsed(),
    })
}

async fn stream_to(
    mut stream: impl Stream<Item = Result<Chunk, impl std::fmt::Display>> + Unpin,
    part: &Path,
    progress: &mut impl FnMut(u64, u64),
    mut tee: Option<Tee>,
) -> Result<(u64, String), SnapshotError> {
    let write_error = |source| SnapshotError::Write {
        path: part.to_path_buf(),
        source,
    };
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(part)
        .await
        .map_err(write_error)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut trailer = TrailerHasher::default();
    let mut last_progress = Instant::now();
    let mut unsynced = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| SnapshotError::Stream(err.to_string()))?;
        out.write_all(&chunk.blob).await.map_err(write_error)?;
        trailer.update(&chunk.blob);
        let remaining = chunk.remaining;
        unsynced += chunk.blob.len() as u64;
        if unsynced >= SYNC_EVERY {
            out.flush().await.map_err(write_error)?;
            out.get_ref().sync_data().await.map_err(write_error)?;
            unsynced = 0;
        }
        if let Some(sender) = &tee {
            if sender.send(chunk.blob).await.is_err() {
                tee = None;
            }
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            progress(trailer.total, remaining);
            last_progress = Instant::now();
        }
    }
    out.flush().await.map_err(write_error)?;
    let file = out.into_inner();
    file.sync_all().await.map_err(write_error)?;
    let sha256 = trailer.verify()?;
    Ok((trailer.total, sha256))
}

/// Hashes everything but the last 32 bytes seen, which are kept as the expected digest.
#[derive(Default)]
pub(crate) struct TrailerHasher {
    hasher: Sha256,
    tail: Vec<u8>,
    pub(crate) total: u64,
}

impl TrailerHasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if bytes.len() >= TRAILER_LEN {
            self.hasher.update(&self.tail);
            let (body, tail) = bytes.split_at(bytes.len() - TRAILER_LEN);
            self.hasher.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(tail);
        } else {
            self.tail.extend_from_slice(bytes);
            let surplus = self.tail.len().saturating_sub(TRAILER_LEN);
            self.hasher.update(&self.tail[..surplus]);
            self.tail.drain(..surplus);
        }
    }

    /// The database's sha256 in hex, once it matches the trailer.
    pub(crate) fn verify(&self) -> Result<String, SnapshotError> {
        let body = self.total.saturating_sub(TRAILER_LEN as u64);
        if self.total < TRAILER_LEN as u64 || !body.is_multiple_of(512) || body == 0 {
            return Err(SnapshotError::NoTrailer(self.total));
        }
        let computed = hex(&self.hasher.clone().finalize());
        let expected = hex(&self.tail);
        if computed != expected {
            return Err(SnapshotError::Checksum { computed, expected });
        }
        Ok(computed)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// What a restore drill keeps in the cluster's snapshot directory while it runs, by the
/// start of its name: the throwaway member's directory, a download from a bucket, a decoded
/// copy. Named here once, where [`remove_leftover_parts`] looks for them.
pub(crate) const DRILL_SCRATCH: &str = ".restore-drill-";
pub(crate) const DRILL_DOWNLOAD: &str = ".drill-download-";
pub(crate) const DRILL_DECODED: &str = ".drill-decoded-";
const DRILL_LEFTOVERS: [&str; 3] = [DRILL_SCRATCH, DRILL_DOWNLOAD, DRILL_DECODED];

/// Removes what a killed run, backup or drill left in `dir` for `cluster`: `.db.part` files
/// and the drill's scratch (a restored keyspace among it, which must not outlive the
/// drill). Only called while the cluster's run lock is held, so no live one owns them.
pub(crate) fn remove_leftover_parts(dir: &Path, cluster: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let prefix = format!("{cluster}-");
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                (n.starts_with(&prefix) && n.ends_with(".db.part"))
                    || DRILL_LEFTOVERS.iter().any(|left| n.starts_with(left))
            })
        })
        .filter(|path| {
            // Not following a link: a directory of the drill's own, or a file.
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).is_ok(),
                Ok(_) => std::fs::remove_file(path).is_ok(),
                Err(_) => false,
            }
        })
        .collect()
}

/// Keeps the newest `keep` snapshots of `cluster` in `dir`, returns the ones removed.
pub(crate) fn apply_retention(
    dir: &Path,
    cluster: &str,
    keep: usize,
) -> std::io::Result<Vec<PathBuf>> {
    let snapshots = snapshots_of(dir, cluster)?;
    let excess = snapshots.len().saturating_sub(keep);
    let mut removed = Vec::with_capacity(excess);
    for old in snapshots.into_iter().take(excess) {
        std::fs::remove_file(&old)?;
        removed.push(old);
    }
    Ok(removed)
}

/// The snapshots of `cluster` in `dir`, oldest first: names sort by time.
pub(crate) fn snapshots_of(dir: &Path, cluster: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|name| is_snapshot_of(name, cluster))
        })
        .collect();
    snapshots.sort();
    Ok(snapshots)
}

/// Whether `name` is what [`file_name`] gives for `cluster`, or its zstd copy (`.db.zst`).
pub(crate) fn is_snapshot_of(name: &str, cluster: &str) -> bool {
    name.strip_prefix(cluster)
        .and_then(|rest| rest.strip_prefix('-'))
        .map(without_encoding)
        .and_then(|rest| rest.strip_suffix(".db"))
        .is_some_and(is_time_and_revision)
}

/// What a zstd-compressed copy of a snapshot adds to its name.
pub(crate) const ZSTD_SUFFIX: &str = ".zst";
/// What an age-encrypted copy adds to its name, after `.zst` when it is compressed too.
pub(crate) const AGE_SUFFIX: &str = ".age";

/// The snapshot's name of a stored copy's: `x.db.zst.age`, `x.db.age`, `x.db.zst` -> `x.db`.
pub(crate) fn without_encoding(file: &str) -> &str {
    let file = file.strip_suffix(AGE_SUFFIX).unwrap_or(file);
    file.strip_suffix(ZSTD_SUFFIX).unwrap_or(file)
}

/// The manifest's name beside the snapshot (or compressed or encrypted copy) `file`: `x.db`,
/// `x.db.zst` and `x.db.zst.age` all have `x.json`.
pub(crate) fn manifest_name(file: &str) -> String {
    let base = without_encoding(file);
    format!("{}.json", base.strip_suffix(".db").unwrap_or(base))
}

/// [`manifest_name`] as a path beside `db`.
pub(crate) fn manifest_path(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .and_then(|n| n.to_str())
        .map(manifest_name)
        .unwrap_or_else(|| "manifest.json".into());
    db.with_file_name(name)
}

/// Whether the file at `path` still is the snapshot a manifest describes, judged cheaply: its
/// size, and etcd's sha256 trailer at its end equal to the recorded digest. A file replaced,
/// truncated or extended fails; a flipped bit inside does not (reading it all, as
/// `backup::compress::check_file` does, finds that).
pub(crate) async fn trailer_matches(path: &Path, size_bytes: u64, sha256: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let read = async {
        let mut file = tokio::fs::File::open(path).await?;
        if file.metadata().await?.len() != size_bytes || size_bytes < TRAILER_LEN as u64 {
            return Ok::<bool, std::io::Error>(false);
        }
        file.seek(std::io::SeekFrom::End(-(TRAILER_LEN as i64)))
            .await?;
        let mut trailer = [0u8; TRAILER_LEN];
        file.read_exact(&mut trailer).await?;
        Ok(hex(&trailer) == sha256)
    };
    read.await.unwrap_or(false)
}

/// `20261121T061900.123Z-rev42`: what [`file_name`] puts between the cluster and `.db`.
/// Another cluster whose name extends this one's (`prod` and `prod-b`) never matches.
fn is_time_and_revision(rest: &str) -> bool {
    let Some((time, revision)) = rest.split_once("-rev") else {
        return false;
    };
    time.len() == 20
        && time.ends_with('Z')
        && time.as_bytes()[8] == b'T'
        && !revision.is_empty()
        && revision.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_copies_are_snapshots_and_share_the_manifest_name() {
        let name = "prod-20261121T061900.123Z-rev42.db";
        assert!(is_snapshot_of(name, "prod"));
        assert!(is_snapshot_of(&format!("{name}.zst"), "prod"));
        assert!(!is_snapshot_of(&format!("{name}.gz"), "prod"));
        assert_eq!(manifest_name(name), "prod-20261121T061900.123Z-rev42.json");
        assert_eq!(
            manifest_name(&format!("{name}.zst")),
            "prod-20261121T061900.123Z-rev42.json"
        );
        assert_eq!(
            manifest_path(Path::new("/b/prod/x.db.zst")),
            Path::new("/b/prod/x.json")
        );
    }

    #[test]
    fn file_names_carry_cluster_utc_time_and_revision() {
        let at = humantime::parse_rfc3339("2026-11-21T06:19:00.123Z").unwrap();
        assert_eq!(
            file_name(&ClusterName::new("prod-a").unwrap(), at, 42),
            "prod-a-20261121T061900.123Z-rev42.db"
        );
    }

    fn stream(db: &[u8], trailer: &[u8], chunk: usize) -> TrailerHasher {
        let mut all = db.to_vec();
        all.extend_from_slice(trailer);
        let mut hasher = TrailerHasher::default();
        for piece in all.chunks(chunk) {
            hasher.update(piece);
        }
        hasher
    }

    /// Larger than [`SYNC_EVERY`], so the file is synced in steps on its
    /// way to disk; what lands there is exactly what was streamed.
    #[tokio::test]
    async fn a_snapshot_larger_than_a_sync_step_is_saved_whole() {
        let db: Vec<u8> = (0..(SYNC_EVERY as usize + (1 << 20)))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut all = db.clone();
        all.extend_from_slice(&Sha256::digest(&db));
        let total = all.len() as u64;
        let chunks: Vec<Result<Chunk, crate::CallError>> = all
            .chunks(1 << 20)
            .scan(total, |remaining, piece| {
                *remaining -= piece.len() as u64;
                Some(Ok(Chunk {
                    blob: piece.to_vec(),
                    remaining: *remaining,
                }))
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let saved = save(
            Box::pin(futures::stream::iter(chunks)),
            dir.path(),
            "big.db",
            Duration::from_secs(60),
            &CancellationToken::new(),
            |_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(saved.size_bytes, total);
        assert_eq!(saved.sha256, hex(&Sha256::digest(&db)));
        assert_eq!(std::fs::read(&saved.path).unwrap(), all);
        assert!(!dir.path().join("big.db.part").exists());
    }

    #[tokio::test]
    async fn a_file_matches_its_manifest_only_with_its_size_and_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let db = vec![3u8; 1024];
        let digest = hex(&Sha256::digest(&db));
        let mut bytes = db.clone();
        bytes.extend_from_slice(&Sha256::digest(&db));
        let path = dir.path().join("s.db");
        std::fs::write(&path, &bytes).unwrap();
        let size = bytes.len() as u64;
        assert!(trailer_matches(&path, size, &digest).await);
        assert!(!trailer_matches(&path, size, &"0".repeat(64)).await);
        assert!(!trailer_matches(&path, size + 1, &digest).await);
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(!trailer_matches(&path, size, &digest).await, "truncated");
        assert!(!trailer_matches(&dir.path().join("none"), size, &digest).await);
    }

    #[test]
    fn the_trailer_is_checked_whatever_the_chunk_sizes() {
        let db = vec![7u8; 4096];
        let digest = Sha256::digest(&db);
        for chunk in [1, 5, 31, 32, 33, 1000, 5000] {
            let got = stream(&db, &digest, chunk).verify();
            assert_eq!(got.ok(), Some(hex(&digest)), "chunk size {chunk}");
        }
        let mut damaged = db.clone();
        damaged[100] ^= 1;
        assert!(matches!(
            stream(&damaged, &digest, 1000).verify(),
            Err(SnapshotError::Checksum { .. })
        ));
        assert!(matches!(
            stream(&db, &digest[..31], 1000).verify(),
            Err(SnapshotError::NoTrailer(4127))
        ));
    }

    #[test]
    fn retention_keeps_the_newest_and_ignores_other_clusters_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "prod-20261121T061900.000Z-rev1.db",
            "prod-20261121T061901.000Z-rev2.db",
            "prod-20261121T061902.000Z-rev3.db",
            "prod-b-20261121T061800.000Z-rev9.db",
            "prod-20261121T061903.000Z-rev4.db.part",
            "notes.txt",
        ];
        for name in names {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let removed = apply_retention(dir.path(), "prod", 2).unwrap();
        assert_eq!(removed, vec![dir.path().join(names[0])]);
        for name in &names[1..] {
            assert!(dir.path().join(name).exists(), "{name} must stay");
        }
        assert_eq!(
            remove_leftover_parts(dir.path(), "prod"),
            vec![dir.path().join(names[4])]
        );
    }

    #[test]
    fn a_killed_drills_scratch_goes_with_the_parts_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join(".restore-drill-Ab12Cd");
        std::fs::create_dir_all(scratch.join("data/member/snap")).unwrap();
        std::fs::write(scratch.join("data/member/snap/db"), b"the keyspace").unwrap();
        let files = [
            ".drill-download-prod-20261121T061900.000Z-rev1.db.zst",
            ".drill-decoded-1.db",
            "prod-20261121T061900.000Z-rev1.db",
            "prod-20261121T061900.000Z-rev1.json",
        ];
        for name in files {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let mut removed = remove_leftover_parts(dir.path(), "prod");
        removed.sort();
        assert_eq!(
            removed,
            vec![
                dir.path().join(files[1]),
                dir.path().join(files[0]),
                scratch.clone()
            ]
        );
        assert!(!scratch.exists());
        for kept in &files[2..] {
            assert!(dir.path().join(kept).exists(), "{kept} must stay");
        }
    }
}
