//! Exclusive locks held by a process for as long as it runs: an exclusive `flock` on a file,
//! released by the kernel when the process ends, even by a crash. One run per cluster at a
//! time on this machine, whoever starts it (the CLI, the webhook service, a second copy of
//! either); one webhook service per state file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}", path = .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process holds it; `holder` is what it wrote there (`pid N`).
    #[error("held by {holder} ({errno})")]
    Held { holder: String, errno: nix::Error },
}

/// An exclusive lock on a file, held until dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Takes the lock on `path` (created when missing) without waiting, and writes this
    /// process's id into it for whoever finds it held.
    pub(crate) fn acquire(path: &Path) -> Result<FileLock, LockError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| LockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let mut lock =
            Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                let holder = holder.trim();
                LockError::Held {
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        holder.to_string()
                    },
                    errno,
                }
            })?;
        // Who holds it, for the message above; the lock itself is the flock, not the text.
        let _ = lock.set_len(0);
        let _ = writeln!(*lock, "pid {}", std::process::id());
        Ok(FileLock { _lock: lock })
    }
}

/// The lock of one cluster's runs, in its snapshot directory.
#[derive(Debug)]
pub(crate) struct RunLock {
    _lock: FileLock,
}

impl RunLock {
    /// Takes the lock of `cluster` in `dir`, or says who holds it.
    pub(crate) fn acquire(dir: &Path, cluster: &str) -> Result<RunLock, RunLockError> {
        match FileLock::acquire(&dir.join(".etcdmedic-run.lock")) {
            Ok(lock) => Ok(RunLock { _lock: lock }),
            Err(LockError::Open { source, .. }) => Err(RunLockError::Directory {
                dir: dir.to_path_buf(),
                source,
            }),
            Err(LockError::Held { holder, errno }) => Err(RunLockError::Held {
                cluster: cluster.to_string(),
                holder,
                errno,
            }),
        }
    }
}

/// Why a cluster's run lock was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunLockError {
    #[error(
        "snapshot directory {}: {source}; no snapshot, so nothing was changed", .dir.display()
    )]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("another remediation of cluster {cluster} is running ({holder}; {errno})")]
    Held {
        cluster: String,
        holder: String,
        errno: nix::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_of_the_same_cluster_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "prod").unwrap();
        let refused = RunLock::acquire(dir.path(), "prod")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("another remediation of cluster prod is running (pid"),
            "{refused}"
        );
        drop(first);
        RunLock::acquire(dir.path(), "prod").expect("free again once the first run ended");
    }
}
