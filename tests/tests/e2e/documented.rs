//! A document's tested blocks, used as they stand: the fenced block after
//! `<!-- tested: name -->` in a file under docs/ (or the README), run with the environment a
//! test gives it, or written out as the file it shows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::support::{stderr, stdout};

/// A document (`docs/disaster-recovery.md`, `README.md`) and the directories put first on PATH
/// when its blocks run.
pub struct Document {
    path: PathBuf,
    path_dirs: Vec<PathBuf>,
}

impl Document {
    /// A document under docs/ (`disaster-recovery.md`).
    pub fn new(name: &str, path_dirs: &[&Path]) -> Document {
        Document::at(&format!("docs/{name}"), path_dirs)
    }

    /// A document at `path` from the repository's root (`README.md`).
    pub fn at(path: &str, path_dirs: &[&Path]) -> Document {
        Document {
            path: etcdmedic_tests::generated::repository_root().join(path),
            path_dirs: path_dirs.iter().map(|p| p.to_path_buf()).collect(),
        }
    }

    /// The whole document.
    pub fn text(&self) -> Result<String> {
        std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))
    }

    /// The fenced block (`sh`, `yaml`...) after `<!-- tested: name -->`.
    pub fn block(&self, name: &str) -> Result<String> {
        let text = self.text()?;
        let marker = format!("<!-- tested: {name} -->");
        let after = text
            .split_once(&marker)
            .with_context(|| format!("no {marker} in {}", self.path.display()))?
            .1;
        let block = after
            .split_once("```")
            .and_then(|(_, rest)| rest.split_once('\n'))
            .and_then(|(_, rest)| rest.split_once("```"))
            .with_context(|| format!("no fenced block after {marker}"))?
            .0;
        Ok(block.to_string())
    }

    /// The block `name` as a command, with `env`.
    pub fn command(&self, name: &str, env: &[(&str, String)]) -> Result<tokio::process::Command> {
        let mut command = tokio::process::Command::new("bash");
        command.args(["-c", &self.block(name)?]);
        let mut path: Vec<String> = self
            .path_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        path.push(std::env::var("PATH").unwrap_or_default());
        command.env("PATH", path.join(":")).env("ETCDCTL_API", "3");
        for (key, value) in env {
            command.env(key, value);
        }
        command.kill_on_drop(true);
        Ok(command)
    }

    /// Runs the block `name`, which must succeed within two minutes; its standard output.
    pub async fn run(&self, name: &str, env: &[(&str, String)]) -> Result<String> {
        let output =
            tokio::time::timeout(Duration::from_secs(120), self.command(name, env)?.output())
                .await
                .with_context(|| format!("block {name} did not finish within 120s"))??;
        ensure!(
            output.status.success(),
            "block {name} failed: {}{}",
            stdout(&output),
            stderr(&output)
        );
        Ok(stdout(&output))
    }
}
