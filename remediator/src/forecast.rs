//! How long a run will take, and whether `leader: auto` defragments the leader in place.
//!
//! Rates are learned, never guessed when a measurement exists: first from the members this
//! run has already defragmented (same cluster, same disks, same load, minutes ago), then from
//! earlier runs of the cluster (the webhook service keeps their reports), and only then from
//! a deliberately slow assumption. Defragmentation is predicted from the bytes *in use*:
//! bbolt copies the live pages into a new file and never reads the free ones. A snapshot
//! streams the whole file. Where several measurements exist the slowest one is used: a
//! prediction that errs makes the run slower than promised, never the leader's stall longer.

use std::time::Duration;

use crate::config::LeaderPolicy;
use etcdmedic_cluster::table::human_bytes;
use serde::{Deserialize, Serialize};

use crate::vocabulary::{seconds, MemberRef, StepKind};

/// Assumed when nothing was measured: slow for any disk etcd should run on (etcd's own
/// hardware guide asks for SSDs), so an unmeasured leader is moved rather than stalled.
pub const ASSUMED_DEFRAG_BYTES_PER_SECOND: f64 = 32.0 * 1024.0 * 1024.0;
pub const ASSUMED_SNAPSHOT_BYTES_PER_SECOND: f64 = 32.0 * 1024.0 * 1024.0;
/// A transfer is an append and one election round; on loopback it takes well under this.
pub const ASSUMED_LEADER_MOVE: Duration = Duration::from_secs(1);
/// How many earlier runs' measurements count.
pub const HISTORY_RUNS: usize = 5;

/// One measured operation: this many bytes took this long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub bytes: u64,
    pub took: Duration,
}

impl Sample {
    fn rate(self) -> Option<f64> {
        let seconds = self.took.as_secs_f64();
        (self.bytes > 0 && seconds > 0.0).then(|| self.bytes as f64 / seconds)
    }
}

/// Where a rate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Members this run defragmented.
    ThisRun,
    /// Earlier runs of this cluster.
    EarlierRuns,
    /// Nothing measured yet: the assumed rate.
    Assumed,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::ThisRun => "measured on this run's followers",
            Basis::EarlierRuns => "measured by earlier runs",
            Basis::Assumed => "assumed, nothing measured yet",
        }
    }
}

/// Bytes per second, and what the figure rests on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub bytes_per_second: f64,
    pub basis: Basis,
    /// How many measurements it rests on (0 when assumed).
    pub samples: usize,
}

impl Rate {
    /// The slowest of `samples`, or `None` when none is usable.
    pub fn slowest(samples: &[Sample], basis: Basis) -> Option<Rate> {
        let rates: Vec<f64> = samples.iter().filter_map(|s| s.rate()).collect();
        let slowest = rates.iter().copied().reduce(f64::min)?;
        Some(Rate {
            bytes_per_second: slowest,
            basis,
            samples: rates.len(),
        })
    }

    fn assumed(bytes_per_second: f64) -> Rate {
        Rate {
            bytes_per_second,
            basis: Basis::Assumed,
            samples: 0,
        }
    }

    pub fn time_for(&self, bytes: u64) -> Duration {
        Duration::try_from_secs_f64(bytes as f64 / self.bytes_per_second).unwrap_or(Duration::MAX)
    }
}

/// What earlier runs of the cluster measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub defrag: Vec<Sample>,
    pub snapshot: Vec<Sample>,
    pub leader_moves: Vec<Duration>,
}

/// The rates a prediction uses, each from the best source there is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub defrag: Rate,
    pub snapshot: Rate,
    #[serde(with = "seconds")]
    pub leader_move: Duration,
}

impl Rates {
    /// This run's measurements first, then `history`, then the assumptions.
    pub fn learned(this_run: &[Sample], history: &History) -> Rates {
        let defrag = Rate::slowest(this_run, Basis::ThisRun)
            .or_else(|| Rate::slowest(&history.defrag, Basis::EarlierRuns))
            .unwrap_or(Rate::assumed(ASSUMED_DEFRAG_BYTES_PER_SECOND));
        let snapshot = Rate::slowest(&history.snapshot, Basis::EarlierRuns)
            .unwrap_or(Rate::assumed(ASSUMED_SNAPSHOT_BYTES_PER_SECOND));
        let leader_move = history
            .leader_moves
            .iter()
            .copied()
            .max()
            .unwrap_or(ASSUMED_LEADER_MOVE);
        Rates {
            defrag,
            snapshot,
            leader_move,
        }
    }
}

/// What happens to the leader at its turn, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderChoice {
    pub in_place: bool,
    /// The predicted defragmentation of the leader: with `in_place`, how long every client
    /// of the cluster waits.
    #[serde(with = "seconds")]
    pub predicted: Duration,
    pub reason: String,
}

/// Decides the leader's fate under `policy` (`skip` never reaches here).
///
/// `stop_grpc_on_defrag` (the leader's `StopGRPCServiceOnDefrag`) does not change the
/// decision, only what the reason says: in the benchmark the gate spared health-checking
/// writers even the leader's in-place stall, but lease renewals through every member and the
/// clients pinned to the leader waited as long with it as without, and those are what
/// `leader_in_place_below` bounds.
pub fn leader_choice(
    policy: LeaderPolicy,
    bound: Duration,
    leader_in_use: u64,
    rate: &Rate,
    stop_grpc_on_defrag: Option<bool>,
) -> LeaderChoice {
    let predicted = rate.time_for(leader_in_use);
    let figures = format!(
        "{} in use at {}/s ({}) is {:.2}s",
        human_bytes(leader_in_use),
        human_bytes(rate.bytes_per_second as u64),
        rate.basis.as_str(),
        predicted.as_secs_f64()
    );
    let (in_place, reason) = match policy {
        LeaderPolicy::Auto if predicted < bound => (
            true,
            format!(
                "leader: auto: defragmented in place, the predicted stall ({figures}) is under \
                 leader_in_place_below ({})",
                humantime::format_duration(bound)
            ),
        ),
        LeaderPolicy::Auto => (
            false,
            format!(
                "leader: auto: leadership moves first, the predicted stall ({figures}) is not \
                 under leader_in_place_below ({})",
                humantime::format_duration(bound)
            ),
        ),
        LeaderPolicy::DefragInPlace => (
            true,
            format!("leader: defrag_in_place; predicted stall {figures}"),
        ),
        LeaderPolicy::MoveThenDefrag | LeaderPolicy::Skip => (
            false,
            format!("leader: move_then_defrag; in place it would stall {figures}"),
        ),
    };
    let reason = match (stop_grpc_on_defrag, in_place) {
        (Some(true), true) => format!(
            "{reason}; with StopGRPCServiceOnDefrag its health-checking clients move to other \
             members, but lease renewals and the clients pinned to it still wait"
        ),
        (Some(true), false) => format!(
            "{reason}; once a follower, its health-checking clients move to other members \
             while it defragments (StopGRPCServiceOnDefrag)"
        ),
        _ => reason,
    };
    LeaderChoice {
        in_place,
        predicted,
        reason,
    }
}

/// One step's predicted duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedStep {
    pub step: StepKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberRef>,
    #[serde(with = "seconds")]
    pub duration: Duration,
}

/// The run's steps with their predicted durations, before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub steps: Vec<PredictedStep>,
    /// Every step plus the pauses between members.
    #[serde(with = "seconds")]
    pub total: Duration,
    pub rates: Rates,
    /// When the leader is to be defragmented: what is expected at its turn (decided again
    /// then, with the followers' measurements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderChoice>,
}

impl Forecast {
    /// The predicted duration of `step` on `member`, when the forecast has one.
    pub fn of(&self, step: StepKind, member: Option<&MemberRef>) -> Option<Duration> {
        self.steps
            .iter()
            .find(|p| p.step == step && p.member.as_ref().map(|m| m.id) == member.map(|m| m.id))
            .map(|p| p.duration)
    }
}

#[cfg(test)]
mod tests;
