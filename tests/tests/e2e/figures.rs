//! Figures quoted outside docs/benchmarks.md come from it. Every measured quantity (a number
//! with a unit: `0.42 s`, `54 ms`, `26.2 MB`, `0.96x`; both ends of `0.27–0.42 s`) between
//! `<!-- figures from docs/benchmarks.md -->` and `<!-- end of figures -->` in the README or a
//! chapter of the book must be a figure of the benchmark file, rounded as quoted (`1.18 s` for
//! `1182.86 ms`). A new `make bench` that changes one fails this test until the text that
//! quotes it is brought up to date.

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;

const OPEN: &str = "<!-- figures from docs/benchmarks.md -->";
const CLOSE: &str = "<!-- end of figures -->";
/// Chapters that quote the benchmark, each with at least one marked passage; every other
/// document is checked too, wherever it marks one.
const QUOTING: [&str; 6] = [
    "docs/when-and-how.md",
    "docs/remediator.md",
    "docs/exporter.md",
    "docs/service.md",
    "docs/backups.md",
    "docs/fleet.md",
];

/// The marked passages of `text`.
fn passages(text: &str) -> Result<Vec<&str>> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some((_, after)) = rest.split_once(OPEN) {
        let (passage, next) = after
            .split_once(CLOSE)
            .with_context(|| format!("{OPEN} without {CLOSE}"))?;
        ensure!(!passage.contains(OPEN), "{OPEN} inside another");
        found.push(passage);
        rest = next;
    }
    Ok(found)
}

/// A measured quantity as written: its value, decimals, and unit.
#[derive(Debug, Clone, PartialEq)]
struct Quantity {
    text: String,
    value: f64,
    decimals: usize,
    unit: &'static str,
}

/// Units, each with its dimension and its size in that dimension's base.
const UNITS: [(&str, &str, f64); 8] = [
    ("ms", "time", 0.001),
    ("s", "time", 1.0),
    ("KB", "bytes", 1e3),
    ("MB", "bytes", 1e6),
    ("GB", "bytes", 1e9),
    ("MB/s", "rate", 1e6),
    ("x", "ratio", 1.0),
    ("%", "percent", 1.0),
];

fn unit(name: &str) -> Option<(&'static str, &'static str, f64)> {
    UNITS.iter().copied().find(|(u, _, _)| *u == name)
}

/// Every quantity in `text`.
fn quantities(text: &str) -> Vec<Quantity> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let number_at = |i: usize| -> Option<(usize, String)> {
        let mut j = i;
        while j < chars.len() && chars[j].is_ascii_digit() {
            j += 1;
        }
        if j + 1 < chars.len() && chars[j] == '.' && chars[j + 1].is_ascii_digit() {
            j += 1;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
        }
        (j > i).then(|| (j, chars[i..j].iter().collect()))
    };
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            && (i == 0 || !(chars[i - 1].is_ascii_alphanumeric() || chars[i - 1] == '.'));
        let Some((mut end, first)) = number_at(i).filter(|_| starts) else {
            i += 1;
            continue;
        };
        let mut numbers = vec![first];
        // A range, `0.27–0.42 s`: both ends take the unit written once.
        if end < chars.len() && chars[end] == '–' {
            if let Some((after, second)) = number_at(end + 1) {
                numbers.push(second);
                end = after;
            }
        }
        if end < chars.len()
            && chars[end] == '.'
            && end + 1 < chars.len()
            && chars[end + 1].is_ascii_digit()
        {
            // A version such as 3.5.30: not a quantity.
            while end < chars.len() && (chars[end].is_ascii_digit() || chars[end] == '.') {
                end += 1;
            }
            i = end;
            continue;
        }
        let mut u = end;
        if u < chars.len() && chars[u] == ' ' {
            u += 1;
        }
        let mut unit_end = u;
        while unit_end < chars.len()
            && (chars[unit_end].is_ascii_alphabetic()
                || chars[unit_end] == '%'
                || chars[unit_end] == '/')
        {
            unit_end += 1;
        }
        let name: String = chars[u..unit_end].iter().collect();
        if let Some((unit_name, _, _)) = unit(&name) {
            for number in numbers {
                if let Ok(value) = number.parse::<f64>() {
                    found.push(Quantity {
                        decimals: number.split_once('.').map_or(0, |(_, d)| d.len()),
                        text: format!("{number} {unit_name}"),
                        value,
                        unit: unit_name,
                    });
                }
            }
        }
        i = end.max(i + 1);
    }
    found
}

/// `quoted` is `measured` written in `quoted`'s unit, rounded to `quoted`'s decimals.
fn quotes(quoted: &Quantity, measured: &Quantity) -> bool {
    let (Some((_, dq, sq)), Some((_, dm, sm))) = (unit(quoted.unit), unit(measured.unit)) else {
        return false;
    };
    if dq != dm {
        return false;
    }
    let in_quoted_unit = measured.value * sm / sq;
    let scale = 10f64.powi(quoted.decimals as i32);
    ((in_quoted_unit * scale).round() - quoted.value * scale).abs() < 0.5
}

#[test]
fn quantities_are_read_with_their_units_and_versions_are_not() {
    let found: Vec<String> = quantities(
        "took 0.42 s (3.13 s by hand) on etcd 3.5.30, 0.27–0.42 s, 54 ms, 26.2 MB, 0.96x, m1 3 members",
    )
    .into_iter()
    .map(|q| q.text)
    .collect();
    assert_eq!(
        found,
        ["0.42 s", "3.13 s", "0.27 s", "0.42 s", "54 ms", "26.2 MB", "0.96 x"]
    );
    let measured = &quantities("1182.86 ms")[0];
    assert!(quotes(&quantities("1.18 s")[0], measured));
    assert!(!quotes(&quantities("1.19 s")[0], measured));
    assert!(!quotes(&quantities("1.18 MB")[0], measured));
    assert!(quotes(&quantities("1.7 GB")[0], &quantities("1711 MB")[0]));
    assert!(passages("a <!-- figures from docs/benchmarks.md --> b").is_err());
}

#[test]
fn every_quoted_figure_is_in_the_benchmark_file() -> Result<()> {
    let root = repository_root();
    let measured = quantities(&std::fs::read_to_string(root.join("docs/benchmarks.md"))?);
    // Every document's missing figures at once: a new benchmark run moves many.
    let mut stale = Vec::new();
    for document in crate::readme::documentation_files()? {
        if document == "docs/benchmarks.md" {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&document))?;
        let passages = passages(&text)?;
        ensure!(
            !passages.is_empty() || !QUOTING.contains(&document.as_str()),
            "{document} marks no figures"
        );
        let missing: Vec<String> = passages
            .iter()
            .flat_map(|p| quantities(p))
            .filter(|q| !measured.iter().any(|m| quotes(q, m)))
            .map(|q| q.text)
            .collect();
        if !missing.is_empty() {
            stale.push(format!("{document}: {missing:?}"));
        }
    }
    ensure!(
        stale.is_empty(),
        "figures quoted that docs/benchmarks.md does not have:\n{}",
        stale.join("\n")
    );
    Ok(())
}
