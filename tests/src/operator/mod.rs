//! What prometheus-operator generates from the shipped custom resources, for a real Prometheus
//! and Alertmanager without Kubernetes.
//!
//! [`scrape`]: the scrape configuration of a ServiceMonitor.
//!
//! The relabelling is the operator's, rule for rule and in its order (its golden test files,
//! e.g. `pkg/prometheus/testdata/GenerateRelabelConfig.golden` and
//! `HonorLabelsOverriding.golden`: the selector's and the port's `keep`, `node`/`pod` from
//! the address's target, `namespace`, `service`, `pod`, `container`, the phase `drop`, `job`
//! from the Service's name or its `jobLabel`, `endpoint` = the port's name, then the
//! endpoint's own `relabelings`, then the shard `keep`). Only discovery differs: where the
//! operator asks Kubernetes (`kubernetes_sd_configs`, role `endpoints`), a file lists each
//! target with the `__meta_kubernetes_*` labels Kubernetes discovery would give it, so the
//! same rules see the same input. The interval is the test's, not the monitor's.
//!
//! [`alertmanager`]: the Alertmanager configuration of an AlertmanagerConfig: its route
//! first among the root route's, `continue: true`, receivers named
//! `<namespace>/<name>/<receiver>`, and a `namespace="<its namespace>"` matcher added to the
//! route and to both sides of every inhibit rule (`pkg/alertmanager/amcfg.go`, and golden
//! files such as `skeleton_base,_CR_with_inhibition_rules_only.golden`).
//!
//! A field either does not reproduce is an error, so the shipped resources cannot outgrow the
//! tests without them saying so.

use anyhow::{bail, Result};
use serde_json::{Map, Value};

pub mod alertmanager;
pub mod scrape;

pub use scrape::from_manifests;

/// An error naming the first of `fields` not in `known`.
fn unsupported(fields: &Map<String, Value>, known: &[&str], what: &str) -> Result<()> {
    if let Some(field) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        bail!(
            "{what} uses {field}, which the operator-equivalent configuration does not reproduce"
        );
    }
    Ok(())
}
