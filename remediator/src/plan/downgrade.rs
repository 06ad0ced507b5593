//! Whether a downgrade is under way: a run refuses a cluster mid-downgrade (its members may
//! run different releases), and the downgrade verbs read the same answer.

use etcdmedic_cluster::model::ClusterStatus;

/// `3.6` of `3.6.15`.
pub fn minor(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The target minor version of an enabled downgrade, from the members that report one.
pub fn enabled_target(status: &ClusterStatus) -> Option<String> {
    status
        .members
        .iter()
        .filter_map(|m| m.reachable()?.downgrade.as_ref())
        .find(|d| d.enabled)
        .map(|d| minor(&d.target_version))
}
