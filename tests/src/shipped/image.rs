//! The image as the Dockerfile's final stage makes it: its user, entry point and command,
//! and `/usr/local/bin` holding this workspace's binaries and etcd's (the restore drill's).
//! No image is built here (no container engine runs on this machine): the binaries are the
//! ones the tests built, laid out where the image puts them.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use tempfile::TempDir;

use crate::generated::repository_root;
use crate::{project_binary, EtcdVersion};

/// Where the image keeps its programs.
const BIN: &str = "/usr/local/bin";

pub struct Image {
    dir: TempDir,
    /// `USER uid:gid`.
    pub user: (u32, u32),
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// The etcd release the Dockerfile puts in the image for the restore drill
/// (`ARG ETCD_VERSION=v3.5.30`): the release of the harness with the same minor version.
pub fn etcd_release() -> Result<EtcdVersion> {
    let dockerfile = std::fs::read_to_string(repository_root().join("Dockerfile"))?;
    let version = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("ARG ETCD_VERSION=v"))
        .context("no ARG ETCD_VERSION in the Dockerfile")?;
    EtcdVersion::ALL
        .into_iter()
        .find(|release| version.starts_with(release.prefix()))
        .with_context(|| format!("the image's etcd {version} is not a release the tests have"))
}

impl Image {
    pub fn from_dockerfile() -> Result<Image> {
        let text = std::fs::read_to_string(repository_root().join("Dockerfile"))?;
        let last_stage = text
            .rsplit_once("\nFROM ")
            .map(|(_, stage)| stage)
            .context("the Dockerfile has no FROM")?;
        let mut user = None;
        let (mut entrypoint, mut cmd) = (Vec::new(), Vec::new());
        let mut copies_to_bin = false;
        for line in last_stage.lines() {
            if let Some(rest) = line.strip_prefix("USER ") {
                let (uid, gid) = rest
                    .trim()
                    .split_once(':')
                    .unwrap_or((rest.trim(), rest.trim()));
                user = Some((uid.parse()?, gid.parse()?));
            } else if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
                entrypoint = serde_json::from_str(rest).context("ENTRYPOINT is not exec form")?;
            } else if let Some(rest) = line.strip_prefix("CMD ") {
                cmd = serde_json::from_str(rest).context("CMD is not exec form")?;
            } else if line.starts_with("COPY ") && line.trim_end().ends_with(&format!("{BIN}/")) {
                copies_to_bin = true;
            }
        }
        ensure!(copies_to_bin, "the final stage copies nothing into {BIN}");
        let Some(user) = user else {
            bail!("the final stage sets no USER");
        };
        let dir = tempfile::Builder::new()
            .prefix("etcdmedic-image-")
            .tempdir()?;
        let bin = dir.path().join(BIN.trim_start_matches('/'));
        std::fs::create_dir_all(&bin)?;
        let mut programs = vec![
            project_binary("etcdmedic-exporter")?,
            project_binary("etcdmedic-remediator")?,
        ];
        let etcd = etcd_release()?;
        programs.extend([etcd.etcd()?, etcd.etcdctl()?, etcd.snapshot_tool()?]);
        for program in programs {
            let name = program.file_name().context("a program without a name")?;
            let target = bin.join(name);
            // A link where the file system allows it: the debug binaries are large.
            if std::fs::hard_link(&program, &target).is_err() {
                std::fs::copy(&program, &target)
                    .with_context(|| format!("copying {}", program.display()))?;
            }
        }
        let mut walk = bin.clone();
        while walk.starts_with(dir.path()) {
            std::fs::set_permissions(&walk, PermissionsExt::from_mode(0o755))?;
            if !walk.pop() {
                break;
            }
        }
        Ok(Image {
            dir,
            user,
            entrypoint,
            cmd,
        })
    }

    /// Where the image's program at `path` (`/usr/local/bin/etcdmedic-exporter`) is here.
    pub fn program(&self, path: &str) -> Result<PathBuf> {
        let here = self.dir.path().join(path.trim_start_matches('/'));
        ensure!(
            path.starts_with(BIN) && here.is_file(),
            "{path} is not a program of the image"
        );
        Ok(here)
    }

    /// `PATH` inside the image: its programs (etcd and etcdutl for the restore drill).
    pub fn path_env(&self) -> String {
        self.dir
            .path()
            .join(BIN.trim_start_matches('/'))
            .display()
            .to_string()
    }
}
