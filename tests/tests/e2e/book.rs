//! The book under docs/: it builds with mdBook without a warning, every document under docs/
//! is one of its chapters, and every link and anchor of the built pages resolves: within the
//! book to a page and an element id, outside it to a file of the repository.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;

/// The chapters SUMMARY.md lists, as paths under docs/.
pub fn chapters() -> Result<Vec<String>> {
    let summary = std::fs::read_to_string(repository_root().join("docs/SUMMARY.md"))
        .context("reading docs/SUMMARY.md")?;
    Ok(summary
        .lines()
        .filter_map(|line| line.split_once("](").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(')').map(|(path, _)| path.to_string()))
        .collect())
}

fn mdbook() -> Result<PathBuf> {
    let path = etcdmedic_tests::python::deps_dir().join("mdbook/bin/mdbook");
    ensure!(
        path.is_file(),
        "could not find {}; run scripts/install-deps.sh",
        path.display()
    );
    Ok(path)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `a/b/../c` as `a/c`; `None` when it climbs above its start.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// The values of every `href="..."` and `src="..."` of an HTML page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["href=\"", "src=\""] {
        for piece in html.split(attribute).skip(1) {
            if let Some((value, _)) = piece.split_once('"') {
                found.push(value.replace("&amp;", "&"));
            }
        }
    }
    found
}

fn has_id(html: &str, id: &str) -> bool {
    html.contains(&format!("id=\"{id}\""))
}

#[test]
fn every_document_under_docs_is_a_chapter_of_the_book() -> Result<()> {
    let docs = repository_root().join("docs");
    let listed: BTreeSet<String> = chapters()?.into_iter().collect();
    let mut missing = Vec::new();
    for file in files_under(&docs)? {
        let relative = file.strip_prefix(&docs)?.to_string_lossy().into_owned();
        if relative.ends_with(".md") && relative != "SUMMARY.md" && !listed.contains(&relative) {
            missing.push(relative);
        }
    }
    ensure!(missing.is_empty(), "not in docs/SUMMARY.md: {missing:?}");
    for chapter in &listed {
        ensure!(
            docs.join(chapter).is_file(),
            "SUMMARY.md lists {chapter}, which is not there"
        );
    }
    Ok(())
}

#[test]
fn the_book_builds_and_every_link_resolves() -> Result<()> {
    let root = repository_root();
    let out = tempfile::Builder::new()
        .prefix("etcdmedic-book-")
        .tempdir()?;
    let output = Command::new(mdbook()?)
        .arg("build")
        .arg(root.join("docs"))
        .arg("--dest-dir")
        .arg(out.path())
        .output()?;
    let log = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "mdbook build failed:\n{log}");
    ensure!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "mdbook build warned:\n{log}"
    );

    let mut broken = Vec::new();
    let pages: Vec<PathBuf> = files_under(out.path())?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "html"))
        .collect();
    ensure!(pages.len() > 30, "only {} pages built", pages.len());
    for page in &pages {
        let relative_page = page.strip_prefix(out.path())?;
        // mdBook's not-found page links from the site's root, wherever it is served.
        if relative_page == Path::new("404.html") {
            continue;
        }
        let html = std::fs::read_to_string(page)?;
        let dir = relative_page.parent().unwrap_or(Path::new(""));
        for reference in references(&html) {
            if reference.contains("://") || reference.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = match reference.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (reference.as_str(), None),
            };
            let path = path.split('?').next().unwrap_or_default();
            let where_ = format!("{}: {reference}", relative_page.display());
            if path.is_empty() {
                if let Some(fragment) = fragment.filter(|f| !f.is_empty()) {
                    if !has_id(&html, fragment) {
                        broken.push(format!("{where_} (no such id on the page)"));
                    }
                }
                continue;
            }
            match normalise(&dir.join(path)) {
                // Inside the book: a page (or a directory with its index) and its id.
                Some(inside) => {
                    let target = out.path().join(&inside);
                    let target = if target.is_dir() {
                        target.join("index.html")
                    } else {
                        target
                    };
                    if !target.is_file() {
                        broken.push(format!("{where_} (no page)"));
                    } else if let Some(fragment) = fragment.filter(|f| !f.is_empty()) {
                        if target.extension().is_some_and(|e| e == "html")
                            && !has_id(&std::fs::read_to_string(&target)?, fragment)
                        {
                            broken.push(format!("{where_} (no such id)"));
                        }
                    }
                }
                // Outside the book: a file or directory of the repository, seen from docs/
                // (mdBook writes a link to a Markdown file as one to its page: `x.md` -> `x.html`).
                None => {
                    let in_repository =
                        normalise(&Path::new("docs").join(dir).join(path)).unwrap_or_default();
                    let exists = root.join(&in_repository).exists()
                        || (in_repository.extension().is_some_and(|e| e == "html")
                            && root.join(in_repository.with_extension("md")).is_file());
                    if in_repository.as_os_str().is_empty() || !exists {
                        broken.push(format!("{where_} (no file in the repository)"));
                    }
                }
            }
        }
    }
    ensure!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    Ok(())
}

/// A heading's anchor as GitHub and mdBook make it: lower case, spaces as `-`, anything but
/// letters, digits, `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (outside fenced blocks).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut found = BTreeSet::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// A newcomer reads the README whole: what etcdmedic is, the quick start, the index. The rest
/// is the book's.
#[test]
fn the_readme_stays_under_250_lines() -> Result<()> {
    let lines = std::fs::read_to_string(repository_root().join("README.md"))?
        .lines()
        .count();
    ensure!(
        lines <= 250,
        "the README has {lines} lines; move the details into the book"
    );
    Ok(())
}

/// The README is read on the repository's page, not in the book: every relative link of it
/// must name a file of the repository, and every `#anchor` a heading there.
#[test]
fn every_link_of_the_readme_resolves() -> Result<()> {
    let root = repository_root();
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let mut broken = Vec::new();
    for piece in readme.split("](").skip(1) {
        let Some((target, _)) = piece.split_once(')') else {
            continue;
        };
        if target.contains("://") {
            continue;
        }
        let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
        let file = if path.is_empty() {
            root.join("README.md")
        } else {
            root.join(path)
        };
        if !file.exists() {
            broken.push(format!("{target} (no such file)"));
        } else if !fragment.is_empty()
            && !anchors(&std::fs::read_to_string(&file)?).contains(fragment)
        {
            broken.push(format!("{target} (no such heading)"));
        }
    }
    ensure!(
        broken.is_empty(),
        "the README's broken links:\n{}",
        broken.join("\n")
    );
    Ok(())
}

#[test]
fn links_are_resolved_inside_and_outside_the_book() {
    assert_eq!(
        anchor(" Quick start: watch first, on Kubernetes with kube-prometheus-stack"),
        "quick-start-watch-first-on-kubernetes-with-kube-prometheus-stack"
    );
    assert_eq!(
        normalise(Path::new("install/../deploy.html")),
        Some(PathBuf::from("deploy.html"))
    );
    assert_eq!(normalise(Path::new("../deploy/x.yaml")), None);
    assert_eq!(
        references("<a href=\"a.html#b\">x</a><img src=\"s.png\">"),
        ["a.html#b", "s.png"]
    );
}
