//! Running: starting queued runs as the limits allow, carrying each out with the engine
//! (after the cooldown's live NOSPACE check), recording how it ended, and the wait after a
//! restart that interrupted a run.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcdmedic_cluster::model::AlarmKind;

use super::super::store::{self, InterruptedRun, NewRun};
use super::{Queued, Running, Scheduler, State, DISPATCH_EVERY, SOURCE_ALERTMANAGER};
use crate::events::Events;
use crate::output::TextProgress;
use crate::report::{Outcome, RunReport};
use crate::{Remediator, RunOptions};

impl Scheduler {
    /// Starts queued runs as the limits allow, until `stop`.
    pub async fn dispatch(self: Arc<Self>) {
        loop {
            while let Some(start) = self.next_start() {
                let scheduler = self.clone();
                self.tasks
                    .spawn(async move { scheduler.execute(start).await });
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.next_look()) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// How long the dispatcher may sleep: until the next retry is due, at most
    /// [`DISPATCH_EVERY`].
    fn next_look(&self) -> Duration {
        let now = SystemTime::now();
        self.lock()
            .slots
            .values()
            .filter_map(|slot| slot.queued.as_ref()?.not_before)
            .map(|at| at.duration_since(now).unwrap_or_default())
            .fold(DISPATCH_EVERY, Duration::min)
    }

    /// Waits for the runs under way (each stops after its current member) and recovery
    /// waits to finish.
    pub async fn wait_for_runs(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    pub(super) fn next_start(&self) -> Option<Start> {
        if self.stop.is_cancelled() {
            return None;
        }
        let mut state = self.lock();
        if state.paused || state.running >= self.max_concurrent_runs {
            return None;
        }
        let now = SystemTime::now();
        let (cluster, queued) = state
            .slots
            .iter()
            .filter(|(_, slot)| slot.running.is_none() && !slot.recovering)
            .filter_map(|(cluster, slot)| slot.queued.as_ref().map(|q| (cluster, q)))
            .filter(|(_, queued)| queued.is_due(now))
            .min_by_key(|(_, queued)| queued.id)
            .map(|(cluster, queued)| (cluster.clone(), queued.clone()))?;
        if let Err(err) = state.store.mark_running(queued.id, SystemTime::now()) {
            tracing::error!(run = queued.id, %cluster, error = %err, "cannot start the run; retrying later");
            return None;
        }
        state.running += 1;
        let slot = state.slots.entry(cluster.clone()).or_default();
        slot.queued = None;
        slot.running = Some(Running {
            run: queued.clone(),
            progress: None,
        });
        Some(Start { cluster, queued })
    }

    async fn execute(self: Arc<Self>, start: Start) {
        let Start { cluster, queued } = start;
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
            self.finish(&cluster, queued.id, &report);
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
            Some(until) => match self.live_nospace(&remediator).await {
                true => {
                    tracing::warn!(run = queued.id, %cluster, "inside the cooldown, but the cluster has an active NOSPACE alarm: running");
                    self.run_engine(&remediator, &queued, &events).await
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
            None => self.run_engine(&remediator, &queued, &events).await,
        };
        drop(events);
        let _ = printer.await;

        self.notifier.expire(&silences).await;
        self.notifier.annotate(queued.id, &report).await;
        self.finish(&cluster, queued.id, &report);
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
        remediator: &Remediator,
        queued: &Queued,
        events: &Events,
    ) -> RunReport {
        let options = RunOptions {
            dry_run: queued.dry_run,
            force: false,
            trigger: format!("run {}: {}", queued.id, queued.trigger),
        };
        remediator.run(&options, events, &self.stop).await
    }

    async fn live_nospace(&self, remediator: &Remediator) -> bool {
        remediator.live_status().await.has_alarm(AlarmKind::NoSpace)
    }

    fn set_progress(&self, cluster: &str, id: i64, line: String) {
        let mut state = self.lock();
        if let Some(running) = state
            .slots
            .get_mut(cluster)
            .and_then(|slot| slot.running.as_mut())
            .filter(|running| running.run.id == id)
        {
            running.progress = Some(line);
        }
    }

    pub(super) fn finish(&self, cluster: &str, id: i64, report: &RunReport) {
        let mut state = self.lock();
        if let Err(err) = state.store.finish(id, report) {
            // The run is over either way; what is lost is its record, which the log keeps.
            tracing::error!(run = id, %cluster, error = %err, report = %serde_json::to_string(report).unwrap_or_default(), "cannot record the run's report");
        }
        state.running = state.running.saturating_sub(1);
        let finished = state
            .slots
            .get_mut(cluster)
            .and_then(|slot| slot.running.take());
        if let Some(Running { run, .. }) = finished.filter(|_| report.refused) {
            self.retry_later(&mut state, cluster, run);
        }
        drop(state);
        self.metrics.set_in_progress(cluster, false);
        self.metrics.run_finished(report);
        self.wake.notify_one();
    }

    /// After a refusal, which changed nothing and starts no cooldown: while the alerts that
    /// asked for the run still fire, it runs again `retry_after_refusal` later. Alertmanager
    /// would only repeat them after its repeat_interval (hours), with NOSPACE perhaps active.
    fn retry_later(&self, state: &mut State, cluster: &str, refused: Queued) {
        let slot = state.slots.entry(cluster.to_string()).or_default();
        if refused.manual || refused.dry_run || refused.firing.is_empty() || slot.queued.is_some() {
            return;
        }
        let at = SystemTime::now() + self.retry_after_refusal;
        let retry_of = refused.retry_of.unwrap_or(refused.id);
        let mut queued = None;
        let recorded = state.store.transaction(|tx| {
            let run = NewRun {
                cluster,
                source: SOURCE_ALERTMANAGER,
                dry_run: false,
                trigger: &refused.trigger,
                cooldown_until: self.cooldown_until(tx, cluster)?,
                not_before: Some(at),
                retry_of: Some(retry_of),
            };
            let id = store::insert_run(tx, &run)?;
            queued = Some(Queued {
                id,
                not_before: Some(at),
                retry_of: Some(retry_of),
                cooldown_until: run.cooldown_until,
                ..refused.clone()
            });
            Ok(id)
        });
        let sentence = match (&recorded, queued) {
            (Ok(id), Some(queued)) => {
                state.slots.entry(cluster.to_string()).or_default().queued = Some(queued);
                format!(
                    "Retried as run {id} at {}, since its alerts still fire (retry_after_refusal).",
                    humantime::format_rfc3339_seconds(at)
                )
            }
            (Err(err), _) => {
                tracing::error!(run = refused.id, %cluster, error = %err, "cannot queue the retry of a refused run");
                return;
            }
            (Ok(_), None) => return,
        };
        tracing::info!(run = refused.id, %cluster, retry_at = %humantime::format_rfc3339_seconds(at), "refused; retrying later while its alerts fire");
        if let Err(err) = state.store.append_reason(refused.id, &sentence) {
            tracing::error!(run = refused.id, error = %err, "cannot record the retry");
        }
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
                let mut state = scheduler.lock();
                if let Err(err) = state.store.append_reason(id, &sentence) {
                    tracing::error!(run = id, error = %err, "cannot record the recovery");
                }
                if let Some(slot) = state.slots.get_mut(&cluster) {
                    slot.recovering = false;
                }
                drop(state);
                scheduler.wake.notify_one();
            });
        }
    }
}

pub(super) struct Start {
    pub(super) cluster: String,
    pub(super) queued: Queued,
}
