//! The dispatcher's decisions against a scripted cluster engine ([`ClusterEngine`]): what the
//! scheduler does once a run is queued, which only the end-to-end tests reached before.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etcdmedic_cluster::model::{Alarm, AlarmKind, ClusterStatus, MemberId, ProbeError};
use futures::future::BoxFuture;
use serde_json::json;

use super::engine::ClusterEngine;
use super::*;
use crate::backup::{BackupError, BackupReport};
use crate::config::{BackupSettings, RemediatorConfig as Config};
use crate::events::Events;
use crate::report::{Outcome, RunReport};
use crate::{RunError, RunOptions};

/// A cluster whose runs succeed at once, counting them, with a NOSPACE alarm when told.
#[derive(Default)]
struct Scripted {
    nospace: AtomicBool,
    runs: AtomicUsize,
    dry_runs: AtomicUsize,
    /// Waits until every member serves reads (after a restart).
    waits: AtomicUsize,
    /// How many runs from now are refused (before changing anything) rather than run.
    refusals: AtomicUsize,
    /// What the cluster was asked to do, in order: `run`, `run ended`, `backup`, `backup
    /// ended`.
    calls: std::sync::Mutex<Vec<&'static str>>,
    /// Each run and backup takes a permit before it ends: none, and they wait for the test.
    permits: Option<tokio::sync::Semaphore>,
}

impl Scripted {
    /// A cluster whose runs and backups end only when the test lets them ([`Self::release`]).
    fn held() -> Scripted {
        Scripted {
            permits: Some(tokio::sync::Semaphore::new(0)),
            ..Scripted::default()
        }
    }

    fn release(&self) {
        if let Some(permits) = &self.permits {
            permits.add_permits(1);
        }
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }

    /// Records `call`, waits for a permit when held, then records its end.
    async fn hold(&self, call: &'static str, ended: &'static str) {
        self.calls.lock().unwrap().push(call);
        if let Some(permits) = &self.permits {
            permits.acquire().await.unwrap().forget();
        }
        self.calls.lock().unwrap().push(ended);
    }
}

impl ClusterEngine for Scripted {
    fn live_status(&self) -> BoxFuture<'_, ClusterStatus> {
        let alarms = match self.nospace.load(Ordering::SeqCst) {
            true => vec![Alarm {
                member_id: MemberId(1),
                alarm: AlarmKind::NoSpace,
            }],
            false => vec![],
        };
        Box::pin(async move {
            ClusterStatus {
                cluster: "a".into(),
                members: vec![],
                unlisted_endpoints: vec![],
                membership: Err(ProbeError::Unreachable("scripted".into())),
                alarms: Ok(alarms),
                duration: Duration::ZERO,
            }
        })
    }

    fn run<'a>(
        &'a self,
        options: &'a RunOptions,
        _: &'a Events,
        _: &'a CancellationToken,
    ) -> BoxFuture<'a, RunReport> {
        let refused = self
            .refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        match (refused, options.dry_run) {
            (true, _) => 0,
            (false, true) => self.dry_runs.fetch_add(1, Ordering::SeqCst),
            (false, false) => self.runs.fetch_add(1, Ordering::SeqCst),
        };
        let (outcome, reason) = match refused {
            true => (Outcome::Failed, "refused: member m2 is not answering"),
            false => (Outcome::Succeeded, "scripted"),
        };
        let mut report = RunReport::ended(
            "a",
            &options.trigger,
            options.dry_run,
            outcome,
            reason.into(),
        );
        report.refused = refused;
        Box::pin(async move {
            self.hold("run", "run ended").await;
            report
        })
    }

    fn backup<'a>(
        &'a self,
        _: &'a BackupSettings,
        _: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<BackupReport, BackupError>> {
        Box::pin(async move {
            self.hold("backup", "backup ended").await;
            Err(BackupError::NoMember)
        })
    }

    fn wait_until_members_serve_reads<'a>(
        &'a self,
        _: &'a Events,
        _: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Duration, RunError>> {
        self.waits.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(Duration::from_millis(1500)) })
    }
}

/// A dispatching scheduler of cluster `a` on `engine`, with `remediator` lines in its block.
async fn dispatching(
    dir: &std::path::Path,
    remediator: &str,
    engine: Arc<Scripted>,
) -> (Arc<Scheduler>, CancellationToken) {
    dispatching_with(dir, remediator, "", engine).await
}

/// [`dispatching`] with `cluster` lines in cluster `a`'s entry.
async fn dispatching_with(
    dir: &std::path::Path,
    remediator: &str,
    cluster: &str,
    engine: Arc<Scripted>,
) -> (Arc<Scheduler>, CancellationToken) {
    std::fs::write(dir.join("token"), "t").unwrap();
    let yaml = format!(
        "remediator:\n{remediator}  state_path: {}\n  auth: {{bearer_token_file: token}}\n\
         clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:1]\n{cluster}",
        dir.join("state.sqlite").display()
    );
    let config = Config::from_yaml(&yaml, &dir.join("c.yaml")).unwrap();
    let settings = ServiceSettings::from_config(&config, None).unwrap();
    let metrics = Arc::new(Metrics::new(&["a".to_string()]));
    let stop = CancellationToken::new();
    let (scheduler, interrupted) = Scheduler::open_with(
        &config.clusters,
        &settings,
        metrics,
        stop.clone(),
        Clock::following_tokio(),
        |_| Ok(engine.clone() as Arc<dyn ClusterEngine>),
    )
    .await
    .unwrap();
    scheduler.recover(interrupted);
    tokio::spawn(scheduler.clone().dispatch());
    (scheduler, stop)
}

/// Sends one firing NOSPACE alert of its own episode (`fingerprint`) for cluster `a`.
async fn alert(scheduler: &Scheduler, fingerprint: &str) {
    alert_named(scheduler, fingerprint, "EtcdmedicNoSpaceAlarm").await
}

/// Sends one firing alert `alertname` of its own episode (`fingerprint`) for cluster `a`.
async fn alert_named(scheduler: &Scheduler, fingerprint: &str, alertname: &str) {
    let body = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r",
        "alerts": [{"status": "firing", "fingerprint": fingerprint,
            "startsAt": format!("2026-11-21T07:00:0{}Z", fingerprint.len() % 10),
            "labels": {"alertname": alertname, "etcd_cluster": "a"}}]});
    let payload = super::super::payload::parse(body.to_string().as_bytes()).unwrap();
    scheduler.accept(payload).await.unwrap();
}

/// Asks `check` every 10 ms until it breaks with a value, failing with what it last said
/// after 10 s of the machine's time (tokio's may be paused and moved on by the test).
async fn polled<T>(mut check: impl AsyncFnMut() -> ControlFlow<T, String>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match check().await {
            ControlFlow::Break(value) => return value,
            ControlFlow::Continue(last) => {
                assert!(std::time::Instant::now() < deadline, "{last}")
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The finished runs, newest first, once there are `count` of them.
async fn finished(scheduler: &Scheduler, count: usize) -> Vec<RunSummary> {
    polled(async || {
        let all = RunFilter {
            limit: 10,
            ..RunFilter::default()
        };
        let runs = scheduler.runs(all).await.unwrap();
        let done: Vec<RunSummary> = runs.into_iter().filter(|r| r.outcome.is_some()).collect();
        match done.len() >= count {
            true => ControlFlow::Break(done),
            false => ControlFlow::Continue(format!("{} runs finished, not {count}", done.len())),
        }
    })
    .await
}

#[tokio::test]
async fn inside_the_cooldown_a_run_is_skipped_unless_the_cluster_has_a_nospace_alarm() {
    for nospace in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Scripted::default());
        let (scheduler, stop) = dispatching(dir.path(), "  cooldown: 1h\n", engine.clone()).await;
        alert(&scheduler, "first").await;
        assert_eq!(
            finished(&scheduler, 1).await[0].outcome,
            Some(Outcome::Succeeded)
        );

        engine.nospace.store(nospace, Ordering::SeqCst);
        alert(&scheduler, "second-episode").await;
        let runs = finished(&scheduler, 2).await;
        let second = &runs[0];
        match nospace {
            false => {
                assert_eq!(second.outcome, Some(Outcome::Skipped), "{second:?}");
                assert!(
                    second
                        .reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with("cooldown:")),
                    "{second:?}"
                );
                assert_eq!(
                    engine.runs.load(Ordering::SeqCst),
                    1,
                    "the engine ran again"
                );
            }
            true => {
                assert_eq!(second.outcome, Some(Outcome::Succeeded), "{second:?}");
                assert_eq!(
                    engine.runs.load(Ordering::SeqCst),
                    2,
                    "NOSPACE did not run it"
                );
            }
        }
        stop.cancel();
    }
}

#[tokio::test]
async fn in_observe_mode_the_dispatcher_only_plans_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Scripted::default());
    let (scheduler, stop) = dispatching(dir.path(), "  mode: observe\n", engine.clone()).await;
    alert(&scheduler, "first").await;
    let run = &finished(&scheduler, 1).await[0];
    assert_eq!(
        engine.runs.load(Ordering::SeqCst),
        0,
        "observe mode changed the cluster"
    );
    assert_eq!(engine.dry_runs.load(Ordering::SeqCst), 1);
    assert!(run.dry_run, "{run:?}");
    assert!(
        run.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("observe mode (remediator.mode: observe)")),
        "{run:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn after_a_restart_that_interrupted_a_run_the_members_are_waited_for_before_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    // A run the last process left running.
    let interrupted = {
        let backend = store::Backend::Sqlite {
            path: dir.path().join("state.sqlite"),
            init: false,
        };
        let mut store = store::open(backend, Default::default()).unwrap();
        let run = store::NewRun {
            cluster: "a",
            source: store::RunSource::Alertmanager,
            dry_run: false,
            trigger: "EtcdmedicNoSpaceAlarm",
            cooldown_until: None,
            not_before: None,
            retry_of: None,
        };
        let id = store::in_transaction(store.as_mut(), |tx| tx.insert_run(&run)).unwrap();
        store
            .mark_running(id, std::time::SystemTime::now())
            .unwrap();
        id
    };
    let engine = Arc::new(Scripted::default());
    // No cooldown: the interrupted run counts as work, and would skip the next one.
    let (scheduler, stop) = dispatching(dir.path(), "  cooldown: 0s\n", engine.clone()).await;
    alert(&scheduler, "after-restart").await;
    let runs = finished(&scheduler, 2).await;
    assert_eq!(engine.waits.load(Ordering::SeqCst), 1);
    assert_eq!(
        engine.runs.load(Ordering::SeqCst),
        1,
        "the new run did not run"
    );
    let old = runs.iter().find(|r| r.id == interrupted).unwrap();
    assert_eq!(old.outcome, Some(Outcome::Interrupted), "{old:?}");
    let (detail, _) = scheduler.run(interrupted).await.unwrap().unwrap();
    assert!(
        detail
            .summary
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("After the restart the service waited 1.5s")),
        "{:?}",
        detail.summary.reason
    );
    stop.cancel();
}

/// A refused run changed nothing and starts no cooldown: while its alerts fire, the
/// dispatcher runs it again once retry_after_refusal has passed, and not before.
#[tokio::test(start_paused = true)]
async fn a_refused_run_runs_again_after_retry_after_refusal_while_its_alerts_fire() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Scripted::default());
    engine.refusals.store(1, Ordering::SeqCst);
    let remediator = "  cooldown: 1h\n  retry_after_refusal: 10m\n";
    let (scheduler, stop) = dispatching(dir.path(), remediator, engine.clone()).await;
    alert(&scheduler, "first").await;
    let refused = finished(&scheduler, 1).await.remove(0);
    assert_eq!(refused.outcome, Some(Outcome::Failed), "{refused:?}");
    assert_eq!(engine.runs.load(Ordering::SeqCst), 0);

    let queue = scheduler.queues().await.unwrap().remove(0);
    let retry = queue.queued_run.expect("a retry is queued");
    // Nine minutes on, the retry still waits.
    tokio::time::advance(Duration::from_secs(9 * 60)).await;
    assert!(
        scheduler.next_start().await.is_none(),
        "the retry is due before retry_after_refusal"
    );
    assert_eq!(scheduler.queues().await.unwrap()[0].queued_run, Some(retry));
    assert_eq!(engine.runs.load(Ordering::SeqCst), 0);

    // Past ten minutes it runs, inside what would be the cooldown had the refusal done work.
    tokio::time::advance(Duration::from_secs(61)).await;
    let runs = finished(&scheduler, 2).await;
    assert_eq!(runs[0].id, retry);
    assert_eq!(runs[0].outcome, Some(Outcome::Succeeded), "{:?}", runs[0]);
    assert_eq!(runs[0].retry_of, Some(refused.id));
    assert_eq!(engine.runs.load(Ordering::SeqCst), 1);
    stop.cancel();
}

/// Outside its maintenance windows a cluster's fragmentation run waits for the next opening
/// and starts when the clock reaches it, while a NOSPACE alert runs at once.
#[tokio::test(start_paused = true)]
async fn a_run_outside_the_windows_waits_for_the_opening_and_nospace_does_not() {
    use chrono::{DateTime, Timelike, Utc};
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Scripted::default());
    // A daily window that opens two hours from now, for an hour.
    let opens = DateTime::<Utc>::from(std::time::SystemTime::now() + Duration::from_secs(7200));
    let cluster = format!(
        "    remediation:\n      windows: [{{start: \"{} {} {} * * *\", duration: 1h}}]\n",
        opens.second(),
        opens.minute(),
        opens.hour()
    );
    let (scheduler, stop) =
        dispatching_with(dir.path(), "  cooldown: 0s\n", &cluster, engine.clone()).await;

    alert_named(&scheduler, "frag", "EtcdmedicDatabaseHighFragmentation").await;
    let queue = scheduler.queues().await.unwrap().remove(0);
    assert!(queue.waiting_for_window, "{queue:?}");
    tokio::time::advance(Duration::from_secs(7200 - 60)).await;
    assert!(
        scheduler.next_start().await.is_none(),
        "due before the window opens"
    );
    assert_eq!(
        engine.runs.load(Ordering::SeqCst),
        0,
        "ran before the window"
    );

    // NOSPACE does not wait: it joins the queued run, which starts now.
    alert(&scheduler, "nospace").await;
    let runs = finished(&scheduler, 1).await;
    assert_eq!(runs[0].outcome, Some(Outcome::Succeeded), "{:?}", runs[0]);
    assert_eq!(engine.runs.load(Ordering::SeqCst), 1);

    // The next fragmentation run waits for the window, and starts once it has opened.
    alert_named(
        &scheduler,
        "frag-again",
        "EtcdmedicDatabaseHighFragmentation",
    )
    .await;
    assert!(scheduler.queues().await.unwrap()[0].waiting_for_window);
    tokio::time::advance(Duration::from_secs(120)).await;
    let runs = finished(&scheduler, 2).await;
    assert_eq!(runs[0].outcome, Some(Outcome::Succeeded), "{:?}", runs[0]);
    assert_eq!(engine.runs.load(Ordering::SeqCst), 2);
    stop.cancel();
}

/// Waits until `calls` is `expected`.
async fn calls_become(engine: &Scripted, expected: &[&str]) {
    polled(async || match engine.calls() {
        calls if calls == expected => ControlFlow::Break(()),
        calls => ControlFlow::Continue(format!("calls {calls:?}, not {expected:?}")),
    })
    .await
}

/// One cluster never has a run and a backup at once: a backup asked for during a run starts
/// when the run ends, and a run asked for during a backup when the backup ends.
#[tokio::test]
async fn a_backup_waits_for_the_clusters_run_and_a_run_for_its_backup() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Scripted::held());
    let cluster = "    backup:\n      destinations: [{name: d, kind: local, path: backups}]\n";
    let (scheduler, stop) =
        dispatching_with(dir.path(), "  cooldown: 0s\n", cluster, engine.clone()).await;

    alert(&scheduler, "first").await;
    calls_become(&engine, &["run"]).await;
    let decision = scheduler.request_backup("a").await.unwrap();
    assert_eq!(decision.action, "queued");
    assert!(
        decision
            .reason
            .contains("a run of a is under way; the backup follows it"),
        "{decision:?}"
    );
    let now = std::time::SystemTime::now();
    let started = scheduler
        .ledger
        .call(move |ledger| ledger.next_backup(now).is_some())
        .await
        .unwrap();
    assert!(!started, "the backup may start during the run");
    engine.release();
    calls_become(&engine, &["run", "run ended", "backup"]).await;

    // During the backup, a run waits for it.
    alert(&scheduler, "second-episode").await;
    assert!(
        scheduler.next_start().await.is_none(),
        "the run may start during the backup"
    );
    engine.release();
    calls_become(
        &engine,
        &["run", "run ended", "backup", "backup ended", "run"],
    )
    .await;
    engine.release();
    assert_eq!(finished(&scheduler, 2).await.len(), 2);
    stop.cancel();
}

/// The replicas' guard: a run is confirmed before each change while the shared store still
/// records it running, and refused once it does not (another replica marked it interrupted
/// when it took the store over), naming why.
#[tokio::test]
async fn the_run_guard_confirms_a_running_run_and_refuses_one_the_store_no_longer_runs() {
    use crate::engine::guard::RunGuard;
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Scripted::held());
    let (scheduler, stop) = dispatching(dir.path(), "  cooldown: 0s\n", engine.clone()).await;
    alert(&scheduler, "first").await;
    calls_become(&engine, &["run"]).await;
    let id = scheduler.queues().await.unwrap()[0]
        .running_run
        .expect("a run under way");
    let guard = super::guard::StoreGuard {
        ledger: scheduler.ledger.clone(),
        run: id,
    };
    guard.confirm().await.expect("a running run is confirmed");

    // What a replica taking the store over does to the runs it finds running.
    let report = RunReport::ended("a", "t", false, Outcome::Interrupted, "taken over".into());
    scheduler
        .ledger
        .call(move |ledger| {
            store::in_transaction(ledger.store.as_mut(), |tx| tx.finish(id, &report))
        })
        .await
        .unwrap()
        .unwrap();
    let refused = guard
        .confirm()
        .await
        .expect_err("a finished run is confirmed");
    assert!(
        refused.to_string().contains(&format!(
            "no longer records run {id} as running: another replica took it over"
        )),
        "{refused}"
    );
    engine.release();
    stop.cancel();
}
