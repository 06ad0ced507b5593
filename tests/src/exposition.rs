//! Reading a metrics exposition back, for assertions.

use anyhow::{anyhow, Context, Result};
use prometheus_parse::{Sample, Scrape, Value};

/// A parsed exposition.
#[derive(Debug)]
pub struct Exposition {
    pub text: String,
    samples: Vec<Sample>,
}

impl Exposition {
    pub fn parse(text: &str) -> Result<Exposition> {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .context("parsing the exposition")?;
        Ok(Exposition {
            text: text.to_string(),
            samples: scrape.samples,
        })
    }

    /// Every series of metric `name` whose labels include `labels`.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    }

    /// The value of the one series of `name` matching `labels`; an error lists what exists.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        match self.series(name, labels).as_slice() {
            [one] => number(&one.value),
            found => Err(anyhow!(
                "expected exactly one {name} series with {labels:?}, got {}: {:?}\nexposition:\n{}",
                found.len(),
                found.iter().map(|s| &s.labels).collect::<Vec<_>>(),
                self.text
            )),
        }
    }

    /// Names of every metric present.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.samples.iter().map(|s| s.metric.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

fn number(value: &Value) -> Result<f64> {
    match value {
        Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => Ok(*v),
        other => Err(anyhow!("not a plain number: {other:?}")),
    }
}
