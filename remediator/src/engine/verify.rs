//! Step 7: every member's size after the run, and HashKV of every voting member at one
//! revision: after a defragmentation they must still hold the same keyspace.

use std::time::Duration;

use etcdmedic_cluster::model::ClusterStatus;

use super::decide::{compare_hashes, KeyspaceMoved};
use super::error::{RunError, Stop};
use super::etcd::Etcd;
use super::step::done;
use super::wait::{Bounds, OnStop, WaitError, Waiter};
use super::Run;
use crate::plan::member_ref;
use crate::report::{HashCheck, MemberAction, StepKind};

/// How long the check may keep trying while writes or a compaction move the keyspace under
/// it.
const VERIFY_WITHIN: Duration = Duration::from_secs(5);

impl<E: Etcd> Run<'_, E> {
    pub(super) async fn verify(&mut self) -> Result<(), RunError> {
        let step = self.begin(StepKind::Verify, None);
        let mut waiter = Waiter::new(Bounds {
            within: VERIFY_WITHIN,
            on_stop: OnStop::Finish,
            stop: self.stop,
        });
        let check = loop {
            let status = self.etcd.collect().await;
            for member in &status.members {
                let (Some(id), Some(current)) = (member.id, member.reachable()) else {
                    continue;
                };
                if let Some(report) = self.member_report(id) {
                    if report.action != MemberAction::Defragmented {
                        report.db_size_after = Some(current.db_size_bytes);
                        report.db_size_in_use_after = Some(current.db_size_in_use_bytes);
                    }
                }
            }
            let moved = match self.hash_check(&status).await {
                Ok(check) => break check,
                Err(not_compared) => not_compared.to_string(),
            };
            if let Err(err) = waiter.missed(&moved, |_, _| {}).await {
                let last = match err {
                    WaitError::TimedOut { last, .. } => last,
                    WaitError::Stopped => moved,
                };
                return self.end(step, Err(Stop::VerifyIncomplete(last).into()));
            }
        };
        let result = if check.consistent {
            let detail = format!(
                "{} members hold the same keyspace at revision {} (HashKV {:08x})",
                check.hashes.len(),
                check.revision,
                check.hashes.first().map_or(0, |(_, h)| *h)
            );
            Ok(done((), detail))
        } else {
            let hashes: Vec<String> = check
                .hashes
                .iter()
                .map(|(m, h)| format!("{}={h:08x}", m.name))
                .collect();
            Err(Stop::KeyspaceMismatch {
                revision: check.revision,
                hashes: hashes.join(", "),
            }
            .into())
        };
        self.report.hash_check = Some(check);
        self.end(step, result)
    }

    /// HashKV on every voting member at the newest revision all of them have applied, all
    /// at once (each reads the whole keyspace). `Err` when a member cannot answer or the
    /// keyspace moved under the check.
    async fn hash_check(&self, status: &ClusterStatus) -> Result<HashCheck, NotCompared> {
        let mut members = Vec::new();
        for member in status.members.iter().filter(|m| !m.is_learner) {
            let Some(answer) = member.reachable() else {
                return Err(NotCompared::Silent(member.display_name()));
            };
            members.push((member_ref(member), answer.revision));
        }
        let newest_common = members
            .iter()
            .map(|(_, revision)| *revision)
            .min()
            .ok_or(NotCompared::NoVotingMember)?;
        let hash_all = |revision: i64| {
            futures::future::join_all(members.iter().map(move |(member, _)| async move {
                self.etcd
                    .hash_kv(&member.endpoint, revision)
                    .await
                    .map(|answer| (member.clone(), answer))
            }))
        };
        let mut answers = hash_all(newest_common).await;
        // HashKV refuses a revision at or below the compaction point; on a quiet cluster right
        // after a compaction that is the current one. Then every member hashes its latest
        // revision (0), which must be the same on all.
        let mut asked = newest_common;
        if answers
            .iter()
            .any(|a| matches!(a, Err(err) if err.is_compacted()))
        {
            answers = hash_all(0).await;
            asked = 0;
        }
        let answers = answers
            .into_iter()
            .zip(&members)
            .map(|(answer, (member, _))| {
                answer.map_err(|source| NotCompared::HashKv {
                    member: member.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(compare_hashes(asked, answers)?)
    }
}

/// Why the members' keyspaces could not be compared this time.
#[derive(Debug, thiserror::Error)]
enum NotCompared {
    #[error("{0} does not answer Status")]
    Silent(String),
    #[error("no voting member")]
    NoVotingMember,
    #[error("HashKV on {member}: {source}")]
    HashKv {
        member: crate::vocabulary::MemberRef,
        source: crate::call::CallError,
    },
    #[error(transparent)]
    Moved(#[from] KeyspaceMoved),
}
