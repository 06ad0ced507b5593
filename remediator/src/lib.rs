//! `etcdmedic-remediator`: remediates an etcd cluster the way a careful operator would, and
//! records every step.
//!
//! # Layout
//! - [`cli`]: command-line arguments.
//! - [`plan`]: preflight and the plan (which members, in which order, why), from live status.
//! - [`engine`]: the run itself: compaction, snapshot, defragmentation, leader move, disarm,
//!   verification.
//! - [`snapshot`]: verified snapshots on disk and their retention.
//! - [`places`]: the snapshot directories and state file a configuration names, checked.
//! - `lock`: one run per cluster at a time.
//! - [`events`]: what a run reports while it happens.
//! - [`report`]: the record of a run (JSON).
//! - [`output`]: the `run` command's text output.
//! - [`service`]: `serve`, the Alertmanager webhook receiver, its queue, state and API.

pub mod cli;
pub mod engine;
pub mod events;
mod lock;
pub mod output;
pub mod places;
pub mod plan;
pub mod report;
pub mod service;
pub mod snapshot;

pub use engine::{Etcd, Remediator, RunError, RunOptions};
pub use events::{Event, Events};
pub use report::{Outcome, RunReport};
