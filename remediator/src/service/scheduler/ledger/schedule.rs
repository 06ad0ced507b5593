//! `remediation.schedule`: runs that start by themselves, at each time of a cron expression.
//! A scheduled run is queued like an alert's: maintenance windows and the cooldown apply, the
//! defragmentation rule decides what it does, and resolved alerts never cancel it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::config::when::CronIn;

use super::{cooldown_until, Ledger, Queued};
use crate::service::store::{in_transaction, NewRun, RunSource};

/// Each schedule's first time after `now`: times missed while the service was down are not
/// made up (as with cron), since a run would start at a moment nobody chose.
pub(super) fn first_times(
    schedules: &BTreeMap<String, CronIn>,
    now: SystemTime,
) -> BTreeMap<String, SystemTime> {
    schedules
        .iter()
        .filter_map(|(cluster, schedule)| Some((cluster.clone(), schedule.next_after(now)?)))
        .collect()
}

/// The clusters whose time in `next` has come, each with its schedule, every one moved on
/// to its following time (or dropped when its schedule has none).
pub(super) fn take_due(
    next: &mut BTreeMap<String, SystemTime>,
    schedules: &BTreeMap<String, CronIn>,
    now: SystemTime,
) -> Vec<(String, CronIn)> {
    let due: Vec<String> = next
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(cluster, _)| cluster.clone())
        .collect();
    due.into_iter()
        .filter_map(|cluster| {
            let schedule = schedules.get(&cluster)?.clone();
            match schedule.next_after(now) {
                Some(following) => next.insert(cluster.clone(), following),
                None => next.remove(&cluster),
            };
            Some((cluster, schedule))
        })
        .collect()
}

impl Ledger {
    /// Queues a run for each cluster whose scheduled time has come, and moves its schedule on.
    pub(super) fn fire_schedules(&mut self, now: SystemTime) {
        for (cluster, schedule) in take_due(&mut self.next_scheduled, &self.rules.schedules, now) {
            self.queue_scheduled(&cluster, &schedule, now);
        }
    }

    /// A scheduled time that finds runs paused, or the cluster with a run already queued or
    /// under way, passes: the operator stopped runs, or the run it would start is there.
    fn queue_scheduled(&mut self, cluster: &str, schedule: &CronIn, now: SystemTime) {
        let slot = self.slots.entry(cluster.to_string()).or_default();
        let busy = slot
            .running
            .as_ref()
            .map(|r| r.run.id)
            .or(slot.queued.as_ref().map(|q| q.id));
        if self.paused || busy.is_some() {
            tracing::info!(%cluster, %schedule, paused = self.paused, run = busy, "scheduled time passes without a new run: runs are paused or the cluster has one");
            return;
        }
        let trigger = format!("{}: {schedule}", RunSource::Schedule.as_str());
        let cooldown = self.rules.cooldown;
        let observe = self.rules.observe;
        let recorded = in_transaction(self.store.as_mut(), |tx| {
            let cooldown_until = cooldown_until(tx.last_work_finished(cluster)?, cooldown, now);
            let run = NewRun {
                cluster,
                source: RunSource::Schedule,
                dry_run: observe,
                trigger: &trigger,
                cooldown_until,
                not_before: None,
                retry_of: None,
            };
            Ok((tx.insert_run(&run)?, cooldown_until))
        });
        let (id, cooldown_until) = match recorded {
            Ok(recorded) => recorded,
            Err(err) => {
                tracing::error!(%cluster, %schedule, error = %err, "cannot queue the scheduled run; the next scheduled time will try again");
                return;
            }
        };
        tracing::info!(run = id, %cluster, %schedule, at = %humantime::format_rfc3339_seconds(now), "scheduled run queued");
        self.slots.entry(cluster.to_string()).or_default().queued = Some(Queued {
            id,
            dry_run: observe,
            source: RunSource::Schedule,
            firing: BTreeSet::new(),
            alertnames: BTreeSet::new(),
            cooldown_until,
            not_before: None,
            retry_of: None,
            trigger,
            urgent: false,
            for_window: false,
        });
    }
}
