//! One run per cluster at a time on this machine, whoever starts it (the CLI, the webhook
//! service, a second copy of either): an exclusive `flock` on a file in the cluster's
//! snapshot directory, released by the kernel when the process ends, even by a crash.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug)]
pub struct RunLock {
    _lock: Flock<File>,
}

impl RunLock {
    /// Takes the lock of `cluster` in `dir`, or says who holds it.
    pub fn acquire(dir: &Path, cluster: &str) -> Result<RunLock, String> {
        let path = dir.join(".etcdmedic-run.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| {
                format!(
                    "snapshot directory {}: {err}; no snapshot, so nothing was changed",
                    dir.display()
                )
            })?;
        let mut lock =
            Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                format!(
                    "another remediation of cluster {cluster} is running ({}; {errno})",
                    holder.trim()
                )
            })?;
        // Who holds it, for the message above; the lock itself is the flock, not the text.
        let _ = lock.set_len(0);
        let _ = writeln!(*lock, "pid {}", std::process::id());
        Ok(RunLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_of_the_same_cluster_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "prod").unwrap();
        let refused = RunLock::acquire(dir.path(), "prod").unwrap_err();
        assert!(
            refused.contains("another remediation of cluster prod is running (pid"),
            "{refused}"
        );
        drop(first);
        RunLock::acquire(dir.path(), "prod").expect("free again once the first run ended");
    }
}
