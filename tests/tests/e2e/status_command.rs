//! `etcdmedic-exporter status`: the table, JSON, `--endpoints` mode and exit statuses.

use std::path::Path;
use std::process::Output;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion};

use crate::on_each_etcd_version;
use crate::support::{etcdctl_endpoint_status, exporter_binary, stderr, stdout, SETTLE};

on_each_etcd_version!(
    the_status_table_shows_one_row_per_member,
    the_status_json_matches_etcdctl,
);

const HEADER: [&str; 13] = [
    "ENDPOINT",
    "NAME",
    "MEMBER",
    "DB SIZE",
    "IN USE",
    "LEADER",
    "RAFT INDEX",
    "RAFT TERM",
    "RAFT APPLIED INDEX",
    "LEARNER",
    "PROTOCOL",
    "STORAGE",
    "ERRORS",
];

/// `etcdmedic-exporter status --config <config> <extra>`.
async fn status_with_config(config: &Path, extra: &[&str]) -> Result<Output> {
    let config = config.display().to_string();
    let mut args = vec!["status", "--config", config.as_str()];
    args.extend_from_slice(extra);
    exporter_binary(&args).await
}

/// Splits a table line at runs of two or more spaces (cells contain single spaces).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .map(str::to_string)
        .collect()
}

async fn the_status_table_shows_one_row_per_member(version: EtcdVersion) -> Result<()> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let config = cluster.write_config("table")?;
    // A new 3.6+ member reports an older storage version for a moment: etcd migrates it once
    // the cluster version is agreed.
    let storage = version.storage_version();
    eventually(
        "every member reports its release's storage version",
        SETTLE,
        || async {
            let output = status_with_config(&config, &["-o", "json"]).await?;
            let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
            let members = json[0]["members"].as_array().context("no members")?;
            ensure!(
                members.iter().all(|m| m["status"]["ok"]["storage_version"]
                    .as_str()
                    .unwrap_or_default()
                    == storage),
                "{json}"
            );
            // Without the gate: off where the member says so (3.6+, on /metrics) or cannot
            // have it (3.4), unknown on 3.5, which has the flag but does not say.
            let gate = match version {
                EtcdVersion::V3_5 => serde_json::Value::Null,
                _ => serde_json::Value::Bool(false),
            };
            ensure!(
                members
                    .iter()
                    .all(|m| m["status"]["ok"]["stop_grpc_on_defrag"] == gate),
                "stop_grpc_on_defrag should be {gate}: {json}"
            );
            Ok(())
        },
    )
    .await?;
    let output = status_with_config(&config, &[]).await?;
    let table = stdout(&output);
    ensure!(
        output.status.code() == Some(0),
        "exit {:?}: {table}{}",
        output.status.code(),
        stderr(&output)
    );
    let lines: Vec<&str> = table.lines().collect();
    ensure!(lines.len() == 4, "expected a header and 3 rows:\n{table}");
    // Beside the table, on standard error: the 3.5 -> 3.6 upgrade guide wants 3.5.32 or
    // later, and the tests run 3.5.30.
    let note = stderr(&output);
    ensure!(
        note.contains("not ready for its next minor upgrade (m0, m1, m2)")
            == (version == EtcdVersion::V3_5),
        "on {version}: {note:?}"
    );
    ensure!(cells(lines[0]) == HEADER, "header: {:?}", cells(lines[0]));

    let ids: Vec<(String, String)> = etcdctl_endpoint_status(&cluster)?
        .into_iter()
        .map(|e| (e.endpoint, format!("{:016x}", e.status.header.member_id)))
        .collect();
    let mut leaders = Vec::new();
    for (index, line) in lines[1..].iter().enumerate() {
        // A healthy member leaves ERRORS empty, and STORAGE before 3.6.
        let row = cells(line);
        ensure!(
            row.len() == 11 + usize::from(!storage.is_empty()),
            "row {index}: {row:?}"
        );
        ensure!(
            row[0] == cluster.endpoint(index),
            "row {index} endpoint: {row:?}"
        );
        ensure!(row[1] == cluster.name(index), "row {index} name: {row:?}");
        let expected_id = &ids
            .iter()
            .find(|(e, _)| *e == row[0])
            .context("endpoint")?
            .1;
        ensure!(
            &row[2] == expected_id,
            "row {index} member id: {row:?} vs {expected_id}"
        );
        ensure!(
            row[3].ends_with("kB") || row[3].ends_with("MB"),
            "db size: {}",
            row[3]
        );
        ensure!(
            row[4].contains(" (") && row[4].ends_with("%)"),
            "in use: {}",
            row[4]
        );
        leaders.push(row[5].clone());
        ensure!(row[9] == "false", "learner: {row:?}");
        ensure!(row[10].starts_with(version.prefix()), "protocol: {row:?}");
        if !storage.is_empty() {
            ensure!(row[11] == storage, "storage: {row:?}");
        }
    }
    ensure!(
        leaders.iter().all(|l| *l == leaders[0]) && ids.iter().any(|(_, id)| *id == leaders[0]),
        "every row must name the same leader, one of the members: {leaders:?}"
    );
    Ok(())
}

async fn the_status_json_matches_etcdctl(version: EtcdVersion) -> Result<()> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let config = cluster.write_config("json")?;
    eventually("status -o json agrees with etcdctl", SETTLE, || async {
        let output = status_with_config(&config, &["-o", "json"]).await?;
        ensure!(
            output.status.code() == Some(0),
            "exit {:?}",
            output.status.code()
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let etcdctl = etcdctl_endpoint_status(&cluster)?;
        let clusters = json.as_array().context("top level is not a list")?;
        ensure!(clusters.len() == 1 && clusters[0]["cluster"] == "json");
        let members = clusters[0]["members"].as_array().context("no members")?;
        ensure!(members.len() == 3, "members: {members:?}");
        ensure!(clusters[0]["membership"]["ok"]["voting_members"] == 3);
        ensure!(clusters[0]["alarms"]["ok"] == serde_json::json!([]));
        for entry in etcdctl {
            let member = members
                .iter()
                .find(|m| m["endpoint"] == entry.endpoint.as_str())
                .with_context(|| format!("{} missing", entry.endpoint))?;
            let status = &member["status"]["ok"];
            ensure!(member["id"] == format!("{:016x}", entry.status.header.member_id));
            ensure!(status["db_size_bytes"] == entry.status.db_size, "{member}");
            ensure!(
                status["db_size_in_use_bytes"] == entry.status.db_size_in_use,
                "{member}"
            );
            ensure!(status["version"] == entry.status.version.as_str());
            ensure!(status["raft_term"] == entry.status.raft_term);
            ensure!(status["leader"] == format!("{:016x}", entry.status.leader));
            // etcd < 3.6 reports its quota only on /metrics; these run with the default.
            ensure!(status["quota_source"] == version.quota_source(), "{member}");
            let storage = version.storage_version();
            ensure!(
                status["storage_version"].as_str().unwrap_or_default() == storage,
                "{member}"
            );
            ensure!(status["quota_bytes"] == 2_147_483_648u64, "{member}");
            // 16 hex digits, like member IDs: a JSON number would lose precision.
            let cluster_id = format!("{:016x}", entry.status.header.cluster_id);
            ensure!(status["cluster_id"] == cluster_id.as_str(), "{member}");
            ensure!(
                clusters[0]["membership"]["ok"]["cluster_id"] == cluster_id.as_str(),
                "{}",
                clusters[0]
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_endpoints_and_tls_flags_needs_no_config() -> Result<()> {
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .tls()
        .start()
        .await?;
    let pki = cluster.pki().context("no PKI")?;
    let (ca, cert, key) = (
        pki.ca_file.display().to_string(),
        pki.client_cert_file.display().to_string(),
        pki.client_key_file.display().to_string(),
    );
    let endpoint = cluster.endpoint(1);
    let with_flags = |extra: &'static [&'static str]| {
        let mut args = vec![
            "status",
            "--endpoints",
            endpoint.as_str(),
            "--cacert",
            ca.as_str(),
            "--cert",
            cert.as_str(),
            "--key",
            key.as_str(),
        ];
        args.extend_from_slice(extra);
        args
    };
    let output = exporter_binary(&with_flags(&[])).await?;
    let table = stdout(&output);
    ensure!(
        output.status.code() == Some(0),
        "exit {:?}: {table}{}",
        output.status.code(),
        stderr(&output)
    );
    // One endpoint given, every member found through MemberList.
    for endpoint in cluster.endpoints() {
        ensure!(
            table.contains(&endpoint),
            "{endpoint} missing from:\n{table}"
        );
    }

    let only_one = exporter_binary(&with_flags(&["--no-discovery"])).await?;
    ensure!(
        stdout(&only_one).lines().count() == 2,
        "--no-discovery:\n{}",
        stdout(&only_one)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_makes_status_exit_1_with_its_error_in_its_row() -> Result<()> {
    let mut cluster = EtcdCluster::builder(EtcdVersion::V3_4)
        .members(3)
        .start()
        .await?;
    let config = cluster.write_config("partial")?;
    // A killed member stays in MemberList, so it keeps its row.
    cluster.kill(2)?;
    let output = status_with_config(&config, &[]).await?;
    let table = stdout(&output);
    ensure!(
        output.status.code() == Some(1),
        "exit {:?}:\n{table}",
        output.status.code()
    );
    let dead_row = table
        .lines()
        .find(|line| line.starts_with(&cluster.endpoint(2)))
        .with_context(|| format!("no row for the killed member:\n{table}"))?;
    ensure!(dead_row.contains("unreachable"), "row: {dead_row}");
    let live_rows = table
        .lines()
        .filter(|line| {
            line.starts_with(&cluster.endpoint(0)) || line.starts_with(&cluster.endpoint(1))
        })
        .filter(|line| line.contains(" MB") || line.contains(" kB"))
        .count();
    ensure!(
        live_rows == 2,
        "the live members must still show their sizes:\n{table}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_cluster_is_refused_with_the_configured_names() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "clusters:\n  - name: prod\n    endpoints: [http://127.0.0.1:2379]\n",
    )?;
    let output = status_with_config(&config, &["--cluster", "staging"]).await?;
    ensure!(
        output.status.code() == Some(2),
        "exit {:?}",
        output.status.code()
    );
    let message = stderr(&output);
    ensure!(
        message.contains(r#"unknown cluster "staging""#)
            && message.contains("configured clusters: prod"),
        "stderr: {message}"
    );
    ensure!(
        stdout(&output).is_empty(),
        "nothing may be printed on stdout: {}",
        stdout(&output)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_gets_its_full_timeout_and_hides_no_other_member() -> Result<()> {
    // etcd 3.5 answers MemberList only once there is a leader: with the leader paused the
    // first MemberList waits for an election, which must not eat the others' time.
    let cluster = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    let leader = cluster.wait_for_leader().await?;
    let config = cluster.write_config("paused")?;
    cluster.pause(leader)?;
    let output = status_with_config(&config, &["--timeout", "2s"]).await;
    cluster.resume(leader)?;
    let output = output?;
    let table = stdout(&output);
    ensure!(
        output.status.code() == Some(1),
        "exit {:?}:\n{table}",
        output.status.code()
    );
    for (index, endpoint) in cluster.endpoints().iter().enumerate() {
        let row = table
            .lines()
            .find(|line| line.starts_with(endpoint.as_str()))
            .with_context(|| format!("no row for {endpoint}:\n{table}"))?;
        if index == leader {
            ensure!(
                row.ends_with("no answer within 2s"),
                "paused leader's row: {row}"
            );
        } else {
            ensure!(
                row.contains(" kB ") || row.contains(" MB "),
                "{endpoint} hidden: {row}"
            );
        }
    }
    Ok(())
}
