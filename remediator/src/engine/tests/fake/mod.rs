//! A scripted etcd cluster for the scenario tests: members with sizes, a leader, alarms and a
//! keyspace hash, whose answers change as the engine acts (a Defragment shrinks the file and
//! blocks reads for its duration, MoveLeader moves leadership) and as the script says (a
//! member dies when another's defragmentation starts, leadership moves mid-run...). Every
//! call is recorded, and what no engine may ever do is caught as it happens.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use etcdmedic_cluster::config::ClusterName;
use etcdmedic_cluster::model::{Alarm, AlarmKind, MemberId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::etcd::CallError;

mod answers;

pub(super) const MIB: u64 = 1024 * 1024;
const QUOTA: u64 = 2048 * MIB;

/// A call the engine made, by member name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    Collect,
    Status(String),
    Read(String),
    Defragment(String),
    MoveLeader { via: String, to: String },
    Compact(i64),
    Disarm(String),
    WriteProbe(String),
    HashKv(String, i64),
    Snapshot(String),
}

/// What the script does when a call is made.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Kill(&'static str),
    /// Leadership moves to this member (an election).
    Elect(&'static str),
    /// The operator asks the run to stop (SIGTERM).
    Stop,
    /// AlarmList fails from now on.
    BreakAlarmList,
    /// Clients start writing this many raft entries a second, for an hour.
    StartWriting(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapshotBehavior {
    Good,
    /// The stream's sha256 trailer does not match what was sent.
    Damaged,
    /// Chunks keep coming for a long time (to stop a run mid-stream).
    Endless,
}

/// Calls that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failing {
    Defragment,
    Compact,
    Disarm,
    WriteProbe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MoveBehavior {
    Moves,
    Refuses(CallError),
    /// MoveLeader answers, but nobody follows the new leader.
    Ignored,
}

#[derive(Debug, Clone)]
struct Member {
    id: MemberId,
    name: &'static str,
    db_size: u64,
    in_use: u64,
    up: bool,
    learner: bool,
    applied_behind: u64,
    defragmenting_until: Option<Instant>,
    hash: u32,
}

#[derive(Debug)]
struct State {
    members: Vec<Member>,
    leader: Option<MemberId>,
    alarms: Vec<Alarm>,
    alarms_fail: bool,
    revision: i64,
    compact_revision: i64,
    calls: Vec<Call>,
    script: Vec<(Call, Action)>,
    defrag_takes: Duration,
    /// The Defragment call answers nothing (the connection drops) but etcd goes on.
    defrag_answer_lost: bool,
    /// Calls that answer with an error.
    failing: Vec<(Failing, CallError)>,
    leader_defrag_allowed: bool,
    snapshot: SnapshotBehavior,
    move_leader: MoveBehavior,
    /// HashKV answers at different revisions this many rounds (writes landing meanwhile).
    hash_moves: usize,
    hash_calls: usize,
    violations: Vec<String>,
    /// Clients writing: (since, raft entries per second, until).
    writing: Option<(Instant, f64, Instant)>,
    /// A downgrade to this version is enabled.
    downgrade_target: Option<String>,
}

impl State {
    /// Raft entries the clients' writes added so far.
    pub(super) fn written(&self) -> u64 {
        self.writing.map_or(0, |(since, rate, until)| {
            let end = Instant::now().min(until);
            (end.saturating_duration_since(since).as_secs_f64() * rate) as u64
        })
    }
}

/// A fake cluster of members `m1`, `m2`, ...; `m1` leads.
#[derive(Debug)]
pub(crate) struct FakeEtcd {
    name: ClusterName,
    state: Mutex<State>,
    stop: CancellationToken,
}

pub(super) fn endpoint(name: &str) -> String {
    format!("http://{name}.fake:2379")
}

impl FakeEtcd {
    /// `members` voting members, each `db_mib` MiB with `in_use_mib` in use.
    pub(crate) fn new(members: usize, db_mib: u64, in_use_mib: u64) -> Self {
        const NAMES: [&str; 5] = ["m1", "m2", "m3", "m4", "m5"];
        let members = NAMES[..members]
            .iter()
            .enumerate()
            .map(|(i, name)| Member {
                id: MemberId(i as u64 + 1),
                name,
                db_size: db_mib * MIB,
                in_use: in_use_mib * MIB,
                up: true,
                learner: false,
                applied_behind: 0,
                defragmenting_until: None,
                hash: 0xabcd,
            })
            .collect();
        FakeEtcd {
            name: ClusterName::new("fake").unwrap_or_else(|err| panic!("{err}")),
            state: Mutex::new(State {
                members,
                leader: Some(MemberId(1)),
                alarms: vec![],
                alarms_fail: false,
                revision: 1000,
                compact_revision: 900,
                calls: vec![],
                script: vec![],
                defrag_takes: Duration::from_secs(2),
                defrag_answer_lost: false,
                failing: vec![],
                leader_defrag_allowed: false,
                snapshot: SnapshotBehavior::Good,
                move_leader: MoveBehavior::Moves,
                hash_moves: 0,
                hash_calls: 0,
                violations: vec![],
                writing: None,
                downgrade_target: None,
            }),
            stop: CancellationToken::new(),
        }
    }

    /// The run's stop request, which [`Action::Stop`] cancels.
    pub(crate) fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ---- the script ----------------------------------------------------------------

    /// When `call` is made, `action` happens (once).
    pub(crate) fn on(self, call: Call, action: Action) -> Self {
        self.lock().script.push((call, action));
        self
    }

    pub(crate) fn member(self, name: &str, edit: impl FnOnce(&mut MemberEdit<'_>)) -> Self {
        {
            let mut state = self.lock();
            if let Some(member) = state.members.iter_mut().find(|m| m.name == name) {
                edit(&mut MemberEdit(member));
            }
        }
        self
    }

    pub(crate) fn with(self, edit: impl FnOnce(&mut Settings<'_>)) -> Self {
        edit(&mut Settings(&mut self.lock()));
        self
    }

    // ---- what happened -------------------------------------------------------------

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls other than the status reads, which every wait repeats.
    pub(crate) fn actions(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| !matches!(c, Call::Collect | Call::Status(_) | Call::Read(_)))
            .collect()
    }

    pub(crate) fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    pub(crate) fn leader(&self) -> Option<String> {
        let state = self.lock();
        state
            .leader
            .and_then(|id| state.members.iter().find(|m| m.id == id))
            .map(|m| m.name.to_string())
    }

    pub(crate) fn alarms(&self) -> Vec<Alarm> {
        self.lock().alarms.clone()
    }

    // ---- answering -----------------------------------------------------------------

    fn record(&self, call: Call) {
        let mut state = self.lock();
        state.calls.push(call.clone());
        let due: Vec<Action> = {
            let mut due = Vec::new();
            state.script.retain(|(on, action)| {
                if *on == call {
                    due.push(action.clone());
                    false
                } else {
                    true
                }
            });
            due
        };
        for action in due {
            if matches!(action, Action::Stop) {
                self.stop.cancel();
            }
            apply(&mut state, action);
        }
    }
}

impl State {
    fn failure(&self, call: Failing) -> Option<CallError> {
        self.failing
            .iter()
            .find(|(failing, _)| *failing == call)
            .map(|(_, error)| error.clone())
    }
}

fn apply(state: &mut State, action: Action) {
    let find =
        |state: &mut State, name: &str| state.members.iter_mut().position(|m| m.name == name);
    match action {
        Action::Kill(name) => {
            if let Some(i) = find(state, name) {
                state.members[i].up = false;
                if state.leader == Some(state.members[i].id) {
                    state.leader = None;
                }
            }
        }
        Action::Elect(name) => {
            if let Some(i) = find(state, name) {
                state.leader = Some(state.members[i].id);
            }
        }
        Action::Stop => {}
        Action::BreakAlarmList => state.alarms_fail = true,
        Action::StartWriting(per_second) => {
            let now = Instant::now();
            state.writing = Some((now, per_second, now + Duration::from_secs(3600)));
        }
    }
}

/// Changes to one member of the script.
pub(crate) struct MemberEdit<'a>(&'a mut Member);

impl MemberEdit<'_> {
    pub(crate) fn down(&mut self) {
        self.0.up = false;
    }
    pub(crate) fn learner(&mut self) {
        self.0.learner = true;
    }
    pub(crate) fn behind(&mut self, entries: u64) {
        self.0.applied_behind = entries;
    }
    pub(crate) fn hash(&mut self, hash: u32) {
        self.0.hash = hash;
    }
    pub(crate) fn sizes(&mut self, db_mib: u64, in_use_mib: u64) {
        self.0.db_size = db_mib * MIB;
        self.0.in_use = in_use_mib * MIB;
    }
    /// Left defragmenting by someone else: reads block for `duration` from now.
    pub(crate) fn defragmenting_for(&mut self, duration: Duration) {
        self.0.defragmenting_until = Some(Instant::now() + duration);
    }
}

/// Changes to how the cluster behaves.
pub(crate) struct Settings<'a>(&'a mut State);

impl Settings<'_> {
    pub(crate) fn alarm(&mut self, member: u64, alarm: AlarmKind) {
        self.0.alarms.push(Alarm {
            member_id: MemberId(member),
            alarm,
        });
    }
    pub(crate) fn alarms_fail(&mut self) {
        self.0.alarms_fail = true;
    }
    pub(crate) fn no_leader(&mut self) {
        self.0.leader = None;
    }
    pub(crate) fn defrag_takes(&mut self, duration: Duration) {
        self.0.defrag_takes = duration;
    }
    pub(crate) fn defrag_answer_lost(&mut self) {
        self.0.defrag_answer_lost = true;
    }
    /// `call` answers `error` (every time).
    pub(crate) fn fail(&mut self, call: Failing, error: CallError) {
        self.0.failing.push((call, error));
    }
    pub(crate) fn leader_defrag_allowed(&mut self) {
        self.0.leader_defrag_allowed = true;
    }
    pub(crate) fn snapshot(&mut self, behavior: SnapshotBehavior) {
        self.0.snapshot = behavior;
    }
    pub(crate) fn move_leader(&mut self, behavior: MoveBehavior) {
        self.0.move_leader = behavior;
    }
    pub(crate) fn hash_moves(&mut self, rounds: usize) {
        self.0.hash_moves = rounds;
    }
    /// A downgrade to `target` is enabled, as 3.6+ members report it in Status.
    pub(crate) fn downgrading(&mut self, target: &str) {
        self.0.downgrade_target = Some(target.to_string());
    }
    /// Clients write `per_second` raft entries a second, starting now, for `duration`.
    pub(crate) fn writes(&mut self, per_second: f64, duration: Duration) {
        let now = Instant::now();
        self.0.writing = Some((now, per_second, now + duration));
    }
}
