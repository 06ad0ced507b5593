//! Deciding: what each alert or API request does to a cluster's queued or running run,
//! recorded in the store in the same transaction.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use rusqlite::Connection;

use super::super::payload::{Alert, AlertStatus, Payload};
use super::super::store::{self, AlertRecord, NewRun, StoreError};
use super::{
    Action, AlertDecision, Decision, Queued, RequestError, Scheduler, Slot, SOURCE_ALERTMANAGER,
    SOURCE_API,
};
use crate::report::{Outcome, RunReport};

impl Scheduler {
    /// Decides what every alert of a webhook payload does, and records it all.
    pub fn accept(&self, payload: &Payload) -> Result<Vec<AlertDecision>, StoreError> {
        let mut state = self.lock();
        let paused = state.paused;
        let mut slots = state.slots.clone();
        let mut cancelled = Vec::new();
        let decisions = state.store.transaction(|tx| {
            let mut decisions = Vec::with_capacity(payload.alerts.len());
            for alert in &payload.alerts {
                let (cluster, decision) =
                    self.decide(tx, &mut slots, paused, alert, &mut cancelled)?;
                store::insert_alert(
                    tx,
                    &AlertRecord {
                        alertname: alert.name().unwrap_or("").to_string(),
                        status: alert.status.as_str().into(),
                        fingerprint: alert.identity(),
                        cluster: cluster.clone(),
                        labels: alert.labels.clone(),
                        starts_at: alert.starts_at.clone(),
                        action: decision.action.as_str().into(),
                        reason: decision.reason.clone(),
                        run_id: decision.run_id,
                    },
                )?;
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
        state.slots = slots;
        drop(state);
        // Counted once the store has them: a failed transaction cancelled nothing.
        for report in &cancelled {
            self.metrics.run_finished(report);
        }
        for decision in &decisions {
            self.metrics.webhook_alert(
                decision.decision.action.as_str(),
                decision.decision.ignored_because.unwrap_or(""),
            );
        }
        self.wake.notify_one();
        Ok(decisions)
    }

    fn decide(
        &self,
        tx: &Connection,
        slots: &mut HashMap<String, Slot>,
        paused: bool,
        alert: &Alert,
        cancelled: &mut Vec<RunReport>,
    ) -> rusqlite::Result<(Option<String>, Decision)> {
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
            .targets
            .values()
            .filter(|target| {
                target
                    .config
                    .alert_labels
                    .iter()
                    .all(|(label, value)| alert.labels.get(label) == Some(value))
            })
            .map(|target| target.config.name.as_str())
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err((
                "unknown_cluster",
                format!(
                    "no configured cluster matches the alert's labels; configured: {}",
                    self.targets
                        .values()
                        .map(|t| format!("{} {:?}", t.config.name, t.config.alert_labels))
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
        tx: &Connection,
        cluster: &str,
        slot: &mut Slot,
        alert: &Alert,
    ) -> rusqlite::Result<Decision> {
        if let Some(running) = &mut slot.running {
            // Kept with the run: if it is refused, these decide whether it is retried.
            running.run.firing.insert(alert.identity());
            return Ok(joined(
                running.run.id,
                format!("run {} of {cluster} is under way", running.run.id),
            ));
        }
        if let Some(queued) = &mut slot.queued {
            queued.firing.insert(alert.identity());
            if let Some(name) = alert.name() {
                queued.alertnames.insert(name.to_string());
            }
            return Ok(joined(
                queued.id,
                format!("run {} of {cluster} is already queued", queued.id),
            ));
        }
        // Alertmanager repeats an alert (HA peers, retries, repeat_interval); one episode of
        // an alert is handled once per cooldown.
        if !alert.starts_at.is_empty() {
            if let Some((run, Some(finished))) =
                store::episode_run(tx, &alert.identity(), &alert.starts_at)?
            {
                if finished + self.cooldown > SystemTime::now() {
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
        let run = NewRun {
            cluster,
            source: SOURCE_ALERTMANAGER,
            dry_run: false,
            trigger: &trigger,
            cooldown_until: self.cooldown_until(tx, cluster)?,
            not_before: None,
            retry_of: None,
        };
        let firing = BTreeSet::from([alert.identity()]);
        let alertnames = alert.name().map(str::to_string).into_iter().collect();
        enqueue(tx, slot, &run, firing, alertnames)
    }

    fn resolved(
        &self,
        tx: &Connection,
        cluster: &str,
        slot: &mut Slot,
        alert: &Alert,
        cancelled: &mut Vec<RunReport>,
    ) -> rusqlite::Result<Decision> {
        let identity = alert.identity();
        if let Some(queued) = slot.queued.as_mut().filter(|q| !q.manual) {
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
                store::finish(tx, id, &report)?;
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

    pub(super) fn cooldown_until(
        &self,
        tx: &Connection,
        cluster: &str,
    ) -> rusqlite::Result<Option<SystemTime>> {
        let last = store::last_work_finished(tx, cluster)?;
        Ok(last
            .map(|finished| finished + self.cooldown)
            .filter(|until| *until > SystemTime::now()))
    }

    /// `POST /api/v1/clusters/{name}/remediate`: the same queue, cooldown and pause rules.
    pub fn request(&self, cluster: &str, dry_run: bool) -> Result<Decision, RequestError> {
        if !self.knows(cluster) {
            return Err(RequestError::UnknownCluster(cluster.into()));
        }
        let mut state = self.lock();
        if state.paused {
            return Err(RequestError::Paused);
        }
        let mut slot = state.slots.get(cluster).cloned().unwrap_or_default();
        let decision = state.store.transaction(|tx| {
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
                self.cooldown_until(tx, cluster)?
            };
            let run = NewRun {
                cluster,
                source: SOURCE_API,
                dry_run,
                trigger: SOURCE_API,
                cooldown_until,
                not_before: None,
                retry_of: None,
            };
            enqueue(tx, &mut slot, &run, BTreeSet::new(), BTreeSet::new())
        })?;
        state.slots.insert(cluster.to_string(), slot);
        drop(state);
        self.wake.notify_one();
        Ok(decision)
    }
}

/// Records `run` as queued and makes it the cluster's queued run. Runs from the API are
/// manual: resolved alerts do not cancel them.
fn enqueue(
    tx: &Connection,
    slot: &mut Slot,
    run: &NewRun<'_>,
    firing: BTreeSet<String>,
    alertnames: BTreeSet<String>,
) -> rusqlite::Result<Decision> {
    let id = store::insert_run(tx, run)?;
    slot.queued = Some(Queued {
        id,
        dry_run: run.dry_run,
        manual: run.source == SOURCE_API,
        firing,
        alertnames,
        cooldown_until: run.cooldown_until,
        not_before: run.not_before,
        retry_of: run.retry_of,
        trigger: run.trigger.to_string(),
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
