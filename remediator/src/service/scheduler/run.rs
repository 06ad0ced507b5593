//! Running: starting queued runs as the limits allow, carrying each out with the engine
//! (after the cooldown's live NOSPACE check), recording how it ended, and the wait after a
//! restart that interrupted a run.

use std::sync::Arc;
use std::time::SystemTime;

use etcdmedic_cluster::model::AlarmKind;

use super::super::store::InterruptedRun;
use super::guard::StoreGuard;
use super::ledger::{Queued, Start};
use super::{Scheduler, DISPATCH_EVERY};
use crate::engine::guard::Guard;
use crate::events::Events;
use crate::output::TextProgress;
use crate::report::{Outcome, RunReport};
use crate::RunOptions;

use super::engine::ClusterEngine;

impl Scheduler {
    /// Starts queued runs as the limits allow, until `stop`.
    pub async fn dispatch(self: Arc<Self>) {
        loop {
            self.publish_windows();
            while let Some(start) = self.next_start().await {
                let scheduler = self.clone();
                self.tasks
                    .spawn(async move { scheduler.execute(start).await });
            }
            self.start_backups().await;
            self.publish_schedules().await;
            let next_look = self
                .ledger
                .call(|ledger| ledger.next_look(ledger.rules.clock.now()))
                .await
                .unwrap_or(DISPATCH_EVERY);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(next_look) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// Each windowed cluster's next window opening, for `/metrics`.
    fn publish_windows(&self) {
        let now = self.clock.now();
        for (cluster, target) in &self.targets {
            if let Some(open) = target.config.remediation.windows.next_open(now) {
                self.metrics.set_next_window(cluster, open);
            }
        }
    }

    /// Each scheduled cluster's next scheduled run, for `/metrics`.
    async fn publish_schedules(&self) {
        let next = self
            .ledger
            .call(|ledger| ledger.next_scheduled.clone())
            .await
            .unwrap_or_default();
        for (cluster, at) in next {
            self.metrics.set_next_scheduled_run(&cluster, at);
        }
    }

    /// Waits for the runs under way (each stops after its current member) and recovery
    /// waits to finish.
    pub async fn wait_for_runs(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    pub(super) async fn next_start(&self) -> Option<Start> {
        if self.stop.is_cancelled() {
            return None;
        }
        self.ledger
            .call(|ledger| ledger.next_start(ledger.rules.clock.now()))
            .await
            .unwrap_or_else(|err| {
                tracing::error!(error = %err, "cannot look at the queue");
                None
            })
    }

    async fn execute(self: Arc<Self>, start: Start) {
        let Start {
            cluster,
            queued,
            finish_by,
        } = start;
        // A run queued before a restart into observe mode is planned, not executed.
        let queued = Queued {
            dry_run: queued.dry_run || self.mode.observes(),
            ..queued
        };
        let Some(target) = self.targets.get(&cluster) else {
            // Queued runs of unknown clusters are cancelled at start-up, so this is a bug;
            // the slot must still be given back.
            let report = RunReport::ended(
                &cluster,
                &queued.trigger,
                queued.dry_run,
                Outcome::Failed,
                "the cluster is not in the configuration".into(),
            );
            self.finish(&cluster, queued.id, &report).await;
            return;
        };
        let remediator = target.remediator.clone();
        self.metrics.set_in_progress(&cluster, true);
        tracing::info!(run = queued.id, %cluster, trigger = %queued.trigger, dry_run = queued.dry_run, "run started");
        let silences = if queued.dry_run {
            Vec::new()
        } else {
            self.notifier
                .silence(
                    queued.id,
                    &cluster,
                    &target.config.alert_labels,
                    &queued.alertnames,
                )
                .await
        };

        let (events, mut received) = Events::channel();
        let progress_scheduler = self.clone();
        let run_id = queued.id;
        let progress_cluster = cluster.clone();
        let printer = tokio::spawn(async move {
            let text = TextProgress::default();
            while let Some(event) = received.recv().await {
                if let Some(line) = text.line(&event) {
                    tracing::info!(run = run_id, cluster = %progress_cluster, "{line}");
                    progress_scheduler.set_progress(&progress_cluster, run_id, line);
                }
            }
        });

        let report = match queued.cooldown_until {
            Some(until) => match self.live_nospace(remediator.as_ref()).await {
                true => {
                    tracing::warn!(run = queued.id, %cluster, "inside the cooldown, but the cluster has an active NOSPACE alarm: running");
                    self.run_engine(remediator.as_ref(), &cluster, &queued, finish_by, &events)
                        .await
                }
                false => RunReport::ended(
                    &cluster,
                    &queued.trigger,
                    queued.dry_run,
                    Outcome::Skipped,
                    format!(
                        "cooldown: an earlier run finished less than {} ago (cooldown until {}), \
                         and the live status shows no NOSPACE alarm",
                        humantime::format_duration(self.cooldown),
                        humantime::format_rfc3339_seconds(until)
                    ),
                ),
            },
            None => {
                self.run_engine(remediator.as_ref(), &cluster, &queued, finish_by, &events)
                    .await
            }
        };
        drop(events);
        let _ = printer.await;
        let report = match self.mode.observes() {
            true => observed(report),
            false => report,
        };

        self.notifier.expire(&silences).await;
        self.notifier.annotate(queued.id, &report).await;
        self.finish(&cluster, queued.id, &report).await;
        tracing::info!(
            run = queued.id,
            %cluster,
            outcome = report.outcome.as_str(),
            reason = report.reason.as_deref().unwrap_or(""),
            reclaimed_bytes = report.reclaimed_bytes,
            "run finished"
        );
    }

    async fn run_engine(
        &self,
        remediator: &dyn ClusterEngine,
        cluster: &str,
        queued: &Queued,
        finish_by: Option<SystemTime>,
        events: &Events,
    ) -> RunReport {
        let cluster = cluster.to_string();
        let history = self
            .ledger
            .call(move |ledger| ledger.history(&cluster))
            .await
            .unwrap_or_default();
        let options = RunOptions {
            dry_run: queued.dry_run,
            force: false,
            trigger: format!("run {}: {}", queued.id, queued.trigger),
            history,
            finish_by,
            guard: self.guarded.then(|| {
                Guard(Arc::new(StoreGuard {
                    ledger: self.ledger.clone(),
                    run: queued.id,
                }))
            }),
            only: None,
            // An alert's run never defragments mid-downgrade: it is refused, and retried.
            during_downgrade: false,
        };
        remediator.run(&options, events, &self.stop).await
    }

    async fn live_nospace(&self, remediator: &dyn ClusterEngine) -> bool {
        remediator.live_status().await.has_alarm(AlarmKind::NoSpace)
    }

    fn set_progress(&self, cluster: &str, id: i64, line: String) {
        let cluster = cluster.to_string();
        self.ledger
            .tell(move |ledger| ledger.set_progress(&cluster, id, line));
    }

    pub(super) async fn finish(&self, cluster: &str, id: i64, report: &RunReport) {
        let recorded = {
            let (cluster, report) = (cluster.to_string(), report.clone());
            self.ledger
                .call(move |ledger| ledger.finish(&cluster, id, &report))
                .await
        };
        if let Err(err) = recorded {
            tracing::error!(run = id, %cluster, error = %err, report = %serde_json::to_string(report).unwrap_or_default(), "cannot record the run's report");
        }
        self.metrics.set_in_progress(cluster, false);
        self.metrics.run_finished(report);
        self.wake.notify_one();
    }

    /// After a restart that interrupted runs: wait until each such cluster's members serve
    /// reads again (one may still be defragmenting), before any new run of it starts.
    pub fn recover(self: &Arc<Self>, interrupted: Vec<InterruptedRun>) {
        for InterruptedRun { id, cluster } in interrupted {
            let Some(target) = self.targets.get(&cluster) else {
                continue;
            };
            let remediator = target.remediator.clone();
            let scheduler = self.clone();
            self.tasks.spawn(async move {
                tracing::warn!(run = id, %cluster, "the service stopped during this run; waiting until every member serves reads before anything else touches the cluster");
                let sentence = match remediator
                    .wait_until_members_serve_reads(&Events::default(), &scheduler.stop)
                    .await
                {
                    Ok(waited) => {
                        tracing::info!(run = id, %cluster, waited_seconds = waited.as_secs_f64(), "every member serves reads again");
                        format!(
                            "After the restart the service waited {:.1}s until every member served reads again (no member left defragmenting).",
                            waited.as_secs_f64()
                        )
                    }
                    Err(err) => {
                        tracing::error!(run = id, %cluster, error = %err, "members still do not serve reads; new runs will refuse until they do");
                        match err {
                            crate::RunError::Refused(refusal) => {
                                format!("After the restart: {refusal}.")
                            }
                            other => format!("After the restart: {other}."),
                        }
                    }
                };
                let recovered = scheduler
                    .ledger
                    .call(move |ledger| ledger.recovered(id, &cluster, &sentence))
                    .await;
                if let Err(err) = recovered {
                    tracing::error!(run = id, error = %err, "cannot record the recovery");
                }
                scheduler.wake.notify_one();
            });
        }
    }
}

/// A run of observe mode, said so where the report gives its reason.
fn observed(mut report: RunReport) -> RunReport {
    let note = "observe mode (remediator.mode: observe): planned and recorded, not executed; \
                set remediator.mode: act to remediate";
    report.reason = Some(match report.reason.take() {
        Some(reason) => format!("{note}; {reason}"),
        None => note.to_string(),
    });
    report
}
