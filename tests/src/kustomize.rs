//! deploy/kubernetes rendered by kubectl's built-in kustomize, as the documents it prints.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::generated::repository_root;

/// deploy/kubernetes/base and every overlay, the base first.
pub fn kustomizations() -> Result<Vec<PathBuf>> {
    let kubernetes = repository_root().join("deploy/kubernetes");
    let mut dirs = vec![kubernetes.join("base")];
    let mut overlays = Vec::new();
    for overlay in std::fs::read_dir(kubernetes.join("overlays"))? {
        overlays.push(overlay?.path());
    }
    overlays.sort();
    dirs.extend(overlays);
    Ok(dirs)
}

/// What `kubectl kustomize <dir>` printed, and what it warned about on stderr.
pub struct Render {
    pub text: String,
    pub warnings: String,
}

/// `kubectl kustomize <dir>`.
pub fn render(dir: &Path) -> Result<Render> {
    let kubectl = crate::python::tool("kubectl").context(
        "could not find kubectl in the deps' virtual environment or on PATH; run scripts/install-deps.sh",
    )?;
    let output = Command::new(kubectl).arg("kustomize").arg(dir).output()?;
    ensure!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Render {
        text: String::from_utf8(output.stdout)?,
        warnings: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The documents of a multi-document YAML text.
pub fn documents(text: &str) -> Result<Vec<Value>> {
    text.split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .map(|doc| yaml_serde::from_str::<Value>(doc).context("parsing a rendered document"))
        .collect()
}

/// The documents of one kind.
pub fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The document of `kind` named `name`.
pub fn named<'a>(docs: &'a [Value], kind_name: &str, name: &str) -> Option<&'a Value> {
    kind(docs, kind_name)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
}
