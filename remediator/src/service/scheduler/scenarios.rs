//! The dispatcher's decisions against a scripted cluster engine ([`ClusterEngine`]): what the
//! scheduler does once a run is queued, which only the end-to-end tests reached before.

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
        match options.dry_run {
            true => self.dry_runs.fetch_add(1, Ordering::SeqCst),
            false => self.runs.fetch_add(1, Ordering::SeqCst),
        };
        let report = RunReport::ended(
            "a",
            &options.trigger,
            options.dry_run,
            Outcome::Succeeded,
            "scripted".into(),
        );
        Box::pin(async move { report })
    }

    fn backup<'a>(
        &'a self,
        _: &'a BackupSettings,
        _: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<BackupReport, BackupError>> {
        Box::pin(async { Err(BackupError::NoMember) })
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
    std::fs::write(dir.join("token"), "t").unwrap();
    let yaml = format!(
        "remediator:\n{remediator}  state_path: {}\n  auth: {{bearer_token_file: token}}\n\
         clusters:\n  - name: a\n    endpoints: [http://127.0.0.1:1]\n",
        dir.join("state.sqlite").display()
    );
    let config = Config::from_yaml(&yaml, &dir.join("c.yaml")).unwrap();
    let settings = ServiceSettings::from_config(&config, None).unwrap();
    let metrics = Arc::new(Metrics::new(&["a".to_string()]));
    let stop = CancellationToken::new();
    let (scheduler, interrupted) =
        Scheduler::open_with(&config.clusters, &settings, metrics, stop.clone(), |_| {
            Ok(engine.clone() as Arc<dyn ClusterEngine>)
        })
        .await
        .unwrap();
    scheduler.recover(interrupted);
    tokio::spawn(scheduler.clone().dispatch());
    (scheduler, stop)
}

/// Sends one firing alert of its own episode (`fingerprint`) for cluster `a`.
async fn alert(scheduler: &Scheduler, fingerprint: &str) {
    let body = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r",
        "alerts": [{"status": "firing", "fingerprint": fingerprint,
            "startsAt": format!("2026-11-21T07:00:0{}Z", fingerprint.len() % 10),
            "labels": {"alertname": "EtcdmedicNoSpaceAlarm", "etcd_cluster": "a"}}]});
    let payload = super::super::payload::parse(body.to_string().as_bytes()).unwrap();
    scheduler.accept(payload).await.unwrap();
}

/// The finished runs, newest first, once there are `count` of them (within 10 s).
async fn finished(scheduler: &Scheduler, count: usize) -> Vec<RunSummary> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = RunFilter {
            limit: 10,
            ..RunFilter::default()
        };
        let runs = scheduler.runs(all).await.unwrap();
        let done: Vec<RunSummary> = runs.into_iter().filter(|r| r.outcome.is_some()).collect();
        if done.len() >= count {
            return done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} runs finished, not {count}",
            done.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
