//! The `status` command: collect once, print a table or JSON.

use std::time::Duration;

use etcdmedic_cluster::{table, ClusterConfig, ClusterProbe, ClusterStatus};
use futures::future::join_all;

use crate::cli::OutputFormat;

/// What the command prints and whether every member answered (exit status 0).
#[derive(Debug)]
pub struct Report {
    pub output: String,
    pub all_answered: bool,
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
    let output = match format {
        OutputFormat::Table => table::render(statuses),
        OutputFormat::Json => serde_json::to_string_pretty(statuses)? + "\n",
    };
    Ok(Report {
        output,
        // A configured endpoint that answers nothing is a problem too, member or not.
        all_answered: statuses.iter().all(|c| {
            c.all_members_reachable() && c.unlisted_endpoints.iter().all(|e| e.status.is_ok())
        }),
    })
}
