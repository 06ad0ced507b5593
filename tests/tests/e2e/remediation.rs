//! The remediation engine against real clusters: the full run (leader last, after moving
//! leadership, as `leader: auto` does with `leader_in_place_below: 0s`), NOSPACE, every refusal, faults during the run, dry runs, and the snapshot
//! restored into a working member.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, ensure, Context, Result};
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, GetOptions};
use etcdmedic_remediator::config::{ManagedCluster, RemediatorConfig as Config};
use etcdmedic_remediator::report::{MemberAction, StepKind};
use etcdmedic_remediator::{Event, Events, Outcome, Remediator, RunOptions, RunReport};
use etcdmedic_tests::workload::{fill_to_nospace, fragment, Fragmentation};
use etcdmedic_tests::{project_binary, EtcdCluster, EtcdVersion};
use tokio_util::sync::CancellationToken;

use crate::on_each_etcd_version;
use crate::support::{
    assert_cluster_serves, etcdctl_alarms, etcdctl_running_status, stderr, stdout,
};

on_each_etcd_version!(
    a_fragmented_3_member_cluster_is_defragmented_leader_last,
    a_fragmented_5_member_cluster_is_defragmented_leader_last,
    nospace_is_disarmed_and_writes_are_accepted_again,
    a_member_down_before_the_run_is_refused_without_change,
    a_corrupt_alarm_is_refused_without_change,
    a_killed_follower_stops_the_run_before_the_next_member,
    a_defrag_timeout_waits_for_the_member_instead_of_moving_on,
);

/// Matches the default [`fragment`] workload (about 32 MiB file, 4 MiB in use).
pub(crate) const TEST_RULE: &str = "dbSizeFree >= 4*1024*1024 && dbSizeInUse / dbSize < 0.5";

/// A config for `cluster` with remediation defaults for tests: snapshots in `snapshots`, no
/// settle time, the test rule; `overrides` are extra lines for the cluster's own
/// `remediation:` block (indented by six spaces).
pub(crate) fn config(
    cluster: &EtcdCluster,
    snapshots: &Path,
    overrides: &str,
) -> Result<ManagedCluster> {
    let mut yaml = format!(
        "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\n  defrag_rule: \"{TEST_RULE}\"\nclusters:\n{}",
        snapshots.display(),
        cluster.config_entry("it")
    );
    if !overrides.is_empty() {
        yaml.push_str("    remediation:\n");
        yaml.push_str(overrides);
    }
    let path = cluster.dir().join("remediation.yaml");
    std::fs::write(&path, &yaml)?;
    Config::load(&path)?
        .clusters
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no cluster in {yaml}"))
}

/// Runs the engine once and returns the report and every event it sent.
pub(crate) async fn remediate(
    config: ManagedCluster,
    options: RunOptions,
) -> Result<(RunReport, Vec<Event>)> {
    let remediator = Remediator::new(config)?;
    let (events, mut received) = Events::channel();
    let report = remediator
        .run(&options, &events, &CancellationToken::new())
        .await;
    drop(events);
    let mut seen = Vec::new();
    while let Some(event) = received.recv().await {
        seen.push(event);
    }
    Ok((report, seen))
}

pub(crate) fn cli() -> RunOptions {
    RunOptions {
        trigger: "test".into(),
        ..Default::default()
    }
}

pub(crate) fn report_text(report: &RunReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|err| err.to_string())
}

/// Every member's etcd log: no two defragmentations overlapped, and none is still running.
/// Returns how many each member did.
pub(crate) fn assert_one_defrag_at_a_time(cluster: &EtcdCluster) -> Result<Vec<usize>> {
    let mut all: Vec<(SystemTime, SystemTime, usize)> = Vec::new();
    let mut counts = Vec::new();
    for index in 0..cluster.len() {
        let intervals = cluster.defrag_intervals(index)?;
        counts.push(intervals.len());
        for (start, end) in intervals {
            let end =
                end.ok_or_else(|| anyhow!("{} is still defragmenting", cluster.name(index)))?;
            all.push((start, end, index));
        }
    }
    all.sort();
    for pair in all.windows(2) {
        let ((_, end, a), (start, _, b)) = (pair[0], pair[1]);
        ensure!(
            end <= start,
            "{} was still defragmenting when {} started: {all:?}",
            cluster.name(a),
            cluster.name(b)
        );
    }
    Ok(counts)
}

/// Every key and value, in key order (values one by one: together they exceed gRPC's
/// default 4 MiB message limit).
async fn keyspace(client: &mut Client) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let keys = client
        .get(
            vec![0u8],
            Some(GetOptions::new().with_from_key().with_keys_only()),
        )
        .await?;
    let mut all = Vec::new();
    for kv in keys.kvs() {
        let value = client.get(kv.key(), None).await?;
        let value = value
            .kvs()
            .first()
            .map(|kv| kv.value().to_vec())
            .unwrap_or_default();
        all.push((kv.key().to_vec(), value));
    }
    Ok(all)
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walk(dir);
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .filter_map(Result::ok)
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

async fn full_run(version: EtcdVersion, members: usize) -> Result<()> {
    let cluster = EtcdCluster::builder(version)
        .members(members)
        .start()
        .await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let leader_index = cluster.wait_for_leader().await?;
    let leader_id = cluster.member_id(leader_index).await?;
    let snapshots = tempfile::tempdir()?;
    let before = keyspace(&mut cluster.client(0).await?).await?;

    // A bound of 0: `leader: auto` moves leadership first however small the leader is.
    let bound = "      leader_in_place_below: 0s\n";
    let (report, events) = remediate(config(&cluster, snapshots.path(), bound)?, cli()).await?;
    let text = report_text(&report);
    ensure!(report.outcome == Outcome::Succeeded, "{text}");
    let choice = report.leader_choice.as_ref().context("no leader choice")?;
    ensure!(!choice.in_place, "{text}");

    // Every member defragmented, each as a follower, the old leader last.
    ensure!(report.members.len() == members, "{text}");
    for member in &report.members {
        ensure!(member.action == MemberAction::Defragmented, "{text}");
        ensure!(
            member.follower_at_defrag == Some(true),
            "{} was leading during its defrag: {text}",
            member.member.name
        );
        let after = member.db_size_after.context("no size after")?;
        ensure!(
            after < member.db_size_before,
            "{}: {after} not below {}: {text}",
            member.member.name,
            member.db_size_before
        );
    }
    let defrag_order: Vec<_> = report
        .steps
        .iter()
        .filter(|s| s.step == StepKind::Defragment)
        .filter_map(|s| s.member.as_ref().map(|m| m.id))
        .collect();
    ensure!(defrag_order.len() == members, "{defrag_order:?}");
    ensure!(
        defrag_order.last() == Some(&leader_id),
        "leader {leader_id} not last: {defrag_order:?}"
    );
    let moved = report
        .leader_move
        .as_ref()
        .context("leadership was not moved")?;
    ensure!(
        moved.from.id == leader_id && moved.to.id != leader_id,
        "{text}"
    );
    let check = report.hash_check.as_ref().context("no hash check")?;
    ensure!(check.consistent && check.hashes.len() == members, "{text}");
    ensure!(report.reclaimed_bytes > 0, "{text}");
    ensure!(
        events.iter().any(|e| matches!(e, Event::Planned { .. })),
        "no plan event"
    );

    let counts = assert_one_defrag_at_a_time(&cluster)?;
    ensure!(
        counts.iter().all(|&n| n == 1),
        "defrags per member: {counts:?}"
    );
    assert_cluster_serves(&cluster).await?;

    // The snapshot is a verified file that restores into a working member.
    let snapshot = report.snapshot.as_ref().context("no snapshot")?;
    ensure!(
        snapshot.path.starts_with(snapshots.path().join("it")),
        "{:?}",
        snapshot.path
    );
    ensure!(snapshot.sha256.len() == 64, "{text}");
    let size = std::fs::metadata(&snapshot.path)?.len();
    ensure!(
        size == snapshot.size_bytes,
        "file {size} vs report {}",
        snapshot.size_bytes
    );
    ensure!(
        snapshot_files(snapshots.path()).len() == 2,
        "{:?}",
        snapshot_files(snapshots.path())
    );
    let restored = EtcdCluster::builder(version)
        .restore_from(&snapshot.path)
        .start()
        .await?;
    let got = keyspace(&mut restored.client(0).await?).await?;
    ensure!(
        got == before,
        "restored keyspace differs: {} keys vs {}",
        got.len(),
        before.len()
    );
    Ok(())
}

async fn a_fragmented_3_member_cluster_is_defragmented_leader_last(
    version: EtcdVersion,
) -> Result<()> {
    full_run(version, 3).await
}

async fn a_fragmented_5_member_cluster_is_defragmented_leader_last(
    version: EtcdVersion,
) -> Result<()> {
    full_run(version, 5).await
}

async fn nospace_is_disarmed_and_writes_are_accepted_again(version: EtcdVersion) -> Result<()> {
    const QUOTA: u64 = 16 * 1024 * 1024;
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .quota(QUOTA)
        .start()
        .await?;
    let mut client = cluster.client(0).await?;
    fill_to_nospace(&mut client, 256 * 1024, 1000).await?;
    ensure!(
        !etcdctl_alarms(&cluster)?.is_empty(),
        "no NOSPACE alarm after filling"
    );
    // What Kubernetes does under NOSPACE: deletes still work (events expire).
    client
        .delete(
            "/etcdmedic/fill/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    let snapshots = tempfile::tempdir()?;
    // The built-in rule: NOSPACE alone selects every member.
    let yaml = format!(
        "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\n  compact_first: true\nclusters:\n{}",
        snapshots.path().display(),
        cluster.config_entry("it")
    );
    let config = Config::from_yaml(&yaml, &cluster.dir().join("c.yaml"))?
        .clusters
        .remove(0);
    let (report, _) = remediate(config, cli()).await?;
    let text = report_text(&report);
    ensure!(report.outcome == Outcome::Succeeded, "{text}");
    ensure!(!report.alarms_disarmed.is_empty(), "{text}");
    ensure!(report.compacted_at_revision.is_some(), "{text}");
    ensure!(
        report
            .steps
            .iter()
            .any(|s| s.step == StepKind::VerifyWrite && s.ok),
        "{text}"
    );
    let alarms = etcdctl_alarms(&cluster)?;
    ensure!(alarms.is_empty(), "alarms left: {alarms:?}");
    assert_cluster_serves(&cluster).await?;
    Ok(())
}

/// What must be identical before and after a refused or dry run.
#[derive(Debug, PartialEq)]
struct Untouched {
    sizes: Vec<(u64, u64)>,
    leaders: Vec<u64>,
    files: Vec<PathBuf>,
}

async fn untouched(cluster: &EtcdCluster, snapshots: &Path) -> Result<Untouched> {
    let statuses = etcdctl_running_status(cluster)?;
    Ok(Untouched {
        sizes: statuses
            .iter()
            .map(|s| (s.status.db_size, s.status.db_size_in_use))
            .collect(),
        leaders: statuses.iter().map(|s| s.status.leader).collect(),
        files: snapshot_files(snapshots),
    })
}

/// Refused with `kind` (what alerts and tests match on), the reason saying `reason`.
fn ensure_refused(report: &RunReport, kind: &str, reason: &str) -> Result<()> {
    let text = report_text(report);
    ensure!(report.outcome == Outcome::Failed, "{text}");
    ensure!(report.refused, "{text}");
    ensure!(report.error_kind.as_deref() == Some(kind), "{text}");
    let got = report.reason.as_deref().unwrap_or_default();
    ensure!(got.starts_with("refused: "), "not a refusal: {got}");
    ensure!(got.contains(reason), "expected {reason:?} in {got:?}");
    ensure!(report.snapshot.is_none(), "{text}");
    ensure!(
        !report.steps.iter().any(|s| s.step == StepKind::Defragment),
        "{text}"
    );
    Ok(())
}

async fn a_member_down_before_the_run_is_refused_without_change(
    version: EtcdVersion,
) -> Result<()> {
    let mut cluster = EtcdCluster::builder(version).members(3).start().await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let leader = cluster.wait_for_leader().await?;
    cluster.kill((leader + 1) % 3)?;
    let snapshots = tempfile::tempdir()?;
    let before = untouched(&cluster, snapshots.path()).await?;
    let (report, _) = remediate(config(&cluster, snapshots.path(), "")?, cli()).await?;
    ensure_refused(&report, "member_down", "is not answering")?;
    ensure!(untouched(&cluster, snapshots.path()).await? == before);
    ensure!(assert_one_defrag_at_a_time(&cluster)?
        .iter()
        .all(|&n| n == 0));
    Ok(())
}

async fn a_corrupt_alarm_is_refused_without_change(version: EtcdVersion) -> Result<()> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let id = cluster.member_id(1).await?;
    let mut options = AlarmOptions::new();
    options.with_member(id.0);
    cluster
        .client(0)
        .await?
        .alarm(AlarmAction::Activate, AlarmType::Corrupt, Some(options))
        .await?;
    let snapshots = tempfile::tempdir()?;
    let (report, _) = remediate(config(&cluster, snapshots.path(), "")?, cli()).await?;
    ensure_refused(
        &report,
        "corrupt_alarm",
        "CORRUPT alarm raised by member m1",
    )?;
    ensure!(report
        .reason
        .as_deref()
        .unwrap_or_default()
        .contains("needs a human"));
    ensure!(snapshot_files(snapshots.path()).is_empty());
    ensure!(assert_one_defrag_at_a_time(&cluster)?
        .iter()
        .all(|&n| n == 0));
    Ok(())
}

/// Not per version: the refusals below are decided before any etcd call that differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_cluster_is_refused_unless_forced() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(1)
        .start()
        .await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let snapshots = tempfile::tempdir()?;
    let before = untouched(&cluster, snapshots.path()).await?;
    let (report, _) = remediate(config(&cluster, snapshots.path(), "")?, cli()).await?;
    ensure_refused(&report, "too_few_members", "1 voting member")?;
    ensure!(untouched(&cluster, snapshots.path()).await? == before);

    let forced = RunOptions {
        force: true,
        ..cli()
    };
    let (report, _) = remediate(config(&cluster, snapshots.path(), "")?, forced).await?;
    ensure!(
        report.outcome == Outcome::Succeeded,
        "{}",
        report_text(&report)
    );
    ensure!(report.members[0].follower_at_defrag == Some(false));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_snapshot_dir_is_refused_before_any_change() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let scratch = tempfile::tempdir()?;
    // The tests run as root, which any directory lets write: a path under a regular file
    // is what even root cannot create.
    let blocker = scratch.path().join("not-a-directory");
    std::fs::write(&blocker, "")?;
    let snapshots = blocker.join("snapshots");
    let before = untouched(&cluster, scratch.path()).await?;

    let dry = RunOptions {
        dry_run: true,
        ..cli()
    };
    let (report, _) = remediate(config(&cluster, &snapshots, "")?, dry).await?;
    ensure_refused(&report, "snapshot_dir", "snapshot directory")?;
    let (report, _) = remediate(config(&cluster, &snapshots, "")?, cli()).await?;
    ensure_refused(&report, "snapshot_dir", "snapshot directory")?;
    let reason = report.reason.as_deref().unwrap_or_default();
    ensure!(
        reason.contains("not-a-directory is not a directory"),
        "{reason}"
    );
    ensure!(!blocker.join("snapshots").exists());
    ensure!(untouched(&cluster, scratch.path()).await? == before);
    ensure!(assert_one_defrag_at_a_time(&cluster)?
        .iter()
        .all(|&n| n == 0));
    Ok(())
}

/// A snapshot directory on a file system without room for the snapshot: the run is refused
/// before it creates anything there, not even the cluster's directory or its lock file. The
/// file system is a 1 MiB tmpfs mounted in a mount namespace of the command's own, so it
/// disappears with the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_dir_without_room_is_refused_and_leaves_nothing_behind() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let small = tempfile::tempdir()?;
    let snapshots = small.path().join("snapshots");
    let yaml = format!(
        "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\n  defrag_rule: \"{TEST_RULE}\"\nclusters:\n{}",
        snapshots.display(),
        cluster.config_entry("it")
    );
    let config = cluster.dir().join("small.yaml");
    std::fs::write(&config, yaml)?;
    let script = r#"mount -t tmpfs -o size=1m etcdmedic-test "$1" || exit 99
"$2" run --config "$3" --cluster it
echo "exit $?"
echo "left in the snapshot file system: [$(ls -A "$1")]""#;
    let output = tokio::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(small.path())
        .arg(project_binary("etcdmedic-remediator")?)
        .arg(&config)
        .kill_on_drop(true)
        .output()
        .await
        .context("running the remediator in a mount namespace of its own")?;
    let text = format!("{}{}", stdout(&output), stderr(&output));
    ensure!(output.status.code() == Some(0), "the script failed: {text}");
    ensure!(text.contains("failed: cluster it"), "{text}");
    ensure!(
        text.contains("reason: refused: ")
            && text.contains("has 1.0 MB free, the snapshot needs about"),
        "{text}"
    );
    ensure!(text.contains("exit 1\n"), "{text}");
    ensure!(
        text.contains("left in the snapshot file system: []"),
        "a refused run must leave no directory or lock file: {text}"
    );
    ensure!(assert_one_defrag_at_a_time(&cluster)?
        .iter()
        .all(|&n| n == 0));
    Ok(())
}

/// After a physical compaction on a quiet etcd 3.5 cluster, members refresh their in-use
/// figure unevenly: one that had a few more backend commits reports the compacted keyspace,
/// the others the figure from before. Judged by their own figures they would be skipped and
/// left fragmented; judged by their peer's (the same keyspace), every member is defragmented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_whose_in_use_figure_lags_after_a_compaction_are_defragmented_too() -> Result<()> {
    const MIB: u64 = 1024 * 1024;
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    let mut client = cluster.client(0).await?;
    // Whether the others commit before they are asked is etcd's timing, not ours: when they
    // all caught up, the whole write-and-compact is done again (the lag is the precondition).
    let mut in_use = Vec::new();
    for attempt in 1..=3 {
        in_use = fragment_and_compact_unevenly(&cluster, &mut client).await?;
        let lowest = in_use.iter().copied().min().context("no member")?;
        if in_use.iter().any(|&figure| figure > 2 * lowest + 16 * MIB) {
            break;
        }
        eprintln!("attempt {attempt}: even in-use figures {in_use:?}; again");
        in_use.clear();
    }
    ensure!(
        !in_use.is_empty(),
        "etcd reported even in-use figures three times, nothing lags"
    );

    let snapshots = tempfile::tempdir()?;
    let yaml = format!(
        "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\nclusters:\n{}",
        snapshots.path().display(),
        cluster.config_entry("lag")
    );
    let path = cluster.dir().join("lag.yaml");
    std::fs::write(&path, &yaml)?;
    let config = Config::load(&path)?
        .clusters
        .into_iter()
        .next()
        .context("no cluster")?;
    let (report, _) = remediate(config, cli()).await?;
    let text = report_text(&report);
    ensure!(report.outcome == Outcome::Succeeded, "{text}");
    ensure!(
        report
            .members
            .iter()
            .all(|m| m.action == MemberAction::Defragmented),
        "a member was left fragmented: {text}"
    );
    // The members may commit between the check above and the run's own look: the run must
    // judge a member by its peers whenever the figures it planned from still lag.
    let planned = report.plan.as_ref().context("no plan")?;
    let figures: Vec<u64> = planned
        .defragment
        .iter()
        .chain(&planned.skip)
        .map(|m| m.db_size_in_use)
        .collect();
    let lowest = figures.iter().copied().min().context("no planned member")?;
    if figures.iter().any(|&figure| figure > 2 * lowest + 16 * MIB) {
        ensure!(
            report.members.iter().any(|m| m
                .reason
                .contains("etcd's figure lags after a compaction; judged at")),
            "{text}"
        );
    } else {
        eprintln!(
            "the lag had ended by the run's look ({figures:?}); every member must still be done"
        );
    }
    for member in &report.members {
        let after = member.db_size_after.context("no size after")?;
        ensure!(
            after < 64 * MIB,
            "{} is still {after} bytes: {text}",
            member.member.name
        );
    }
    assert_cluster_serves(&cluster).await?;
    Ok(())
}

/// Writes 160 MiB over 20 keys, compacts physically, then forces a few backend commits on
/// member 0 only; the members' in-use figures afterwards.
async fn fragment_and_compact_unevenly(
    cluster: &EtcdCluster,
    client: &mut etcd_client::Client,
) -> Result<Vec<u64>> {
    const MIB: usize = 1024 * 1024;
    let mut revision = 0;
    for round in 0..8u8 {
        let value = vec![b'a' + round; MIB];
        for key in 0..20 {
            let put = client
                .put(format!("/lag/{key:02}"), value.clone(), None)
                .await?;
            revision = put.header().map_or(revision, |h| h.revision());
        }
    }
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await?;
    // One write, and a few forced commits on one member only: that member's figure catches
    // up, the others' stay where they were (nothing else writes to a quiet cluster).
    client.put("/lag/marker", "1", None).await?;
    client.get("/lag/marker", None).await?;
    for _ in 0..3 {
        client.hash().await?;
    }
    let statuses = etcdctl_running_status(cluster)?;
    Ok(statuses.iter().map(|s| s.status.db_size_in_use).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_below_the_rule_is_skipped_and_dry_runs_change_nothing() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_4)
        .members(3)
        .start()
        .await?;
    let snapshots = tempfile::tempdir()?;
    let (report, _) = remediate(config(&cluster, snapshots.path(), "")?, cli()).await?;
    ensure!(
        report.outcome == Outcome::Skipped,
        "{}",
        report_text(&report)
    );
    ensure!(
        report
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("rule"),
        "{:?}",
        report.reason
    );
    ensure!(snapshot_files(snapshots.path()).is_empty());

    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let before = untouched(&cluster, snapshots.path()).await?;
    let dry = RunOptions {
        dry_run: true,
        ..cli()
    };
    let (report, events) = remediate(config(&cluster, snapshots.path(), "")?, dry).await?;
    let text = report_text(&report);
    ensure!(report.outcome == Outcome::Planned, "{text}");
    let plan = report.plan.as_ref().context("no plan")?;
    ensure!(plan.defragment.len() == 3, "{text}");
    ensure!(
        plan.defragment[2].is_leader,
        "the leader is not last: {text}"
    );
    ensure!(events.iter().any(|e| matches!(e, Event::Planned { .. })));
    ensure!(untouched(&cluster, snapshots.path()).await? == before);
    ensure!(
        !snapshots.path().join("it").exists(),
        "a dry run created the snapshot directory"
    );
    ensure!(assert_one_defrag_at_a_time(&cluster)?
        .iter()
        .all(|&n| n == 0));
    Ok(())
}

async fn a_killed_follower_stops_the_run_before_the_next_member(
    version: EtcdVersion,
) -> Result<()> {
    let mut cluster = EtcdCluster::builder(version).members(3).start().await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let snapshots = tempfile::tempdir()?;
    // A settle time leaves room to kill between two members.
    let config = config(&cluster, snapshots.path(), "      settle_time: 3s\n")?;
    let remediator = Remediator::new(config)?;
    let (events, mut received) = Events::channel();
    let run = tokio::spawn(async move {
        remediator
            .run(&cli(), &events, &CancellationToken::new())
            .await
    });

    let mut first_done = None;
    while let Some(event) = received.recv().await {
        if let Event::Finished { record } = event {
            if record.step == StepKind::Defragment && record.ok {
                first_done = record.member;
                break;
            }
        }
    }
    let first = first_done.context("no member was defragmented")?;
    let index = (0..cluster.len())
        .find(|&i| cluster.endpoint(i) == first.endpoint)
        .context("defragmented member not in the cluster")?;
    cluster.kill(index)?;
    let report = run.await?;
    let text = report_text(&report);
    ensure!(report.outcome == Outcome::Partial, "{text}");
    ensure!(report.error_kind.as_deref() == Some("no_quorum"), "{text}");
    let reason = report.reason.as_deref().unwrap_or_default();
    ensure!(
        reason.contains("stopped before") && reason.contains("voting members are up"),
        "{reason}"
    );
    let done: Vec<_> = report
        .members
        .iter()
        .filter(|m| m.action == MemberAction::Defragmented)
        .collect();
    ensure!(done.len() == 1 && done[0].member.id == first.id, "{text}");
    ensure!(
        report
            .members
            .iter()
            .filter(|m| m.action == MemberAction::NotReached)
            .count()
            == 2,
        "{text}"
    );
    // The other two members never started a defragmentation.
    let counts = assert_one_defrag_at_a_time(&cluster)?;
    ensure!(
        counts.iter().sum::<usize>() == 1,
        "defrags per member: {counts:?}"
    );
    Ok(())
}

async fn a_defrag_timeout_waits_for_the_member_instead_of_moving_on(
    version: EtcdVersion,
) -> Result<()> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    // 32 MiB in use: a defragmentation takes far longer than the 1 ms allowed below.
    let heavy = Fragmentation {
        keys: 32,
        value_bytes: 1024 * 1024,
        rounds: 3,
    };
    fragment(&cluster.clients().await?, heavy).await?;
    let snapshots = tempfile::tempdir()?;
    let config = config(&cluster, snapshots.path(), "      defrag_timeout: 1ms\n")?;
    let (report, events) = remediate(config, cli()).await?;
    let text = report_text(&report);
    ensure!(report.outcome == Outcome::Succeeded, "{text}");
    let waited = events
        .iter()
        .filter(|e| matches!(e, Event::Warning { message } if message.contains("ended without an answer")))
        .count();
    ensure!(
        waited == 3,
        "expected 3 timed-out calls, saw {waited}: {text}"
    );
    let counts = assert_one_defrag_at_a_time(&cluster)?;
    ensure!(
        counts.iter().all(|&n| n == 1),
        "defrags per member: {counts:?}"
    );
    assert_cluster_serves(&cluster).await?;
    Ok(())
}

/// `etcdmedic-remediator run` as a user types it: dry run as text, the run as JSON, an
/// unknown cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_command_prints_steps_and_reports_with_exit_statuses() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    fragment(&cluster.clients().await?, Fragmentation::default()).await?;
    let snapshots = tempfile::tempdir()?;
    config(&cluster, snapshots.path(), "")?;
    let config_path = cluster.dir().join("remediation.yaml");
    let config_arg = config_path.display().to_string();
    let binary = project_binary("etcdmedic-remediator")?;
    let run = |args: Vec<&str>| {
        let mut command = tokio::process::Command::new(&binary);
        command.args(args).env_remove("RUST_LOG").kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(120), command.output())
                .await
                .context("etcdmedic-remediator did not finish within 120s")?
                .context("running etcdmedic-remediator")
        }
    };

    let dry = run(vec![
        "run",
        "--config",
        &config_arg,
        "--cluster",
        "it",
        "--dry-run",
    ])
    .await?;
    let text = stdout(&dry);
    ensure!(dry.status.code() == Some(0), "{text}{}", stderr(&dry));
    ensure!(text.contains("plan: leader"), "{text}");
    ensure!(text.contains("planned: cluster it"), "{text}");
    // A small leader stays in place under `leader: auto`; every member has its prediction.
    ensure!(
        text.contains("leader, last, in place (auto: predicted stall under"),
        "{text}"
    );
    let predicted_members = text
        .lines()
        .filter(|l| l.contains(" in use of ") && l.contains(", predicted "))
        .count();
    ensure!(predicted_members == 3, "{text}");
    ensure!(text.contains("s in all (defragmentation at "), "{text}");

    let real = run(vec![
        "run",
        "--config",
        &config_arg,
        "--cluster",
        "it",
        "-o",
        "json",
    ])
    .await?;
    ensure!(
        real.status.code() == Some(0),
        "{}{}",
        stdout(&real),
        stderr(&real)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&real))
        .with_context(|| format!("not JSON: {}", stdout(&real)))?;
    ensure!(report["outcome"] == "succeeded", "{report}");
    ensure!(
        report["members"].as_array().map(Vec::len) == Some(3),
        "{report}"
    );
    ensure!(
        report["snapshot"]["sha256"].as_str().map(str::len) == Some(64),
        "{report}"
    );

    let unknown = run(vec!["run", "--config", &config_arg, "--cluster", "nope"]).await?;
    ensure!(unknown.status.code() == Some(2), "{}", stderr(&unknown));
    ensure!(
        stderr(&unknown).contains("unknown cluster \"nope\"")
            && stderr(&unknown).contains("configured clusters: it"),
        "{}",
        stderr(&unknown)
    );
    Ok(())
}
