//! The README's fenced blocks, and how a block is compared with what its command prints now:
//! text line by line in shape (`support::shape`: ports, ids, paths, times and sizes ignored),
//! JSON by structure (the same keys, the same kinds of values).

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;
use serde_json::Value;

use crate::support::shape;

/// The README and every chapter of the book (docs/, in SUMMARY.md's order), one after the
/// other: where the tests look for a block, wherever it lives.
pub fn documentation() -> Result<String> {
    let mut text = String::new();
    for path in documentation_files()? {
        let file = repository_root().join(&path);
        text.push_str(&std::fs::read_to_string(&file).with_context(|| format!("reading {path}"))?);
        text.push('\n');
    }
    Ok(text)
}

/// README.md and the book's chapters (`docs/...`), as SUMMARY.md lists them.
pub fn documentation_files() -> Result<Vec<String>> {
    let mut files = vec!["README.md".to_string()];
    files.extend(
        crate::book::chapters()?
            .into_iter()
            .map(|c| format!("docs/{c}")),
    );
    Ok(files)
}

/// The text of every fenced block, without its fences.
pub fn blocks(readme: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut start = None;
    let mut offset = 0;
    for line in readme.split_inclusive('\n') {
        if line.starts_with("```") {
            match start.take() {
                Some(begin) => blocks.push(readme[begin..offset].trim_end_matches('\n')),
                None => start = Some(offset + line.len()),
            }
        }
        offset += line.len();
    }
    blocks
}

/// The README's fenced block whose first line starts with `first`.
pub fn block<'a>(readme: &'a str, first: &str) -> Result<&'a str> {
    blocks(readme)
        .into_iter()
        .find(|block| block.starts_with(first))
        .with_context(|| format!("no README block starting {first:?}"))
}

/// A command the README shows (`$ ...`) and the output it shows below it.
pub struct Step {
    pub command: String,
    pub shown: String,
}

/// A block of commands and their output, one step per `$ ` line.
pub fn session(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in block.lines() {
        match (line.strip_prefix("$ "), steps.last_mut()) {
            (Some(command), _) => steps.push(Step {
                command: command.to_string(),
                shown: String::new(),
            }),
            (None, Some(step)) => {
                step.shown.push_str(line);
                step.shown.push('\n');
            }
            (None, None) => {}
        }
    }
    // A blank line between two steps is the README's, not the first command's.
    for step in &mut steps {
        let kept = step.shown.trim_end_matches('\n').len();
        step.shown.truncate(kept);
        step.shown.push('\n');
    }
    steps
}

/// Lines whose number depends on timing: the demo's narration of a run's progress
/// (`[  8.8s] [   0.01s] ...`) and a long snapshot's progress (`142 MB received, 53 MB to go`).
fn is_progress(line: &str) -> bool {
    (line.starts_with('[') && line.contains("s] ["))
        || (line.contains(" received, ") && line.contains(" to go on "))
}

/// A text's lines in shape, without progress lines.
pub fn lines_of(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|line| !is_progress(line))
        .map(shape)
        .collect()
}

/// A JSON value's structure: objects as their keys (each with its value's structure), arrays
/// as their first element's, every other value as its type.
pub fn structure(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), structure(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().take(1).map(structure).collect()),
        Value::Null => Value::Null,
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
    }
}

/// JSON as the README shows it: a line `...` stands for elements left out.
fn shown_json(text: &str) -> Option<Value> {
    let without_elisions = text.replace(",\n      ...\n", "\n");
    serde_json::from_str(&without_elisions).ok()
}

/// What the README shows for `what` is what was printed: the same JSON structure (a whole
/// document, or one document per line), or else the same lines in shape.
pub fn ensure_same_output(what: &str, shown: &str, printed: &str) -> Result<()> {
    if let Some(shown_value) = shown_json(shown) {
        let printed_value: Value = serde_json::from_str(printed)
            .with_context(|| format!("{what}: the README shows JSON, printed:\n{printed}"))?;
        ensure!(
            structure(&shown_value) == structure(&printed_value),
            "{what}: the README shows JSON of another structure than printed:\n{printed}"
        );
        return Ok(());
    }
    let per_line: Option<Vec<Value>> = shown
        .lines()
        .map(|l| serde_json::from_str(l).ok())
        .collect();
    if let Some(shown_values) = per_line.filter(|values| !values.is_empty()) {
        let printed_values = printed
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()
            .with_context(|| format!("{what}: the README shows JSON lines, printed:\n{printed}"))?;
        ensure!(
            shown_values.iter().map(structure).collect::<Vec<_>>()
                == printed_values.iter().map(structure).collect::<Vec<_>>(),
            "{what}: the README shows JSON of another structure than printed:\n{printed}"
        );
        return Ok(());
    }
    let (shown_lines, printed_lines) = (lines_of(shown), lines_of(printed));
    for (index, (shown_line, printed_line)) in shown_lines.iter().zip(&printed_lines).enumerate() {
        ensure!(
            shown_line == printed_line,
            "{what}, line {}: the README shows {shown_line:?}, printed {printed_line:?}:\n{printed}",
            index + 1
        );
    }
    ensure!(
        shown_lines.len() == printed_lines.len(),
        "{what}: the README shows {} lines, {} printed:\n{printed}",
        shown_lines.len(),
        printed_lines.len()
    );
    Ok(())
}

/// The same lines in shape, in any order (a table whose rows' order varies from run to run).
pub fn ensure_same_rows(what: &str, shown: &str, printed: &str) -> Result<()> {
    let (mut shown_lines, mut printed_lines) = (lines_of(shown), lines_of(printed));
    shown_lines.sort();
    printed_lines.sort();
    ensure!(
        shown_lines == printed_lines,
        "{what}: the README shows other rows than printed:\n{printed}"
    );
    Ok(())
}

#[test]
fn a_session_is_split_at_its_commands_and_elided_json_still_parses() -> Result<()> {
    let steps = session("$ a --x\none\ntwo\n\n$ b\n{\"k\": 1}\n");
    ensure!(steps.len() == 2 && steps[0].shown == "one\ntwo\n" && steps[1].command == "b");
    let shown = "[\n  {\n    \"m\": [\n      {\"a\": 1},\n      ...\n    ]\n  }\n]";
    ensure!(shown_json(shown).is_some());
    ensure_same_output("json", shown, "[{\"m\": [{\"a\": 2}, {\"a\": 3}]}]")?;
    ensure!(ensure_same_output("json", shown, "[{\"m\": [{\"b\": 2}]}]").is_err());
    ensure_same_output("text", "[ 1.0s] ok m1: 5 MB\n", "[ 2.5s] ok m2: 7 kB\n")?;
    ensure!(ensure_same_output("text", "[ 1.0s] ok m1\n", "[ 1.0s] failed m1\n").is_err());
    ensure_same_rows(
        "rows",
        "H\nm0 ok\nm1 - no answer\n",
        "H\nm0 - no answer\nm1 ok\n",
    )?;
    ensure!(ensure_same_rows("rows", "H\nm0 ok\n", "H\nm0 ok\nm1 ok\n").is_err());
    Ok(())
}
