//! The maps a newcomer reads stay true: ARCHITECTURE.md names only modules that exist and
//! every crate's top-level module, and docs/coverage.md measures every file of the engine and
//! the plan.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;

/// The crates whose modules ARCHITECTURE.md maps.
const CRATES: [&str; 4] = ["cluster", "exporter", "remediator", "tests"];

/// Every file and directory under `dir`, relative to the repository root (`remediator/src/x.rs`,
/// `remediator/src/engine/`).
fn tree(dir: &Path, into: &mut BTreeSet<String>) -> Result<()> {
    let root = repository_root();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let relative = path.strip_prefix(&root)?.display().to_string();
        if path.is_dir() {
            into.insert(format!("{relative}/"));
            tree(&path, into)?;
        } else {
            into.insert(relative);
        }
    }
    Ok(())
}

/// The `code` spans of a Markdown text.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// A code span that names a source file or directory: `engine/wait.rs`, `service/store/`,
/// `stored.rs`, `remediator/src/backup/`.
fn names_a_module(span: &str) -> bool {
    let path_like = !span.is_empty()
        && span
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.' | '-'));
    path_like && (span.ends_with(".rs") || (span.ends_with('/') && span.len() > 1))
}

fn sources() -> Result<BTreeSet<String>> {
    let mut paths = BTreeSet::new();
    for krate in CRATES {
        tree(&repository_root().join(krate), &mut paths)?;
    }
    Ok(paths)
}

#[test]
fn architecture_names_only_modules_that_exist() -> Result<()> {
    let text = std::fs::read_to_string(repository_root().join("ARCHITECTURE.md"))?;
    let paths = sources()?;
    let missing: Vec<&str> = code_spans(&text)
        .into_iter()
        .filter(|span| names_a_module(span))
        .filter(|span| {
            !paths
                .iter()
                .any(|path| path == span || path.ends_with(&format!("/{span}")))
        })
        .collect();
    ensure!(
        missing.is_empty(),
        "ARCHITECTURE.md names modules that do not exist: {missing:?}"
    );
    Ok(())
}

/// A crate's top-level modules: `src/*.rs` (but the crate roots) and `src/*/`.
fn top_level_modules(krate: &str) -> Result<Vec<String>> {
    let src = repository_root().join(krate).join("src");
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(&src)? {
        let path: PathBuf = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("a file name that is not UTF-8")?;
        if path.is_dir() {
            modules.push(format!("{name}/"));
        } else if let Some(module) = name.strip_suffix(".rs") {
            if !["lib", "main"].contains(&module) {
                modules.push(name.to_owned());
            }
        }
    }
    modules.sort();
    Ok(modules)
}

#[test]
fn architecture_names_every_top_level_module() -> Result<()> {
    let text = std::fs::read_to_string(repository_root().join("ARCHITECTURE.md"))?;
    let spans = code_spans(&text);
    let mut unnamed = Vec::new();
    for krate in CRATES {
        for module in top_level_modules(krate)? {
            // `engine/` is named by `engine/`, `engine/wait.rs` or `remediator/src/engine/`.
            let stem = module.trim_end_matches('/').trim_end_matches(".rs");
            let named = spans.iter().any(|span| {
                let span = span.strip_prefix(&format!("{krate}/src/")).unwrap_or(span);
                span == module
                    || span.starts_with(&format!("{stem}/"))
                    || span == format!("{stem}.rs")
            });
            if !named {
                unnamed.push(format!("{krate}/src/{module}"));
            }
        }
    }
    ensure!(
        unnamed.is_empty(),
        "ARCHITECTURE.md does not name: {unnamed:?}"
    );
    Ok(())
}

#[test]
fn coverage_measures_every_file_of_the_engine_and_the_plan() -> Result<()> {
    let text = std::fs::read_to_string(repository_root().join("docs/coverage.md"))?;
    let mut paths = BTreeSet::new();
    for dir in ["remediator/src/engine", "remediator/src/plan"] {
        tree(&repository_root().join(dir), &mut paths)?;
    }
    let unmeasured: Vec<&String> = paths
        .iter()
        .filter(|path| {
            path.ends_with(".rs") && !path.contains("/tests/") && !path.ends_with("/tests.rs")
        })
        .filter(|path| !text.contains(&format!("| `{path}` |")))
        .collect();
    ensure!(
        unmeasured.is_empty(),
        "docs/coverage.md does not measure {unmeasured:?}: run `make coverage`"
    );
    Ok(())
}
