//! Every call the engine makes to etcd, behind one trait: [`Live`](super::live::Live) over
//! etcd-client in production, a scripted fake in the scenario tests. The engine keeps its
//! own deadlines (see `wait`); these calls are the raw operations.

use std::future::Future;
use std::time::Duration;

use etcdmedic_cluster::model::{EndpointStatus, MemberId};

pub(crate) use crate::backup::cluster::BackupCluster;
pub use crate::call::CallError;

pub use crate::snapshot::{Chunk, ChunkStream};
pub use crate::vocabulary::HashKv;

/// The etcd operations a run uses: those a backup asks for ([`BackupCluster`]: the cluster's
/// name, `collect` with each call within [`call_timeout`](Self::call_timeout), HashKV and a
/// snapshot), and the ones below. Members are addressed by client URL.
pub trait Etcd: BackupCluster {
    /// How long one member may take to answer one call (the cluster's `status_timeout`).
    fn call_timeout(&self) -> Duration;

    fn member_status(
        &self,
        endpoint: &str,
    ) -> impl Future<Output = Result<EndpointStatus, CallError>> + Send;

    /// A serializable count-only read, which etcd blocks while the member defragments.
    fn serializable_read(
        &self,
        endpoint: &str,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    fn defragment(&self, endpoint: &str) -> impl Future<Output = Result<(), CallError>> + Send;

    /// MoveLeader, sent to the leader at `via`.
    fn move_leader(
        &self,
        via: &str,
        to: MemberId,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// A physical compaction to `revision`.
    fn compact(
        &self,
        via: &str,
        revision: i64,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// Deactivates `member`'s NOSPACE alarm.
    fn disarm_nospace(
        &self,
        via: &str,
        member: MemberId,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// A write NOSPACE refuses and that leaves nothing behind: a lease granted and revoked.
    fn write_probe(&self, via: &str) -> impl Future<Output = Result<(), CallError>> + Send;
}
