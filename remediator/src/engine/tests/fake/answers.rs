//! How the fake cluster answers each call of the [`Etcd`] trait, from its state.

use std::time::Duration;

use etcdmedic_cluster::config::ClusterName;
use etcdmedic_cluster::model::{
    AlarmKind, ClusterStatus, Downgrade, EndpointStatus, MemberId, MemberStatus, Membership,
    ProbeError, QuotaSource,
};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{
    endpoint, Call, Failing, FakeEtcd, Member, MoveBehavior, SnapshotBehavior, State, QUOTA,
};
use crate::engine::etcd::{BackupCluster, CallError, Chunk, ChunkStream, Etcd, HashKv};

fn status_of(state: &State, member: &Member) -> EndpointStatus {
    // Raft entries outnumber revisions (every request is an entry, only writes are revisions).
    let applied =
        (10_000 + state.revision as u64 + state.written()).saturating_sub(member.applied_behind);
    EndpointStatus {
        member_id: member.id,
        cluster_id: 7,
        revision: state.revision,
        version: "3.5.1".into(),
        storage_version: None,
        downgrade: state.downgrade_target.as_ref().map(|target| Downgrade {
            enabled: true,
            target_version: target.clone(),
        }),
        upgrade_advice: None,
        db_size_bytes: member.db_size,
        db_size_in_use_bytes: member.in_use,
        quota_bytes: QUOTA,
        quota_source: QuotaSource::Metrics,
        stop_grpc_on_defrag: None,
        leader: state.leader,
        raft_term: 2,
        raft_index: applied,
        raft_applied_index: applied,
        is_learner: member.learner,
        errors: vec![],
    }
}

fn member_named<'a>(state: &'a State, endpoint: &str) -> Option<&'a Member> {
    state
        .members
        .iter()
        .find(|m| self::endpoint(m.name) == endpoint)
}

fn name_of(endpoint: &str) -> String {
    endpoint
        .trim_start_matches("http://")
        .split('.')
        .next()
        .unwrap_or("?")
        .to_string()
}

fn down() -> CallError {
    CallError::Unreachable("connection refused".into())
}

impl BackupCluster for FakeEtcd {
    fn cluster(&self) -> &ClusterName {
        &self.name
    }

    async fn collect(&self) -> ClusterStatus {
        self.record(Call::Collect);
        let state = self.lock();
        let members = state
            .members
            .iter()
            .map(|m| MemberStatus {
                endpoint: endpoint(m.name),
                id: Some(m.id),
                name: Some(m.name.to_string()),
                is_learner: m.learner,
                peer_urls: Vec::new(),
                alarms: state
                    .alarms
                    .iter()
                    .filter(|a| a.member_id == m.id)
                    .map(|a| a.alarm)
                    .collect(),
                probe_latency: Duration::from_millis(1),
                status: if m.up {
                    Ok(status_of(&state, m))
                } else {
                    Err(ProbeError::Unreachable("connection refused".into()))
                },
            })
            .collect();
        let any_up = state.members.iter().any(|m| m.up);
        ClusterStatus {
            cluster: "fake".into(),
            members,
            unlisted_endpoints: vec![],
            membership: if any_up {
                Ok(Membership {
                    cluster_id: 7,
                    voting_members: state.members.iter().filter(|m| !m.learner).count(),
                    learners: state.members.iter().filter(|m| m.learner).count(),
                })
            } else {
                Err(ProbeError::Unreachable("connection refused".into()))
            },
            alarms: if state.alarms_fail || !any_up {
                Err(ProbeError::Rpc("Unavailable: AlarmList failed".into()))
            } else {
                Ok(state.alarms.clone())
            },
            duration: Duration::from_millis(2),
        }
    }

    async fn hash_kv(&self, endpoint: &str, revision: i64) -> Result<HashKv, CallError> {
        self.record(Call::HashKv(name_of(endpoint), revision));
        let mut state = self.lock();
        if revision != 0 && revision <= state.compact_revision {
            return Err(CallError::Rpc {
                code: tonic::Code::OutOfRange,
                message: "OutOfRange: etcdserver: mvcc: required revision has been compacted"
                    .into(),
            });
        }
        let voting = state.members.iter().filter(|m| !m.learner).count();
        state.hash_calls += 1;
        // While writes land, members hash different latest revisions.
        let round = (state.hash_calls - 1) / voting.max(1);
        let moving = round < state.hash_moves;
        let Some(member) = member_named(&state, endpoint) else {
            return Err(down());
        };
        if !member.up {
            return Err(down());
        }
        // Asked for a revision, a member hashes that one; asked for 0, its latest.
        let at = if revision == 0 {
            state.revision
        } else {
            revision
        };
        let drift = if moving { member.id.0 as i64 } else { 0 };
        Ok(HashKv {
            hash: member.hash,
            revision: at + drift,
            // A compaction landing between the members' answers.
            compact_revision: state.compact_revision + drift,
        })
    }

    async fn snapshot(&self, endpoint: &str) -> Result<ChunkStream, CallError> {
        self.record(Call::Snapshot(name_of(endpoint)));
        let behavior = {
            let state = self.lock();
            if !member_named(&state, endpoint).is_some_and(|m| m.up) {
                return Err(down());
            }
            state.snapshot
        };
        let mut db = vec![7u8; 4 * 4096];
        let digest = Sha256::digest(&db);
        let mut trailer = digest.to_vec();
        if behavior == SnapshotBehavior::Damaged {
            trailer[0] ^= 0xff;
        }
        db.extend(trailer);
        let chunks: Vec<Vec<u8>> = db.chunks(3000).map(<[u8]>::to_vec).collect();
        let total = db.len() as u64;
        let stream =
            futures::stream::unfold((chunks, 0u64), move |(mut chunks, sent)| async move {
                if behavior == SnapshotBehavior::Endless {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let chunk = Chunk {
                        blob: vec![0; 512],
                        remaining: u64::MAX,
                    };
                    return Some((Ok(chunk), (chunks, sent)));
                }
                if chunks.is_empty() {
                    return None;
                }
                let blob = chunks.remove(0);
                let sent = sent + blob.len() as u64;
                let chunk = Chunk {
                    blob,
                    remaining: total - sent,
                };
                Some((Ok(chunk), (chunks, sent)))
            });
        Ok(Box::pin(stream))
    }
}

impl Etcd for FakeEtcd {
    fn call_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }

    async fn member_status(&self, endpoint: &str) -> Result<EndpointStatus, CallError> {
        self.record(Call::Status(name_of(endpoint)));
        let state = self.lock();
        match member_named(&state, endpoint) {
            Some(m) if m.up => Ok(status_of(&state, m)),
            _ => Err(down()),
        }
    }

    async fn serializable_read(&self, endpoint: &str) -> Result<(), CallError> {
        self.record(Call::Read(name_of(endpoint)));
        let state = self.lock();
        match member_named(&state, endpoint) {
            Some(m) if !m.up => Err(down()),
            // etcd blocks reads for the whole defragmentation.
            Some(m)
                if m.defragmenting_until
                    .is_some_and(|end| Instant::now() < end) =>
            {
                Err(CallError::Timeout(Duration::from_secs(5)))
            }
            Some(_) => Ok(()),
            None => Err(down()),
        }
    }

    async fn defragment(&self, endpoint: &str) -> Result<(), CallError> {
        let name = name_of(endpoint);
        self.record(Call::Defragment(name.clone()));
        let (takes, lost) = {
            let mut state = self.lock();
            let now = Instant::now();
            if let Some(other) = state
                .members
                .iter()
                .find(|m| m.defragmenting_until.is_some_and(|end| now < end))
            {
                let violation = format!("{name} defragmented while {} still was", other.name);
                state.violations.push(violation);
            }
            let leader = state.leader;
            let allowed = state.leader_defrag_allowed;
            let takes = state.defrag_takes;
            let lost = state.defrag_answer_lost;
            if let Some(error) = state.failure(Failing::Defragment) {
                return Err(error);
            }
            let Some(member) = state
                .members
                .iter_mut()
                .find(|m| self::endpoint(m.name) == endpoint)
            else {
                return Err(down());
            };
            if !member.up {
                return Err(down());
            }
            if leader == Some(member.id) && !allowed {
                let violation = format!("{name} defragmented while it led the cluster");
                state.violations.push(violation);
            }
            let member = state
                .members
                .iter_mut()
                .find(|m| self::endpoint(m.name) == endpoint)
                .unwrap_or_else(|| unreachable!("found above"));
            member.defragmenting_until = Some(now + takes);
            // The file shrinks to what is in use.
            member.db_size = member.in_use;
            (takes, lost)
        };
        if lost {
            return Err(CallError::Unreachable("connection reset".into()));
        }
        tokio::time::sleep(takes).await;
        Ok(())
    }

    async fn move_leader(&self, via: &str, to: MemberId) -> Result<(), CallError> {
        let mut state = self.lock();
        let to_name = state
            .members
            .iter()
            .find(|m| m.id == to)
            .map_or("?".to_string(), |m| m.name.to_string());
        drop(state);
        self.record(Call::MoveLeader {
            via: name_of(via),
            to: to_name,
        });
        state = self.lock();
        match state.move_leader.clone() {
            MoveBehavior::Moves => {
                state.leader = Some(to);
                Ok(())
            }
            MoveBehavior::Refuses(error) => Err(error),
            MoveBehavior::Ignored => Ok(()),
        }
    }

    async fn compact(&self, _via: &str, revision: i64) -> Result<(), CallError> {
        self.record(Call::Compact(revision));
        let mut state = self.lock();
        if let Some(error) = state.failure(Failing::Compact) {
            return Err(error);
        }
        state.compact_revision = revision;
        Ok(())
    }

    async fn disarm_nospace(&self, via: &str, member: MemberId) -> Result<(), CallError> {
        self.record(Call::Disarm(name_of(via)));
        let mut state = self.lock();
        if let Some(error) = state.failure(Failing::Disarm) {
            return Err(error);
        }
        state.alarms.retain(|a| a.member_id != member);
        Ok(())
    }

    async fn write_probe(&self, via: &str) -> Result<(), CallError> {
        self.record(Call::WriteProbe(name_of(via)));
        if let Some(error) = self.lock().failure(Failing::WriteProbe) {
            return Err(error);
        }
        if self
            .lock()
            .alarms
            .iter()
            .any(|a| a.alarm == AlarmKind::NoSpace)
        {
            return Err(CallError::Rpc {
                code: tonic::Code::ResourceExhausted,
                message: "ResourceExhausted: etcdserver: mvcc: database space exceeded".into(),
            });
        }
        Ok(())
    }
}
