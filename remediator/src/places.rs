//! The places on disk a configuration names, checked before anything starts: every
//! cluster's snapshot directory and the service's state file must be writable where they
//! are, so that a mistake shows at `--config.check` (or start-up) rather than as a refused
//! run at 3 a.m.

use std::path::{Path, PathBuf};

use crate::config::ManagedCluster;

use crate::snapshot;

/// Every problem with the snapshot directories of `clusters` and with `state_path` (when the
/// service is being checked), each as `key: problem`. Creates nothing.
pub fn problems(clusters: &[ManagedCluster], state_path: Option<&Path>) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, cluster) in clusters.iter().enumerate() {
        problems.extend(cluster_problems(index, cluster));
    }
    if let Some(path) = state_path {
        if let Err(problem) = check_state_path(path) {
            problems.push(format!("remediator.state_path: {problem}"));
        }
    }
    problems
}

/// Every problem with the places of `cluster`, the configuration's `clusters[index]`: what
/// `run`, `backup` and `drill` check before they contact it.
pub fn cluster_problems(index: usize, cluster: &ManagedCluster) -> Vec<String> {
    let dir = snapshot::cluster_dir(&cluster.remediation.snapshot_dir, &cluster.name);
    match snapshot::check_room(&dir, 0, snapshot::available_bytes) {
        Ok(_) => Vec::new(),
        Err(problem) => vec![format!(
            "clusters[{index}].remediation.snapshot_dir: {problem}"
        )],
    }
}

/// The state file must be a writable file, or not exist yet in a writable directory.
fn check_state_path(path: &Path) -> Result<(), StatePathError> {
    use nix::unistd::{access, AccessFlags};
    if path.exists() {
        if !path.is_file() {
            return Err(StatePathError::NotAFile(path.to_path_buf()));
        }
        return access(path, AccessFlags::R_OK | AccessFlags::W_OK).map_err(|errno| {
            StatePathError::NotWritable {
                path: path.to_path_buf(),
                errno,
            }
        });
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    snapshot::check_room(
        parent.unwrap_or(Path::new(".")),
        0,
        snapshot::available_bytes,
    )
    .map_err(StatePathError::Directory)
}

/// What is wrong with the service's state file.
#[derive(Debug, thiserror::Error)]
enum StatePathError {
    #[error("{} is not a file", .0.display())]
    NotAFile(PathBuf),
    #[error("{} is not writable ({errno})", .path.display())]
    NotWritable { path: PathBuf, errno: nix::Error },
    /// The directory's problem, told of the state directory (the check is the snapshot
    /// directory's).
    #[error("{}", .0.to_string().replacen("snapshot directory", "state directory", 1))]
    Directory(snapshot::RoomError),
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::RemediatorConfig as Config;

    use super::*;

    #[test]
    fn a_snapshot_dir_or_state_directory_that_is_a_file_is_a_problem_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let yaml = format!(
            "remediation:\n  snapshot_dir: {}\nclusters:\n  - name: a\n    endpoints: [http://127.0.0.1:2379]\n  - name: b\n    endpoints: [http://127.0.0.1:2379]\n    remediation: {{snapshot_dir: {}}}\n",
            file.display(),
            dir.path().join("fresh/snapshots").display()
        );
        let config = Config::from_yaml(&yaml, &dir.path().join("c.yaml")).unwrap();
        let state: PathBuf = file.join("state.sqlite");
        let problems = problems(&config.clusters, Some(&state));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("clusters[0].remediation.snapshot_dir: snapshot directory")
                && problems[0].ends_with("a-file is not a directory"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with("remediator.state_path: state directory")
                && problems[1].ends_with("a-file is not a directory"),
            "{}",
            problems[1]
        );
        assert!(
            !dir.path().join("fresh").exists(),
            "the check creates nothing"
        );
    }
}
