//! The quiet-cluster gate: a cluster writing above `max_write_rate` holds the run (wait),
//! ends it (defer, or a wait that ran out), or is gone through with a warning (proceed);
//! NOSPACE ignores the gate; without `max_write_rate` there is no gate.

use std::time::Duration;

use crate::config::OnBusy;
use etcdmedic_cluster::model::AlarmKind;

use super::fake::{Action, Call};
use super::runs::fragmented;
use super::Scenario;
use crate::report::{Outcome, StepKind};

const HOUR: Duration = Duration::from_secs(3600);

/// Clients write 100 entries/s for `writing`; the gate allows 10.
fn busy_for(writing: Duration, on_busy: OnBusy) -> Scenario {
    Scenario::new(fragmented().with(|c| c.writes(100.0, writing))).settings(|s| {
        s.max_write_rate = Some(10.0);
        s.on_busy = on_busy;
        s.quiet_wait = Duration::from_secs(120);
    })
}

fn quiet_checks(ran: &super::Ran) -> Vec<String> {
    ran.steps()
        .into_iter()
        .filter(|s| s.starts_with("quiet check"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn without_max_write_rate_there_is_no_gate() {
    let ran = Scenario::new(fragmented().with(|c| c.writes(1000.0, HOUR)))
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(quiet_checks(&ran), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn wait_holds_the_run_until_the_writes_stop() {
    let ran = busy_for(Duration::from_secs(30), OnBusy::Wait).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    // Nothing was touched while the clients wrote: the first gate held the run for 30 s.
    let gate = ran
        .report
        .steps
        .iter()
        .find(|s| s.step == StepKind::QuietCheck);
    let held = gate.map(|s| s.duration).unwrap_or_default();
    assert!(held >= Duration::from_secs(30), "{held:?}");
    assert!(
        ran.report.steps[1].step == StepKind::QuietCheck,
        "{:?}",
        ran.steps()
    );
    // One gate before the snapshot and one before each member.
    assert_eq!(
        quiet_checks(&ran),
        [
            "quiet check - ok",
            "quiet check m2 ok",
            "quiet check m3 ok",
            "quiet check m1 ok"
        ]
    );
    assert!(ran.events.iter().any(|e| matches!(e,
        crate::events::Event::Progress { step: StepKind::QuietCheck, detail, .. }
            if detail.contains("above max_write_rate 10"))));
}

#[tokio::test(start_paused = true)]
async fn wait_that_runs_out_refuses_and_changes_nothing() {
    let ran = busy_for(HOUR, OnBusy::Wait).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Failed, "{ran:?}");
    assert!(ran.report.refused);
    assert_eq!(ran.kind(), Some("cluster_busy"));
    assert!(
        ran.reason().contains("after waiting 2m"),
        "{}",
        ran.reason()
    );
    assert!(ran.report.snapshot.is_none());
    assert_eq!(ran.defragmented(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn defer_ends_the_run_at_once() {
    let ran = busy_for(HOUR, OnBusy::Defer).run().await;
    ran.assert_safe();
    assert!(ran.report.refused, "{ran:?}");
    assert_eq!(ran.kind(), Some("cluster_busy"));
    assert!(
        ran.reason().contains("(on_busy: defer)"),
        "{}",
        ran.reason()
    );
    assert!(ran.took < Duration::from_secs(10), "{:?}", ran.took);
    assert_eq!(ran.actions(), vec![]);
}

#[tokio::test(start_paused = true)]
async fn proceed_goes_on_after_the_wait_with_a_warning() {
    let ran = busy_for(HOUR, OnBusy::Proceed)
        .settings(|s| s.quiet_wait = Duration::from_secs(5))
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(ran.warnings().len(), 4, "{:?}", ran.warnings());
    assert!(ran.warnings()[0].contains("on_busy: proceed"));
}

#[tokio::test(start_paused = true)]
async fn a_cluster_that_turns_busy_midway_stops_the_run_before_the_next_member() {
    let fake = fragmented().on(Call::Defragment("m2".into()), Action::StartWriting(100.0));
    let ran = Scenario::new(fake)
        .settings(|s| {
            s.max_write_rate = Some(10.0);
            s.on_busy = OnBusy::Defer;
        })
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Partial, "{ran:?}");
    assert!(!ran.report.refused);
    assert_eq!(ran.kind(), Some("cluster_busy"));
    assert!(
        ran.reason().starts_with("stopped before m3"),
        "{}",
        ran.reason()
    );
    assert_eq!(ran.defragmented(), ["m2"]);
}

#[tokio::test(start_paused = true)]
async fn nospace_ignores_the_gate() {
    let fake = fragmented().with(|c| {
        c.writes(1000.0, HOUR);
        c.alarm(1, AlarmKind::NoSpace);
    });
    let ran = Scenario::new(fake)
        .settings(|s| {
            s.max_write_rate = Some(1.0);
            s.on_busy = OnBusy::Defer;
        })
        .run()
        .await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert_eq!(quiet_checks(&ran), Vec::<String>::new());
}
