//! Remediation settings: the top-level `remediation:` block and a cluster's own block merged
//! key by key (the cluster's key wins), then validated.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::file::{LeaderMoveFailure, LeaderPolicy, OnBusy, RemediationFile};
use super::when::{zone, CronIn, Window, Windows};
use crate::defrag_rule::DefragRule;
use etcdmedic_cluster::tls;
use etcdmedic_cluster::ConfigProblems;

const DEFAULT_SNAPSHOT_DIR: &str = "/var/lib/etcdmedic/snapshots";
const DEFAULT_SNAPSHOT_RETENTION: usize = 5;
const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_DEFRAG_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The quorum and catch-up checks already gate every member; a pause only lengthens the run
/// (docs/benchmarks.md, "When and how etcdmedic acts").
const DEFAULT_SETTLE_TIME: Duration = Duration::ZERO;
/// Well under etcd's 7 s request timeout and the shortest lease TTL worth assuming: a stall
/// this short costs clients a slow request, never a failed one.
const DEFAULT_LEADER_IN_PLACE_BELOW: Duration = Duration::from_secs(1);
const DEFAULT_DISARM_NOSPACE_BELOW: f64 = 0.9;
const DEFAULT_QUIET_WAIT: Duration = Duration::from_secs(5 * 60);
/// etcd itself refuses to promote a learner further behind than this; a voting member this
/// far behind is not one to hand work to either.
const DEFAULT_MAX_APPLIED_LAG: u64 = 1000;

/// How the remediator treats one cluster, every key resolved.
#[derive(Debug, Clone, Serialize)]
pub struct RemediationSettings {
    /// Already joined with nothing: snapshots go to `<snapshot_dir>/<cluster>/`.
    pub snapshot_dir: PathBuf,
    pub snapshot_retention: usize,
    #[serde(with = "humantime_serde")]
    pub snapshot_timeout: Duration,
    pub defrag_rule: DefragRule,
    #[serde(with = "humantime_serde")]
    pub defrag_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub settle_time: Duration,
    pub compact_first: bool,
    pub leader: LeaderPolicy,
    #[serde(with = "humantime_serde")]
    pub leader_in_place_below: Duration,
    pub on_leader_move_failure: LeaderMoveFailure,
    pub disarm_nospace_below: f64,
    pub allow_single_member: bool,
    pub max_applied_lag: u64,
    /// Raft entries per second; `None`: no quiet-cluster gate.
    pub max_write_rate: Option<f64>,
    #[serde(with = "humantime_serde")]
    pub quiet_wait: Duration,
    pub on_busy: OnBusy,
    /// Empty: always open.
    pub windows: Windows,
    /// Runs start by themselves at each of its times; `None`: only alerts and requests.
    pub schedule: Option<CronIn>,
}

impl Default for RemediationSettings {
    fn default() -> Self {
        RemediationSettings {
            snapshot_dir: PathBuf::from(DEFAULT_SNAPSHOT_DIR),
            snapshot_retention: DEFAULT_SNAPSHOT_RETENTION,
            snapshot_timeout: DEFAULT_SNAPSHOT_TIMEOUT,
            defrag_rule: DefragRule::Builtin,
            defrag_timeout: DEFAULT_DEFRAG_TIMEOUT,
            settle_time: DEFAULT_SETTLE_TIME,
            compact_first: false,
            leader: LeaderPolicy::Auto,
            leader_in_place_below: DEFAULT_LEADER_IN_PLACE_BELOW,
            on_leader_move_failure: LeaderMoveFailure::Stop,
            disarm_nospace_below: DEFAULT_DISARM_NOSPACE_BELOW,
            allow_single_member: false,
            max_applied_lag: DEFAULT_MAX_APPLIED_LAG,
            max_write_rate: None,
            quiet_wait: DEFAULT_QUIET_WAIT,
            on_busy: OnBusy::Wait,
            windows: Windows::default(),
            schedule: None,
        }
    }
}

/// Merges `own` (the cluster's block, whose keys are under `own_key`) over `defaults` (the
/// top-level block) over the built-in defaults. Problems name the key where the bad value
/// was written.
pub(crate) fn resolve(
    defaults: Option<&RemediationFile>,
    own: Option<&RemediationFile>,
    own_key: &str,
    base: &Path,
    problems: &mut ConfigProblems,
) -> Option<RemediationSettings> {
    let before = problems.0.len();
    let empty = RemediationFile::default();
    let (defaults, own) = (defaults.unwrap_or(&empty), own.unwrap_or(&empty));
    let mut settings = RemediationSettings::default();

    // Each key: the cluster's value if set (reported under its key), else the top level's.
    macro_rules! pick {
        ($field:ident) => {
            match (&own.$field, &defaults.$field) {
                (Some(value), _) => {
                    Some((value.clone(), format!("{own_key}.{}", stringify!($field))))
                }
                (None, Some(value)) => {
                    Some((value.clone(), format!("remediation.{}", stringify!($field))))
                }
                (None, None) => None,
            }
        };
    }

    if let Some((dir, _)) = pick!(snapshot_dir) {
        settings.snapshot_dir = tls::resolve(base, &dir);
    }
    if let Some((retention, key)) = pick!(snapshot_retention) {
        if retention == 0 {
            problems.push(
                key,
                "must be at least 1: the snapshot just taken is always kept",
            );
        }
        settings.snapshot_retention = retention;
    }
    if let Some((timeout, key)) = pick!(snapshot_timeout) {
        if timeout.is_zero() {
            problems.push(key, "must be longer than 0s");
        }
        settings.snapshot_timeout = timeout;
    }
    if let Some((source, key)) = pick!(defrag_rule) {
        match DefragRule::expression(&source) {
            Ok(rule) => settings.defrag_rule = rule,
            Err(bad) => problems.push(key, bad.to_string()),
        }
    }
    if let Some((timeout, key)) = pick!(defrag_timeout) {
        if timeout.is_zero() {
            problems.push(key, "must be longer than 0s");
        }
        settings.defrag_timeout = timeout;
    }
    if let Some((settle, _)) = pick!(settle_time) {
        settings.settle_time = settle;
    }
    if let Some((compact, _)) = pick!(compact_first) {
        settings.compact_first = compact;
    }
    if let Some((leader, _)) = pick!(leader) {
        settings.leader = leader;
    }
    if let Some((bound, _)) = pick!(leader_in_place_below) {
        settings.leader_in_place_below = bound;
    }
    if let Some((policy, _)) = pick!(on_leader_move_failure) {
        settings.on_leader_move_failure = policy;
    }
    if let Some((threshold, key)) = pick!(disarm_nospace_below) {
        if !(threshold > 0.0 && threshold <= 1.0) {
            problems.push(
                key,
                format!("{threshold} is not a fraction of the quota in (0, 1], such as 0.9"),
            );
        }
        settings.disarm_nospace_below = threshold;
    }
    if let Some((allow, _)) = pick!(allow_single_member) {
        settings.allow_single_member = allow;
    }
    if let Some((lag, _)) = pick!(max_applied_lag) {
        settings.max_applied_lag = lag;
    }
    if let Some((rate, key)) = pick!(max_write_rate) {
        if !(rate.is_finite() && rate > 0.0) {
            problems.push(
                key,
                format!("{rate} is not a write rate: raft entries per second, above 0"),
            );
        }
        settings.max_write_rate = Some(rate);
    }
    if let Some((wait, _)) = pick!(quiet_wait) {
        settings.quiet_wait = wait;
    }
    if let Some((on_busy, _)) = pick!(on_busy) {
        settings.on_busy = on_busy;
    }

    let zone = match pick!(time_zone) {
        Some((name, key)) => zone(Some(&name)).unwrap_or_else(|err| {
            problems.push(key, err.to_string());
            chrono_tz::Tz::UTC
        }),
        None => chrono_tz::Tz::UTC,
    };
    if let Some((windows, key)) = pick!(windows) {
        for (index, window) in windows.iter().enumerate() {
            if window.duration.is_zero() {
                problems.push(format!("{key}[{index}].duration"), "must be longer than 0s");
            }
            match CronIn::parse(&window.start, zone) {
                Ok(start) => settings.windows.0.push(Window {
                    start,
                    duration: window.duration,
                }),
                Err(err) => problems.push(format!("{key}[{index}].start"), err.to_string()),
            }
        }
    }

    if let Some((schedule, key)) = pick!(schedule) {
        match CronIn::parse(&schedule, zone) {
            Ok(schedule) => settings.schedule = Some(schedule),
            Err(err) => problems.push(key, err.to_string()),
        }
    }

    (problems.0.len() == before).then_some(settings)
}
