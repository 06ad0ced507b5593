//! Runs that reach the end: the order of members, the leader's handover and its policies,
//! changes of leadership under way, lost answers, the verification's retries.

use std::time::Duration;

use crate::config::{LeaderMoveFailure, LeaderPolicy};
use etcdmedic_cluster::model::AlarmKind;

use super::fake::{Action, Call, FakeEtcd, MoveBehavior, MIB};
use super::Scenario;
use crate::engine::etcd::CallError;
use crate::report::{MemberAction, Outcome};

/// Three members of 400 MiB with 50 MiB in use: all match the built-in rule; `m1` leads.
pub(super) fn fragmented() -> FakeEtcd {
    FakeEtcd::new(3, 400, 50)
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn followers_go_first_and_the_leader_last_after_handing_leadership_over() {
    let ran = Scenario::new(fragmented()).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.kind(), None);
    assert_eq!(
        ran.actions(),
        vec![
            Call::Snapshot("m3".into()),
            Call::Defragment("m2".into()),
            Call::Defragment("m3".into()),
            Call::MoveLeader {
                via: "m1".into(),
                to: "m3".into()
            },
            Call::Defragment("m1".into()),
            Call::HashKv("m1".into(), 1000),
            Call::HashKv("m2".into(), 1000),
            Call::HashKv("m3".into(), 1000),
        ],
        "{ran:?}"
    );
    assert_eq!(
        ran.steps(),
        vec![
            "preflight - ok",
            "snapshot m3 ok",
            "quorum check m2 ok",
            "defragment m2 ok",
            "quorum check m3 ok",
            "defragment m3 ok",
            "quorum check m1 ok",
            "move leader m1 ok",
            "defragment m1 ok",
            "verify - ok",
        ]
    );
    for member in &ran.report.members {
        assert_eq!(member.action, MemberAction::Defragmented);
        assert_eq!(member.follower_at_defrag, Some(true), "{}", member.member);
        assert_eq!(member.db_size_after, Some(50 * MIB));
        assert_eq!(member.defrag_duration, Some(Duration::from_secs(2)));
    }
    assert_eq!(ran.report.reclaimed_bytes, 3 * 350 * MIB);
    let moved = ran.report.leader_move.as_ref().expect("leader moved");
    assert_eq!(
        (moved.from.name.as_str(), moved.to.name.as_str()),
        ("m1", "m3")
    );
    assert_eq!(ran.fake().leader().as_deref(), Some("m3"));
    // The verified snapshot is kept; the run lock is gone.
    let snapshot = ran.report.snapshot.as_ref().expect("snapshot");
    assert_eq!(ran.files(), vec![snapshot.path.clone()]);
    assert_eq!(snapshot.revision, 1000);
    let check = ran.report.hash_check.as_ref().expect("hash check");
    assert!(check.consistent && check.hashes.len() == 3);
    // Three defragmentations of 2 s; no pause between members by default.
    assert!(ran.took >= Duration::from_secs(3 * 2), "{:?}", ran.took);
}

#[tokio::test(start_paused = true)]
async fn the_leader_is_defragmented_in_place_when_the_policy_says_so() {
    let fake = fragmented().with(|c| c.leader_defrag_allowed());
    let ran = Scenario::new(fake)
        .settings(|s| s.leader = LeaderPolicy::DefragInPlace)
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.defragmented(), names(&["m2", "m3", "m1"]));
    assert_eq!(ran.moves(), vec![]);
    let leader = &ran.report.members.iter().find(|m| m.member.name == "m1");
    assert_eq!(leader.map(|m| m.follower_at_defrag), Some(Some(false)));
    assert!(
        ran.warnings().iter().any(|w| w.contains("in place")),
        "{ran:?}"
    );
    assert_eq!(ran.fake().leader().as_deref(), Some("m1"));
}

#[tokio::test(start_paused = true)]
async fn a_refused_handover_stops_before_the_leader_by_default() {
    let refused = CallError::Rpc {
        code: tonic::Code::FailedPrecondition,
        message: "FailedPrecondition: etcdserver: bad leader transferee".into(),
    };
    let fake = fragmented().with(|c| c.move_leader(MoveBehavior::Refuses(refused)));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Partial, "{ran:?}");
    assert_eq!(ran.kind(), Some("leader_move_failed"));
    assert!(ran.reason().contains("bad leader transferee"), "{ran:?}");
    assert_eq!(ran.defragmented(), names(&["m2", "m3"]));
    assert_eq!(ran.action("m1"), MemberAction::NotReached);
    assert!(ran.steps().contains(&"move leader m1 failed".to_string()));
    assert_eq!(ran.report.hash_check, None, "a stopped run does not verify");
}

#[tokio::test(start_paused = true)]
async fn a_refused_handover_defragments_the_leader_in_place_when_the_policy_says_so() {
    let refused = CallError::Unreachable("connection reset".into());
    let fake = fragmented()
        .with(|c| c.move_leader(MoveBehavior::Refuses(refused)))
        .with(|c| c.leader_defrag_allowed());
    let ran = Scenario::new(fake)
        .settings(|s| s.on_leader_move_failure = LeaderMoveFailure::DefragInPlace)
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.defragmented(), names(&["m2", "m3", "m1"]));
    assert!(
        ran.warnings()
            .iter()
            .any(|w| w.contains("could not be moved off") && w.contains("in place")),
        "{ran:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_handover_nobody_follows_stops_after_the_settle_timeout() {
    let fake = fragmented().with(|c| c.move_leader(MoveBehavior::Ignored));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Partial, "{ran:?}");
    assert_eq!(ran.kind(), Some("leader_move_failed"));
    assert!(
        ran.reason().contains("not every member followed"),
        "{ran:?}"
    );
    assert!(ran.took >= Duration::from_secs(30));
    assert_eq!(ran.action("m1"), MemberAction::NotReached);
}

#[tokio::test(start_paused = true)]
async fn a_follower_elected_mid_run_waits_for_the_leaders_turn() {
    // m3 wins an election while m2 defragments.
    let fake = fragmented().on(Call::Defragment("m2".into()), Action::Elect("m3"));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert!(
        ran.warnings()
            .iter()
            .any(|w| w.contains("m3") && w.contains("became the leader")),
        "{ran:?}"
    );
    // m3 hands over to the defragmented m2; m1 no longer leads and goes as a follower.
    assert_eq!(ran.defragmented(), names(&["m2", "m3", "m1"]));
    assert_eq!(
        ran.moves(),
        vec![Call::MoveLeader {
            via: "m3".into(),
            to: "m2".into()
        }]
    );
    assert!(ran
        .report
        .members
        .iter()
        .all(|m| m.follower_at_defrag == Some(true)));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_lost_leadership_before_its_turn_goes_as_a_follower() {
    let fake = fragmented().on(Call::Defragment("m3".into()), Action::Elect("m2"));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.defragmented(), names(&["m2", "m3", "m1"]));
    assert_eq!(ran.moves(), vec![]);
    assert_eq!(ran.report.leader_move, None);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_waits_for_the_member_before_the_next() {
    let fake = fragmented().with(|c| c.defrag_answer_lost());
    let ran = Scenario::new(fake).run().await;
    // The fake records a violation if a defragmentation starts while another runs.
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    let lost = ran
        .warnings()
        .iter()
        .filter(|w| w.contains("ended without an answer"))
        .count();
    assert_eq!(lost, 3, "{ran:?}");
    assert!(ran
        .report
        .steps
        .iter()
        .any(|s| s.detail.contains("gave up")));
}

#[tokio::test(start_paused = true)]
async fn a_defragmentation_longer_than_its_timeout_is_waited_for() {
    let fake = fragmented().with(|c| c.defrag_takes(Duration::from_secs(90)));
    let ran = Scenario::new(fake)
        .settings(|s| s.defrag_timeout = Duration::from_secs(60))
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert!(ran.took >= Duration::from_secs(3 * 90), "{:?}", ran.took);
    // Progress while the call runs, every 5 s: a long defragmentation never looks hung.
    let progress = ran
        .events
        .iter()
        .filter(|e| matches!(e, crate::events::Event::Progress { .. }))
        .count();
    assert!(progress >= 3 * 11, "{progress}");
}

#[tokio::test(start_paused = true)]
async fn a_compaction_first_and_the_hash_check_falls_back_to_the_latest_revision() {
    let ran = Scenario::new(fragmented())
        .settings(|s| s.compact_first = true)
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.actions().first(), Some(&Call::Compact(1000)));
    assert_eq!(ran.report.compacted_at_revision, Some(1000));
    // HashKV at the compaction point is refused; each member then hashes its latest.
    let hashes: Vec<_> = ran
        .actions()
        .into_iter()
        .filter(|c| matches!(c, Call::HashKv(..)))
        .collect();
    assert_eq!(hashes.len(), 6, "{hashes:?}");
    assert_eq!(hashes[5], Call::HashKv("m3".into(), 0));
}

#[tokio::test(start_paused = true)]
async fn the_hash_check_retries_while_writes_move_the_keyspace() {
    let fake = fragmented().with(|c| c.hash_moves(2));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    let rounds = ran
        .actions()
        .iter()
        .filter(|c| matches!(c, Call::HashKv(..)))
        .count();
    assert_eq!(rounds, 9, "three rounds of three");
}

#[tokio::test(start_paused = true)]
async fn nospace_is_disarmed_once_every_member_is_below_the_threshold() {
    let fake = FakeEtcd::new(3, 2000, 100).with(|c| c.alarm(1, AlarmKind::NoSpace));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.report.alarms_disarmed.len(), 1);
    assert_eq!(ran.fake().alarms(), vec![]);
    let tail: Vec<_> = ran.actions().into_iter().skip(5).take(2).collect();
    assert_eq!(
        tail,
        vec![Call::Disarm("m3".into()), Call::WriteProbe("m3".into())],
        "disarmed through the new leader, then a write: {ran:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_to_do_is_skipped_and_a_dry_run_changes_nothing() {
    let quiet = Scenario::new(FakeEtcd::new(3, 120, 100)).run().await;
    quiet.assert_safe();
    assert_eq!(quiet.report.outcome, Outcome::Skipped, "{quiet:?}");
    assert!(quiet.reason().contains("no member needs defragmenting"));
    assert!(quiet.reason().contains("m2:"), "each member's figures");
    assert_eq!(quiet.actions(), vec![]);

    let dry = Scenario::new(fragmented())
        .options(|o| o.dry_run = true)
        .run()
        .await;
    dry.assert_safe();
    assert_eq!(dry.report.outcome, Outcome::Planned, "{dry:?}");
    assert_eq!(dry.actions(), vec![]);
    assert_eq!(dry.files(), Vec::<std::path::PathBuf>::new());
    assert!(dry
        .report
        .plan
        .as_ref()
        .is_some_and(|p| p.defragment.len() == 3));
}

#[tokio::test(start_paused = true)]
async fn a_single_member_is_defragmented_only_when_forced() {
    let fake = FakeEtcd::new(1, 400, 50).with(|c| c.leader_defrag_allowed());
    let ran = Scenario::new(fake).options(|o| o.force = true).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.defragmented(), names(&["m1"]));
    assert!(ran
        .warnings()
        .iter()
        .any(|w| w.contains("only voting member")));
}

#[tokio::test(start_paused = true)]
async fn a_learner_is_left_alone_and_left_out_of_the_hash_check() {
    let fake = FakeEtcd::new(4, 400, 50).member("m4", |m| m.learner());
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.action("m4"), MemberAction::Skipped);
    assert!(!ran.defragmented().contains(&"m4".to_string()));
    let check = ran.report.hash_check.as_ref().expect("hash check");
    assert_eq!(check.hashes.len(), 3);
}

/// `leader: auto` (the default) with followers that defragment 50 MiB in `defrag`.
fn auto(defrag: Duration) -> Scenario {
    let fake = fragmented().with(|c| {
        c.defrag_takes(defrag);
        c.leader_defrag_allowed();
    });
    Scenario::new(fake)
}

#[tokio::test(start_paused = true)]
async fn auto_defragments_the_leader_in_place_when_the_followers_predict_a_short_stall() {
    // 50 MiB in 0.2 s: the leader's 50 MiB are predicted at 0.2 s, under the 1 s bound.
    let ran = auto(Duration::from_millis(200)).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.defragmented(), names(&["m2", "m3", "m1"]));
    assert_eq!(
        ran.moves(),
        vec![],
        "no leadership transfer, no dropped proposal"
    );
    assert_eq!(ran.report.leader_move, None);
    let choice = ran
        .report
        .leader_choice
        .as_ref()
        .expect("the choice is recorded");
    assert!(choice.in_place, "{choice:?}");
    assert_eq!(choice.predicted, Duration::from_millis(200));
    assert!(
        choice.reason.contains("measured on this run's followers"),
        "{}",
        choice.reason
    );
    let leader = ran.report.members.iter().find(|m| m.member.name == "m1");
    assert_eq!(leader.map(|m| m.follower_at_defrag), Some(Some(false)));
    // Said as a decision, not a warning.
    assert!(ran.warnings().is_empty(), "{:?}", ran.warnings());
    assert!(ran.events.iter().any(|e| matches!(e,
        crate::events::Event::Decided { message } if message.contains("defragmented in place"))));
}

#[tokio::test(start_paused = true)]
async fn auto_moves_leadership_first_when_the_followers_predict_a_long_stall() {
    // 50 MiB in 1.5 s: the leader's turn is predicted at 1.5 s.
    let ran = auto(Duration::from_millis(1500)).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.moves().len(), 1, "{ran:?}");
    let choice = ran
        .report
        .leader_choice
        .as_ref()
        .expect("the choice is recorded");
    assert!(!choice.in_place, "{choice:?}");
    assert!(choice.reason.contains("is 1.50s"), "{}", choice.reason);
    for member in &ran.report.members {
        assert_eq!(member.follower_at_defrag, Some(true), "{}", member.member);
    }
}

#[tokio::test(start_paused = true)]
async fn auto_with_a_bound_of_zero_always_moves_leadership_first() {
    let ran = auto(Duration::from_millis(1))
        .settings(|s| s.leader_in_place_below = Duration::ZERO)
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.moves().len(), 1, "{ran:?}");
}

/// Only the leader is fragmented: no follower is measured during the run.
fn only_the_leader_fragmented() -> Scenario {
    let fake = FakeEtcd::new(3, 400, 50)
        .member("m2", |m| m.sizes(60, 50))
        .member("m3", |m| m.sizes(60, 50))
        .with(|c| {
            c.defrag_takes(Duration::from_millis(100));
            c.leader_defrag_allowed();
        });
    Scenario::new(fake)
}

#[tokio::test(start_paused = true)]
async fn with_no_follower_to_measure_auto_learns_from_earlier_runs() {
    use crate::forecast::{History, Sample};
    // Earlier runs defragmented 100 MiB in 0.25 s: the leader's 50 MiB are 0.125 s.
    let history = History {
        defrag: vec![Sample {
            bytes: 100 * MIB,
            took: Duration::from_millis(250),
        }],
        ..History::default()
    };
    let ran = only_the_leader_fragmented()
        .options(|o| o.history = history)
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.defragmented(), names(&["m1"]));
    assert_eq!(ran.moves(), vec![]);
    let choice = ran.report.leader_choice.as_ref().expect("the choice");
    assert!(
        choice.reason.contains("measured by earlier runs"),
        "{}",
        choice.reason
    );
    // The plan said so before the run began, and the step compares with it.
    let forecast = ran.report.plan.as_ref().and_then(|p| p.forecast.as_ref());
    assert_eq!(
        forecast.and_then(|f| f.leader.as_ref()).map(|c| c.in_place),
        Some(true)
    );
    let defrag = ran
        .report
        .steps
        .iter()
        .find(|s| s.step == crate::report::StepKind::Defragment);
    assert_eq!(
        defrag.and_then(|s| s.predicted),
        Some(Duration::from_millis(125))
    );
}

#[tokio::test(start_paused = true)]
async fn with_nothing_measured_auto_assumes_a_slow_disk_and_moves_a_large_leader() {
    // 50 MiB at the assumed 32 MiB/s is over a second.
    let ran = only_the_leader_fragmented().run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.moves().len(), 1, "{ran:?}");
    let choice = ran.report.leader_choice.as_ref().expect("the choice");
    assert!(choice.reason.contains("assumed"), "{}", choice.reason);
}
