//! The exporter's metrics against what etcd itself reports.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::workload::{fill_to_nospace, fragment, Fragmentation};
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion, Exposition, RunningExporter};

use crate::on_each_etcd_version;
use crate::support::{
    etcdctl_alarms, etcdctl_endpoint_status, promtool_check_metrics, write_file, SETTLE,
};

const QUOTA: u64 = 64 * 1024 * 1024;

on_each_etcd_version!(
    every_member_metric_matches_etcdctl_endpoint_status,
    a_fragmenting_workload_drops_the_in_use_ratio_below_half,
    filling_to_the_quota_sets_the_nospace_series,
    a_killed_member_reports_up_0_while_the_others_still_report,
    a_learner_is_marked_and_not_counted_as_a_voting_member,
);

fn member(endpoint: &str) -> [(&'static str, &str); 2] {
    [("etcd_cluster", "e2e"), ("endpoint", endpoint)]
}

async fn every_member_metric_matches_etcdctl_endpoint_status(version: EtcdVersion) -> Result<()> {
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .quota(QUOTA)
        .start()
        .await?;
    let exporter = RunningExporter::start(&cluster.write_config("e2e")?).await?;

    // etcdctl's raft index must lie between the scrape before it and the scrape after (equal
    // on an idle cluster: the exporter writes nothing). Everything else must be equal; the
    // whole comparison is retried until the cluster has settled after start.
    eventually(
        "the metrics equal etcdctl endpoint status",
        SETTLE,
        || async {
            let before = exporter.scrape().await?;
            let etcdctl = etcdctl_endpoint_status(&cluster)?;
            let after = exporter.scrape().await?;
            ensure!(
                etcdctl.len() == 3,
                "etcdctl reported {} endpoints",
                etcdctl.len()
            );

            let mut leaders = 0.0;
            for entry in &etcdctl {
                let labels = member(&entry.endpoint);
                let status = &entry.status;
                let expect = |name: &str, expected: f64| -> Result<()> {
                    let got = after.value(name, &labels)?;
                    ensure!(
                        got == expected,
                        "{name} of {}: expected {expected}, got {got}",
                        entry.endpoint
                    );
                    Ok(())
                };
                let member_id = format!("{:016x}", status.header.member_id);
                let identity = after.series("etcdmedic_member_up", &labels);
                ensure!(
                    identity.len() == 1 && identity[0].labels.get("member_id") == Some(&member_id),
                    "member_id label of {}: expected {member_id}, got {:?}",
                    entry.endpoint,
                    identity.iter().map(|s| &s.labels).collect::<Vec<_>>()
                );
                expect("etcdmedic_member_up", 1.0)?;
                expect("etcdmedic_member_db_size_bytes", status.db_size as f64)?;
                expect(
                    "etcdmedic_member_db_size_in_use_bytes",
                    status.db_size_in_use as f64,
                )?;
                expect(
                    "etcdmedic_member_db_in_use_ratio",
                    status.db_size_in_use as f64 / status.db_size as f64,
                )?;
                expect("etcdmedic_member_quota_backend_bytes", QUOTA as f64)?;
                let is_leader = status.leader == status.header.member_id;
                expect("etcdmedic_member_is_leader", f64::from(u8::from(is_leader)))?;
                expect("etcdmedic_member_has_leader", 1.0)?;
                expect(
                    "etcdmedic_member_is_learner",
                    f64::from(u8::from(status.is_learner)),
                )?;
                expect("etcdmedic_member_raft_term", status.raft_term as f64)?;
                for (name, reported) in [
                    ("etcdmedic_member_raft_index", status.raft_index),
                    (
                        "etcdmedic_member_raft_applied_index",
                        status.raft_applied_index,
                    ),
                ] {
                    let (low, high) = (before.value(name, &labels)?, after.value(name, &labels)?);
                    ensure!(
                        low <= reported as f64 && reported as f64 <= high,
                        "{name} of {}: etcdctl saw {reported}, scrapes around it {low} and {high}",
                        entry.endpoint
                    );
                }
                for alarm in ["NOSPACE", "CORRUPT"] {
                    let mut alarm_labels = labels.to_vec();
                    alarm_labels.push(("alarm", alarm));
                    let got = after.value("etcdmedic_member_alarm", &alarm_labels)?;
                    ensure!(
                        got == 0.0,
                        "{alarm} alarm of {}: expected 0, got {got}",
                        entry.endpoint
                    );
                }
                let info = after.series("etcdmedic_member_info", &labels);
                ensure!(
                    info.len() == 1
                        && info[0].labels.get("version") == Some(status.version.as_str())
                        && info[0].labels.get("storage_version")
                            == Some(version.storage_version().as_str()),
                    "etcdmedic_member_info of {}: expected version {}, got {:?}",
                    entry.endpoint,
                    status.version,
                    info.iter().map(|s| &s.labels).collect::<Vec<_>>()
                );
                ensure!(
                    status.version.starts_with(version.prefix()),
                    "the cluster runs {} instead of {version}",
                    status.version
                );
                // etcd's 3.5 -> 3.6 guide wants 3.5.32 or later; the tests run 3.5.30.
                let ready = after.value("etcdmedic_member_upgrade_ready", &labels)?;
                let expected = if version == EtcdVersion::V3_5 {
                    0.0
                } else {
                    1.0
                };
                ensure!(
                    ready == expected,
                    "upgrade_ready {ready} on {}",
                    status.version
                );
                let latency = after.value("etcdmedic_member_status_duration_seconds", &labels)?;
                ensure!(latency > 0.0 && latency < 5.0, "status duration {latency}");
                leaders += after.value("etcdmedic_member_is_leader", &labels)?;
            }
            ensure!(leaders == 1.0, "expected exactly one leader, got {leaders}");

            let cluster_labels = [("etcd_cluster", "e2e")];
            ensure!(after.value("etcdmedic_cluster_members", &cluster_labels)? == 3.0);
            ensure!(after.value("etcdmedic_cluster_up", &cluster_labels)? == 1.0);
            ensure!(after.value("etcdmedic_cluster_leader_agreement", &cluster_labels)? == 1.0);
            let took = after.value("etcdmedic_scrape_duration_seconds", &cluster_labels)?;
            ensure!(took > 0.0 && took < 5.0, "scrape duration {took}");
            let build = after.series("etcdmedic_build_info", &[]);
            ensure!(
                build.len() == 1
                    && build[0].labels.get("version") == Some(env!("CARGO_PKG_VERSION")),
                "build info: {:?}",
                build.iter().map(|s| &s.labels).collect::<Vec<_>>()
            );
            Ok(())
        },
    )
    .await
}

async fn a_fragmenting_workload_drops_the_in_use_ratio_below_half(
    version: EtcdVersion,
) -> Result<()> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let exporter = RunningExporter::start(&cluster.write_config("e2e")?).await?;

    // A new database is a few kB and its ratio means little; what a defragmentation would
    // give back is the measure: next to nothing before, most of the writes after.
    let before = exporter.scrape().await?;
    for endpoint in cluster.endpoints() {
        let labels = member(&endpoint);
        let free = before.value("etcdmedic_member_db_size_bytes", &labels)?
            - before.value("etcdmedic_member_db_size_in_use_bytes", &labels)?;
        ensure!(free < 1e6, "{endpoint} starts with {free} free bytes");
    }

    let report = fragment(&cluster.clients().await?, Fragmentation::default()).await?;

    eventually(
        "every member's in-use ratio is below 0.5",
        SETTLE,
        || async {
            let after = exporter.scrape().await?;
            for endpoint in cluster.endpoints() {
                let labels = member(&endpoint);
                let ratio = after.value("etcdmedic_member_db_in_use_ratio", &labels)?;
                let size = after.value("etcdmedic_member_db_size_bytes", &labels)?;
                let in_use = after.value("etcdmedic_member_db_size_in_use_bytes", &labels)?;
                ensure!(
                    ratio < 0.5,
                    "{endpoint}: ratio {ratio} (in use {in_use} of {size})"
                );
                ensure!(
                    size >= report.bytes_written as f64 / 2.0,
                    "{endpoint}: db size {size} after writing {} bytes",
                    report.bytes_written
                );
                ensure!(
                    (ratio - in_use / size).abs() < 1e-9,
                    "ratio {ratio} != {in_use}/{size}"
                );
            }
            Ok(())
        },
    )
    .await?;

    // The ratio follows what etcd reports, not a number of our own.
    let etcdctl = etcdctl_endpoint_status(&cluster)?;
    let after = exporter.scrape().await?;
    for entry in etcdctl {
        let etcd_ratio = entry.status.db_size_in_use as f64 / entry.status.db_size as f64;
        let ours = after.value("etcdmedic_member_db_in_use_ratio", &member(&entry.endpoint))?;
        ensure!(
            (etcd_ratio - ours).abs() < 0.05,
            "{}: etcdctl ratio {etcd_ratio}, exporter {ours}",
            entry.endpoint
        );
    }
    Ok(())
}

async fn filling_to_the_quota_sets_the_nospace_series(version: EtcdVersion) -> Result<()> {
    const SMALL_QUOTA: u64 = 8 * 1024 * 1024;
    let cluster = EtcdCluster::builder(version)
        .members(3)
        .quota(SMALL_QUOTA)
        .start()
        .await?;
    let exporter = RunningExporter::start(&cluster.write_config("e2e")?).await?;
    let mut client = cluster.client(0).await?;
    fill_to_nospace(&mut client, 512 * 1024, 64).await?;

    let raised = etcdctl_alarms(&cluster)?;
    ensure!(
        raised.iter().any(|(_, alarm)| alarm == "NOSPACE"),
        "etcdctl alarm list shows no NOSPACE after filling: {raised:?}"
    );
    let ids: Vec<(String, String)> = etcdctl_endpoint_status(&cluster)?
        .into_iter()
        .map(|e| (e.endpoint, format!("{:016x}", e.status.header.member_id)))
        .collect();

    let metrics = exporter.scrape().await?;
    for (endpoint, member_id) in &ids {
        let has_nospace = raised
            .iter()
            .any(|(id, alarm)| format!("{id:016x}") == *member_id && alarm == "NOSPACE");
        let mut labels = member(endpoint).to_vec();
        labels.push(("alarm", "NOSPACE"));
        let got = metrics.value("etcdmedic_member_alarm", &labels)?;
        ensure!(
            got == f64::from(u8::from(has_nospace)),
            "NOSPACE series of {endpoint} ({member_id}): expected {has_nospace}, got {got}; etcdctl: {raised:?}"
        );
        labels.pop();
        labels.push(("alarm", "CORRUPT"));
        ensure!(metrics.value("etcdmedic_member_alarm", &labels)? == 0.0);
        let usage = metrics.value("etcdmedic_member_db_size_bytes", &member(endpoint))?
            / metrics.value("etcdmedic_member_quota_backend_bytes", &member(endpoint))?;
        ensure!(
            usage > 0.5,
            "{endpoint}: db size is only {usage} of the quota"
        );
    }
    Ok(())
}

async fn a_killed_member_reports_up_0_while_the_others_still_report(
    version: EtcdVersion,
) -> Result<()> {
    let mut cluster = EtcdCluster::builder(version).members(3).start().await?;
    let timeout = Duration::from_secs(1);
    let config = cluster
        .config_yaml("e2e")
        .replace("    endpoints:", "    status_timeout: 1s\n    endpoints:");
    let exporter = RunningExporter::start(&write_file(cluster.dir(), "e2e.yaml", &config)?).await?;
    exporter.scrape().await?;
    let (dead, paused) = (cluster.endpoint(2), cluster.endpoint(1));
    let live = cluster.endpoint(0);

    cluster.kill(2)?;
    let metrics = exporter.scrape().await?;
    ensure!(metrics.value("etcdmedic_member_up", &member(&dead))? == 0.0);
    ensure!(
        metrics
            .series("etcdmedic_member_db_size_bytes", &member(&dead))
            .is_empty(),
        "a member that did not answer must not report a db size"
    );
    for endpoint in [&live, &paused] {
        ensure!(metrics.value("etcdmedic_member_up", &member(endpoint))? == 1.0);
        ensure!(metrics.value("etcdmedic_member_db_size_bytes", &member(endpoint))? > 0.0);
    }
    ensure!(metrics.value("etcdmedic_cluster_members", &[("etcd_cluster", "e2e")])? == 3.0);

    // A paused process accepts connections and never answers: only the timeout ends the
    // wait, and the answer for the live member must still arrive in the same scrape.
    cluster.pause(1)?;
    let started = Instant::now();
    let metrics = exporter.scrape().await?;
    let took = started.elapsed();
    cluster.resume(1)?;
    ensure!(metrics.value("etcdmedic_member_up", &member(&paused))? == 0.0);
    ensure!(metrics.value("etcdmedic_member_up", &member(&live))? == 1.0);
    ensure!(metrics.value("etcdmedic_member_db_size_bytes", &member(&live))? > 0.0);
    ensure!(
        took < timeout * 3,
        "a scrape with a paused member took {took:?}; the timeout is {timeout:?}"
    );
    let duration = metrics.value("etcdmedic_member_status_duration_seconds", &member(&paused))?;
    ensure!(
        duration >= timeout.as_secs_f64() * 0.9,
        "the paused member's status duration {duration} should be the timeout"
    );

    // Back on the same address: the exporter reconnects by itself.
    cluster.restart(2).await?;
    eventually("the restarted member reports up again", SETTLE, || async {
        let metrics = exporter.scrape().await?;
        ensure!(metrics.value("etcdmedic_member_up", &member(&dead))? == 1.0);
        ensure!(metrics.value("etcdmedic_member_db_size_bytes", &member(&dead))? > 0.0);
        Ok(())
    })
    .await
}

async fn a_learner_is_marked_and_not_counted_as_a_voting_member(
    version: EtcdVersion,
) -> Result<()> {
    let mut cluster = EtcdCluster::builder(version).members(3).start().await?;
    // Only the first member is configured: the learner is found through MemberList.
    let config = cluster
        .config_yaml("e2e")
        .replace(&cluster.endpoints().join(", "), &cluster.endpoint(0));
    let exporter = RunningExporter::start(&write_file(cluster.dir(), "e2e.yaml", &config)?).await?;
    let learner = cluster.add_learner().await?;
    let learner_endpoint = cluster.endpoint(learner);

    eventually("the learner is reported as such", SETTLE, || async {
        let metrics = exporter.scrape().await?;
        for endpoint in cluster.endpoints() {
            let expected = f64::from(u8::from(endpoint == learner_endpoint));
            let labels = member(&endpoint);
            ensure!(
                metrics.value("etcdmedic_member_up", &labels)? == 1.0,
                "{endpoint} down"
            );
            let got = metrics.value("etcdmedic_member_is_learner", &labels)?;
            ensure!(
                got == expected,
                "is_learner of {endpoint}: expected {expected}, got {got}"
            );
        }
        let voting = metrics.value("etcdmedic_cluster_members", &[("etcd_cluster", "e2e")])?;
        ensure!(voting == 3.0, "voting members: expected 3, got {voting}");
        Ok(())
    })
    .await?;

    // Asked of a voting member: from 3.6 a learner answers MemberList with "rpc not
    // supported for learner", and etcdctl may pick any endpoint it is given.
    let listed = cluster.etcdctl_at(&[cluster.endpoint(0)], &["member", "list", "-w", "json"])?;
    let learners = serde_json::from_str::<serde_json::Value>(&listed)?["members"]
        .as_array()
        .context("member list without members")?
        .iter()
        .filter(|m| m["isLearner"] == true)
        .count();
    ensure!(learners == 1, "etcdctl lists {learners} learners: {listed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool_check_metrics() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    let exporter = RunningExporter::start(&cluster.write_config("e2e")?).await?;
    let (status, body) = exporter.get("/metrics").await?;
    ensure!(status == 200);
    let expected_names = [
        "etcdmedic_member_up",
        "etcdmedic_member_db_size_bytes",
        "etcdmedic_member_db_size_in_use_bytes",
        "etcdmedic_member_db_in_use_ratio",
        "etcdmedic_member_quota_backend_bytes",
        "etcdmedic_member_is_leader",
        "etcdmedic_member_has_leader",
        "etcdmedic_member_is_learner",
        "etcdmedic_member_alarm",
        "etcdmedic_member_raft_term",
        "etcdmedic_member_raft_index",
        "etcdmedic_member_raft_applied_index",
        "etcdmedic_member_info",
        "etcdmedic_member_status_duration_seconds",
        "etcdmedic_cluster_members",
        "etcdmedic_cluster_up",
        "etcdmedic_cluster_leader_agreement",
        "etcdmedic_scrape_duration_seconds",
        "etcdmedic_build_info",
    ];
    let parsed = Exposition::parse(&body)?;
    let names = parsed.names();
    for name in expected_names {
        ensure!(names.contains(&name), "{name} missing; got {names:?}");
        ensure!(
            body.contains(&format!("# HELP {name} "))
                && body.contains(&format!("# TYPE {name} gauge")),
            "{name} lacks HELP or TYPE"
        );
    }

    promtool_check_metrics(&body).await?;
    Ok(())
}
