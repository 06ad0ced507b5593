//! One remediation of one cluster: the manual runbook, done by a program that checks before
//! and after every step.
//!
//! Every step re-reads the live status rather than trusting what was true a minute ago: a
//! member can die, lose or win leadership between two steps. The run never has two members
//! defragmenting at once: when a Defragment call times out, etcd keeps going on the server,
//! so the engine waits for that member to serve reads and catch up before anything else.
//!
//! # Layout
//! - this file: the run, step by step, as docs/remediator.md tells it.
//! - `etcd`: every call to etcd, behind a trait; `live`: that trait over etcd-client.
//! - `preflight`, `quiet`, `take_snapshot`, `defragment`, `leader`, `nospace`, `verify`: the
//!   steps.
//! - `operator`: an operator's one-off verbs (alarms, forfeit-leadership) from the same steps.
//! - `decide`: the steps' decisions as plain functions (quorum, leader target, disarm, hashes).
//! - `step`: recording every step; `wait`: every wait, with its deadline and stop policy;
//!   `error`: why a run ended early, typed, and the outcome that follows.
//! - `backups`: the remediator's backups, through `backup/`'s procedures over its `Etcd`;
//!   `keep_snapshot`: a run's snapshot kept as a backup, and a backup reused as the snapshot.

mod backups;
mod decide;
mod defragment;
pub(crate) mod error;
pub(crate) mod etcd;
pub(crate) mod guard;
mod keep_snapshot;
mod leader;
mod live;
mod nospace;
pub(crate) mod operator;
mod preflight;
mod quiet;
mod step;
mod take_snapshot;
#[cfg(test)]
mod tests;
mod verify;
mod wait;

use std::time::{Duration, SystemTime};

use crate::config::BackupSettings;
use crate::config::{ManagedCluster, RemediationSettings};
use etcdmedic_cluster::model::ClusterStatus;
use etcdmedic_cluster::table::human_bytes;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::events::Events;
use crate::forecast::History;
use crate::plan::Plan;
use crate::report::{MemberReport, Outcome, RunReport};
use crate::snapshot::{self, FreeSpace};
pub use error::RunError;
pub use etcd::Etcd;
pub use live::Live;

/// How a run was asked for.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plan and print, change nothing.
    pub dry_run: bool,
    /// Accept a cluster of fewer than 3 voting members.
    pub force: bool,
    /// Recorded in the report: `cli`, or the alerts that asked.
    pub trigger: String,
    /// What earlier runs of the cluster measured, for the forecast and `leader: auto`.
    pub history: History,
    /// When the maintenance window the run starts in closes: a run predicted to end later
    /// is refused before it changes anything.
    pub finish_by: Option<SystemTime>,
    /// Asked before each change whether the run may still make it (the service's replicas).
    pub guard: Option<guard::Guard>,
    /// Defragment this one member (name, endpoint or ID) instead of those the rule selects.
    pub only: Option<String>,
    /// Defragment although a downgrade is enabled (refused otherwise).
    pub during_downgrade: bool,
}

/// Remediates one cluster through `E` (etcd itself in production).
#[derive(Debug)]
pub struct Remediator<E = Live> {
    etcd: E,
    settings: RemediationSettings,
    /// Where a run's snapshot is kept as a backup, and where NOSPACE looks for one to reuse.
    backup: BackupSettings,
    free_space: FreeSpace,
}

impl Remediator<Live> {
    pub fn new(cluster: ManagedCluster) -> etcdmedic_cluster::Result<Self> {
        Ok(Remediator {
            etcd: Live::new(cluster.etcd)?,
            settings: cluster.remediation,
            backup: cluster.backup,
            free_space: snapshot::available_bytes,
        })
    }
}

/// How a run that did not fail ended.
enum Ended {
    Succeeded,
    /// No member needed work: the reason lists each member's figures.
    Skipped(String),
    Planned,
}

impl<E: Etcd> Remediator<E> {
    pub fn with(etcd: E, settings: RemediationSettings) -> Self {
        Remediator {
            etcd,
            settings,
            backup: BackupSettings::default(),
            free_space: snapshot::available_bytes,
        }
    }

    /// Reads the snapshot disk's free space with `free_space` instead of asking the file
    /// system: scenario tests judge room on a disk of known size.
    #[cfg(test)]
    pub(crate) fn with_free_space(mut self, free_space: FreeSpace) -> Self {
        self.free_space = free_space;
        self
    }

    /// Runs keep their snapshot as a backup in `backup`'s destinations, and reuse one there
    /// under NOSPACE.
    pub fn with_backup(mut self, backup: BackupSettings) -> Self {
        self.backup = backup;
        self
    }

    pub fn cluster(&self) -> &str {
        self.etcd.cluster()
    }

    /// The cluster's status now (alarms included).
    pub async fn live_status(&self) -> ClusterStatus {
        self.etcd.collect().await
    }

    pub(crate) fn etcd(&self) -> &E {
        &self.etcd
    }

    pub(crate) fn settings(&self) -> &RemediationSettings {
        &self.settings
    }

    pub(crate) fn backup_settings(&self) -> &BackupSettings {
        &self.backup
    }

    /// Waits until every member the cluster lists answers a serializable read: a member
    /// still defragmenting (left by a run that was killed, or by someone else's tool) blocks
    /// reads until it is done. Returns how long that took, or why it gave up after
    /// `defrag_timeout`.
    pub async fn wait_until_members_serve_reads(
        &self,
        events: &Events,
        stop: &CancellationToken,
    ) -> Result<Duration, RunError> {
        let run = self.start(&RunOptions::default(), events, stop);
        run.members_serve_reads(true).await
    }

    fn start<'a>(
        &'a self,
        options: &RunOptions,
        events: &'a Events,
        stop: &'a CancellationToken,
    ) -> Run<'a, E> {
        let mut report = RunReport::ended(
            self.cluster(),
            &options.trigger,
            options.dry_run,
            Outcome::Failed,
            String::new(),
        );
        report.reason = None;
        Run {
            etcd: &self.etcd,
            settings: &self.settings,
            backup: &self.backup,
            free_space: self.free_space,
            history: options.history.clone(),
            events,
            stop,
            guard: options.guard.clone(),
            report,
        }
    }

    /// Runs one remediation and reports how it went. `stop` ends the run between two
    /// members (the member being defragmented finishes first).
    pub async fn run(
        &self,
        options: &RunOptions,
        events: &Events,
        stop: &CancellationToken,
    ) -> RunReport {
        // Instrumented, not entered: a span entered across an `.await` stays entered on the
        // thread while the run waits, and other tasks' log lines would carry this run's fields.
        let span = tracing::info_span!("run", cluster = %self.cluster(), dry_run = options.dry_run);
        self.run_in_span(options, events, stop)
            .instrument(span)
            .await
    }

    async fn run_in_span(
        &self,
        options: &RunOptions,
        events: &Events,
        stop: &CancellationToken,
    ) -> RunReport {
        let mut run = self.start(options, events, stop);
        let ended = run.execute(options).await;
        let any_defragmented = !run.defragmented().is_empty();
        let mut report = run.report;
        (report.outcome, report.reason) = match ended {
            Ok(Ended::Succeeded) => (Outcome::Succeeded, None),
            Ok(Ended::Skipped(reason)) => (Outcome::Skipped, Some(reason)),
            Ok(Ended::Planned) => (
                Outcome::Planned,
                Some("dry run: nothing was changed".into()),
            ),
            Err(err) => {
                report.refused = err.is_refusal();
                report.error_kind = Some(err.kind().to_string());
                (err.outcome(any_defragmented), Some(err.to_string()))
            }
        };
        // The remediation ends here; keeping its snapshot as a backup is reported beside it.
        report.finished_at = SystemTime::now();
        let keep = matches!(report.outcome, Outcome::Succeeded | Outcome::Partial)
            && !self.backup.destinations.is_empty();
        if let Some(taken) = report
            .snapshot
            .as_ref()
            .filter(|s| keep && !s.reused_backup)
        {
            report.backup = Some(self.keep_run_snapshot(taken, stop).await);
        }
        report.reclaimed_bytes = report
            .members
            .iter()
            .filter_map(MemberReport::reclaimed_bytes)
            .sum();
        tracing::info!(
            outcome = report.outcome.as_str(),
            reason = report.reason.as_deref().unwrap_or(""),
            error_kind = report.error_kind.as_deref().unwrap_or(""),
            reclaimed_bytes = report.reclaimed_bytes,
            "run finished"
        );
        report
    }
}

/// One run under way: what it talks to, how it is set, and what it has recorded so far.
struct Run<'a, E> {
    etcd: &'a E,
    settings: &'a RemediationSettings,
    backup: &'a BackupSettings,
    free_space: FreeSpace,
    history: History,
    events: &'a Events,
    stop: &'a CancellationToken,
    guard: Option<guard::Guard>,
    report: RunReport,
}

impl<E: Etcd> Run<'_, E> {
    /// The runbook, top to bottom.
    async fn execute(&mut self, options: &RunOptions) -> Result<Ended, RunError> {
        // 1. Preflight (a fresh Status of every member, never an alert) and the plan.
        let plan = self.preflight(options).await?;
        if plan.is_empty() {
            return Ok(Ended::Skipped(skipped_because(&plan)));
        }
        if let Some(finish_by) = options.finish_by {
            fits_in_window(&plan, finish_by)?;
        }
        // Room for the snapshot, checked before anything is created; a dry run stops here.
        let dir = self.room_for_snapshot(&plan).await?;
        if options.dry_run {
            return Ok(Ended::Planned);
        }
        let _lock = self.lock(&dir)?;
        // The quiet-cluster gate, when set: before the snapshot loads the cluster.
        self.quiet_gate(&plan, None).await?;

        // 2. Compaction, only when asked for.
        if self.settings.compact_first {
            self.compact(&plan).await?;
        }
        // 3. A verified snapshot: none, no defragmentation.
        self.snapshot(&plan, &dir).await?;
        // 4. Followers, one at a time; one that became leader meanwhile waits for step 5.
        let deferred = self.defragment_followers(&plan).await?;
        // 5. The leader, after handing leadership to a defragmented follower.
        self.defragment_leaders(&plan, deferred).await?;
        // 6. NOSPACE disarmed once every member is below the threshold; a run for one
        //    member (`defrag --member`) leaves the alarms to `alarm disarm`.
        if options.only.is_none() {
            self.disarm_nospace().await?;
        }
        // 7. Every member holds the same keyspace.
        self.verify().await?;
        Ok(Ended::Succeeded)
    }

    /// Stops between two members when asked to.
    fn check_stop(&self) -> Result<(), RunError> {
        if self.stop.is_cancelled() {
            return Err(RunError::Interrupted);
        }
        Ok(())
    }

    /// Right before a change to the cluster: stops when asked to, and when the guard (if
    /// any) no longer confirms that the run is this service's.
    async fn confirm_still_ours(&self) -> Result<(), RunError> {
        self.check_stop()?;
        if let Some(guard) = &self.guard {
            guard
                .0
                .confirm()
                .await
                .map_err(|why| RunError::Fenced(why.to_string()))?;
        }
        Ok(())
    }
}

/// Refuses a plan whose forecast ends after `finish_by`.
fn fits_in_window(plan: &Plan, finish_by: SystemTime) -> Result<(), RunError> {
    let predicted = plan.forecast.as_ref().map_or(Duration::ZERO, |f| f.total);
    let closes_in = finish_by
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    if predicted > closes_in {
        return Err(error::Refusal::WindowTooShort {
            predicted,
            closes_in,
        }
        .into());
    }
    Ok(())
}

/// Why nothing was to be done, member by member.
fn skipped_because(plan: &Plan) -> String {
    let reasons: Vec<String> = plan
        .skip
        .iter()
        .map(|m| {
            format!(
                "{}: {}, {} in use of {}",
                m.member.name,
                m.reason,
                human_bytes(m.db_size_in_use),
                human_bytes(m.db_size)
            )
        })
        .collect();
    format!(
        "no member needs defragmenting under {} ({})",
        plan.rule,
        reasons.join("; ")
    )
}
