//! A fleet beyond the exporter's kept-connection budget: its clusters' connections close
//! after each scrape, so memory does not grow with the fleet; within the budget they stay
//! open between scrapes.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use etcdmedic_tests::exporter::ExporterProcess;
use etcdmedic_tests::ports::free_port;
use etcdmedic_tests::{eventually, project_binary, EtcdCluster, EtcdVersion};

/// The socket inodes the process `pid` holds.
fn socket_inodes(pid: u32) -> Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let target = target.to_string_lossy().to_string();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            inodes.insert(inode.parse()?);
        }
    }
    Ok(inodes)
}

/// Established TCP connections of `pid` to any of `ports` on loopback.
fn connections_to(pid: u32, ports: &[u16]) -> Result<usize> {
    let inodes = socket_inodes(pid)?;
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let mut count = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(remote), Some(state), Some(inode)) =
            (fields.get(2), fields.get(3), fields.get(9))
        else {
            continue;
        };
        let port = remote
            .rsplit_once(':')
            .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok())
            .context("remote address")?;
        // 01: ESTABLISHED.
        if *state == "01" && ports.contains(&port) && inodes.contains(&inode.parse()?) {
            count += 1;
        }
    }
    Ok(count)
}

async fn exporter(config: &std::path::Path, kept: &str) -> Result<ExporterProcess> {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let mut command =
        ExporterProcess::serve_command(&project_binary("etcdmedic-exporter")?, config, listen);
    command.args(["--max-kept-connections", kept]);
    ExporterProcess::spawn(command, listen, std::process::Stdio::null()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_kept_budget_no_connection_outlives_a_scrape() -> Result<()> {
    let etcd = EtcdCluster::builder(EtcdVersion::V3_5)
        .members(3)
        .start()
        .await?;
    let config = etcd.write_config("fleet")?;
    let ports: Vec<u16> = etcd
        .endpoints()
        .iter()
        .filter_map(|e| e.rsplit(':').next()?.parse().ok())
        .collect();
    let http = etcdmedic_tests::http_client();

    for (kept, expected) in [("0", 0), ("3", 3)] {
        let process = exporter(&config, kept).await?;
        for _ in 0..3 {
            let body = http
                .get(format!("{}/metrics", process.base_url))
                .send()
                .await?
                .text()
                .await?;
            anyhow::ensure!(
                body.contains("etcdmedic_cluster_up{etcd_cluster=\"fleet\"} 1"),
                "not up: {body:.300}"
            );
        }
        // Closing is asynchronous (the connection tasks end after the scrape answered).
        eventually(
            &format!(
                "{expected} connections to etcd after scrapes, with --max-kept-connections {kept}"
            ),
            Duration::from_secs(10),
            || async {
                let open = connections_to(process.pid(), &ports)?;
                anyhow::ensure!(open == expected, "{open} open");
                Ok(())
            },
        )
        .await?;
    }
    Ok(())
}
