//! `object_lock` destinations checked at `--config.check` and at start-up: a configuration
//! that promises backups nobody can delete is wrong about a bucket without Object Lock, and
//! says so before the first backup fails on it.

use std::collections::HashSet;

use crate::config::{ManagedCluster, Target};

use super::bucket::Bucket;

/// Every `object_lock` bucket of `clusters` that does not have Object Lock enabled (or could
/// not be asked), each as `backup destination NAME: problem`; each bucket asked once, all at
/// once, each request within its timeout.
pub async fn problems(clusters: &[ManagedCluster]) -> Vec<String> {
    let mut asked = HashSet::new();
    let mut checks = Vec::new();
    for cluster in clusters {
        for destination in &cluster.backup.destinations {
            let Target::S3(s3) = &destination.target else {
                continue;
            };
            if s3.object_lock.is_none() || !asked.insert((s3.endpoint.clone(), s3.bucket.clone())) {
                continue;
            }
            checks.push(async move {
                let checked = match Bucket::open(destination, &cluster.name) {
                    Ok(bucket) => bucket.ensure_lockable().await,
                    Err(err) => Err(err),
                };
                checked.err().map(|err| format!("backup {err}"))
            });
        }
    }
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}
