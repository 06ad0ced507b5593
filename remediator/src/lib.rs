//! `etcdmedic-remediator`: remediates an etcd cluster the way a careful operator would, and
//! records every step.
//!
//! # Layout
//! - [`cli`]: command-line arguments.
//! - [`config`]: the configuration file as the remediator reads it: the shared clusters plus
//!   its own blocks (`remediation`, `backup` and their destinations, `remediator`).
//! - [`defrag_rule`]: which members need defragmenting, from their live Status.
//! - [`downgrade`]: the seed's 3.6 -> 3.5 downgrade: etcd's Downgrade call after a health
//!   check and a backup, and where a downgrade stands with the next step.
//! - [`plan`]: preflight and the plan (which members, in which order, why), from live status.
//! - `engine`: the run itself, step by step, behind the [`Etcd`] seam: compaction, snapshot,
//!   defragmentation, leader move, disarm, verification.
//! - `snapshot`: verified snapshots on disk and their retention.
//! - `backup`: backups' manifests, destinations (directories, S3 buckets), restore drill.
//! - [`places`]: the snapshot directories and state file a configuration names, checked.
//! - `lock`: one run per cluster at a time, one service per state file.
//! - [`forecast`]: learned rates, predicted step durations, and `leader: auto`'s choice.
//! - [`events`]: what a run reports while it happens.
//! - [`report`]: the record of a run (JSON).
//! - [`output`]: the `run` command's text output; [`verbs`]: the one-off verbs' (`alarm`,
//!   `forfeit-leadership`).
//! - [`restore`]: `restore`: a backup, checked, written as one data directory per member.
//! - [`service`]: `serve`, the Alertmanager webhook receiver, its queue, state and API.

#![warn(unreachable_pub)]

mod age_keys;
mod backup;
mod call;
pub mod cli;
pub mod config;
pub mod defrag_rule;
pub mod downgrade;
mod engine;
pub mod events;
pub mod forecast;
mod lock;
pub mod output;
pub mod places;
pub mod plan;
mod refusal;
pub mod report;
pub mod restore;
pub mod service;
mod snapshot;
pub mod verbs;
pub mod vocabulary;

pub use backup::bucket::{PARTS_IN_FLIGHT, PART_SIZE};
pub use backup::cluster::BackupCluster;
pub use backup::drill::DrillRecord;
pub use backup::drill_taken::DrillReport;
pub use backup::locked::problems as object_lock_problems;
pub use backup::Missed;
pub use backup::{BackupError, BackupReport, Landed, Manifest, RecordedHash};
pub use engine::error::{MoveFailure, Refusal, Stop, KINDS as ERROR_KINDS};
pub use engine::etcd::{CallError, Chunk, ChunkStream, HashKv};
pub use engine::guard::{Guard, RunGuard};
pub use engine::operator::{AlarmLine, Disarmed, Forfeited, VerbError};
pub use engine::{Etcd, Live, Remediator, RunError, RunOptions};
pub use events::{Event, Events};
pub use report::{Outcome, RunReport};
