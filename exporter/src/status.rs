//! The `status` command: collect once, print a table or JSON.

use std::time::Duration;

use etcdmedic_cluster::{table, ClusterConfig, ClusterProbe, ClusterStatus};
use futures::future::join_all;

use crate::cli::OutputFormat;

/// What the command prints and whether every member answered (exit status 0).
#[derive(Debug)]
pub struct Report {
    pub output: String,
    /// Lines for standard error beside the table: clusters whose members a guide wants
    /// patched before the next minor upgrade (JSON carries it as `upgrade_advice`).
    pub notes: Vec<String>,
    pub all_answered: bool,
}

/// One note per cluster with members whose release an upgrade guide wants patched first.
fn upgrade_notes(statuses: &[ClusterStatus]) -> Vec<String> {
    statuses
        .iter()
        .filter_map(|cluster| {
            let advised: Vec<(String, &str)> = cluster
                .members
                .iter()
                .filter_map(|m| Some((m.display_name(), m.reachable()?.upgrade_advice.as_deref()?)))
                .collect();
            let (_, advice) = advised.first()?;
            let names: Vec<&str> = advised.iter().map(|(name, _)| name.as_str()).collect();
            Some(format!(
                "note: cluster {}: not ready for its next minor upgrade ({}): {advice}",
                cluster.cluster,
                names.join(", ")
            ))
        })
        .collect()
}

/// Collects `clusters` concurrently. `timeout` overrides each cluster's `status_timeout`.
pub async fn collect(
    clusters: Vec<ClusterConfig>,
    timeout: Option<Duration>,
) -> etcdmedic_cluster::Result<Vec<ClusterStatus>> {
    let probes = clusters
        .into_iter()
        .map(|cluster| ClusterProbe::for_monitoring(cluster, false))
        .collect::<Result<Vec<_>, _>>()?;
    let collections = probes
        .iter()
        .map(|probe| probe.collect(timeout.unwrap_or(probe.config().status_timeout)));
    Ok(join_all(collections).await)
}

pub fn report(
    statuses: &[ClusterStatus],
    format: OutputFormat,
) -> Result<Report, serde_json::Error> {
    let (output, notes) = match format {
        OutputFormat::Table => (table::render(statuses), upgrade_notes(statuses)),
        OutputFormat::Json => (serde_json::to_string_pretty(statuses)? + "\n", Vec::new()),
    };
    Ok(Report {
        output,
        notes,
        // A configured endpoint that answers nothing is a problem too, member or not.
        all_answered: statuses.iter().all(|c| {
            c.all_members_reachable() && c.unlisted_endpoints.iter().all(|e| e.status.is_ok())
        }),
    })
}
