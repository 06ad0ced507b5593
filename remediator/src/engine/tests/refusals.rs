//! Every refusal: the run changes nothing (no call but reads, no file in the snapshot
//! directory), fails with `refused: true` and says why, with a stable kind.

use std::time::Duration;

use etcdmedic_cluster::model::AlarmKind;

use super::fake::{Action, Call, FakeEtcd};
use super::runs::fragmented;
use super::{Ran, Scenario};
use crate::report::Outcome;

fn assert_refused(ran: &Ran, kind: &str, says: &str) {
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Failed, "{ran:?}");
    assert!(ran.report.refused, "{ran:?}");
    assert_eq!(ran.kind(), Some(kind), "{ran:?}");
    assert!(ran.reason().starts_with("refused: "), "{ran:?}");
    assert!(
        ran.reason().contains(says),
        "{:?} lacks {says:?}",
        ran.reason()
    );
    assert_eq!(ran.actions(), vec![], "a refusal changes nothing");
    assert_eq!(ran.files(), Vec::<std::path::PathBuf>::new(), "{ran:?}");
}

/// (what is wrong, the kind, what the reason says)
#[tokio::test(start_paused = true)]
async fn every_refusal_changes_nothing_and_names_its_kind() {
    let table: Vec<(FakeEtcd, &str, &str)> = vec![
        (fragmented().member("m2", |m| m.down()), "member_down", "m2"),
        (
            fragmented().with(|c| c.alarm(2, AlarmKind::Corrupt)),
            "corrupt_alarm",
            "CORRUPT alarm",
        ),
        (
            FakeEtcd::new(1, 400, 50),
            "too_few_members",
            "1 voting member:",
        ),
        (
            FakeEtcd::new(2, 400, 50),
            "too_few_members",
            "2 voting members",
        ),
        (
            fragmented().with(|c| c.no_leader()),
            "no_agreed_leader",
            "leader",
        ),
        (
            fragmented().member("m3", |m| m.behind(5000)),
            "member_lagging",
            "5000 entries",
        ),
        (
            fragmented().with(|c| c.alarms_fail()),
            "alarms_unknown",
            "AlarmList failed",
        ),
        (
            fragmented()
                .member("m1", |m| m.down())
                .member("m2", |m| m.down())
                .member("m3", |m| m.down()),
            "membership_unknown",
            "MemberList",
        ),
        (
            // The snapshot source stops answering between the plan and the room check.
            fragmented().on(Call::Status("m3".into()), Action::Kill("m3")),
            "member_down",
            "m3",
        ),
    ];
    for (fake, kind, says) in table {
        let ran = Scenario::new(fake).run().await;
        assert_refused(&ran, kind, says);
    }
}

#[tokio::test(start_paused = true)]
async fn a_member_still_defragmenting_is_waited_for_then_refused() {
    let fake = fragmented().member("m2", |m| m.defragmenting_for(Duration::from_secs(600)));
    let ran = Scenario::new(fake)
        .settings(|s| s.defrag_timeout = Duration::from_secs(60))
        .run()
        .await;
    assert_refused(&ran, "members_not_serving_reads", "gave up after 60s");
    assert!(ran.took >= Duration::from_secs(60));
    // It was waited for, with progress, not refused at the first look.
    assert!(ran
        .events
        .iter()
        .any(|e| matches!(e, crate::events::Event::Progress { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_member_that_finishes_defragmenting_is_waited_for_then_the_run_goes_on() {
    let fake = fragmented().member("m2", |m| m.defragmenting_for(Duration::from_secs(40)));
    let ran = Scenario::new(fake).run().await;
    ran.assert_safe();
    assert_eq!(ran.report.outcome, Outcome::Succeeded, "{ran:?}");
    assert!(ran.took >= Duration::from_secs(40));
}

#[tokio::test(start_paused = true)]
async fn no_usable_snapshot_directory_no_room_or_a_held_lock_is_refused() {
    // The snapshot directory is a file.
    let scenario = Scenario::new(fragmented());
    let file = scenario.snapshots.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let ran = scenario.settings(|s| s.snapshot_dir = file).run().await;
    assert_refused(&ran, "snapshot_dir", "no snapshot, so nothing was changed");

    // A 60 GiB database needs 66 GiB with its margin; the scenario's disk has 64 GiB free.
    let ran = Scenario::new(FakeEtcd::new(3, 60 << 10, 50)).run().await;
    assert_refused(&ran, "no_room", "no snapshot, so nothing was changed");

    // Another run holds the cluster's lock.
    let ran = Scenario::new(fragmented()).lock_held().run().await;
    ran.assert_safe();
    assert_eq!(ran.kind(), Some("locked"), "{ran:?}");
    assert!(ran.report.refused);
    assert!(ran
        .reason()
        .contains("another remediation of cluster fake is running (pid"));
    assert_eq!(ran.actions(), vec![]);
}
