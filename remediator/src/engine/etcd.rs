//! Every call the engine makes to etcd, behind one trait: [`Live`](super::live::Live) over
//! etcd-client in production, a scripted fake in the scenario tests. The engine keeps its
//! own deadlines (see `wait`); these calls are the raw operations.

use std::future::Future;
use std::time::Duration;

use etcdmedic_cluster::config::ClusterName;
use etcdmedic_cluster::model::{ClusterStatus, EndpointStatus, MemberId};

pub use crate::call::CallError;

pub use crate::snapshot::{Chunk, ChunkStream};
pub use crate::vocabulary::HashKv;

/// The etcd operations a run uses. Members are addressed by client URL.
pub trait Etcd: Send + Sync {
    fn cluster(&self) -> &ClusterName;

    /// How long one member may take to answer one call (the cluster's `status_timeout`).
    fn call_timeout(&self) -> Duration;

    /// Status of every member, MemberList and AlarmList, each call within
    /// [`call_timeout`](Self::call_timeout).
    fn collect(&self) -> impl Future<Output = ClusterStatus> + Send;

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
