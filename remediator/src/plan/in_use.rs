//! A member's in-use figure that lags. etcd computes `dbSizeInUse` when its backend commits,
//! and pages a compaction freed count as free only from a later commit on: on a quiet
//! cluster right after a compaction, some members keep reporting the figure from before it
//! (for seconds, or until the next writes) while their peers already report the new one. All
//! voting members hold the same keyspace, so a member that reports far more in use than a
//! caught-up peer is judged at that peer's figure rather than skipped as not fragmented.

use etcdmedic_cluster::model::EndpointStatus;
use etcdmedic_cluster::table::human_bytes;

/// More than this many times a peer's figure is not packing (bbolt pages written in place
/// are at least half full, a defragmented member's fuller): it is a figure that lags.
const LAG_FACTOR: u64 = 2;
/// Differences smaller than this are noise on small databases.
const MIN_LAG_BYTES: u64 = 16 * 1024 * 1024;

/// What to judge `member` by: its own figure, or (with the sentence saying why) a copy of its
/// status with the lowest in-use figure among `peers`, the other caught-up voting members.
pub(super) fn judged(
    member: &EndpointStatus,
    peers: &[&EndpointStatus],
) -> Option<(EndpointStatus, String)> {
    let lowest = peers
        .iter()
        .filter(|peer| peer.member_id != member.member_id)
        .map(|peer| peer.db_size_in_use_bytes)
        .min()?;
    let reported = member.db_size_in_use_bytes;
    if reported <= lowest.saturating_mul(LAG_FACTOR) || reported - lowest < MIN_LAG_BYTES {
        return None;
    }
    let percent = |bytes: u64| bytes as f64 * 100.0 / member.db_size_bytes.max(1) as f64;
    let note = format!(
        "reports {} in use ({:.0}%), a peer only {} for the same keyspace: etcd's figure lags \
         after a compaction; judged at {} ({:.0}%)",
        human_bytes(reported),
        percent(reported),
        human_bytes(lowest),
        human_bytes(lowest),
        percent(lowest),
    );
    let mut judged = member.clone();
    judged.db_size_in_use_bytes = lowest;
    Some((judged, note))
}

#[cfg(test)]
mod tests {
    use etcdmedic_cluster::model::{MemberId, QuotaSource};

    use super::*;

    const MB: u64 = 1_000_000;

    fn member(id: u64, db_size: u64, in_use: u64) -> EndpointStatus {
        EndpointStatus {
            member_id: MemberId(id),
            cluster_id: 1,
            revision: 10,
            version: "3.5.1".into(),
            storage_version: None,
            downgrade: None,
            upgrade_advice: None,
            db_size_bytes: db_size,
            db_size_in_use_bytes: in_use,
            quota_bytes: 2_147_483_648,
            quota_source: QuotaSource::Metrics,
            stop_grpc_on_defrag: None,
            leader: Some(MemberId(1)),
            raft_term: 2,
            raft_index: 10,
            raft_applied_index: 10,
            is_learner: false,
            errors: vec![],
        }
    }

    #[test]
    fn a_member_reporting_far_more_in_use_than_a_peer_is_judged_at_the_peers_figure() {
        let stale = member(3, 192 * MB, 184 * MB);
        let peers = [member(1, 192 * MB, 64 * MB), member(2, 192 * MB, 63 * MB)];
        let (judged, note) = judged(&stale, &[&peers[0], &peers[1], &stale]).unwrap();
        assert_eq!(judged.db_size_in_use_bytes, 63 * MB);
        assert_eq!(
            note,
            "reports 184 MB in use (96%), a peer only 63 MB for the same keyspace: etcd's figure \
             lags after a compaction; judged at 63 MB (33%)"
        );
    }

    #[test]
    fn ordinary_differences_between_members_are_left_alone() {
        // Undefragmented pages are half full at worst: up to twice a defragmented peer.
        let packed = member(1, 64 * MB, 50 * MB);
        let loose = member(2, 192 * MB, 100 * MB);
        assert!(judged(&loose, &[&packed, &loose]).is_none());
        // A small database: the difference is noise.
        let tiny = member(3, 20 * MB, 12 * MB);
        let tiny_peer = member(4, 20 * MB, 2 * MB);
        assert!(judged(&tiny, &[&tiny_peer]).is_none());
        // No peer, nothing to compare with.
        assert!(judged(&loose, &[&loose]).is_none());
    }
}
