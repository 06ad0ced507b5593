//! Every error kind the table of docs/remediator.md lists is reached by a scenario, with the outcome the
//! kind implies: what alerts and tests match on is proven to be produced.

use std::collections::BTreeSet;
use std::time::Duration;

use etcdmedic_cluster::model::AlarmKind;

use super::fake::{Action, Call, Failing, FakeEtcd, MoveBehavior, SnapshotBehavior};
use super::runs::fragmented;
use super::Scenario;
use crate::engine::error::KINDS;
use crate::engine::etcd::CallError;
use crate::report::Outcome;

fn rpc(message: &str) -> CallError {
    CallError::Rpc {
        code: tonic::Code::Internal,
        message: format!("Internal: {message}"),
    }
}

/// Three members of 2000 MiB with 100 MiB in use, NOSPACE raised.
fn nospace() -> FakeEtcd {
    FakeEtcd::new(3, 2000, 100).with(|c| c.alarm(1, AlarmKind::NoSpace))
}

/// A kind, and the scenario that ends with it.
type Case = (&'static str, fn() -> Scenario);

const CASES: [Case; 27] = [
    ("downgrade_under_way", || {
        Scenario::new(fragmented().with(|c| c.downgrading("3.5.0")))
    }),
    ("membership_unknown", || {
        let down = fragmented()
            .member("m1", |m| m.down())
            .member("m2", |m| m.down())
            .member("m3", |m| m.down());
        Scenario::new(down)
    }),
    ("alarms_unknown", || {
        Scenario::new(fragmented().with(|c| c.alarms_fail()))
    }),
    ("corrupt_alarm", || {
        Scenario::new(fragmented().with(|c| c.alarm(2, AlarmKind::Corrupt)))
    }),
    ("member_down", || {
        Scenario::new(fragmented().member("m2", |m| m.down()))
    }),
    ("too_few_members", || {
        Scenario::new(FakeEtcd::new(1, 400, 50))
    }),
    ("no_agreed_leader", || {
        Scenario::new(fragmented().with(|c| c.no_leader()))
    }),
    ("member_lagging", || {
        Scenario::new(fragmented().member("m3", |m| m.behind(5000)))
    }),
    ("members_not_serving_reads", || {
        let busy = fragmented().member("m2", |m| m.defragmenting_for(Duration::from_secs(600)));
        Scenario::new(busy).settings(|s| s.defrag_timeout = Duration::from_secs(60))
    }),
    ("snapshot_dir", || {
        let scenario = Scenario::new(fragmented());
        let file = scenario.snapshots.path().join("a-file");
        std::fs::write(&file, b"x").unwrap_or_else(|err| panic!("write: {err}"));
        scenario.settings(|s| s.snapshot_dir = file)
    }),
    ("no_room", || Scenario::new(FakeEtcd::new(3, 60 << 10, 50))),
    ("locked", || Scenario::new(fragmented()).lock_held()),
    ("compact_failed", || {
        let failing = fragmented().with(|c| c.fail(Failing::Compact, rpc("compaction")));
        Scenario::new(failing).settings(|s| s.compact_first = true)
    }),
    ("snapshot_failed", || {
        Scenario::new(fragmented().with(|c| c.snapshot(SnapshotBehavior::Damaged)))
    }),
    ("no_quorum", || {
        Scenario::new(fragmented().on(Call::Defragment("m2".into()), Action::Kill("m3")))
    }),
    ("defrag_failed", || {
        Scenario::new(fragmented().with(|c| c.fail(Failing::Defragment, rpc("disk full"))))
    }),
    ("not_caught_up", || {
        let slow = fragmented().with(|c| c.defrag_takes(Duration::from_secs(3600)));
        Scenario::new(slow).settings(|s| s.defrag_timeout = Duration::from_secs(60))
    }),
    ("leader_move_failed", || {
        let refused = MoveBehavior::Refuses(rpc("bad leader transferee"));
        Scenario::new(fragmented().with(|c| c.move_leader(refused)))
    }),
    ("nospace_armed", || {
        let full = FakeEtcd::new(3, 2000, 1900).with(|c| c.alarm(1, AlarmKind::NoSpace));
        Scenario::new(full)
    }),
    ("disarm_failed", || {
        Scenario::new(nospace().with(|c| c.fail(Failing::Disarm, rpc("alarm"))))
    }),
    ("writes_refused", || {
        Scenario::new(nospace().with(|c| c.fail(Failing::WriteProbe, rpc("no leader"))))
    }),
    ("verify_incomplete", || {
        Scenario::new(fragmented().with(|c| c.hash_moves(usize::MAX)))
    }),
    ("keyspace_mismatch", || {
        Scenario::new(fragmented().member("m2", |m| m.hash(0x1234)))
    }),
    ("cluster_busy", || {
        Scenario::new(fragmented().with(|c| c.writes(100.0, Duration::from_secs(3600)))).settings(
            |s| {
                s.max_write_rate = Some(10.0);
                s.on_busy = crate::config::OnBusy::Defer;
            },
        )
    }),
    ("window_too_short", || {
        Scenario::new(fragmented())
            .options(|o| o.finish_by = Some(std::time::SystemTime::now() + Duration::from_secs(1)))
    }),
    ("interrupted", || {
        Scenario::new(fragmented().on(Call::Defragment("m2".into()), Action::Stop))
    }),
    ("fenced", || {
        let (guard, _) = super::interrupts::ConfirmsFirst::guard(1);
        Scenario::new(fragmented()).options(|o| o.guard = Some(guard))
    }),
];

#[tokio::test(start_paused = true)]
async fn every_error_kind_is_reached_by_a_scenario_with_its_outcome() {
    let mut reached = BTreeSet::new();
    for (kind, scenario) in CASES {
        let ran = scenario().run().await;
        ran.assert_safe();
        assert_eq!(ran.kind(), Some(kind), "{ran:?}");
        let done = ran
            .report
            .members
            .iter()
            .any(|m| m.action == crate::report::MemberAction::Defragmented);
        let expected = match kind {
            _ if ran.report.refused => Outcome::Failed,
            "interrupted" | "fenced" => Outcome::Interrupted,
            "keyspace_mismatch" => Outcome::Failed,
            _ if done => Outcome::Partial,
            _ => Outcome::Failed,
        };
        assert_eq!(ran.report.outcome, expected, "{kind}: {ran:?}");
        reached.insert(kind);
    }
    assert_eq!(reached, KINDS.into_iter().collect());
}
