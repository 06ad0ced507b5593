use super::super::store::RunSource;
use super::*;
use crate::config::RemediatorConfig as Config;
use crate::report::{Outcome, RunReport};
use serde_json::json;
use std::time::SystemTime;

/// A scheduler over two never-contacted clusters; nothing dispatches, so runs stay queued.
fn scheduler(dir: &std::path::Path) -> Arc<Scheduler> {
    scheduler_with(dir, "")
}

/// [`scheduler`] with top-level `remediation:` settings (`remediation` is its YAML body).
fn scheduler_with(dir: &std::path::Path, remediation: &str) -> Arc<Scheduler> {
    let remediation = match remediation {
        "" => String::new(),
        body => format!("remediation: {body}\n"),
    };
    scheduler_from(dir, &remediation)
}

/// [`scheduler`] with `top_level` YAML (whole top-level blocks) before `remediator:`.
pub(super) fn scheduler_from(dir: &std::path::Path, top_level: &str) -> Arc<Scheduler> {
    scheduler_serving(dir, top_level, "")
}

/// [`scheduler_from`] with `remediator` lines (indented by two spaces) in its block.
fn scheduler_serving(dir: &std::path::Path, top_level: &str, remediator: &str) -> Arc<Scheduler> {
    std::fs::write(dir.join("token"), "t").unwrap();
    let yaml = format!(
        "{top_level}remediator:\n{remediator}  state_path: {}\n  auth: {{bearer_token_file: token}}\nclusters:\n  \
         - name: a\n    endpoints: [http://127.0.0.1:1]\n  - name: b\n    endpoints: \
         [http://127.0.0.1:1]\n    alert_labels: {{job: kube-etcd}}\n",
        dir.join("state.sqlite").display()
    );
    let config = Config::from_yaml(&yaml, &dir.join("c.yaml")).unwrap();
    let settings = ServiceSettings::from_config(&config, None).unwrap();
    let metrics = Arc::new(Metrics::new(
        &config
            .cluster_names()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    ));
    // The tests' helpers are plain functions: waited for here, off the tests' runtime.
    futures::executor::block_on(Scheduler::open(
        &config.clusters,
        &settings,
        metrics,
        CancellationToken::new(),
    ))
    .unwrap()
    .0
}

fn alert(status: &str, labels: serde_json::Value, fingerprint: &str) -> serde_json::Value {
    json!({"status": status, "labels": labels, "startsAt": "2026-11-21T07:00:00Z", "fingerprint": fingerprint})
}

async fn send(scheduler: &Scheduler, alerts: Vec<serde_json::Value>) -> Vec<Decision> {
    let body = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r", "alerts": alerts});
    let payload = super::super::payload::parse(body.to_string().as_bytes()).unwrap();
    scheduler
        .accept(payload)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.decision)
        .collect()
}

fn fragmentation(cluster: &str) -> serde_json::Value {
    json!({"alertname": "EtcdmedicDatabaseHighFragmentation", "etcd_cluster": cluster})
}

#[tokio::test]
async fn alerts_for_one_cluster_coalesce_and_resolving_them_all_cancels_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(dir.path());
    let first = send(
        &scheduler,
        vec![
            alert("firing", fragmentation("a"), "f1"),
            alert(
                "firing",
                json!({"alertname": "EtcdmedicNoSpaceAlarm", "etcd_cluster": "a"}),
                "f2",
            ),
        ],
    )
    .await;
    assert_eq!(first[0].action, Action::Queued);
    assert_eq!(first[1].action, Action::Joined);
    let id = first[0].run_id;
    assert_eq!(first[1].run_id, id);

    let partly = send(
        &scheduler,
        vec![alert("resolved", fragmentation("a"), "f1")],
    )
    .await;
    assert_eq!(partly[0].action, Action::Ignored);
    assert!(partly[0].reason.contains("stays queued"), "{:?}", partly[0]);

    let all = send(
        &scheduler,
        vec![alert(
            "resolved",
            json!({"alertname": "EtcdmedicNoSpaceAlarm", "etcd_cluster": "a"}),
            "f2",
        )],
    )
    .await;
    assert_eq!(all[0].action, Action::Cancelled);
    assert_eq!(all[0].run_id, id);
    let run = scheduler.run(id.unwrap()).await.unwrap().unwrap().0;
    assert_eq!(run.summary.outcome, Some(Outcome::Cancelled));

    let again = send(
        &scheduler,
        vec![alert("resolved", fragmentation("a"), "f1")],
    )
    .await;
    assert_eq!(again[0].ignored_because, Some("resolved"));
}

#[tokio::test]
async fn in_observe_mode_every_run_is_queued_as_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler_serving(dir.path(), "", "  mode: observe\n");
    assert_eq!(scheduler.mode(), ServiceMode::Observe);
    let alerted = send(&scheduler, vec![alert("firing", fragmentation("a"), "f1")]).await;
    assert_eq!(alerted[0].action, Action::Queued);
    let asked = scheduler.request("b", false).await.unwrap();
    assert_eq!(asked.action, Action::Queued);
    for id in [alerted[0].run_id, asked.run_id] {
        let run = scheduler.run(id.unwrap()).await.unwrap().unwrap().0;
        assert!(run.summary.dry_run, "{run:?}");
    }
}

#[tokio::test]
async fn in_act_mode_an_alert_queues_a_run_that_remediates() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(dir.path());
    assert_eq!(scheduler.mode(), ServiceMode::Act);
    let alerted = send(&scheduler, vec![alert("firing", fragmentation("a"), "f1")]).await;
    let run = scheduler
        .run(alerted[0].run_id.unwrap())
        .await
        .unwrap()
        .unwrap()
        .0;
    assert!(!run.summary.dry_run, "{run:?}");
}

#[tokio::test]
async fn clusters_are_found_by_their_alert_labels() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(dir.path());
    let decisions = send(
        &scheduler,
        vec![
            alert(
                "firing",
                json!({"alertname": "etcdDatabaseQuotaLowSpace", "job": "kube-etcd"}),
                "m",
            ),
            alert("firing", fragmentation("zzz"), "u"),
            alert(
                "firing",
                json!({"alertname": "etcdDatabaseQuotaLowSpace", "job": "kube-etcd", "etcd_cluster": "a"}),
                "amb",
            ),
            alert(
                "firing",
                json!({"alertname": "Watchdog", "etcd_cluster": "a"}),
                "w",
            ),
            alert("firing", json!({"etcd_cluster": "a"}), "n"),
        ],
    ).await;
    let because: Vec<_> = decisions.iter().map(|d| d.ignored_because).collect();
    assert_eq!(decisions[0].action, Action::Queued);
    assert_eq!(
        because[1..],
        [
            Some("unknown_cluster"),
            Some("ambiguous_cluster"),
            Some("not_a_trigger"),
            Some("not_a_trigger")
        ]
    );
    let queues = scheduler.queues().await.unwrap();
    assert_eq!(queues[1].cluster, "b");
    assert_eq!(queues[1].queued_run, decisions[0].run_id);
    assert_eq!(queues[0].queued_run, None);
}

#[tokio::test]
async fn manual_runs_ignore_resolved_alerts_and_pausing_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(dir.path());
    let manual = scheduler.request("a", false).await.unwrap();
    assert_eq!(manual.action, Action::Queued);
    let joined = send(&scheduler, vec![alert("firing", fragmentation("a"), "f1")]).await;
    assert_eq!(joined[0].action, Action::Joined);
    let resolved = send(
        &scheduler,
        vec![alert("resolved", fragmentation("a"), "f1")],
    )
    .await;
    assert_eq!(resolved[0].ignored_because, Some("resolved"));
    assert_eq!(
        scheduler.queues().await.unwrap()[0].queued_run,
        manual.run_id
    );

    scheduler.set_paused(true).await.unwrap();
    assert!(matches!(
        scheduler.request("b", true).await,
        Err(RequestError::Paused)
    ));
    let paused = send(&scheduler, vec![alert("firing", fragmentation("a"), "f3")]).await;
    assert_eq!(paused[0].ignored_because, Some("paused"));
    assert!(matches!(
        scheduler.request("nope", true).await,
        Err(RequestError::UnknownCluster(_))
    ));
}

#[tokio::test]
async fn the_queue_and_the_pause_switch_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let scheduler = scheduler(dir.path());
        let decided = send(&scheduler, vec![alert("firing", fragmentation("a"), "f1")]).await;
        scheduler.set_paused(true).await.unwrap();
        scheduler.close().await;
        decided[0].run_id
    };
    let scheduler = scheduler(dir.path());
    assert!(scheduler.status().await.unwrap().0);
    assert_eq!(scheduler.queues().await.unwrap()[0].queued_run, id);
    // The restored run still knows its alert: resolving it cancels the run.
    let resolved = send(
        &scheduler,
        vec![alert("resolved", fragmentation("a"), "f1")],
    )
    .await;
    assert_eq!(resolved[0].action, Action::Cancelled);
}

/// A run refused before changing anything starts no cooldown: while its alerts fire it is
/// retried after retry_after_refusal, and resolving them cancels the retry.
#[tokio::test]
async fn a_refused_alert_run_is_retried_later_while_its_alerts_fire() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(dir.path());
    let first = send(&scheduler, vec![alert("firing", fragmentation("a"), "f1")]).await;
    let start = scheduler.next_start().await.expect("the run starts");
    assert_eq!(Some(start.queued.id), first[0].run_id);
    let mut refused = RunReport::ended(
        "a",
        &start.queued.trigger,
        false,
        Outcome::Failed,
        "refused: member m2 is not answering".into(),
    );
    refused.refused = true;
    scheduler.finish("a", start.queued.id, &refused).await;

    let queue = &scheduler.queues().await.unwrap()[0];
    let retry = queue.queued_run.expect("a retry is queued");
    assert!(queue.queued_not_before.is_some(), "{queue:?}");
    assert!(
        scheduler.next_start().await.is_none(),
        "the retry waits retry_after_refusal"
    );
    let (detail, _) = scheduler.run(retry).await.unwrap().unwrap();
    assert_eq!(detail.summary.retry_of, first[0].run_id);
    let (original, _) = scheduler.run(start.queued.id).await.unwrap().unwrap();
    assert!(
        original
            .summary
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(&format!("Retried as run {retry} at"))),
        "{:?}",
        original.summary.reason
    );

    // Resolving the alert cancels the waiting retry.
    let resolved = send(
        &scheduler,
        vec![alert("resolved", fragmentation("a"), "f1")],
    )
    .await;
    assert_eq!(resolved[0].action, Action::Cancelled);
    assert_eq!(resolved[0].run_id, Some(retry));
    assert_eq!(scheduler.queues().await.unwrap()[0].queued_run, None);
}

#[tokio::test]
async fn a_refusal_is_not_retried_when_its_alerts_resolved_during_the_run_or_it_was_manual() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler(dir.path());
    send(&scheduler, vec![alert("firing", fragmentation("a"), "f1")]).await;
    let start = scheduler.next_start().await.unwrap();
    send(
        &scheduler,
        vec![alert("resolved", fragmentation("a"), "f1")],
    )
    .await;
    let mut refused = RunReport::ended("a", "", false, Outcome::Failed, "refused: x".into());
    refused.refused = true;
    scheduler.finish("a", start.queued.id, &refused).await;
    assert_eq!(scheduler.queues().await.unwrap()[0].queued_run, None);

    scheduler.request("a", false).await.unwrap();
    let manual = scheduler.next_start().await.unwrap();
    scheduler.finish("a", manual.queued.id, &refused).await;
    assert_eq!(scheduler.queues().await.unwrap()[0].queued_run, None);
}

/// The first day of each month at 03:00 UTC: never due while a test runs, unless asked at a
/// time after its next occurrence.
const MONTHLY: &str = "{schedule: '0 3 1 * *'}";

/// When cluster `a`'s schedule next starts a run, as the status API shows it.
async fn next_scheduled(scheduler: &Scheduler) -> SystemTime {
    let queue = scheduler.queues().await.unwrap();
    humantime::parse_rfc3339(queue[0].next_scheduled_run.as_deref().unwrap()).unwrap()
}

async fn start_at(scheduler: &Scheduler, at: SystemTime) -> Option<ledger::Start> {
    scheduler
        .ledger
        .call(move |ledger| ledger.next_start(at))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_scheduled_time_queues_a_run_that_resolved_alerts_do_not_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler_with(dir.path(), MONTHLY);
    let next = next_scheduled(&scheduler).await;
    assert_eq!(
        scheduler.queues().await.unwrap()[0].queued_run,
        None,
        "nothing before the scheduled time"
    );
    assert!(start_at(&scheduler, next - Duration::from_secs(1))
        .await
        .is_none());

    let start = start_at(&scheduler, next)
        .await
        .expect("the scheduled run starts");
    assert_eq!(
        start.cluster, "a",
        "the older of the two clusters' runs starts first"
    );
    assert_eq!(start.queued.source, RunSource::Schedule);
    assert_eq!(start.queued.trigger, "schedule: 0 3 1 * * (UTC)");
    assert!(
        next_scheduled(&scheduler).await > next,
        "the schedule moved on"
    );
    let queue = scheduler.queues().await.unwrap();
    let b = queue[1]
        .queued_run
        .expect("cluster b's scheduled run is queued");

    // An alert joins b's scheduled run; its resolution does not cancel it.
    let for_b = json!({"alertname": "EtcdmedicDatabaseHighFragmentation", "job": "kube-etcd"});
    let joined = send(&scheduler, vec![alert("firing", for_b.clone(), "f1")]).await;
    assert_eq!(
        (joined[0].action, joined[0].run_id),
        (Action::Joined, Some(b))
    );
    let resolved = send(&scheduler, vec![alert("resolved", for_b, "f1")]).await;
    assert_eq!(resolved[0].action, Action::Ignored);
    assert_eq!(scheduler.queues().await.unwrap()[1].queued_run, Some(b));
    let (detail, _) = scheduler.run(b).await.unwrap().unwrap();
    assert_eq!(detail.summary.source, RunSource::Schedule);
}

#[tokio::test]
async fn a_scheduled_time_passes_while_paused_or_while_the_cluster_has_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = scheduler_with(dir.path(), MONTHLY);
    let next = next_scheduled(&scheduler).await;
    let alerted = send(&scheduler, vec![alert("firing", fragmentation("a"), "f1")]).await;
    scheduler.set_paused(true).await.unwrap();
    assert!(start_at(&scheduler, next).await.is_none());
    let queue = scheduler.queues().await.unwrap();
    assert_eq!(
        queue[0].queued_run, alerted[0].run_id,
        "no second run for a"
    );
    assert_eq!(
        queue[1].queued_run, None,
        "paused: b's time passed without a run"
    );

    scheduler.set_paused(false).await.unwrap();
    let start = start_at(&scheduler, next).await.unwrap();
    assert_eq!(Some(start.queued.id), alerted[0].run_id);
    assert!(
        start_at(&scheduler, next).await.is_none(),
        "the time that passed does not come back"
    );
}
