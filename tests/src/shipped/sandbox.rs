//! A process's filesystem: a temporary root with what it is given laid out under it, each file
//! with the owner and mode it would have, and every path and address of its arguments and
//! configuration moved onto the root and onto loopback.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::unistd::{chown, Gid, Uid};
use serde_json::Value;
use tempfile::TempDir;

use super::Identity;
use crate::certs::TestPki;

/// root:root, as the image's own directories and a node's files are.
pub const ROOT: (u32, u32) = (0, 0);

/// A file laid out for the process that is a credential: a Secret's key, a node's file.
#[derive(Debug, Clone)]
pub struct Credential {
    /// As the process names it.
    pub path: String,
    /// Where it came from: `Secret etcdmedic-backup-s3`, `hostPath /etc/kubernetes/pki/etcd`.
    pub from: String,
}

pub struct Sandbox {
    root: TempDir,
    pki: TestPki,
    credentials: Vec<Credential>,
}

impl Sandbox {
    pub fn new() -> Result<Sandbox> {
        let root = tempfile::Builder::new()
            .prefix("etcdmedic-shipped-")
            .tempdir()?;
        // Every user may walk the root, as in an image.
        std::fs::set_permissions(root.path(), PermissionsExt::from_mode(0o755))?;
        let pki = TestPki::generate(&root.path().join(".pki"), true, "localhost")?;
        std::fs::set_permissions(root.path().join(".pki"), PermissionsExt::from_mode(0o700))?;
        Ok(Sandbox {
            root,
            pki,
            credentials: Vec::new(),
        })
    }

    /// Where `inside` (an absolute path as the process names it) is on this machine.
    pub fn host_path(&self, inside: &str) -> PathBuf {
        self.root.path().join(inside.trim_start_matches('/'))
    }

    /// A directory at `inside`, its parents root's (0755) as in an image.
    pub fn dir(&self, inside: &str, mode: u32, owner: (u32, u32)) -> Result<PathBuf> {
        let path = self.host_path(inside);
        let mut dir = self.root.path().to_path_buf();
        for part in Path::new(inside.trim_start_matches('/')).components() {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
                own(&dir, 0o755, ROOT)?;
            }
        }
        own(&path, mode, owner)?;
        Ok(path)
    }

    /// A file at `inside`. `credential` names where a credential came from; such files are
    /// what [`Sandbox::credentials`] lists.
    pub fn file(
        &mut self,
        inside: &str,
        content: &[u8],
        mode: u32,
        owner: (u32, u32),
        credential: Option<&str>,
    ) -> Result<()> {
        let path = self.host_path(inside);
        if let Some(parent) = Path::new(inside).parent().and_then(Path::to_str) {
            if !self.host_path(parent).is_dir() {
                self.dir(parent, 0o755, ROOT)?;
            }
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        own(&path, mode, owner)?;
        if let Some(from) = credential {
            self.credentials.push(Credential {
                path: inside.to_string(),
                from: from.to_string(),
            });
        }
        Ok(())
    }

    /// A plausible content for a file named `name`: a PEM certificate (the CA's for `ca*`),
    /// a PEM key, or a token.
    pub fn plausible(&self, name: &str) -> Result<Vec<u8>> {
        self.plausible_from("", name)
    }

    /// [`plausible`](Self::plausible) for the key `name` of `source` (a Secret): a token
    /// names both, so two Secrets with a `token` key hold two tokens, as real ones do.
    pub fn plausible_from(&self, source: &str, name: &str) -> Result<Vec<u8>> {
        let source = if name.ends_with(".key") {
            &self.pki.client_key_file
        } else if name.ends_with(".crt") || name.ends_with(".pem") {
            if name.starts_with("ca") {
                &self.pki.ca_file
            } else {
                &self.pki.client_cert_file
            }
        } else {
            return Ok(format!("example-{source}{name}-3f6c0a9d1b7e4452\n").into_bytes());
        };
        Ok(std::fs::read(source)?)
    }

    /// The credentials laid out that `who` can read, as the files are owned and moded, and
    /// that are not among `needed` (paths as the process names them).
    pub fn unneeded_credentials(
        &self,
        needed: &BTreeSet<String>,
        who: &Identity,
    ) -> Result<Vec<Credential>> {
        let mut unneeded = Vec::new();
        for credential in &self.credentials {
            let metadata = std::fs::metadata(self.host_path(&credential.path))?;
            if !needed.contains(&credential.path) && may_read(&metadata, who) {
                unneeded.push(credential.clone());
            }
        }
        Ok(unneeded)
    }

    /// An argument or configuration value as the process gets it here: an absolute path
    /// under the root, an address or URL on loopback (same port), anything else as it is.
    pub fn rebase(&self, value: &str) -> String {
        if value.starts_with('/') {
            return self.host_path(value).display().to_string();
        }
        if let Ok(address) = value.parse::<SocketAddr>() {
            return format!("127.0.0.1:{}", address.port());
        }
        if value.contains("://") && !value.contains('{') {
            if let Ok(mut url) = url::Url::parse(value) {
                if url.host().is_some() && url.set_host(Some("127.0.0.1")).is_ok() {
                    return url.as_str().trim_end_matches('/').to_string();
                }
            }
        }
        value.to_string()
    }

    /// A configuration file's text with every value rebased.
    pub fn rebase_config(&self, text: &str) -> Result<String> {
        let mut config: Value = yaml_serde::from_str(text).context("parsing a configuration")?;
        self.rebase_value(&mut config);
        Ok(yaml_serde::to_string(&config)?)
    }

    fn rebase_value(&self, value: &mut Value) {
        match value {
            Value::String(text) => *text = self.rebase(text),
            Value::Array(items) => items.iter_mut().for_each(|v| self.rebase_value(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.rebase_value(v)),
            _ => {}
        }
    }
}

fn own(path: &Path, mode: u32, (uid, gid): (u32, u32)) -> Result<()> {
    chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .with_context(|| format!("chown {uid}:{gid} {}", path.display()))?;
    std::fs::set_permissions(path, PermissionsExt::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Whether `who`, without capabilities, may read a file with `metadata`.
fn may_read(metadata: &std::fs::Metadata, who: &Identity) -> bool {
    let mode = metadata.mode();
    if metadata.uid() == who.uid {
        mode & 0o400 != 0
    } else if metadata.gid() == who.gid || who.groups.contains(&metadata.gid()) {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    }
}
