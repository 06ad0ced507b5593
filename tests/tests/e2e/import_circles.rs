//! No import circle between sibling modules of the remediator: within every module, its
//! children can be put in an order where each uses only those before it (a child may use
//! its parent and its ancestors, as Rust's modules do). A circle means a newcomer changing
//! one of its modules has to understand them all.
//!
//! Read from the source with `syn`: every `use` tree and every path that starts with
//! `crate::`, `super::` or `self::`, outside `#[cfg(test)]` modules and test files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use etcdmedic_tests::generated::repository_root;
use syn::visit::Visit;

/// A module's path inside its crate: `["service", "scheduler"]`.
type Module = Vec<String>;

/// Every module of the crate under `src` and the file it is in.
fn modules(src: &Path) -> Result<BTreeMap<Module, std::path::PathBuf>> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src)?.with_extension("");
            let mut module: Module = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| ["mod", "lib", "main"].contains(&last.as_str()))
            {
                module.pop();
            }
            if module
                .iter()
                .any(|part| part == "tests" || part.ends_with("_tests"))
            {
                continue;
            }
            found.insert(module, path);
        }
    }
    Ok(found)
}

/// The paths a file names that start with `crate`, `super` or `self`, outside test modules.
#[derive(Default)]
struct Paths(Vec<Vec<String>>);

impl Paths {
    fn tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => self.push(prefix, Some(name.ident.to_string())),
            syn::UseTree::Rename(rename) => self.push(prefix, Some(rename.ident.to_string())),
            syn::UseTree::Glob(_) => self.push(prefix, None),
            syn::UseTree::Group(group) => {
                for item in &group.items {
                    self.tree(prefix, item);
                }
            }
        }
    }

    fn push(&mut self, prefix: &[String], last: Option<String>) {
        let mut path = prefix.to_vec();
        path.extend(last);
        if path
            .first()
            .is_some_and(|first| ["crate", "super", "self"].contains(&first.as_str()))
        {
            self.0.push(path);
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.push(&segments, None);
        syn::visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        let test_only = item.attrs.iter().any(|attr| {
            attr.path().is_ident("cfg")
                && attr
                    .parse_args::<syn::Path>()
                    .is_ok_and(|p| p.is_ident("test"))
        });
        if !test_only {
            syn::visit::visit_item_mod(self, item);
        }
    }
}

/// The module `path`, seen from `from`, names: the longest of its prefixes that is a module.
fn resolve(from: &Module, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let (mut base, rest) = match path.first()?.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (from.clone(), &path[1..]),
        _ => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let base = from[..from.len().checked_sub(ups)?].to_vec();
            (base, &path[ups..])
        }
    };
    base.extend(rest.iter().cloned());
    (0..=base.len())
        .rev()
        .map(|n| base[..n].to_vec())
        .find(|candidate| modules.contains(candidate))
}

/// Strongly connected groups of more than one node.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    // Reachability is small enough to compute directly: a module's circle is the set of
    // modules it reaches that reach it back.
    let reach = |start: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(node) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|node| (node, reach(node))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (node, reached) in &reaches {
        if !reached.contains(*node) {
            continue;
        }
        let circle: BTreeSet<String> = reached
            .iter()
            .filter(|other| reaches.get(other).is_some_and(|r| r.contains(*node)))
            .cloned()
            .collect();
        if !found.contains(&circle) {
            found.push(circle);
        }
    }
    found
}

#[test]
fn the_remediators_modules_import_in_one_direction() -> Result<()> {
    let src = repository_root().join("remediator/src");
    let files = modules(&src)?;
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    // Per parent module, which child uses which, and one place each edge comes from.
    let mut graphs: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut because: BTreeMap<(Module, String, String), String> = BTreeMap::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file)?;
        let syntax =
            syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let mut paths = Paths::default();
        paths.visit_file(&syntax);
        for path in &paths.0 {
            let Some(target) = resolve(module, path, &known) else {
                continue;
            };
            let shared = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            // Siblings under the same parent: both go deeper than what they share.
            let (Some(from), Some(to)) = (module.get(shared), target.get(shared)) else {
                continue;
            };
            let parent = module[..shared].to_vec();
            graphs
                .entry(parent.clone())
                .or_default()
                .entry(from.clone())
                .or_default()
                .insert(to.clone());
            because
                .entry((parent, from.clone(), to.clone()))
                .or_insert_with(|| format!("{} uses {}", module.join("/"), path.join("::")));
        }
    }
    let mut found: BTreeMap<String, Vec<BTreeSet<String>>> = BTreeMap::new();
    for (parent, graph) in &graphs {
        for circle in circles(graph) {
            found.entry(parent.join("/")).or_default().push(circle);
        }
    }
    if !found.is_empty() {
        let mut report = String::new();
        for (parent, circles) in &found {
            for circle in circles {
                report.push_str(&format!(
                    "\nin {}/: {circle:?}",
                    if parent.is_empty() { "<crate>" } else { parent }
                ));
                let module: Module = if parent.is_empty() {
                    Vec::new()
                } else {
                    parent.split('/').map(str::to_owned).collect()
                };
                for ((p, from, to), why) in &because {
                    if *p == module && circle.contains(from) && circle.contains(to) {
                        report.push_str(&format!("\n    {from} -> {to}: {why}"));
                    }
                }
            }
        }
        anyhow::bail!("import circles between sibling modules:{report}");
    }
    Ok(())
}
