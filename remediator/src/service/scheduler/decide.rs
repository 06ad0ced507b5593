//! Deciding: what each alert or API request does to a cluster's queued or running run,
//! recorded in the store in the same transaction.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use super::super::payload::{Alert, AlertStatus, Payload};
use super::super::store::{
    in_transaction, AlertRecord, NewRun, RunSource, StoreResult, Transaction,
};
use super::ledger::{cooldown_until, Ledger, Queued, Rules, Slot};
use super::{Action, AlertDecision, Decision, RequestError};
use crate::report::{Outcome, RunReport};

/// What a payload's alerts did: a decision for each, and the runs their resolution
/// cancelled (for the metrics, once stored).
#[derive(Debug)]
pub(super) struct Accepted {
    pub decisions: Vec<AlertDecision>,
    pub cancelled: Vec<RunReport>,
}

impl Ledger {
    /// Decides what every alert of a webhook payload does, and records it all in one
    /// transaction; the queues change only once it is stored.
    pub(super) fn accept(&mut self, payload: &Payload) -> StoreResult<Accepted> {
        let paused = self.paused;
        let mut slots = self.slots.clone();
        let mut cancelled = Vec::new();
        let rules = &self.rules;
        let decisions = in_transaction(self.store.as_mut(), |tx| {
            let mut decisions = Vec::with_capacity(payload.alerts.len());
            for alert in &payload.alerts {
                let (cluster, decision) =
                    rules.decide(tx, &mut slots, paused, alert, &mut cancelled)?;
                tx.insert_alert(&AlertRecord {
                    alertname: alert.name().unwrap_or("").to_string(),
                    status: alert.status.as_str().into(),
                    fingerprint: alert.identity(),
                    cluster: cluster.clone(),
                    labels: alert.labels.clone(),
                    starts_at: alert.starts_at.clone(),
                    action: decision.action.as_str().into(),
                    reason: decision.reason.clone(),
                    run_id: decision.run_id,
                    generator_url: Some(alert.generator_url.clone()).filter(|u| !u.is_empty()),
                })?;
                decisions.push(AlertDecision {
                    alertname: alert.name().map(str::to_string),
                    fingerprint: alert.identity(),
                    status: alert.status,
                    cluster,
                    decision,
                });
            }
            Ok(decisions)
        })?;
        self.slots = slots;
        Ok(Accepted {
            decisions,
            cancelled,
        })
    }

    /// `POST /api/v1/clusters/{name}/remediate`: the same queue, cooldown and pause rules.
    pub(super) fn request(
        &mut self,
        cluster: &str,
        dry_run: bool,
    ) -> Result<Decision, RequestError> {
        if !self.rules.clusters.contains_key(cluster) {
            return Err(RequestError::UnknownCluster(cluster.into()));
        }
        if self.paused {
            return Err(RequestError::Paused);
        }
        let mut slot = self.slots.get(cluster).cloned().unwrap_or_default();
        let cooldown = self.rules.cooldown;
        let now = self.rules.clock.now();
        let decision = in_transaction(self.store.as_mut(), |tx| {
            if let Some(running) = &slot.running {
                return Ok(joined(
                    running.run.id,
                    format!("run {} is under way", running.run.id),
                ));
            }
            if let Some(queued) = &slot.queued {
                return Ok(joined(
                    queued.id,
                    format!("run {} is already queued", queued.id),
                ));
            }
            // A dry run changes nothing, so a cooldown has nothing to protect.
            let cooldown_until = if dry_run {
                None
            } else {
                cooldown_until(tx.last_work_finished(cluster)?, cooldown, now)
            };
            let run = NewRun {
                cluster,
                source: RunSource::Api,
                dry_run: dry_run || self.rules.observe,
                trigger: RunSource::Api.as_str(),
                cooldown_until,
                not_before: None,
                retry_of: None,
            };
            enqueue(tx, &mut slot, &run, BTreeSet::new(), BTreeSet::new())
        })?;
        self.slots.insert(cluster.to_string(), slot);
        Ok(decision)
    }
}

impl Rules {
    fn decide(
        &self,
        tx: &mut dyn Transaction,
        slots: &mut HashMap<String, Slot>,
        paused: bool,
        alert: &Alert,
        cancelled: &mut Vec<RunReport>,
    ) -> StoreResult<(Option<String>, Decision)> {
        let Some(name) = alert.name() else {
            return Ok((
                None,
                ignored("not_a_trigger", "the alert has no alertname label".into()),
            ));
        };
        if !self.triggers.contains(name) {
            return Ok((
                None,
                ignored(
                    "not_a_trigger",
                    format!("{name} is not one of the configured triggers"),
                ),
            ));
        }
        let cluster = match self.cluster_of(alert) {
            Ok(cluster) => cluster,
            Err((code, reason)) => return Ok((None, ignored(code, reason))),
        };
        let slot = slots.entry(cluster.clone()).or_default();
        let decision = match alert.status {
            AlertStatus::Firing if paused => ignored(
                "paused",
                "runs are paused (POST /api/v1/resume to resume)".into(),
            ),
            AlertStatus::Firing => self.firing(tx, &cluster, slot, alert)?,
            AlertStatus::Resolved => self.resolved(tx, &cluster, slot, alert, cancelled)?,
        };
        Ok((Some(cluster), decision))
    }

    /// The one configured cluster whose alert labels the alert carries.
    fn cluster_of(&self, alert: &Alert) -> Result<String, (&'static str, String)> {
        let matches: Vec<&str> = self
            .clusters
            .iter()
            .filter(|(_, alert_labels)| {
                alert_labels
                    .iter()
                    .all(|(label, value)| alert.labels.get(label) == Some(value))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err((
                "unknown_cluster",
                format!(
                    "no configured cluster matches the alert's labels; configured: {}",
                    self.clusters
                        .iter()
                        .map(|(name, labels)| format!("{name} {labels:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            several => Err((
                "ambiguous_cluster",
                format!(
                    "the alert's labels match several clusters ({}); make their alert_labels \
                     more specific",
                    several.join(", ")
                ),
            )),
        }
    }

    fn firing(
        &self,
        tx: &mut dyn Transaction,
        cluster: &str,
        slot: &mut Slot,
        alert: &Alert,
    ) -> StoreResult<Decision> {
        if let Some(running) = &mut slot.running {
            // Kept with the run: if it is refused, these decide whether it is retried.
            running.run.firing.insert(alert.identity());
            return Ok(joined(
                running.run.id,
                format!("run {} of {cluster} is under way", running.run.id),
            ));
        }
        let urgent = self.is_urgent(alert.name());
        if let Some(queued) = &mut slot.queued {
            queued.firing.insert(alert.identity());
            if let Some(name) = alert.name() {
                queued.alertnames.insert(name.to_string());
            }
            if urgent && queued.for_window {
                tx.set_not_before(queued.id, None)?;
                queued.urgent = true;
                queued.for_window = false;
                queued.not_before = None;
                return Ok(joined(
                    queued.id,
                    format!(
                        "run {} of {cluster} was waiting for its maintenance window; {} is \
                         urgent, so it runs now",
                        queued.id,
                        alert.name().unwrap_or("")
                    ),
                ));
            }
            return Ok(joined(
                queued.id,
                format!("run {} of {cluster} is already queued", queued.id),
            ));
        }
        // One time for the whole decision: the cooldown, the window and the new run's cooldown.
        let now = self.clock.now();
        // Alertmanager repeats an alert (HA peers, retries, repeat_interval); one episode of
        // an alert is handled once per cooldown.
        if !alert.starts_at.is_empty() {
            if let Some((run, Some(finished))) =
                tx.episode_run(&alert.identity(), &alert.starts_at)?
            {
                if finished + self.cooldown > now {
                    return Ok(ignored(
                        "duplicate",
                        format!(
                            "this alert (firing since {}) already led to run {run}; repeats are \
                             ignored until {}",
                            alert.starts_at,
                            humantime::format_rfc3339_seconds(finished + self.cooldown)
                        ),
                    ));
                }
            }
        }
        let trigger = format!("alertmanager: {}", alert.name().unwrap_or(""));
        let window = match urgent {
            true => None,
            false => self.window_wait(cluster, now),
        };
        let run = NewRun {
            cluster,
            source: RunSource::Alertmanager,
            dry_run: self.observe,
            trigger: &trigger,
            cooldown_until: cooldown_until(tx.last_work_finished(cluster)?, self.cooldown, now),
            not_before: window,
            retry_of: None,
        };
        let firing = BTreeSet::from([alert.identity()]);
        let alertnames = alert.name().map(str::to_string).into_iter().collect();
        let mut decision = enqueue(tx, slot, &run, firing, alertnames)?;
        if let Some(queued) = slot.queued.as_mut() {
            queued.urgent = urgent;
            queued.for_window = window.is_some();
        }
        if let Some(open) = window {
            decision.reason = format!(
                "{}; waiting_for_window: no maintenance window is open, it runs when the next \
                 opens at {}",
                decision.reason,
                humantime::format_rfc3339_seconds(open)
            );
        }
        Ok(decision)
    }

    fn resolved(
        &self,
        tx: &mut dyn Transaction,
        cluster: &str,
        slot: &mut Slot,
        alert: &Alert,
        cancelled: &mut Vec<RunReport>,
    ) -> StoreResult<Decision> {
        let identity = alert.identity();
        if let Some(queued) = slot.queued.as_mut().filter(|q| q.started_by_alerts()) {
            if queued.firing.remove(&identity) {
                let id = queued.id;
                if !queued.firing.is_empty() {
                    return Ok(ignored(
                        "resolved",
                        format!(
                            "resolved; run {id} stays queued for {} other firing alert(s)",
                            queued.firing.len()
                        ),
                    ));
                }
                let report = RunReport::ended(
                    cluster,
                    &queued.trigger,
                    queued.dry_run,
                    Outcome::Cancelled,
                    "every alert that queued the run resolved before it started".into(),
                );
                tx.finish(id, &report)?;
                slot.queued = None;
                cancelled.push(report);
                return Ok(Decision {
                    action: Action::Cancelled,
                    run_id: Some(id),
                    ignored_because: None,
                    reason: format!("resolved before run {id} started; the run is cancelled"),
                });
            }
        }
        let reason = match &mut slot.running {
            Some(running) => {
                running.run.firing.remove(&identity);
                format!(
                    "resolved; run {} has started and goes on (it re-checked the live status)",
                    running.run.id
                )
            }
            None => "resolved; no queued run to cancel".into(),
        };
        Ok(ignored("resolved", reason))
    }
}

/// Records `run` as queued and makes it the cluster's queued run. Runs from the API are
/// manual: resolved alerts do not cancel them.
fn enqueue(
    tx: &mut dyn Transaction,
    slot: &mut Slot,
    run: &NewRun<'_>,
    firing: BTreeSet<String>,
    alertnames: BTreeSet<String>,
) -> StoreResult<Decision> {
    let id = tx.insert_run(run)?;
    slot.queued = Some(Queued {
        id,
        dry_run: run.dry_run,
        source: run.source,
        firing,
        alertnames,
        cooldown_until: run.cooldown_until,
        not_before: run.not_before,
        retry_of: run.retry_of,
        trigger: run.trigger.to_string(),
        urgent: false,
        for_window: false,
    });
    Ok(queued(id, run.cooldown_until))
}

fn ignored(code: &'static str, reason: String) -> Decision {
    Decision {
        action: Action::Ignored,
        run_id: None,
        ignored_because: Some(code),
        reason,
    }
}

fn joined(id: i64, reason: String) -> Decision {
    Decision {
        action: Action::Joined,
        run_id: Some(id),
        ignored_because: None,
        reason,
    }
}

fn queued(id: i64, cooldown_until: Option<SystemTime>) -> Decision {
    let reason = match cooldown_until {
        Some(until) => format!(
            "queued as run {id}, inside the cooldown (until {}): it goes ahead only if the live \
             status shows NOSPACE, otherwise it is recorded as skipped",
            humantime::format_rfc3339_seconds(until)
        ),
        None => format!("queued as run {id}"),
    };
    Decision {
        action: Action::Queued,
        run_id: Some(id),
        ignored_because: None,
        reason,
    }
}
