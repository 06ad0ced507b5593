//! Every unknown key of a file at once. Each block of the configuration refuses keys it does
//! not know, but serde stops at the first; a file with two typos would take two restarts to
//! fix. So when the first refusal comes, the file is read again as a YAML tree, every key
//! the refusing block does not know is recorded (with its path and the closest known key)
//! and taken out, and the tree is read again, until no block refuses a key.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use yaml_serde::{Mapping, Value};

use crate::error::ConfigProblems;

/// More blocks with unknown keys than this are summed up rather than each re-read.
const MAX_BLOCKS: usize = 50;

/// A problem that is not an unknown key, found once the unknown ones were taken out.
pub(crate) struct Other {
    pub path: String,
    pub message: String,
}

/// Records every unknown key in `tree` under `problems`, then deserializes what is left.
/// `Err(None)`: only unknown keys were wrong; `Err(Some(other))`: something else is wrong too.
pub(crate) fn collect<T: DeserializeOwned>(
    mut tree: Value,
    problems: &mut ConfigProblems,
) -> Result<T, Option<Other>> {
    for _ in 0..MAX_BLOCKS {
        let err = match serde_path_to_error::deserialize::<_, T>(tree.clone()) {
            Ok(value) if problems.is_empty() => return Ok(value),
            Ok(_) => return Err(None),
            Err(err) => err,
        };
        let message = err.inner().to_string();
        let other = || {
            Some(Other {
                path: err.path().to_string(),
                message: message.clone(),
            })
        };
        // The path ends with the unknown key; the block is what holds it.
        let mut segments: Vec<&Segment> = err.path().iter().collect();
        if !matches!(segments.pop(), Some(Segment::Map { .. })) {
            return Err(other());
        }
        let Some(known) = known_keys(&message) else {
            return Err(other());
        };
        let Some(block) = block_at(&mut tree, &segments) else {
            return Err(other());
        };
        let parent = render(&segments);
        let unknown: Vec<Value> = block
            .keys()
            .filter(|key| !key.as_str().is_some_and(|key| known.contains(&key)))
            .cloned()
            .collect();
        if unknown.is_empty() {
            return Err(other());
        }
        for key in unknown {
            let name = key_text(&key);
            let at = if parent.is_empty() {
                name.clone()
            } else {
                format!("{parent}.{name}")
            };
            problems.push(at, describe(&name, &known));
            block.remove(&key);
        }
    }
    problems.push(
        "(file)",
        format!("more than {MAX_BLOCKS} blocks have unknown keys; fix these first"),
    );
    Err(None)
}

/// The keys a block knows, from serde's refusal: "unknown field `x`, expected one of `a`,
/// `b`" (or "expected `a`", "expected `a` or `b`", "there are no fields"). `None` for any
/// other error.
fn known_keys(message: &str) -> Option<Vec<&str>> {
    let rest = message.strip_prefix("unknown field `")?;
    // The unknown key itself may hold anything; the known ones are Rust field names.
    let (_, list) = rest.rsplit_once(", expected ").or_else(|| {
        rest.rsplit_once(", there are no fields")
            .map(|(a, _)| (a, ""))
    })?;
    Some(list.split('`').skip(1).step_by(2).collect())
}

/// `clusters[0].tls`, as the configuration's other messages name keys.
fn render(segments: &[&Segment]) -> String {
    let mut text = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => text.push_str(&format!("[{index}]")),
            Segment::Map { key } if text.is_empty() => text.push_str(key),
            Segment::Map { key } => text.push_str(&format!(".{key}")),
            _ => text.push_str(".?"),
        }
    }
    text
}

/// The mapping at `segments` in `tree`.
fn block_at<'a>(tree: &'a mut Value, segments: &[&Segment]) -> Option<&'a mut Mapping> {
    let mut node = tree;
    for segment in segments {
        node = match segment {
            Segment::Seq { index } => node.as_sequence_mut()?.get_mut(*index)?,
            Segment::Map { key } => node.as_mapping_mut()?.get_mut(key.as_str())?,
            _ => return None,
        };
    }
    node.as_mapping_mut()
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        other => yaml_serde::to_string(other)
            .map(|text| text.trim_end().to_string())
            .unwrap_or_else(|_| "?".into()),
    }
}

/// "unknown key, did you mean `settle_time`? (expected one of `a`, `b`)".
fn describe(key: &str, known: &[&str]) -> String {
    let listed = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let expected = if known.is_empty() {
        "this block takes no keys".to_string()
    } else {
        format!("expected one of {listed}")
    };
    let closest = known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(similarity, _)| *similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, name)) => format!("unknown key, did you mean `{name}`? ({expected})"),
        None => format!("unknown key ({expected})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serdes_refusals_give_the_known_keys() {
        assert_eq!(
            known_keys("unknown field `x`, expected one of `a`, `b`, `c`"),
            Some(vec!["a", "b", "c"])
        );
        assert_eq!(
            known_keys("unknown field `x`, expected `a`"),
            Some(vec!["a"])
        );
        assert_eq!(
            known_keys("unknown field `a, expected `b``, expected `a` or `b`"),
            Some(vec!["a", "b"])
        );
        assert_eq!(
            known_keys("unknown field `x`, there are no fields"),
            Some(vec![])
        );
        assert_eq!(known_keys("invalid type: string"), None);
    }

    #[test]
    fn the_closest_known_key_is_suggested_only_when_close() {
        let known = ["settle_time", "snapshot_dir", "compact_first"];
        assert_eq!(
            describe("setle_time", &known),
            "unknown key, did you mean `settle_time`? (expected one of `settle_time`, `snapshot_dir`, `compact_first`)"
        );
        assert!(describe("zzz", &known).starts_with("unknown key (expected one of"));
    }
}
