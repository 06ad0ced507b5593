//! The `talosctl etcd` verbs the seed's operators use, on every etcd version: `alarm list`,
//! `alarm disarm` (refused while the database is still over its quota, done once it is
//! not), `defrag --member` (that member only, with a run's snapshot and checks) and
//! `forfeit-leadership`, each with its output and exit status, and a member the cluster
//! does not have refused as bad input.

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::workload::fill_to_nospace;
use etcdmedic_tests::{EtcdCluster, EtcdVersion};

use crate::on_each_etcd_version;
use crate::support::{
    etcdctl_alarms, etcdctl_endpoint_status, remediator_exits, remediator_on_it, stderr, write_file,
};

on_each_etcd_version!(
    the_talosctl_verbs_list_and_disarm_alarms_defragment_one_member_and_move_leadership
);

const QUOTA: u64 = 16 * 1024 * 1024;

/// The name of the member that leads, as etcdctl sees it.
fn leader_name(cluster: &EtcdCluster) -> Result<String> {
    let statuses = etcdctl_endpoint_status(cluster)?;
    let leader = statuses
        .first()
        .context("no member answered")?
        .status
        .leader;
    let index = statuses
        .iter()
        .position(|s| s.status.header.member_id == leader)
        .context("the leader is not among the members")?;
    Ok(cluster.name(index).to_string())
}

async fn the_talosctl_verbs_list_and_disarm_alarms_defragment_one_member_and_move_leadership(
    version: EtcdVersion,
) -> Result<()> {
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .quota(QUOTA)
        .start()
        .await?;
    let yaml = format!(
        "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\nclusters:\n{}",
        cluster.dir().join("snapshots").display(),
        cluster.config_entry("it")
    );
    let config = write_file(cluster.dir(), "verbs.yaml", &yaml)?;

    let listed = remediator_exits(&config, &["alarm", "list"], 0).await?;
    ensure!(listed.ends_with("(no alarms)\n"), "{listed}");

    let mut client = cluster.client(0).await?;
    fill_to_nospace(&mut client, 256 * 1024, 1000).await?;
    ensure!(!etcdctl_alarms(&cluster)?.is_empty(), "no NOSPACE alarm");
    let listed = remediator_exits(&config, &["alarm", "list"], 0).await?;
    ensure!(
        listed.starts_with("MEMBER") && listed.contains("NOSPACE"),
        "{listed}"
    );

    // Still over the quota: nothing is disarmed.
    let refused = remediator_exits(&config, &["alarm", "disarm"], 1).await?;
    ensure!(
        refused.contains("still raised") && !refused.contains("  disarmed"),
        "{refused}"
    );
    ensure!(!etcdctl_alarms(&cluster)?.is_empty(), "disarmed while full");

    // What Kubernetes does under NOSPACE: deletes still work; then the history goes.
    client
        .delete(
            "/etcdmedic/fill/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    let revision = client
        .get("x", None)
        .await?
        .header()
        .context("header")?
        .revision();
    cluster.etcdctl(&["compact", &revision.to_string(), "--physical"])?;

    let unknown = remediator_on_it(&config, &["defrag", "--member", "nosuch"]).await?;
    ensure!(
        unknown.status.code() == Some(2) && stderr(&unknown).contains("no member \"nosuch\""),
        "{}",
        stderr(&unknown)
    );

    // One member at a time, by name: that member only; the alarm is left to `alarm disarm`.
    for index in 0..cluster.len() {
        let name = cluster.name(index).to_string();
        let report =
            remediator_exits(&config, &["defrag", "--member", &name, "-o", "json"], 0).await?;
        let report: serde_json::Value = serde_json::from_str(&report)?;
        let members = report["members"].as_array().context("members")?;
        for member in members {
            let expected = if member["member"]["name"] == name.as_str() {
                "defragmented"
            } else {
                "skipped"
            };
            ensure!(member["action"] == expected, "{name}: {report:#}");
        }
        ensure!(report["outcome"] == "succeeded", "{name}: {report:#}");
    }

    let disarmed = remediator_exits(&config, &["alarm", "disarm"], 0).await?;
    ensure!(
        disarmed.contains("NOSPACE  disarmed") && !disarmed.contains("still raised"),
        "{disarmed}"
    );
    ensure!(etcdctl_alarms(&cluster)?.is_empty(), "NOSPACE still armed");
    client.put("after", "disarm", None).await?;

    let leader = leader_name(&cluster)?;
    let follower = (0..cluster.len())
        .map(|i| cluster.name(i).to_string())
        .find(|name| *name != leader)
        .context("no follower")?;
    let untouched =
        remediator_exits(&config, &["forfeit-leadership", "--member", &follower], 0).await?;
    ensure!(
        untouched.contains(&format!("not the leader ({leader} leads)")),
        "{untouched}"
    );
    let moved = remediator_exits(&config, &["forfeit-leadership", "--member", &leader], 0).await?;
    let now = leader_name(&cluster)?;
    ensure!(
        now != leader && moved.contains(&format!("leadership moved to {now}")),
        "{leader} still leads, or the output does not say who does: {moved}"
    );
    Ok(())
}
