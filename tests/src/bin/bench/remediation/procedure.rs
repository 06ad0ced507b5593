//! The four ways of defragmenting the cluster that the benchmark compares: etcdmedic under
//! each leader setting, and the manual etcdctl procedure. Each returns its steps with their
//! times, and what it did with the leader.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{ensure, Context, Result};
use etcdmedic_remediator::report::RunReport;
use etcdmedic_tests::{project_binary, EtcdCluster};

use super::timeline::{self, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Manual,
    DefragInPlace,
    MoveThenDefrag,
    Auto,
}

impl Mode {
    /// In the order they run.
    pub const ALL: [Mode; 4] = [
        Mode::Manual,
        Mode::DefragInPlace,
        Mode::MoveThenDefrag,
        Mode::Auto,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Mode::Manual => "manual (etcdctl)",
            Mode::DefragInPlace => "etcdmedic `defrag_in_place`",
            Mode::MoveThenDefrag => "etcdmedic `move_then_defrag`",
            Mode::Auto => "etcdmedic `auto`",
        }
    }

    fn leader_setting(self) -> Option<&'static str> {
        match self {
            Mode::Manual => None,
            Mode::DefragInPlace => Some("defrag_in_place"),
            Mode::MoveThenDefrag => Some("move_then_defrag"),
            Mode::Auto => Some("auto"),
        }
    }
}

/// What a procedure did.
pub struct Done {
    pub steps: Vec<Step>,
    /// What happened to the leader, in a few words.
    pub leader: String,
}

/// Carries out `mode` (blocking: it waits on child processes). `free_mb`: what each member
/// has to reclaim, for etcdmedic's rule.
pub fn carry_out(mode: Mode, cluster: &EtcdCluster, free_mb: u64) -> Result<Done> {
    match mode.leader_setting() {
        None => manual(cluster),
        Some(leader) => etcdmedic(cluster, leader, free_mb),
    }
}

/// What a careful operator types: a snapshot from a follower, then each follower, then the
/// leader in place, each with a command timeout long enough for a big database (etcdctl's
/// default 5 s gives up on a large snapshot, or on a defragmentation while etcd carries on).
fn manual(cluster: &EtcdCluster) -> Result<Done> {
    let leader = leader_index(cluster)?;
    let followers: Vec<usize> = (0..cluster.len()).filter(|&i| i != leader).collect();
    let snapshot = cluster.dir().join("snapshots").join("manual.db");
    std::fs::create_dir_all(cluster.dir().join("snapshots"))?;
    let mut steps = Vec::new();
    let started = SystemTime::now();
    etcdctl(
        cluster,
        followers[0],
        &[
            "snapshot",
            "save",
            "--command-timeout=10m",
            &snapshot.display().to_string(),
        ],
    )?;
    steps.push(Step::timed("snapshot", started));
    for index in followers.into_iter().chain([leader]) {
        let started = SystemTime::now();
        etcdctl(cluster, index, &["defrag", "--command-timeout=10m"])?;
        steps.push(Step::timed(
            format!("defragment {}", cluster.name(index)),
            started,
        ));
    }
    Ok(Done {
        steps,
        leader: "in place".into(),
    })
}

fn etcdmedic(cluster: &EtcdCluster, leader: &str, free_mb: u64) -> Result<Done> {
    let config = cluster.dir().join("bench-remediation.yaml");
    std::fs::write(
        &config,
        format!(
            "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\n  leader: {leader}\n  \
             defrag_rule: \"dbSizeFree >= {}\"\nclusters:\n{}",
            cluster.dir().join("snapshots").display(),
            free_mb * super::MB / 2,
            cluster.config_entry("bench")
        ),
    )?;
    let report = run_report(&config)?;
    ensure!(
        report.outcome.as_str() == "succeeded",
        "the run did not succeed: {:?}",
        report.reason
    );
    let leader = match (&report.leader_choice, &report.leader_move) {
        (Some(choice), _) if choice.in_place => {
            format!(
                "in place (predicted {:.2} s)",
                choice.predicted.as_secs_f64()
            )
        }
        (Some(choice), _) => format!(
            "moved (in place predicted {:.2} s)",
            choice.predicted.as_secs_f64()
        ),
        (None, Some(_)) => "moved".into(),
        (None, None) => "in place".into(),
    };
    let steps = timeline::from_report(&report);
    for step in &steps {
        let took = step.end.duration_since(step.start).unwrap_or_default();
        eprintln!("bench:   {:<16} {:.2} s", step.label, took.as_secs_f64());
    }
    Ok(Done { steps, leader })
}

fn run_report(config: &Path) -> Result<RunReport> {
    let output = Command::new(project_binary("etcdmedic-remediator")?)
        .args(["run", "--cluster", "bench", "-o", "json", "--config"])
        .arg(config)
        .output()?;
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "etcdmedic-remediator printed no report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn etcdctl(cluster: &EtcdCluster, index: usize, args: &[&str]) -> Result<()> {
    cluster
        .etcdctl_at(&[cluster.endpoint(index)], args)
        .map(drop)
        .with_context(|| format!("etcdctl {}", args.join(" ")))
}

fn leader_index(cluster: &EtcdCluster) -> Result<usize> {
    let json = cluster.etcdctl(&["endpoint", "status", "-w", "json"])?;
    let statuses: Vec<serde_json::Value> = serde_json::from_str(&json)?;
    let leader = statuses
        .iter()
        .find_map(|s| s["Status"]["leader"].as_u64())
        .context("no leader in etcdctl's answer")?;
    statuses
        .iter()
        .position(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
        .context("the leader is not among the endpoints")
}
