//! One remediation of one cluster, in order: preflight, optional compaction, verified
//! snapshot, followers one at a time, leadership moved off the leader before its turn,
//! NOSPACE disarm, and a final check that every member holds the same keyspace.
//!
//! Every step re-reads the live status rather than trusting what was true a minute ago: a
//! member can die, lose or win leadership between two steps. The run never has two members
//! defragmenting at once: when a Defragment call times out, etcd keeps going on the server,
//! so the engine waits for that member to serve reads and catch up before doing anything
//! else.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, GetOptions};
use etcdmedic_cluster::config::{LeaderMoveFailure, LeaderPolicy};
use etcdmedic_cluster::member_client::probe_error;
use etcdmedic_cluster::model::{AlarmKind, ClusterStatus, EndpointStatus, MemberId, ProbeError};
use etcdmedic_cluster::table::human_bytes;
use etcdmedic_cluster::{ClusterConfig, ClusterProbe, RemediationSettings};
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Events};
use crate::lock::RunLock;
use crate::plan::{self, member_ref, Plan, PlannedMember};
use crate::report::{
    HashCheck, LeaderMove, MemberAction, MemberRef, MemberReport, Outcome, RunReport,
    SnapshotReport, StepKind, StepRecord,
};
use crate::snapshot;

/// How often a long step reports that it is still running.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often a wait re-reads the cluster's status.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How long every member may take to follow a new leader after MoveLeader returned.
const LEADER_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// MoveLeader returns once the transfer is done; etcd gives up after an election timeout
/// or so, this is only a bound on a call that hangs.
const MOVE_LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest wait for a defragmented member to serve reads and catch up.
const CATCH_UP_FLOOR: Duration = Duration::from_secs(30);
/// Room left beside the snapshot on its disk, as a fraction of the snapshot.
const SNAPSHOT_SPACE_MARGIN: f64 = 0.1;

/// How a run was asked for.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plan and print, change nothing.
    pub dry_run: bool,
    /// Accept a cluster of fewer than 3 voting members.
    pub force: bool,
    /// Recorded in the report: `cli`, or the alerts that asked.
    pub trigger: String,
}

/// Remediates one configured cluster.
#[derive(Debug)]
pub struct Remediator {
    probe: ClusterProbe,
}

impl Remediator {
    pub fn new(config: ClusterConfig) -> etcdmedic_cluster::Result<Self> {
        Ok(Remediator {
            probe: ClusterProbe::new(config)?,
        })
    }

    pub fn cluster(&self) -> &str {
        self.probe.name()
    }

    /// The cluster's status now (alarms included).
    pub async fn live_status(&self) -> ClusterStatus {
        self.probe.collect(self.probe.config().status_timeout).await
    }

    pub fn settings(&self) -> &RemediationSettings {
        &self.probe.config().remediation
    }

    /// Waits until every member the cluster lists answers a serializable read: a member
    /// still defragmenting (left by a run that was killed, or by someone else's tool) blocks
    /// reads until it is done. Returns how long that took, or why it gave up after
    /// `defrag_timeout`.
    pub async fn wait_until_members_serve_reads(
        &self,
        events: &Events,
        stop: &CancellationToken,
    ) -> Result<Duration, String> {
        let options = RunOptions::default();
        let mut run = self.start(&options, events, stop);
        run.wait_until_members_serve_reads(true).await
    }

    fn start<'a>(
        &'a self,
        options: &RunOptions,
        events: &'a Events,
        stop: &'a CancellationToken,
    ) -> Run<'a> {
        let started_at = SystemTime::now();
        Run {
            probe: &self.probe,
            settings: self.settings(),
            events,
            stop,
            clients: HashMap::new(),
            report: RunReport::ended(
                self.cluster(),
                &options.trigger,
                options.dry_run,
                Outcome::Failed,
                String::new(),
            ),
        }
        .started(started_at)
    }

    /// Runs one remediation and reports how it went. `stop` ends the run between two
    /// members (the member being defragmented finishes first).
    pub async fn run(
        &self,
        options: &RunOptions,
        events: &Events,
        stop: &CancellationToken,
    ) -> RunReport {
        let mut run = self.start(options, events, stop);
        let span = tracing::info_span!("run", cluster = %self.cluster(), dry_run = options.dry_run);
        let _enter = span.enter();
        let (outcome, reason, refused) = match run.execute(options).await {
            Ok(()) => (Outcome::Succeeded, None, false),
            Err(end) => (end.outcome, Some(end.reason), end.refused),
        };
        let mut report = run.report;
        report.outcome = outcome;
        report.reason = reason;
        report.refused = refused;
        report.finished_at = SystemTime::now();
        report.reclaimed_bytes = report
            .members
            .iter()
            .filter_map(MemberReport::reclaimed_bytes)
            .sum();
        tracing::info!(
            outcome = outcome.as_str(),
            reason = report.reason.as_deref().unwrap_or(""),
            reclaimed_bytes = report.reclaimed_bytes,
            "run finished"
        );
        report
    }
}

/// Why a run ended before the end.
struct End {
    outcome: Outcome,
    reason: String,
    /// Nothing was changed: see [`Run::refuse`].
    refused: bool,
}

struct Run<'a> {
    probe: &'a ClusterProbe,
    settings: &'a RemediationSettings,
    events: &'a Events,
    stop: &'a CancellationToken,
    /// Full etcd clients, one per member endpoint, made on first use.
    clients: HashMap<String, Client>,
    report: RunReport,
}

/// A step under way; [`Run::finish`] records it.
struct Step {
    kind: StepKind,
    member: Option<MemberRef>,
    started_at: SystemTime,
    started: Instant,
}

type StepResult<T> = Result<T, End>;

impl Run<'_> {
    fn started(mut self, at: SystemTime) -> Self {
        self.report.started_at = at;
        self.report.finished_at = at;
        self.report.reason = None;
        self
    }

    /// See [`Remediator::wait_until_members_serve_reads`].
    /// `all`: also wait for members that do not answer Status at all (after a crash, the
    /// member may be the one left defragmenting); otherwise only for members that answer
    /// Status but not reads, the sign of a defragmentation under way.
    async fn wait_until_members_serve_reads(&mut self, all: bool) -> Result<Duration, String> {
        let started = Instant::now();
        let within = self.settings.defrag_timeout;
        let mut last_progress = Instant::now();
        loop {
            let status = self.collect().await;
            let mut waiting_for = Vec::new();
            for member in &status.members {
                if !all && member.status.is_err() {
                    continue;
                }
                if let Err(err) = self.serializable_read(&member.endpoint).await {
                    waiting_for.push(format!("{}: {err}", member.display_name()));
                }
            }
            if all && status.members.is_empty() {
                waiting_for.push("no member answered".to_string());
            }
            if waiting_for.is_empty() {
                return Ok(started.elapsed());
            }
            let detail = format!(
                "waiting until every member serves reads again (a member may still be \
                 defragmenting): {}",
                waiting_for.join("; ")
            );
            if started.elapsed() >= within {
                return Err(format!("gave up after {within:?}: {detail}"));
            }
            if last_progress.elapsed() >= PROGRESS_EVERY || started.elapsed() < POLL_EVERY {
                last_progress = Instant::now();
                self.events.emit(Event::Progress {
                    step: StepKind::Preflight,
                    member: None,
                    elapsed: started.elapsed(),
                    detail: detail.clone(),
                });
                tracing::info!(%detail, "waiting for members");
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = self.stop.cancelled() => return Err("stopped on request while waiting".into()),
            }
        }
    }

    async fn execute(&mut self, options: &RunOptions) -> StepResult<()> {
        let plan = self.preflight(options.force).await?;
        if plan.is_empty() {
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
            return Err(End {
                outcome: Outcome::Skipped,
                reason: format!(
                    "no member needs defragmenting under {} ({})",
                    plan.rule,
                    reasons.join("; ")
                ),
                refused: false,
            });
        }
        // Room for the snapshot is checked before anything is created: a refusal leaves no
        // directory or lock file behind. A dry run stops right after, as a real run would.
        let cluster = &self.probe.config().name;
        let dir = snapshot::cluster_dir(&self.settings.snapshot_dir, cluster);
        let source = self
            .status_of(&plan.snapshot_from)
            .await
            .map_err(|r| self.refuse(r))?;
        let needed = (source.db_size_bytes as f64 * (1.0 + SNAPSHOT_SPACE_MARGIN)) as u64;
        snapshot::check_room(&dir, needed).map_err(|reason| {
            self.refuse(format!("{reason}; no snapshot, so nothing was changed"))
        })?;
        if options.dry_run {
            return Err(End {
                outcome: Outcome::Planned,
                reason: "dry run: nothing was changed".into(),
                refused: false,
            });
        }

        snapshot::create_dir(&dir)
            .map_err(|err| self.refuse(format!("{err}; no snapshot, so nothing was changed")))?;
        let _lock = RunLock::acquire(&dir, cluster).map_err(|r| self.refuse(r))?;
        for leftover in snapshot::remove_leftover_parts(&dir, &self.report.cluster) {
            self.warn(format!(
                "removed {} left by an interrupted run",
                leftover.display()
            ));
        }

        if self.settings.compact_first {
            self.compact(&plan).await?;
        }
        self.snapshot(&plan, &dir).await?;

        let mut deferred = Vec::new();
        for planned in plan.defragment.iter().filter(|m| !m.is_leader) {
            self.check_stop()?;
            if !self.defragment_follower(planned).await? {
                deferred.push(planned.clone());
            }
        }
        // The planned leader, and any follower that won an election while we worked.
        let leaders = plan.defragment.iter().filter(|m| m.is_leader).cloned();
        for planned in deferred.into_iter().chain(leaders) {
            self.check_stop()?;
            self.defragment_leader(&planned).await?;
        }

        self.disarm_nospace().await?;
        self.verify().await
    }

    // ---- preflight -------------------------------------------------------------------

    async fn preflight(&mut self, force: bool) -> StepResult<Plan> {
        let step = self.begin(StepKind::Preflight, None);
        if let Err(reason) = self.wait_until_members_serve_reads(false).await {
            self.finish(step, Err(reason.clone()));
            return Err(self.refuse(reason));
        }
        let status = self.collect().await;
        for stray in &status.unlisted_endpoints {
            self.warn(format!(
                "configured endpoint {} is not a member (MemberList does not list it) and does \
                 not answer; ignored: remove it from the config if it is a typo",
                stray.endpoint
            ));
        }
        let healthy = match plan::preflight(&status, self.settings, force) {
            Ok(healthy) => healthy,
            Err(reason) => {
                self.finish(step, Err(reason.clone()));
                return Err(self.refuse(reason));
            }
        };
        let plan = plan::make_plan(&status, &healthy, self.settings);
        let detail = format!(
            "{} voting members answered, leader {}, {} member(s) to defragment",
            plan.voting_members,
            plan.leader.name,
            plan.defragment.len()
        );
        self.finish(step, Ok(detail));
        self.report.members = plan
            .defragment
            .iter()
            .map(|m| member_report(m, MemberAction::NotReached))
            .chain(
                plan.skip
                    .iter()
                    .map(|m| member_report(m, MemberAction::Skipped)),
            )
            .collect();
        self.report.plan = Some(plan.clone());
        for line in plan::describe(&plan) {
            tracing::info!(plan = %line, "planned");
        }
        self.events.emit(Event::Planned { plan: plan.clone() });
        Ok(plan)
    }

    // ---- compaction and snapshot -----------------------------------------------------

    async fn compact(&mut self, plan: &Plan) -> StepResult<()> {
        let step = self.begin(StepKind::Compact, Some(plan.leader.clone()));
        let result = async {
            let mut client = self.client(&plan.leader.endpoint).await?;
            let revision = self.status_of(&plan.leader).await?.revision;
            client
                .compact(revision, Some(CompactionOptions::new().with_physical()))
                .await
                .map_err(|err| format!("compaction failed: {}", probe_error(err)))?;
            Ok::<_, String>(revision)
        }
        .await;
        match result {
            Ok(revision) => {
                self.report.compacted_at_revision = Some(revision);
                self.finish(step, Ok(format!("compacted to revision {revision}")));
                Ok(())
            }
            Err(reason) => {
                self.finish(step, Err(reason.clone()));
                Err(self.stopped(format!("{reason}; nothing was defragmented")))
            }
        }
    }

    async fn snapshot(&mut self, plan: &Plan, dir: &Path) -> StepResult<()> {
        let source = plan.snapshot_from.clone();
        let step = self.begin(StepKind::Snapshot, Some(source.clone()));
        let result = self.save_snapshot(&source, dir).await;
        match result {
            Ok(report) => {
                let detail = format!(
                    "{} at revision {}, {}, sha256 {} verified",
                    report.path.display(),
                    report.revision,
                    human_bytes(report.size_bytes),
                    report.sha256,
                );
                self.report.snapshot = Some(report);
                self.finish(step, Ok(detail));
                Ok(())
            }
            Err(reason) => {
                self.finish(step, Err(reason.clone()));
                Err(self.stopped(format!(
                    "snapshot failed: {reason}; no member was defragmented"
                )))
            }
        }
    }

    async fn save_snapshot(
        &mut self,
        source: &MemberRef,
        dir: &Path,
    ) -> Result<SnapshotReport, String> {
        let status = self.status_of(source).await?;
        let name = snapshot::file_name(
            &self.probe.config().name,
            SystemTime::now(),
            status.revision,
        );
        let mut maintenance = self.client(&source.endpoint).await?.maintenance_client();
        let events = self.events;
        let started = Instant::now();
        let progress_member = source.clone();
        let saved = snapshot::save(
            &mut maintenance,
            dir,
            &name,
            self.settings.snapshot_timeout,
            |received, remaining| {
                let detail = format!(
                    "{} received, {} to go",
                    human_bytes(received),
                    human_bytes(remaining)
                );
                tracing::info!(member = %progress_member, %detail, "snapshot in progress");
                events.emit(Event::Progress {
                    step: StepKind::Snapshot,
                    member: Some(progress_member.clone()),
                    elapsed: started.elapsed(),
                    detail,
                });
            },
        )
        .await
        .map_err(|err| err.to_string())?;
        let removed =
            snapshot::apply_retention(dir, &self.report.cluster, self.settings.snapshot_retention)
                .unwrap_or_else(|err| {
                    self.warn(format!("snapshot retention in {}: {err}", dir.display()));
                    vec![]
                });
        Ok(SnapshotReport {
            path: saved.path,
            size_bytes: saved.size_bytes,
            revision: status.revision,
            sha256: saved.sha256,
            from: source.clone(),
            duration: saved.duration,
            removed,
        })
    }

    // ---- defragmentation ---------------------------------------------------------------

    /// Defragments a planned follower. `Ok(false)`: it leads the cluster now, so it waits
    /// for the leader's turn.
    async fn defragment_follower(&mut self, planned: &PlannedMember) -> StepResult<bool> {
        self.settle().await?;
        let status = self.quorum_check(&planned.member).await?;
        if status.is_leader() {
            self.warn(format!(
                "{} became the leader since the plan was made; it goes last",
                planned.member
            ));
            return Ok(false);
        }
        self.defragment(&planned.member, &status).await?;
        Ok(true)
    }

    /// The leader's turn: leadership moves to a defragmented follower first, unless the
    /// policy says otherwise.
    async fn defragment_leader(&mut self, planned: &PlannedMember) -> StepResult<()> {
        self.settle().await?;
        let status = self.quorum_check(&planned.member).await?;
        let only_member = self
            .report
            .plan
            .as_ref()
            .is_some_and(|p| p.voting_members == 1);
        if status.is_leader() && only_member {
            self.warn(format!(
                "{} is the only voting member: every request waits until its defragmentation ends",
                planned.member
            ));
        } else if status.is_leader() && self.settings.leader != LeaderPolicy::DefragInPlace {
            if let Err(reason) = self.move_leader(&planned.member).await {
                match self.settings.on_leader_move_failure {
                    LeaderMoveFailure::Stop => {
                        return Err(self.stopped(format!(
                            "leadership could not be moved off {} ({reason}); the leader was \
                             not defragmented",
                            planned.member
                        )))
                    }
                    LeaderMoveFailure::DefragInPlace => self.warn(format!(
                        "leadership could not be moved off {} ({reason}); defragmenting it in \
                         place: every client of the cluster waits until it ends",
                        planned.member
                    )),
                }
            }
        } else if status.is_leader() {
            self.warn(format!(
                "defragmenting the leader {} in place (leader: defrag_in_place): every client \
                 of the cluster waits until it ends",
                planned.member
            ));
        }
        let status = self
            .status_of(&planned.member)
            .await
            .map_err(|r| self.stopped(r))?;
        self.defragment(&planned.member, &status).await
    }

    /// Stops unless the cluster keeps quorum without `member`, counting only members that
    /// answer and have caught up. Returns `member`'s current status.
    async fn quorum_check(&mut self, member: &MemberRef) -> StepResult<EndpointStatus> {
        let step = self.begin(StepKind::QuorumCheck, Some(member.clone()));
        let status = self.collect().await;
        let verdict = quorum_without(&status, member.id, self.settings.max_applied_lag);
        match verdict {
            Ok((target, detail)) => {
                self.finish(step, Ok(detail));
                Ok(target)
            }
            Err(reason) => {
                self.finish(step, Err(reason.clone()));
                Err(self.stopped(format!("stopped before {member}: {reason}")))
            }
        }
    }

    async fn defragment(&mut self, member: &MemberRef, before: &EndpointStatus) -> StepResult<()> {
        let follower = !before.is_leader();
        if let Some(report) = self.member_report(member.id) {
            report.follower_at_defrag = Some(follower);
            report.db_size_before = before.db_size_bytes;
            report.db_size_in_use_before = before.db_size_in_use_bytes;
        }
        let step = self.begin(StepKind::Defragment, Some(member.clone()));
        let mut client = self
            .client(&member.endpoint)
            .await
            .map_err(|reason| self.stopped(format!("{member}: {reason}")))?;
        let timeout = self.settings.defrag_timeout;
        let started = Instant::now();
        let call = tokio::time::timeout(timeout, client.defragment());
        tokio::pin!(call);
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        let result = loop {
            tokio::select! {
                result = &mut call => break result,
                _ = ticks.tick() => {
                    let elapsed = started.elapsed();
                    tracing::info!(member = %member, elapsed_seconds = elapsed.as_secs(), "still defragmenting");
                    self.events.emit(Event::Progress {
                        step: StepKind::Defragment,
                        member: Some(member.clone()),
                        elapsed,
                        detail: format!("still defragmenting {}", member.name),
                    });
                }
            }
        };
        let call_took = started.elapsed();
        let outcome = match result {
            Ok(Ok(_)) => None,
            Err(_) => Some(format!("no answer within {timeout:?}")),
            Ok(Err(err)) => match probe_error(err) {
                err @ (ProbeError::Unreachable(_) | ProbeError::Timeout(_)) => {
                    Some(err.to_string())
                }
                err => {
                    let reason = format!("Defragment failed: {err}");
                    self.finish(step, Err(reason.clone()));
                    self.set_action(member.id, MemberAction::Failed);
                    return Err(self.stopped(format!("{member}: {reason}")));
                }
            },
        };
        if let Some(lost) = &outcome {
            // etcd keeps defragmenting after the client gives up: wait for the member
            // itself rather than starting on the next one.
            self.warn(format!(
                "Defragment on {member} ended without an answer ({lost}); waiting until it \
                 serves reads and catches up with the leader before going on"
            ));
        }
        // However short defrag_timeout is, a member that just finished needs a moment to
        // apply what the cluster wrote meanwhile.
        let caught_up = self
            .wait_caught_up(member, timeout.max(CATCH_UP_FLOOR))
            .await;
        let after = match caught_up {
            Ok(after) => after,
            Err(reason) => {
                self.finish(step, Err(reason.clone()));
                self.set_action(member.id, MemberAction::Failed);
                return Err(self.stopped(format!("{member}: {reason}")));
            }
        };
        if let Some(report) = self.member_report(member.id) {
            report.action = MemberAction::Defragmented;
            report.db_size_after = Some(after.db_size_bytes);
            report.db_size_in_use_after = Some(after.db_size_in_use_bytes);
            report.defrag_duration = Some(call_took);
        }
        let detail = format!(
            "{} -> {} ({} reclaimed) as {}{}",
            human_bytes(before.db_size_bytes),
            human_bytes(after.db_size_bytes),
            human_bytes(before.db_size_bytes.saturating_sub(after.db_size_bytes)),
            if follower { "follower" } else { "leader" },
            if outcome.is_some() {
                format!(" (the call gave up after {:.2}s)", call_took.as_secs_f64())
            } else {
                String::new()
            }
        );
        self.finish(step, Ok(detail));
        Ok(())
    }

    /// Waits until `member` answers Status and a serializable read (which etcd blocks for
    /// the whole defragmentation), and its applied index has reached the leader's as it was
    /// when the wait began.
    async fn wait_caught_up(
        &mut self,
        member: &MemberRef,
        within: Duration,
    ) -> Result<EndpointStatus, String> {
        let deadline = Instant::now() + within;
        let mut target_applied = None;
        loop {
            let last_problem;
            let status = self.collect().await;
            let leader_applied = status
                .agreed_leader()
                .and_then(|leader| find(&status, leader))
                .map(|leader| leader.raft_applied_index);
            match (find(&status, member.id), leader_applied) {
                (Some(current), Some(leader_applied)) => {
                    let target = *target_applied.get_or_insert(leader_applied);
                    if current.raft_applied_index >= target {
                        match self.serializable_read(&member.endpoint).await {
                            Ok(()) => return Ok(current.clone()),
                            Err(err) => last_problem = format!("a read failed: {err}"),
                        }
                    } else {
                        last_problem =
                            format!("applied index {} of {target}", current.raft_applied_index);
                    }
                }
                (None, _) => last_problem = "Status unanswered".into(),
                (_, None) => last_problem = "the members do not agree on a leader".into(),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not serve reads and catch up with the leader within {within:?} \
                     ({last_problem})"
                ));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    async fn serializable_read(&mut self, endpoint: &str) -> Result<(), String> {
        let mut client = self.client(endpoint).await?;
        let options = GetOptions::new().with_serializable().with_count_only();
        tokio::time::timeout(
            self.probe.config().status_timeout,
            client.get("etcdmedic", Some(options)),
        )
        .await
        .map_err(|_| "no answer".to_string())?
        .map(drop)
        .map_err(|err| probe_error(err).to_string())
    }

    // ---- leadership -----------------------------------------------------------------

    /// Hands leadership from `leader` to the healthiest follower (defragmented in this run
    /// first, then the most caught up) and waits until every member follows it.
    async fn move_leader(&mut self, leader: &MemberRef) -> Result<(), String> {
        let step = self.begin(StepKind::MoveLeader, Some(leader.clone()));
        let started = Instant::now();
        let result = self.try_move_leader(leader).await;
        match result {
            Ok(to) => {
                let detail = format!("leadership moved to {to}; every member follows it");
                self.report.leader_move = Some(LeaderMove {
                    from: leader.clone(),
                    to,
                    duration: started.elapsed(),
                });
                self.finish(step, Ok(detail));
                Ok(())
            }
            Err(reason) => {
                self.finish(step, Err(reason.clone()));
                Err(reason)
            }
        }
    }

    async fn try_move_leader(&mut self, leader: &MemberRef) -> Result<MemberRef, String> {
        let status = self.collect().await;
        let leader_applied = find(&status, leader.id)
            .map(|s| s.raft_applied_index)
            .ok_or("the leader stopped answering")?;
        let defragmented: Vec<MemberId> = self
            .report
            .members
            .iter()
            .filter(|m| m.action == MemberAction::Defragmented)
            .map(|m| m.member.id)
            .collect();
        let target = status
            .members
            .iter()
            .filter(|m| !m.is_learner)
            .filter_map(|m| Some((m, m.reachable()?)))
            .filter(|(_, s)| s.member_id != leader.id)
            .filter(|(_, s)| {
                leader_applied.saturating_sub(s.raft_applied_index) <= self.settings.max_applied_lag
            })
            .max_by_key(|(_, s)| (defragmented.contains(&s.member_id), s.raft_applied_index))
            .map(|(m, _)| member_ref(m))
            .ok_or("no follower answers and is caught up")?;
        let mut client = self.client(&leader.endpoint).await?;
        tokio::time::timeout(MOVE_LEADER_TIMEOUT, client.move_leader(target.id.0))
            .await
            .map_err(|_| format!("MoveLeader got no answer within {MOVE_LEADER_TIMEOUT:?}"))?
            .map_err(|err| format!("MoveLeader to {target}: {}", probe_error(err)))?;

        let deadline = Instant::now() + LEADER_SETTLE_TIMEOUT;
        loop {
            let status = self.collect().await;
            let reachable: Vec<&EndpointStatus> = status
                .members
                .iter()
                .filter_map(|m| m.reachable())
                .collect();
            if !reachable.is_empty() && reachable.iter().all(|s| s.leader == Some(target.id)) {
                return Ok(target);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "MoveLeader to {target} returned, but not every member followed it within \
                     {LEADER_SETTLE_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    // ---- NOSPACE and verification ----------------------------------------------------

    async fn disarm_nospace(&mut self) -> StepResult<()> {
        let status = self.collect().await;
        let Ok(alarms) = &status.alarms else {
            return Err(
                self.stopped("AlarmList failed after defragmenting; NOSPACE state unknown".into())
            );
        };
        let nospace: Vec<_> = alarms
            .iter()
            .filter(|a| a.alarm == AlarmKind::NoSpace)
            .copied()
            .collect();
        if nospace.is_empty() {
            return Ok(());
        }
        let step = self.begin(StepKind::Disarm, None);
        let threshold = self.settings.disarm_nospace_below;
        let too_big: Vec<String> = status
            .members
            .iter()
            .filter_map(|m| Some((m, m.reachable()?)))
            .filter(|(_, s)| s.quota_usage() >= threshold)
            .map(|(m, s)| {
                format!(
                    "{} at {:.0}% of its {} quota",
                    m.display_name(),
                    s.quota_usage() * 100.0,
                    human_bytes(s.quota_bytes)
                )
            })
            .collect();
        if !too_big.is_empty() {
            let reason = format!(
                "NOSPACE left armed: {} (disarm_nospace_below {threshold}); delete or compact data, \
                 or raise --quota-backend-bytes",
                too_big.join(", ")
            );
            self.finish(step, Err(reason.clone()));
            return Err(self.stopped(reason));
        }
        let Some(leader) = status
            .agreed_leader()
            .and_then(|id| status.members.iter().find(|m| m.id == Some(id)))
        else {
            self.finish(step, Err("no agreed leader".into()));
            return Err(self.stopped("no agreed leader to disarm NOSPACE through".into()));
        };
        let leader = member_ref(leader);
        let result = async {
            let mut client = self.client(&leader.endpoint).await?;
            for alarm in &nospace {
                let mut options = AlarmOptions::new();
                options.with_member(alarm.member_id.0);
                client
                    .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
                    .await
                    .map_err(|err| {
                        format!(
                            "disarming NOSPACE of {}: {}",
                            alarm.member_id,
                            probe_error(err)
                        )
                    })?;
            }
            Ok::<_, String>(client)
        }
        .await;
        let mut client = match result {
            Ok(client) => client,
            Err(reason) => {
                self.finish(step, Err(reason.clone()));
                return Err(self.stopped(reason));
            }
        };
        self.report.alarms_disarmed = nospace.clone();
        self.finish(
            step,
            Ok(format!("{} NOSPACE alarm(s) disarmed", nospace.len())),
        );

        // A lease grant is a write that NOSPACE refuses, and leaves no key behind.
        let step = self.begin(StepKind::VerifyWrite, Some(leader.clone()));
        let write = async {
            let lease = client.lease_grant(10, None).await.map_err(probe_error)?;
            client.lease_revoke(lease.id()).await.map_err(probe_error)?;
            Ok::<_, ProbeError>(())
        }
        .await;
        match write {
            Ok(()) => {
                self.finish(step, Ok("a write (lease grant) is accepted again".into()));
                Ok(())
            }
            Err(err) => {
                let reason = format!("writes are still refused after disarming NOSPACE: {err}");
                self.finish(step, Err(reason.clone()));
                Err(self.stopped(reason))
            }
        }
    }

    /// Final Status of every member, and HashKV at one revision on every voting member:
    /// after a defragmentation they must still hold the same keyspace.
    async fn verify(&mut self) -> StepResult<()> {
        let step = self.begin(StepKind::Verify, None);
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let status = self.collect().await;
            for member in status.members.iter() {
                if let (Some(id), Some(current)) = (member.id, member.reachable()) {
                    if let Some(report) = self.member_report(id) {
                        if report.action != MemberAction::Defragmented {
                            report.db_size_after = Some(current.db_size_bytes);
                            report.db_size_in_use_after = Some(current.db_size_in_use_bytes);
                        }
                    }
                }
            }
            match self.hash_check(&status).await {
                Ok(check) if check.consistent => {
                    let detail = format!(
                        "{} members hold the same keyspace at revision {} (HashKV {:08x})",
                        check.hashes.len(),
                        check.revision,
                        check.hashes.first().map_or(0, |(_, h)| *h)
                    );
                    self.report.hash_check = Some(check);
                    self.finish(step, Ok(detail));
                    return Ok(());
                }
                Ok(check) => {
                    let hashes: Vec<String> = check
                        .hashes
                        .iter()
                        .map(|(m, h)| format!("{}={h:08x}", m.name))
                        .collect();
                    let reason = format!(
                        "the members' keyspaces differ at revision {}: {}. A human must look \
                         (etcd's data corruption guide); the snapshot taken before the run is \
                         in the report",
                        check.revision,
                        hashes.join(", ")
                    );
                    self.report.hash_check = Some(check);
                    self.finish(step, Err(reason.clone()));
                    return Err(End {
                        outcome: Outcome::Failed,
                        reason,
                        refused: false,
                    });
                }
                Err(err) => last_error = err,
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        self.finish(step, Err(last_error.clone()));
        Err(self.stopped(format!("verification could not complete: {last_error}")))
    }

    /// HashKV on every voting member at the newest revision all of them have applied, all
    /// at once (each reads the whole keyspace). `Err` when a member cannot answer or the
    /// keyspace moved under the check.
    async fn hash_check(&mut self, status: &ClusterStatus) -> Result<HashCheck, String> {
        let mut members = Vec::new();
        for member in status.members.iter().filter(|m| !m.is_learner) {
            let Some(answer) = member.reachable() else {
                return Err(format!("{} does not answer Status", member.display_name()));
            };
            let member = member_ref(member);
            let client = self.client(&member.endpoint).await?;
            members.push((member, answer.revision, client));
        }
        let newest_common = members
            .iter()
            .map(|(_, revision, _)| *revision)
            .min()
            .ok_or("no voting member")?;
        let hash_all = |revision: i64| {
            futures::future::join_all(members.iter().map(|(member, _, client)| {
                let mut client = client.clone();
                async move {
                    client
                        .hash_kv(revision)
                        .await
                        .map_err(|err| format!("HashKV on {member}: {}", probe_error(err)))
                }
            }))
        };
        let mut responses = hash_all(newest_common).await;
        // HashKV refuses a revision at or below the compaction point; on a quiet cluster right
        // after a compaction that is the current one. Then every member hashes its latest
        // revision (0), which must be the same on all.
        let compacted = responses
            .iter()
            .any(|r| matches!(r, Err(err) if err.contains("compacted")));
        let revision = if compacted {
            responses = hash_all(0).await;
            0
        } else {
            newest_common
        };
        let responses: Vec<_> = responses.into_iter().collect::<Result<_, _>>()?;
        let hashed_at: Vec<i64> = responses
            .iter()
            .map(|r| {
                if revision == 0 {
                    r.header().map_or(0, |h| h.revision())
                } else {
                    revision
                }
            })
            .collect();
        if hashed_at.windows(2).any(|w| w[0] != w[1]) {
            return Err("a write landed during the check".into());
        }
        if responses
            .windows(2)
            .any(|w| w[0].compact_version() != w[1].compact_version())
        {
            return Err("a compaction ran during the check".into());
        }
        let hashes: Vec<(MemberRef, u32)> = members
            .into_iter()
            .zip(&responses)
            .map(|((member, _, _), response)| (member, response.hash()))
            .collect();
        let consistent = hashes.windows(2).all(|w| w[0].1 == w[1].1);
        Ok(HashCheck {
            revision: hashed_at.first().copied().unwrap_or(newest_common),
            hashes,
            consistent,
        })
    }

    // ---- helpers ----------------------------------------------------------------------

    async fn collect(&self) -> ClusterStatus {
        self.probe.collect(self.probe.config().status_timeout).await
    }

    async fn status_of(&self, member: &MemberRef) -> Result<EndpointStatus, String> {
        self.probe
            .member_status(&member.endpoint, self.probe.config().status_timeout)
            .await
            .map_err(|err| format!("{member}: Status: {err}"))
    }

    async fn client(&mut self, endpoint: &str) -> Result<Client, String> {
        if let Some(client) = self.clients.get(endpoint) {
            return Ok(client.clone());
        }
        let member = self.probe.client(endpoint).map_err(|err| err.to_string())?;
        let client = member
            .client(self.probe.config().status_timeout)
            .await
            .map_err(|err| format!("connecting to {endpoint}: {err}"))?;
        self.clients.insert(endpoint.to_string(), client.clone());
        Ok(client)
    }

    async fn settle(&mut self) -> StepResult<()> {
        let any_done = self
            .report
            .steps
            .iter()
            .any(|s| s.step == StepKind::Defragment);
        if !any_done || self.settings.settle_time.is_zero() {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(self.settings.settle_time) => Ok(()),
            _ = self.stop.cancelled() => Err(self.interrupted()),
        }
    }

    fn check_stop(&self) -> StepResult<()> {
        if self.stop.is_cancelled() {
            return Err(self.interrupted());
        }
        Ok(())
    }

    fn interrupted(&self) -> End {
        End {
            outcome: Outcome::Interrupted,
            reason: "stopped on request; the member under way finished, no other was started"
                .into(),
            refused: false,
        }
    }

    /// A refusal: nothing was changed.
    fn refuse(&self, reason: String) -> End {
        End {
            outcome: Outcome::Failed,
            reason: format!("refused: {reason}"),
            refused: true,
        }
    }

    /// The run stops: partial once any member was defragmented, failed before.
    fn stopped(&self, reason: String) -> End {
        let any = self
            .report
            .members
            .iter()
            .any(|m| m.action == MemberAction::Defragmented);
        End {
            outcome: if any {
                Outcome::Partial
            } else {
                Outcome::Failed
            },
            reason,
            refused: false,
        }
    }

    fn member_report(&mut self, id: MemberId) -> Option<&mut MemberReport> {
        self.report.members.iter_mut().find(|m| m.member.id == id)
    }

    fn set_action(&mut self, id: MemberId, action: MemberAction) {
        if let Some(report) = self.member_report(id) {
            report.action = action;
        }
    }

    fn begin(&self, kind: StepKind, member: Option<MemberRef>) -> Step {
        tracing::debug!(
            step = kind.as_str(),
            member = member.as_ref().map(|m| m.name.as_str()),
            "step started"
        );
        self.events.emit(Event::Started {
            step: kind,
            member: member.clone(),
        });
        Step {
            kind,
            member,
            started_at: SystemTime::now(),
            started: Instant::now(),
        }
    }

    fn finish(&mut self, step: Step, result: Result<String, String>) {
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        let record = StepRecord {
            step: step.kind,
            member: step.member,
            started_at: step.started_at,
            duration: step.started.elapsed(),
            ok,
            detail,
        };
        let member = record
            .member
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or("");
        if ok {
            tracing::info!(step = record.step.as_str(), member, seconds = record.duration.as_secs_f64(), detail = %record.detail, "step done");
        } else {
            tracing::warn!(step = record.step.as_str(), member, seconds = record.duration.as_secs_f64(), detail = %record.detail, "step failed");
        }
        self.events.emit(Event::Finished {
            record: record.clone(),
        });
        self.report.steps.push(record);
    }

    fn warn(&self, message: String) {
        tracing::warn!(%message, "warning");
        self.events.emit(Event::Warning { message });
    }
}

fn member_report(planned: &PlannedMember, action: MemberAction) -> MemberReport {
    MemberReport {
        member: planned.member.clone(),
        was_leader: planned.is_leader,
        is_learner: planned.is_learner,
        action,
        reason: planned.reason.clone(),
        db_size_before: planned.db_size,
        db_size_in_use_before: planned.db_size_in_use,
        db_size_after: None,
        db_size_in_use_after: None,
        follower_at_defrag: None,
        defrag_duration: None,
    }
}

fn find(status: &ClusterStatus, id: MemberId) -> Option<&EndpointStatus> {
    status
        .members
        .iter()
        .filter_map(|m| m.reachable())
        .find(|s| s.member_id == id)
}

/// Whether the voting members other than `target` that answer and have caught up with the
/// leader still make a quorum. `Ok` carries `target`'s status and a sentence for the record.
fn quorum_without(
    status: &ClusterStatus,
    target: MemberId,
    max_applied_lag: u64,
) -> Result<(EndpointStatus, String), String> {
    let target_status = find(status, target)
        .cloned()
        .ok_or_else(|| "it does not answer Status".to_string())?;
    let leader = status
        .agreed_leader()
        .and_then(|id| find(status, id))
        .ok_or("the members do not agree on a leader")?;
    let voting: Vec<_> = status.members.iter().filter(|m| !m.is_learner).collect();
    let quorum = voting.len() / 2 + 1;
    let mut healthy = 0;
    let mut problems = Vec::new();
    for member in voting.iter().filter(|m| m.id != Some(target)) {
        match member.reachable() {
            Some(s)
                if leader
                    .raft_applied_index
                    .saturating_sub(s.raft_applied_index)
                    <= max_applied_lag =>
            {
                healthy += 1
            }
            Some(s) => problems.push(format!(
                "{} is {} entries behind",
                member.display_name(),
                leader
                    .raft_applied_index
                    .saturating_sub(s.raft_applied_index)
            )),
            None => problems.push(format!("{} does not answer", member.display_name())),
        }
    }
    // Clusters of one or two voting members (accepted with --force or allow_single_member)
    // have no quorum without the member at all: that outage was accepted, but every other
    // member must still be up.
    let needed = if voting.len() >= 3 {
        quorum
    } else {
        voting.len().saturating_sub(1)
    };
    if healthy < needed {
        return Err(format!(
            "without it only {healthy} of {} voting members are up and caught up, {needed} are \
             needed ({})",
            voting.len(),
            problems.join(", ")
        ));
    }
    Ok((
        target_status,
        format!(
            "{healthy} of {} voting members up and caught up without it (quorum {quorum})",
            voting.len()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use etcdmedic_cluster::model::ProbeError;

    use super::*;
    use crate::plan::tests::{cluster, member};

    fn members(count: u64, down: &[u64]) -> ClusterStatus {
        let mut members: Vec<_> = (1..=count).map(|id| member(id, 1, 100, 10)).collect();
        for member in members.iter_mut() {
            if down.contains(&member.id.map_or(0, |id| id.0)) {
                member.status = Err(ProbeError::Unreachable("refused".into()));
            }
        }
        cluster(members, vec![])
    }

    #[test]
    fn a_member_goes_only_when_the_others_keep_a_quorum() {
        assert!(quorum_without(&members(3, &[]), MemberId(2), 1000).is_ok());
        let refused = quorum_without(&members(3, &[3]), MemberId(2), 1000).unwrap_err();
        assert!(
            refused.contains("only 1 of 3 voting members are up and caught up, 2 are needed (m3 does not answer)"),
            "{refused}"
        );
        // Five members lose one and keep three without the target.
        assert!(quorum_without(&members(5, &[5]), MemberId(2), 1000).is_ok());
        assert!(quorum_without(&members(5, &[4, 5]), MemberId(2), 1000).is_err());
        // The target itself must answer.
        assert!(quorum_without(&members(3, &[2]), MemberId(2), 1000).is_err());
    }

    #[test]
    fn forced_small_clusters_need_every_other_member_up() {
        assert!(quorum_without(&members(1, &[]), MemberId(1), 1000).is_ok());
        assert!(quorum_without(&members(2, &[]), MemberId(2), 1000).is_ok());
        assert!(quorum_without(&members(2, &[2]), MemberId(1), 1000).is_err());
    }

    #[test]
    fn a_member_far_behind_the_leader_does_not_count() {
        // m3 has applied 2 entries fewer than the leader m1 (see the plan tests).
        let refused = quorum_without(&members(3, &[]), MemberId(2), 1).unwrap_err();
        assert!(refused.contains("m3 is 2 entries behind"), "{refused}");
        assert!(quorum_without(&members(3, &[]), MemberId(2), 2).is_ok());
    }
}
