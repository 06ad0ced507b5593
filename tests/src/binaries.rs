//! Where the etcd releases under test and the project's own binaries live.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The etcd releases the tests run against, one per minor version users run: 3.4.23 from
/// Debian bookworm's `etcd-server`/`etcd-client`, 3.5.30 from Debian sid's, 3.6.15 and 3.7.2
/// from the crate `etcd-bin-vendored-linux-amd64` (with 3.5's etcdctl and etcdutl beside
/// them). `make test` installs them all (scripts/install-deps.sh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EtcdVersion {
    V3_4,
    V3_5,
    V3_6,
    V3_7,
}

impl EtcdVersion {
    pub const ALL: [EtcdVersion; 4] = [
        EtcdVersion::V3_4,
        EtcdVersion::V3_5,
        EtcdVersion::V3_6,
        EtcdVersion::V3_7,
    ];
    /// For tests of etcdmedic's own surfaces, whose outcome does not depend on etcd.
    pub const NEWEST: EtcdVersion = EtcdVersion::V3_7;

    /// The prefix every member's reported version starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            EtcdVersion::V3_4 => "3.4.",
            EtcdVersion::V3_5 => "3.5.",
            EtcdVersion::V3_6 => "3.6.",
            EtcdVersion::V3_7 => "3.7.",
        }
    }

    /// The storage version a member reports in Status (`3.6.0`), from 3.6 on; empty before.
    pub fn storage_version(self) -> String {
        match self {
            EtcdVersion::V3_4 | EtcdVersion::V3_5 => String::new(),
            _ => format!("{}0", self.prefix()),
        }
    }

    /// Where etcdmedic learns a member's quota: Status reports it from 3.6 on
    /// (`dbSizeQuota`), earlier members only on their `/metrics`.
    pub fn quota_source(self) -> &'static str {
        match self {
            EtcdVersion::V3_4 | EtcdVersion::V3_5 => "metrics",
            _ => "status",
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
            _ => self.binary("etcdutl"),
        }
    }

    /// The directory holding this release's binaries (a restore drill's `bin_dir`).
    pub fn bin_dir(self) -> Result<PathBuf> {
        let etcd = self.etcd()?;
        Ok(etcd.parent().unwrap_or(Path::new("/")).to_path_buf())
    }

    /// `ETCD_3_4_DIR` ... `ETCD_3_7_DIR` point at a directory holding etcd, etcdctl and (from
    /// 3.5) etcdutl; otherwise where scripts/install-deps.sh puts them.
    fn binary(self, name: &str) -> Result<PathBuf> {
        let variable = format!("ETCD_{}_DIR", self.to_string().replace('.', "_"));
        let default_dir = match self {
            EtcdVersion::V3_4 => PathBuf::from("/usr/bin"),
            _ => crate::python::deps_dir().join(format!("etcd-{self}")),
        };
        let dir = std::env::var_os(&variable)
            .map(PathBuf::from)
            .unwrap_or(default_dir);
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
            EtcdVersion::V3_6 => "3.6",
            EtcdVersion::V3_7 => "3.7",
        })
    }
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

/// The Prometheus tools under test: Prometheus 3.5 and Alertmanager 0.33 from Debian sid,
/// with promtool and amtool (what kube-prometheus-stack users run; bookworm's own are 2.42
/// and 0.25). `ETCDMEDIC_PROMETHEUS_DIR` points elsewhere; otherwise where
/// scripts/install-deps.sh puts them. `name` is `prometheus`, `promtool`, `alertmanager` or
/// `amtool`.
pub fn prometheus_tool(name: &str) -> Result<PathBuf> {
    let dir = std::env::var_os("ETCDMEDIC_PROMETHEUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::python::deps_dir().join("prometheus"));
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "could not find {name} at {}; run scripts/install-deps.sh or set \
             ETCDMEDIC_PROMETHEUS_DIR",
            path.display()
        );
    }
    Ok(path)
}

/// `promtool`, for checking rules and the exposition format the way Prometheus' own tooling does.
pub fn promtool() -> Result<PathBuf> {
    prometheus_tool("promtool")
}
