//! Runs that stop partway: a damaged snapshot, a member dying at each step, a failed
//! Defragment, NOSPACE that cannot be disarmed, keyspaces that differ. Each ends with the
//! outcome its error kind implies and leaves nothing half done.

use std::time::Duration;

use crate::config::RemediationSettings;
use etcdmedic_cluster::model::AlarmKind;

use super::fake::{Action, Call, Failing, FakeEtcd, SnapshotBehavior};
use super::runs::fragmented;
use super::Scenario;
use crate::engine::etcd::CallError;
use crate::report::{MemberAction, Outcome};

#[tokio::test(start_paused = true)]
async fn a_damaged_snapshot_stops_before_any_member_and_is_not_kept() {
    let fake = fragmented().with(|c| c.snapshot(SnapshotBehavior::Damaged));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Failed, "{ran:?}");
    assert_eq!(ran.kind(), Some("snapshot_failed"));
    assert!(!ran.report.refused, "something was attempted");
    assert!(ran.reason().contains("sha256"), "{ran:?}");
    assert_eq!(ran.defragmented(), Vec::<String>::new());
    assert_eq!(ran.files(), Vec::<std::path::PathBuf>::new(), "{ran:?}");
}

/// A member dies when a call is made, and how the run ends.
struct Death {
    when: Call,
    dies: &'static str,
    /// The cluster: three fragmented members unless said otherwise.
    cluster: fn() -> FakeEtcd,
    settings: fn(&mut RemediationSettings),
    /// The run ends with this kind and outcome, these members defragmented.
    kind: &'static str,
    outcome: Outcome,
    done: &'static [&'static str],
}

#[tokio::test(start_paused = true)]
async fn a_member_dying_at_each_step_stops_the_run_with_quorum_kept() {
    let table = [
        // During the compaction asked for first: m2 does not answer at its turn.
        Death {
            when: Call::Compact(1000),
            dies: "m2",
            cluster: fragmented,
            settings: |s| s.compact_first = true,
            kind: "no_quorum",
            outcome: Outcome::Failed,
            done: &[],
        },
        // The snapshot's source, as the stream begins.
        Death {
            when: Call::Snapshot("m3".into()),
            dies: "m3",
            cluster: fragmented,
            settings: |_| {},
            kind: "snapshot_failed",
            outcome: Outcome::Failed,
            done: &[],
        },
        // The next member, during the snapshot: it does not answer at its turn.
        Death {
            when: Call::Snapshot("m3".into()),
            dies: "m2",
            cluster: fragmented,
            settings: |_| {},
            kind: "no_quorum",
            outcome: Outcome::Failed,
            done: &[],
        },
        // While m2 defragments: m3 is not started.
        Death {
            when: Call::Defragment("m2".into()),
            dies: "m3",
            cluster: fragmented,
            settings: |_| {},
            kind: "no_quorum",
            outcome: Outcome::Partial,
            done: &["m2"],
        },
        // The member being defragmented dies: it never catches up.
        Death {
            when: Call::Defragment("m2".into()),
            dies: "m2",
            cluster: fragmented,
            settings: |_| {},
            kind: "not_caught_up",
            outcome: Outcome::Failed,
            done: &[],
        },
        // The leader dies (m2 is elected) while m3 defragments: it does not answer at its
        // turn.
        Death {
            when: Call::Defragment("m3".into()),
            dies: "m1",
            cluster: fragmented,
            settings: |_| {},
            kind: "no_quorum",
            outcome: Outcome::Partial,
            done: &["m2", "m3"],
        },
        // The old leader, right after handing leadership over.
        Death {
            when: Call::MoveLeader {
                via: "m1".into(),
                to: "m3".into(),
            },
            dies: "m1",
            cluster: fragmented,
            settings: |_| {},
            kind: "member_down",
            outcome: Outcome::Partial,
            done: &["m2", "m3"],
        },
        // While NOSPACE is disarmed: the write goes through the leader, the check after
        // cannot compare m2.
        Death {
            when: Call::Disarm("m3".into()),
            dies: "m2",
            cluster: || FakeEtcd::new(3, 2000, 100).with(|c| c.alarm(1, AlarmKind::NoSpace)),
            settings: |_| {},
            kind: "verify_incomplete",
            outcome: Outcome::Partial,
            done: &["m2", "m3", "m1"],
        },
        // During the check after the run.
        Death {
            when: Call::HashKv("m1".into(), 1000),
            dies: "m2",
            cluster: fragmented,
            settings: |_| {},
            kind: "verify_incomplete",
            outcome: Outcome::Partial,
            done: &["m2", "m3", "m1"],
        },
    ];
    for death in table {
        let when = death.when.clone();
        let mut fake = (death.cluster)().on(when.clone(), Action::Kill(death.dies));
        if fake.leader().as_deref() == Some(death.dies) && !matches!(when, Call::MoveLeader { .. })
        {
            fake = fake.on(when.clone(), Action::Elect("m2"));
        }
        let ran = Scenario::new(fake).settings(death.settings).run().await;
        ran.assert_safe();
        assert_eq!(ran.report.outcome, death.outcome, "{when:?}: {ran:?}");
        assert_eq!(ran.kind(), Some(death.kind), "{when:?}: {ran:?}");
        assert!(!ran.report.refused);
        let mut defragmented: Vec<&str> = ran
            .report
            .members
            .iter()
            .filter(|m| m.action == MemberAction::Defragmented)
            .map(|m| m.member.name.as_str())
            .collect();
        defragmented.sort_unstable();
        let mut expected = death.done.to_vec();
        expected.sort_unstable();
        assert_eq!(defragmented, expected, "{when:?}: {ran:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_defragment_error_stops_the_run_and_marks_the_member_failed() {
    let error = CallError::Rpc {
        code: tonic::Code::Internal,
        message: "Internal: bolt: disk full".into(),
    };
    let fake = fragmented().with(|c| c.fail(Failing::Defragment, error));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Failed, "{ran:?}");
    assert_eq!(ran.kind(), Some("defrag_failed"));
    assert!(ran.reason().contains("disk full"));
    assert_eq!(ran.action("m2"), MemberAction::Failed);
    assert_eq!(ran.action("m3"), MemberAction::NotReached);
    assert_eq!(
        ran.defragmented(),
        vec!["m2".to_string()],
        "one attempt only"
    );
}

#[tokio::test(start_paused = true)]
async fn a_member_that_never_catches_up_stops_the_run() {
    let fake = fragmented().with(|c| c.defrag_takes(Duration::from_secs(3600)));
    let ran = Scenario::new(fake)
        .settings(|s| s.defrag_timeout = Duration::from_secs(60))
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.kind(), Some("not_caught_up"), "{ran:?}");
    assert_eq!(ran.report.outcome, Outcome::Failed);
    // The call's 60 s, then 60 s for the member to serve reads: never the next member.
    assert_eq!(ran.defragmented(), vec!["m2".to_string()]);
    assert!(ran.took >= Duration::from_secs(120) && ran.took < Duration::from_secs(180));
}

#[tokio::test(start_paused = true)]
async fn nospace_is_left_armed_while_a_member_stays_near_its_quota() {
    let fake = FakeEtcd::new(3, 2000, 1900).with(|c| c.alarm(1, AlarmKind::NoSpace));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Partial, "{ran:?}");
    assert_eq!(ran.kind(), Some("nospace_armed"));
    assert!(ran.reason().contains("93% of its 2.1 GB quota"), "{ran:?}");
    assert_eq!(ran.fake().alarms().len(), 1, "still armed");
    assert!(!ran.actions().iter().any(|c| matches!(c, Call::Disarm(_))));
}

#[tokio::test(start_paused = true)]
async fn alarms_unknown_after_defragmenting_stop_before_disarming() {
    let fake = fragmented().on(Call::Defragment("m1".into()), Action::BreakAlarmList);
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Partial, "{ran:?}");
    assert_eq!(ran.kind(), Some("alarms_unknown"));
}

#[tokio::test(start_paused = true)]
async fn keyspaces_that_differ_fail_the_run_whatever_was_done() {
    let fake = fragmented().member("m2", |m| m.hash(0x1234));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Failed, "{ran:?}");
    assert_eq!(ran.kind(), Some("keyspace_mismatch"));
    assert!(ran.reason().contains("m2=00001234"), "{ran:?}");
    let check = ran.report.hash_check.as_ref().expect("hash check recorded");
    assert!(!check.consistent);
}

#[tokio::test(start_paused = true)]
async fn a_keyspace_that_keeps_moving_ends_the_check_unfinished() {
    let fake = fragmented().with(|c| c.hash_moves(usize::MAX));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Partial, "{ran:?}");
    assert_eq!(ran.kind(), Some("verify_incomplete"));
}
