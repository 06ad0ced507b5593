//! The NOSPACE outage: how long writes stay refused once someone starts fixing a cluster that
//! hit its quota, by hand (the documented etcdctl procedure) and by etcdmedic, with and
//! without a verified backup at the frozen revision to reuse as the run's snapshot.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use etcd_client::DeleteOptions;
use etcdmedic_remediator::config::RemediatorConfig as Config;
use etcdmedic_remediator::report::StepKind;
use etcdmedic_remediator::{Events, Outcome as RunOutcome, Remediator, RunOptions};
use etcdmedic_tests::workload::fill_to_nospace;
use etcdmedic_tests::{EtcdCluster, EtcdVersion};
use tokio_util::sync::CancellationToken;

use crate::verdict;

const MIB: u64 = 1024 * 1024;
const TARGET_RATIO: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Procedure {
    Manual,
    Etcdmedic,
    EtcdmedicReusing,
}

impl Procedure {
    const ALL: [Procedure; 3] = [
        Procedure::Manual,
        Procedure::Etcdmedic,
        Procedure::EtcdmedicReusing,
    ];

    fn name(self) -> &'static str {
        match self {
            Procedure::Manual => "by hand: etcdctl compact, snapshot save, defrag each member (leader last), alarm disarm",
            Procedure::Etcdmedic => "etcdmedic run (compact_first), streaming its snapshot",
            Procedure::EtcdmedicReusing => "etcdmedic run (compact_first), reusing the backup at the frozen revision",
        }
    }
}

pub struct Outcome {
    quota_mib: u64,
    outages: Vec<(Procedure, Duration, Duration)>,
}

/// A fresh cluster at NOSPACE whose data was then deleted (what Kubernetes' event expiry does
/// under NOSPACE): the revision is frozen from here on.
async fn full_cluster(quota: u64) -> Result<EtcdCluster> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .quota(quota)
        .data_on_disk()
        .start()
        .await?;
    let mut client = cluster.client(0).await?;
    fill_to_nospace(&mut client, 1024 * 1024, 4096).await?;
    client
        .delete("/etcdmedic/fill/", Some(DeleteOptions::new().with_prefix()))
        .await?;
    Ok(cluster)
}

pub async fn run(quota_mib: u64) -> Result<Outcome> {
    let mut outages = Vec::new();
    for procedure in Procedure::ALL {
        nix::unistd::sync();
        eprintln!("bench: NOSPACE at {quota_mib} MiB, {}", procedure.name());
        let cluster = full_cluster(quota_mib * MIB).await?;
        let (outage, snapshot) = match procedure {
            Procedure::Manual => manual(&cluster)?,
            Procedure::Etcdmedic => etcdmedic(&cluster, false).await?,
            Procedure::EtcdmedicReusing => etcdmedic(&cluster, true).await?,
        };
        outages.push((procedure, outage, snapshot));
    }
    Ok(Outcome { quota_mib, outages })
}

/// The runbook by hand, as fast as a script types it; the outage ends when `alarm disarm`
/// returns. Returns the outage and the snapshot's share of it.
fn manual(cluster: &EtcdCluster) -> Result<(Duration, Duration)> {
    let etcdctl = |endpoints: &[String], args: &[&str]| -> Result<String> {
        cluster.etcdctl_at(endpoints, args)
    };
    let all = cluster.endpoints();
    let status: serde_json::Value =
        serde_json::from_str(&etcdctl(&all, &["endpoint", "status", "-w", "json"])?)?;
    let members = status.as_array().context("endpoint status")?;
    let leader_id = members[0]["Status"]["leader"].as_u64().context("leader")?;
    let revision = members[0]["Status"]["header"]["revision"]
        .as_i64()
        .context("revision")?;
    let mut order: Vec<(bool, String)> = members
        .iter()
        .map(|m| {
            (
                m["Status"]["header"]["member_id"].as_u64() == Some(leader_id),
                m["Endpoint"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    order.sort();
    let follower = vec![order[0].1.clone()];
    let snapshot_file = cluster.dir().join("manual.db");
    let started = Instant::now();
    etcdctl(&follower, &["compact", &revision.to_string()])?;
    let snapshot_started = Instant::now();
    etcdctl(
        &follower,
        &["snapshot", "save", &snapshot_file.display().to_string()],
    )?;
    let snapshot = snapshot_started.elapsed();
    for (_, endpoint) in &order {
        etcdctl(std::slice::from_ref(endpoint), &["defrag"])?;
    }
    etcdctl(&all, &["alarm", "disarm"])?;
    Ok((started.elapsed(), snapshot))
}

/// One run of the engine, with a backup taken first when `reuse`; the outage ends with the
/// run's disarm step.
async fn etcdmedic(cluster: &EtcdCluster, reuse: bool) -> Result<(Duration, Duration)> {
    let dir = cluster.dir();
    let yaml = format!(
        "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\n  compact_first: true\n\
         backup:\n  destinations: [{{name: near, kind: local, path: {}}}]\n  restore_drill: \
         {{bin_dir: {}}}\nclusters:\n{}",
        dir.join("snapshots").display(),
        dir.join("backups").display(),
        EtcdVersion::V3_5.bin_dir()?.display(),
        cluster.config_entry("bench")
    );
    let config = Config::from_yaml(&yaml, &dir.join("bench.yaml"))?
        .clusters
        .remove(0);
    let mut run_config = config.clone();
    if !reuse {
        // Nothing to reuse, and the run keeps no backup afterwards: the plain procedure.
        run_config.backup = Default::default();
    } else {
        let taken = Remediator::new(config.clone())?
            .backup(&config.backup, None, &CancellationToken::new())
            .await?;
        ensure!(taken.missed.is_empty(), "{:?}", taken.missed);
    }
    let remediator = Remediator::new(run_config)?;
    let options = RunOptions {
        trigger: "bench".into(),
        ..RunOptions::default()
    };
    let report = remediator
        .run(&options, &Events::default(), &CancellationToken::new())
        .await;
    ensure!(
        report.outcome == RunOutcome::Succeeded,
        "{:?}: {:?}",
        report.outcome,
        report.reason
    );
    let snapshot = report.snapshot.as_ref().context("no snapshot")?;
    ensure!(
        snapshot.reused_backup == reuse,
        "reused: {}",
        snapshot.reused_backup
    );
    let disarmed = report
        .steps
        .iter()
        .find(|s| s.step == StepKind::Disarm && s.ok)
        .context("no disarm step")?;
    let outage = (disarmed.started_at + disarmed.duration).duration_since(report.started_at)?;
    let snapshot_step = report
        .steps
        .iter()
        .find(|s| s.step == StepKind::Snapshot)
        .map(|s| s.duration)
        .unwrap_or_default();
    Ok((outage, snapshot_step))
}

pub fn section(out: &mut String, outcome: &Outcome) -> Result<()> {
    writeln!(
        out,
        "## NOSPACE outage, with and without a backup to reuse\n"
    )?;
    writeln!(
        out,
        "etcd 3.5, 3 members, data on disk, `--quota-backend-bytes` {} MiB, filled with 1 MiB \
         values until NOSPACE, then every key deleted (deletes are allowed under NOSPACE; the \
         revision is frozen from then on). A fresh cluster per procedure. The outage is from \
         the first command to the alarm's disarm (writes accepted again). The reusing run's \
         backup was taken beforehand (as a scheduled backup after the alarm would be) and is \
         not part of the outage.\n",
        outcome.quota_mib
    )?;
    writeln!(out, "| procedure | outage | of which the snapshot |")?;
    writeln!(out, "|---|---|---|")?;
    for (procedure, outage, snapshot) in &outcome.outages {
        writeln!(
            out,
            "| {} | {:.2} s | {:.2} s |",
            procedure.name(),
            outage.as_secs_f64(),
            snapshot.as_secs_f64()
        )?;
    }
    let of = |wanted: Procedure| {
        outcome
            .outages
            .iter()
            .find(|(p, _, _)| *p == wanted)
            .map(|(_, outage, _)| outage.as_secs_f64())
            .unwrap_or(f64::NAN)
    };
    let ratio = of(Procedure::EtcdmedicReusing) / of(Procedure::Manual);
    writeln!(
        out,
        "\nTarget: etcdmedic reusing a backup at most {TARGET_RATIO:.1}x the manual outage — {} \
         ({ratio:.2}x; without the backup {:.2}x).\n",
        verdict(ratio <= TARGET_RATIO),
        of(Procedure::Etcdmedic) / of(Procedure::Manual)
    )?;
    Ok(())
}
