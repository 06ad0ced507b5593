use std::time::{Duration, SystemTime};

use crate::config::LeaderPolicy;
use crate::config::RemediationSettings;
use etcdmedic_cluster::MemberId;

use super::*;
use crate::plan::tests::{cluster, member};
use crate::plan::{forecast, make_plan, preflight, Plan, Selection};
use crate::report::{
    history, LeaderMove, MemberAction, MemberReport, Outcome, RunReport, SnapshotReport,
};

const MIB: u64 = 1024 * 1024;

fn sample(mib: u64, millis: u64) -> Sample {
    Sample {
        bytes: mib * MIB,
        took: Duration::from_millis(millis),
    }
}

fn rate(mib_per_second: u64) -> Rate {
    Rate {
        bytes_per_second: (mib_per_second * MIB) as f64,
        basis: Basis::ThisRun,
        samples: 1,
    }
}

#[test]
fn the_slowest_usable_sample_sets_the_rate() {
    let samples = [
        sample(100, 500),
        sample(100, 1000),
        sample(0, 10),
        sample(5, 0),
    ];
    let rate = Rate::slowest(&samples, Basis::ThisRun).unwrap();
    assert_eq!(rate.bytes_per_second, (100 * MIB) as f64);
    assert_eq!(rate.samples, 2);
    assert_eq!(Rate::slowest(&[sample(0, 10)], Basis::ThisRun), None);
}

#[test]
fn this_runs_measurements_beat_earlier_runs_which_beat_the_assumption() {
    let history = History {
        defrag: vec![sample(10, 1000)],
        snapshot: vec![sample(200, 1000)],
        leader_moves: vec![Duration::from_millis(80), Duration::from_millis(120)],
    };
    let now = Rates::learned(&[sample(300, 1000)], &history);
    assert_eq!(now.defrag.basis, Basis::ThisRun);
    assert_eq!(now.defrag.bytes_per_second, (300 * MIB) as f64);
    assert_eq!(now.snapshot.basis, Basis::EarlierRuns);
    assert_eq!(now.leader_move, Duration::from_millis(120));

    let earlier = Rates::learned(&[], &history);
    assert_eq!(earlier.defrag.basis, Basis::EarlierRuns);
    assert_eq!(earlier.defrag.bytes_per_second, (10 * MIB) as f64);

    let nothing = Rates::learned(&[], &History::default());
    assert_eq!(nothing.defrag.basis, Basis::Assumed);
    assert_eq!(
        nothing.defrag.bytes_per_second,
        ASSUMED_DEFRAG_BYTES_PER_SECOND
    );
    assert_eq!(nothing.leader_move, ASSUMED_LEADER_MOVE);
}

#[test]
fn auto_keeps_the_leader_in_place_only_below_the_bound() {
    let bound = Duration::from_secs(1);
    // 100 MiB at 200 MiB/s: 0.5 s.
    let short = leader_choice(LeaderPolicy::Auto, bound, 100 * MIB, &rate(200), None);
    assert!(short.in_place, "{short:?}");
    assert_eq!(short.predicted, Duration::from_millis(500));
    assert!(
        short.reason.contains("under leader_in_place_below (1s)"),
        "{}",
        short.reason
    );
    // 400 MiB at 200 MiB/s: 2 s.
    let long = leader_choice(LeaderPolicy::Auto, bound, 400 * MIB, &rate(200), None);
    assert!(!long.in_place, "{long:?}");
    assert!(
        long.reason.contains("leadership moves first"),
        "{}",
        long.reason
    );
    assert!(long.reason.contains("is 2.00s"), "{}", long.reason);
    // A bound of 0 always moves; exactly at the bound moves too.
    assert!(!leader_choice(LeaderPolicy::Auto, Duration::ZERO, 1, &rate(200), None).in_place);
    assert!(!leader_choice(LeaderPolicy::Auto, bound, 200 * MIB, &rate(200), None).in_place);
}

#[test]
fn the_defrag_gate_is_said_but_does_not_change_where_the_leader_is_defragmented() {
    let bound = Duration::from_secs(1);
    for (in_use, in_place) in [(100 * MIB, true), (400 * MIB, false)] {
        let without = leader_choice(LeaderPolicy::Auto, bound, in_use, &rate(200), None);
        let with = leader_choice(LeaderPolicy::Auto, bound, in_use, &rate(200), Some(true));
        assert_eq!((without.in_place, with.in_place), (in_place, in_place));
        assert!(!without.reason.contains("StopGRPCServiceOnDefrag"));
        let said = match in_place {
            true => "lease renewals and the clients pinned to it still wait",
            false => "once a follower, its health-checking clients move",
        };
        assert!(with.reason.contains(said), "{}", with.reason);
    }
    let off = leader_choice(LeaderPolicy::Auto, bound, MIB, &rate(200), Some(false));
    assert!(
        !off.reason.contains("StopGRPCServiceOnDefrag"),
        "{}",
        off.reason
    );
}

#[test]
fn explicit_policies_ignore_the_prediction() {
    let bound = Duration::from_secs(1);
    let tiny = leader_choice(LeaderPolicy::MoveThenDefrag, bound, MIB, &rate(200), None);
    assert!(!tiny.in_place);
    let huge = leader_choice(
        LeaderPolicy::DefragInPlace,
        bound,
        4000 * MIB,
        &rate(200),
        None,
    );
    assert!(huge.in_place);
    assert_eq!(huge.predicted, Duration::from_secs(20));
}

fn three_member_plan(leader: LeaderPolicy) -> Plan {
    let status = cluster(
        vec![
            member(1, 1, 500 * MIB, 100 * MIB),
            member(2, 1, 400 * MIB, 50 * MIB),
            member(3, 1, 600 * MIB, 200 * MIB),
        ],
        vec![],
    );
    let settings = RemediationSettings {
        leader,
        defrag_rule: crate::defrag_rule::DefragRule::expression("true").unwrap(),
        ..RemediationSettings::default()
    };
    let healthy = preflight(&status, &settings, false).unwrap();
    make_plan(&status, &healthy, &settings, Selection::Rule)
}

fn rates(defrag_mib: u64) -> Rates {
    Rates {
        defrag: rate(defrag_mib),
        snapshot: rate(100),
        leader_move: Duration::from_millis(300),
    }
}

#[test]
fn the_forecast_lists_every_step_and_adds_the_pauses() {
    let plan = three_member_plan(LeaderPolicy::Auto);
    // 100 MiB/s: the leader's 100 MiB take 1 s, not under the 1 s bound: it moves.
    let forecast = forecast(
        &plan,
        rates(100),
        LeaderPolicy::Auto,
        Duration::from_secs(1),
        Duration::from_secs(2),
    );
    let steps: Vec<(StepKind, Option<u64>, u128)> = forecast
        .steps
        .iter()
        .map(|s| {
            (
                s.step,
                s.member.as_ref().map(|m| m.id.0),
                s.duration.as_millis(),
            )
        })
        .collect();
    // The snapshot streams the most caught-up follower's whole file (m2: 400 MiB).
    assert_eq!(
        steps,
        vec![
            (StepKind::Snapshot, Some(2), 4000),
            (StepKind::Defragment, Some(3), 2000),
            (StepKind::Defragment, Some(2), 500),
            (StepKind::MoveLeader, Some(1), 300),
            (StepKind::Defragment, Some(1), 1000),
        ]
    );
    // 7.8 s of steps and two pauses of 2 s between three members.
    assert_eq!(forecast.total, Duration::from_millis(11_800));
    assert!(!forecast.leader.as_ref().unwrap().in_place);
    let m3 = &plan.defragment[0].member;
    assert_eq!(
        forecast.of(StepKind::Defragment, Some(m3)),
        Some(Duration::from_secs(2))
    );
    assert_eq!(forecast.of(StepKind::Verify, None), None);
}

#[test]
fn a_leader_kept_in_place_has_no_move_in_the_forecast() {
    let plan = three_member_plan(LeaderPolicy::Auto);
    let forecast = forecast(
        &plan,
        rates(400),
        LeaderPolicy::Auto,
        Duration::from_secs(1),
        Duration::ZERO,
    );
    assert!(forecast.leader.as_ref().unwrap().in_place);
    assert!(forecast
        .steps
        .iter()
        .all(|s| s.step != StepKind::MoveLeader));
}

fn report(dry_run: bool, defrag: &[(u64, u64)], moved: Option<u64>) -> RunReport {
    let mut report = RunReport::ended("c", "test", dry_run, Outcome::Succeeded, String::new());
    let someone = MemberRef {
        id: MemberId(1),
        name: "m1".into(),
        endpoint: "http://127.0.0.1:2379".into(),
    };
    for &(in_use_mib, millis) in defrag {
        report.members.push(MemberReport {
            member: someone.clone(),
            was_leader: false,
            is_learner: false,
            action: MemberAction::Defragmented,
            reason: String::new(),
            db_size_before: 2 * in_use_mib * MIB,
            db_size_in_use_before: in_use_mib * MIB,
            db_size_after: Some(in_use_mib * MIB),
            db_size_in_use_after: Some(in_use_mib * MIB),
            follower_at_defrag: Some(true),
            defrag_duration: Some(Duration::from_millis(millis)),
            stop_grpc_on_defrag: None,
        });
    }
    report.snapshot = Some(SnapshotReport {
        path: "/tmp/s".into(),
        size_bytes: 64 * MIB,
        revision: 1,
        sha256: String::new(),
        from: someone.clone(),
        duration: Duration::from_millis(500),
        removed: vec![],
        reused_backup: false,
    });
    report.leader_move = moved.map(|millis| LeaderMove {
        from: someone.clone(),
        to: someone.clone(),
        duration: Duration::from_millis(millis),
    });
    report.finished_at = SystemTime::now();
    report
}

#[test]
fn history_comes_from_real_work_of_the_latest_runs() {
    let mut reports = vec![report(true, &[(1, 1000)], None)];
    for _ in 0..HISTORY_RUNS {
        reports.push(report(false, &[(100, 500), (100, 250)], Some(90)));
    }
    // Older than the last HISTORY_RUNS real runs: not counted.
    reports.push(report(false, &[(1, 1000)], Some(5000)));
    let history = history(&reports);
    assert_eq!(history.defrag.len(), 2 * HISTORY_RUNS);
    assert!(history.defrag.iter().all(|s| s.bytes == 100 * MIB));
    assert_eq!(history.snapshot.len(), HISTORY_RUNS);
    assert_eq!(
        history.leader_moves,
        vec![Duration::from_millis(90); HISTORY_RUNS]
    );
}
