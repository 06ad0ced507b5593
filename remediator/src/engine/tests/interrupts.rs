//! A stop request (SIGTERM) at each wait of a run: the waits that change nothing end at once,
//! the member under way always finishes, a snapshot stream in progress is abandoned without
//! leaving its `.part` file.

use std::time::Duration;

use super::fake::{Action, Call, MoveBehavior, SnapshotBehavior};
use super::runs::fragmented;
use super::Scenario;
use crate::events::{Event, Events};
use crate::report::{MemberAction, Outcome, StepKind};
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn a_stop_ends_the_wait_for_members_to_serve_reads_at_once() {
    let fake = fragmented()
        .member("m2", |m| m.defragmenting_for(Duration::from_secs(600)))
        .on(Call::Read("m2".into()), Action::Stop);
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Interrupted, "{ran:?}");
    assert_eq!(ran.kind(), Some("interrupted"));
    assert_eq!(ran.actions(), vec![]);
    assert!(ran.took < Duration::from_secs(1), "{:?}", ran.took);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_defragmentation_lets_that_member_finish_and_starts_no_other() {
    let fake = fragmented().on(Call::Defragment("m2".into()), Action::Stop);
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Interrupted, "{ran:?}");
    assert_eq!(ran.action("m2"), MemberAction::Defragmented);
    assert_eq!(ran.action("m3"), MemberAction::NotReached);
    assert_eq!(ran.action("m1"), MemberAction::NotReached);
    assert_eq!(ran.defragmented(), vec!["m2".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_the_catch_up_after_a_lost_answer_still_waits_for_the_member() {
    let fake = fragmented()
        .with(|c| c.defrag_answer_lost())
        .with(|c| c.defrag_takes(Duration::from_secs(40)))
        .on(Call::Defragment("m2".into()), Action::Stop);
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Interrupted, "{ran:?}");
    assert_eq!(ran.action("m2"), MemberAction::Defragmented);
    assert!(ran.took >= Duration::from_secs(40), "{:?}", ran.took);
}

#[tokio::test(start_paused = true)]
async fn a_stop_ends_the_pause_between_members() {
    let m2_done = |event: &Event| {
        matches!(event, Event::Finished { record }
            if record.step == StepKind::Defragment
                && record.member.as_ref().is_some_and(|m| m.name == "m2"))
    };
    let ran = Scenario::new(fragmented())
        .settings(|s| s.settle_time = Duration::from_secs(600))
        .stop_when(m2_done)
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Interrupted, "{ran:?}");
    assert_eq!(ran.defragmented(), vec!["m2".to_string()]);
    assert!(ran.took < Duration::from_secs(60), "{:?}", ran.took);
}

#[tokio::test(start_paused = true)]
async fn a_stop_mid_snapshot_abandons_the_stream_and_removes_the_part_file() {
    let fake = fragmented().with(|c| c.snapshot(SnapshotBehavior::Endless));
    let streaming = |event: &Event| {
        matches!(event, Event::Progress { step: StepKind::Snapshot, detail, .. }
            if detail.contains("received"))
    };
    let ran = Scenario::new(fake).stop_when(streaming).run().await;
    // assert_safe checks that no `.part` file is left.
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Interrupted, "{ran:?}");
    assert_eq!(ran.files(), Vec::<std::path::PathBuf>::new());
    assert_eq!(ran.defragmented(), Vec::<String>::new());
    assert!(
        ran.steps().contains(&"snapshot m3 failed".to_string()),
        "{ran:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_the_handover_finishes_it_but_leaves_the_old_leader_alone() {
    let fake = fragmented().on(
        Call::MoveLeader {
            via: "m1".into(),
            to: "m3".into(),
        },
        Action::Stop,
    );
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Interrupted, "{ran:?}");
    assert_eq!(ran.fake().leader().as_deref(), Some("m3"));
    assert!(ran.report.leader_move.is_some());
    assert_eq!(ran.action("m1"), MemberAction::NotReached);
    assert_eq!(ran.defragmented(), vec!["m2".to_string(), "m3".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn a_stop_does_not_cut_short_a_handover_nobody_follows() {
    let fake = fragmented()
        .with(|c| c.move_leader(MoveBehavior::Ignored))
        .on(Call::Defragment("m3".into()), Action::Stop);
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    // Stopped between m3 and the leader's turn: no handover was begun.
    assert_eq!(ran.report.outcome, Outcome::Interrupted, "{ran:?}");
    assert_eq!(ran.moves(), vec![]);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_the_check_after_the_run_lets_it_finish() {
    let fake = fragmented().on(Call::HashKv("m1".into(), 1000), Action::Stop);
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    // Every member was done: the check is part of the run's end, not a new member.
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert!(ran.report.hash_check.as_ref().is_some_and(|c| c.consistent));
}

#[tokio::test(start_paused = true)]
async fn waiting_for_members_to_serve_reads_reports_how_long_it_took() {
    let fake = fragmented().member("m3", |m| m.defragmenting_for(Duration::from_secs(25)));
    let remediator = super::remediator(fake, Default::default());
    let stop = CancellationToken::new();
    let waited = remediator
        .wait_until_members_serve_reads(&Events::default(), &stop)
        .await;
    let waited = waited.expect("m3 finishes within defrag_timeout");
    assert!(waited >= Duration::from_secs(25) && waited < Duration::from_secs(26));

    let fake = fragmented().member("m3", |m| m.defragmenting_for(Duration::from_secs(25)));
    let remediator = super::remediator(fake, Default::default());
    stop.cancel();
    let stopped = remediator
        .wait_until_members_serve_reads(&Events::default(), &stop)
        .await;
    assert_eq!(stopped.map_err(|e| e.kind()), Err("interrupted"));
}

/// Confirms the first `confirmed` changes, then says another replica took the run over;
/// counts every question.
pub(super) struct ConfirmsFirst {
    confirmed: usize,
    asked: std::sync::atomic::AtomicUsize,
}

impl ConfirmsFirst {
    pub(super) fn guard(confirmed: usize) -> (crate::engine::guard::Guard, std::sync::Arc<Self>) {
        let guard = std::sync::Arc::new(ConfirmsFirst {
            confirmed,
            asked: Default::default(),
        });
        (crate::engine::guard::Guard(guard.clone()), guard)
    }
}

impl crate::engine::guard::RunGuard for ConfirmsFirst {
    fn confirm(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<(), crate::engine::guard::NotConfirmed>> {
        let asked = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if asked < self.confirmed {
                Ok(())
            } else {
                Err("another replica took the run over".into())
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_taken_over_by_another_replica_stops_before_its_next_change() {
    let (guard, asked) = ConfirmsFirst::guard(1);
    let ran = Scenario::new(fragmented())
        .options(|o| o.guard = Some(guard))
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Interrupted, "{ran:?}");
    assert_eq!(ran.kind(), Some("fenced"));
    assert!(
        ran.reason().contains("another replica took the run over"),
        "{}",
        ran.reason()
    );
    // Asked before the first member (yes) and before the second (no): one member done.
    assert_eq!(asked.asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(ran.defragmented().len(), 1, "{ran:?}");
}

#[tokio::test(start_paused = true)]
async fn a_guard_that_always_confirms_is_asked_before_every_change() {
    let (guard, asked) = ConfirmsFirst::guard(usize::MAX);
    let ran = Scenario::new(fragmented())
        .settings(|s| s.compact_first = true)
        .options(|o| o.guard = Some(guard))
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    // The compaction, three defragmentations and the leadership handover.
    let changes = 1 + ran.defragmented().len() + ran.moves().len();
    assert_eq!(ran.defragmented().len(), 3, "{ran:?}");
    assert_eq!(
        asked.asked.load(std::sync::atomic::Ordering::SeqCst),
        changes
    );
}
