//! The cluster as backups see it: its name, its members' status, a member's snapshot and its
//! HashKV at a revision. The engine's `Etcd` extends this trait, so a remediator backs up
//! through its own cluster, and a scripted cluster in the engine's scenario tests does too;
//! nothing here knows of runs.

use std::future::Future;

use etcdmedic_cluster::config::ClusterName;
use etcdmedic_cluster::model::ClusterStatus;

use crate::call::CallError;
use crate::config::RemediationSettings;
use crate::snapshot::ChunkStream;
use crate::vocabulary::HashKv;

/// What taking, landing and drilling a backup ask of the cluster.
pub trait BackupCluster: Send + Sync {
    fn cluster(&self) -> &ClusterName;

    /// Status of every member, MemberList and AlarmList.
    fn collect(&self) -> impl Future<Output = ClusterStatus> + Send;

    fn hash_kv(
        &self,
        endpoint: &str,
        revision: i64,
    ) -> impl Future<Output = Result<HashKv, CallError>> + Send;

    fn snapshot(
        &self,
        endpoint: &str,
    ) -> impl Future<Output = Result<ChunkStream, CallError>> + Send;
}

/// One cluster's backups: taken from `cluster`, kept and drilled under the snapshot
/// directory of its `settings`.
pub(crate) struct Backups<'a, C> {
    pub(crate) cluster: &'a C,
    pub(crate) settings: &'a RemediationSettings,
}
