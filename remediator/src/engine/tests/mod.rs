//! Scenario tests of the engine against a scripted cluster ([`fake::FakeEtcd`]), on tokio's
//! paused clock: every branch of the runbook, each asserting the outcome, the error kind,
//! the report and the calls made, and that no call broke the engine's promises (one member
//! defragmenting at a time, never the leader unless asked). The end-to-end tests run the same
//! engine against real etcd; these reach the branches real etcd cannot be made to take.

mod backups;
mod fake;
mod kept_snapshots;

mod interrupts;
mod kinds;
mod quiet;
mod refusals;
mod runs;
mod spans;
mod stops;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::RemediationSettings;
use tempfile::TempDir;
use tokio::time::Instant;

use self::fake::{Call, FakeEtcd};
use super::{Remediator, RunOptions};
use crate::events::{Event, Events};
use crate::lock::RunLock;
use crate::report::{MemberAction, Outcome, RunReport, StepKind};

/// Free space on every scenario's snapshot disk, whatever the machine running the tests has
/// (a 2 GB database needs 2.2 GB: a CI runner's small temporary disk refused it).
pub(super) const SCENARIO_DISK_FREE: u64 = 64 << 30;

/// A remediator of `fake` whose snapshot disk has [`SCENARIO_DISK_FREE`] bytes free.
pub(super) fn remediator(fake: FakeEtcd, settings: RemediationSettings) -> Remediator<FakeEtcd> {
    Remediator::with(fake, settings).with_free_space(|_: &Path| Some(SCENARIO_DISK_FREE))
}

/// Which event makes the test ask the run to stop.
type StopWhen = Box<dyn Fn(&Event) -> bool + Send>;

/// A cluster, the settings the run gets, and how it is asked for.
pub(super) struct Scenario {
    fake: FakeEtcd,
    settings: RemediationSettings,
    options: RunOptions,
    snapshots: TempDir,
    stop_when: Option<StopWhen>,
    /// The cluster's run lock, held by "another run" for the whole scenario.
    held: Option<RunLock>,
}

impl Scenario {
    pub(super) fn new(fake: FakeEtcd) -> Self {
        let snapshots = tempfile::tempdir().unwrap_or_else(|err| panic!("tempdir: {err}"));
        let settings = RemediationSettings {
            snapshot_dir: snapshots.path().to_path_buf(),
            ..RemediationSettings::default()
        };
        Scenario {
            fake,
            settings,
            options: RunOptions {
                trigger: "test".into(),
                ..RunOptions::default()
            },
            snapshots,
            stop_when: None,
            held: None,
        }
    }

    /// Another run of the cluster holds its lock.
    pub(super) fn lock_held(mut self) -> Self {
        let dir = self.snapshots.path().join("fake");
        std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("mkdir: {err}"));
        let lock = RunLock::acquire(&dir, "fake").unwrap_or_else(|err| panic!("lock: {err}"));
        self.held = Some(lock);
        self
    }

    pub(super) fn settings(mut self, edit: impl FnOnce(&mut RemediationSettings)) -> Self {
        edit(&mut self.settings);
        self
    }

    pub(super) fn options(mut self, edit: impl FnOnce(&mut RunOptions)) -> Self {
        edit(&mut self.options);
        self
    }

    /// Asks the run to stop once it sends an event matching `when`.
    pub(super) fn stop_when(mut self, when: impl Fn(&Event) -> bool + Send + 'static) -> Self {
        self.stop_when = Some(Box::new(when));
        self
    }

    pub(super) async fn run(self) -> Ran {
        let stop = self.fake.stop_token();
        let (events, mut received) = Events::channel();
        let stop_when = self.stop_when;
        let watcher = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(event) = received.recv().await {
                    if stop_when.as_ref().is_some_and(|when| when(&event)) {
                        stop.cancel();
                    }
                    seen.push(event);
                }
                seen
            })
        };
        let remediator = remediator(self.fake, self.settings);
        let started = Instant::now();
        let report = remediator.run(&self.options, &events, &stop).await;
        let took = started.elapsed();
        drop(events);
        drop(self.held);
        let events = watcher
            .await
            .unwrap_or_else(|err| panic!("event watcher: {err}"));
        Ran {
            report,
            events,
            took,
            remediator,
            snapshots: self.snapshots,
        }
    }
}

/// A finished run and everything there is to look at afterwards.
pub(super) struct Ran {
    pub report: RunReport,
    pub events: Vec<Event>,
    /// On the paused clock: the time the run's waits and calls add up to.
    pub took: Duration,
    remediator: Remediator<FakeEtcd>,
    snapshots: TempDir,
}

impl Ran {
    pub(super) fn fake(&self) -> &FakeEtcd {
        self.remediator.etcd()
    }

    pub(super) fn kind(&self) -> Option<&str> {
        self.report.error_kind.as_deref()
    }

    pub(super) fn reason(&self) -> &str {
        self.report.reason.as_deref().unwrap_or_default()
    }

    pub(super) fn action(&self, member: &str) -> MemberAction {
        self.report
            .members
            .iter()
            .find(|m| m.member.name == member)
            .map(|m| m.action)
            .unwrap_or_else(|| panic!("{member} is not in the report: {:#?}", self.report))
    }

    pub(super) fn actions(&self) -> Vec<Call> {
        self.fake().actions()
    }

    /// Members in the order they were defragmented.
    pub(super) fn defragmented(&self) -> Vec<String> {
        self.actions()
            .into_iter()
            .filter_map(|call| match call {
                Call::Defragment(member) => Some(member),
                _ => None,
            })
            .collect()
    }

    /// The MoveLeader calls made.
    pub(super) fn moves(&self) -> Vec<Call> {
        self.actions()
            .into_iter()
            .filter(|call| matches!(call, Call::MoveLeader { .. }))
            .collect()
    }

    pub(super) fn warnings(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Event::Warning { message } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The steps as `kind member ok`, the way an operator scans a report.
    pub(super) fn steps(&self) -> Vec<String> {
        self.report
            .steps
            .iter()
            .map(|step| {
                let member = step.member.as_ref().map_or("-", |m| m.name.as_str());
                let ok = if step.ok { "ok" } else { "failed" };
                format!("{} {member} {ok}", step.step.as_str())
            })
            .collect()
    }

    /// Everything in the cluster's snapshot directory.
    pub(super) fn files(&self) -> Vec<PathBuf> {
        let dir = self.snapshots.path().join("fake");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return vec![];
        };
        // The run lock is a hidden file that stays (it is a lock by flock, not by existing).
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        files
    }

    /// What every run must hold whatever happened: one member defragmenting at a time, the
    /// leader only when asked, the outcome consistent with the error kind.
    pub(super) fn assert_safe(&self) {
        assert_eq!(self.fake().violations(), Vec::<String>::new(), "{self:?}");
        match self.report.outcome {
            Outcome::Succeeded | Outcome::Skipped | Outcome::Planned => {
                assert_eq!(self.kind(), None, "{self:?}")
            }
            _ => assert!(self.kind().is_some(), "{self:?}"),
        }
        let any_defragmented = self
            .report
            .members
            .iter()
            .any(|m| m.action == MemberAction::Defragmented);
        if self.report.outcome == Outcome::Partial {
            assert!(any_defragmented, "partial with nothing done: {self:?}");
        }
        // No half-written snapshot is ever left behind.
        let parts: Vec<_> = self
            .files()
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "part"))
            .collect();
        assert!(parts.is_empty(), "{parts:?}");
        // A member reported defragmented has its figures after, and who it followed.
        for member in &self.report.members {
            if member.action == MemberAction::Defragmented {
                assert!(member.db_size_after.is_some(), "{self:?}");
                assert!(member.follower_at_defrag.is_some(), "{self:?}");
            }
        }
        // The snapshot is verified before the first Defragment.
        let position = |wanted: &dyn Fn(&crate::report::StepRecord) -> bool| {
            self.report.steps.iter().position(wanted)
        };
        if let Some(first) = position(&|s| s.step == StepKind::Defragment) {
            let snapshot = position(&|s| s.step == StepKind::Snapshot && s.ok);
            assert!(snapshot.is_some_and(|at| at < first), "{self:?}");
            assert!(self.report.snapshot.is_some(), "{self:?}");
        }
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "outcome {:?} kind {:?}: {}",
            self.report.outcome,
            self.kind(),
            self.reason()
        )?;
        writeln!(f, "steps: {:#?}", self.steps())?;
        writeln!(f, "calls: {:?}", self.actions())?;
        writeln!(f, "warnings: {:#?}", self.warnings())?;
        write!(f, "violations: {:?}", self.fake().violations())
    }
}
