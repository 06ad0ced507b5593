//! docs/disaster-recovery.md, run as written: a backup of a 3-member cluster taken by
//! `etcdmedic-remediator backup`, checked, restored into a new 3-member cluster with the
//! document's own blocks, started with its own command, checked with its own HashKV check, and
//! every key, value and revision compared with the original's at the backup's revision. A
//! flipped byte makes the document's check refuse the file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use etcdmedic_tests::ports::free_ports;
use etcdmedic_tests::{eventually, project_binary, EtcdCluster, EtcdVersion};
use serde_json::Value;

use crate::documented::Document;
use crate::on_each_etcd_version;
use crate::support::{current_revision, keyspace, stderr, stdout, write_file, write_pods};

on_each_etcd_version!(the_documented_restore_brings_back_every_key,);

/// docs/disaster-recovery.md, with the release's binaries first on PATH.
fn document(bin_dir: &Path) -> Document {
    Document::new("disaster-recovery.md", &[bin_dir])
}

async fn the_documented_restore_brings_back_every_key(version: EtcdVersion) -> Result<()> {
    let original = EtcdCluster::builder(version).members(3).start().await?;
    let mut client = original
        .client(0)
        .await
        .context("connecting to the original cluster")?;
    write_pods(&mut client, 0..300, "v1").await?;
    write_pods(&mut client, (0..300).step_by(3), "v2").await?;
    for index in (0..300).step_by(7) {
        client
            .delete(format!("/registry/pods/{index:03}"), None)
            .await?;
    }
    let compact_at = current_revision(&mut client).await?;
    client.compact(compact_at - 50, None).await?;

    let dir = tempfile::tempdir()?;
    let bin_dir = version.bin_dir()?;
    let yaml = format!(
        "remediation: {{snapshot_dir: {}}}\nbackup:\n  destinations: [{{name: near, kind: local, \
         path: {}}}]\n  restore_drill: {{bin_dir: {}}}\nclusters:\n{}",
        dir.path().join("snapshots").display(),
        dir.path().join("backups").display(),
        bin_dir.display(),
        original.config_entry("prod-a")
    );
    let config = write_file(dir.path(), "etcdmedic.yaml", &yaml)?;
    let output = tokio::process::Command::new(project_binary("etcdmedic-remediator")?)
        .args(["backup", "--cluster", "prod-a", "-o", "json", "--config"])
        .arg(&config)
        .kill_on_drop(true)
        .output()
        .await?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output))?;
    let backup = PathBuf::from(
        report["destinations"][0]["location"]
            .as_str()
            .context("location")?,
    );
    let revision = report["manifest"]["revision"]
        .as_i64()
        .context("revision")?;
    let expected = keyspace(&mut client, Some(revision))
        .await
        .context("reading the original keyspace at the backup's revision")?;
    ensure!(expected.len() == 257, "{} keys before", expected.len());

    // The document's check passes on the backup, and refuses a damaged copy.
    let checked = document(&bin_dir)
        .run("verify", &[("BACKUP", backup.display().to_string())])
        .await?;
    ensure!(checked.starts_with("sha256 ok: "), "{checked}");
    let damaged = dir
        .path()
        .join("damaged")
        .join(backup.file_name().context("name")?);
    std::fs::create_dir_all(damaged.parent().context("parent")?)?;
    let mut bytes = std::fs::read(&backup)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&damaged, bytes)?;
    std::fs::copy(
        backup.with_extension("json"),
        damaged.with_extension("json"),
    )?;
    let refused = document(&bin_dir)
        .command("verify", &[("BACKUP", damaged.display().to_string())])?
        .output()
        .await?;
    ensure!(
        !refused.status.success() && stderr(&refused).starts_with("damaged: "),
        "{}",
        stderr(&refused)
    );

    // Three new members, restored and started by the document's blocks. A port handed out
    // free can be taken by another test's process before a member binds it: that member then
    // exits, and the restore is done again on new ports.
    let restore_tool = match version {
        EtcdVersion::V3_4 => "etcdctl",
        // 3.6 and 3.7 restore with the newest etcdutl available here (3.5's).
        _ => "etcdutl",
    };
    let mut attempt = 0;
    let (mut restored, endpoints, mut members) = loop {
        attempt += 1;
        match restore_and_start(dir.path(), attempt, &backup, restore_tool, &bin_dir).await {
            Ok(started) => break started,
            Err(err) if attempt < 3 && err.to_string().contains(LOST_PORT) => {
                eprintln!("restore attempt {attempt}: {err:#}; again on new ports");
            }
            Err(err) => return Err(err),
        }
    };

    let compared = async {
        let checked = document(&bin_dir)
            .run(
                "check",
                &[
                    ("BACKUP", backup.display().to_string()),
                    ("ENDPOINTS", endpoints.join(",")),
                ],
            )
            .await?;
        ensure!(
            checked.contains("every member holds the backup: HashKV"),
            "{checked}"
        );
        let found = keyspace(&mut restored, None)
            .await
            .context("reading the restored keyspace")?;
        if found != expected {
            let missing = expected.iter().filter(|kv| !found.contains(kv)).count();
            let extra = found.iter().filter(|kv| !expected.contains(kv)).count();
            bail!("the restored keyspace differs: {missing} missing or changed, {extra} extra");
        }
        let members_listed = restored
            .member_list()
            .await
            .context("listing the restored members")?
            .members()
            .len();
        ensure!(members_listed == 3, "{members_listed} members");
        Ok(())
    }
    .await;
    // A member that went away after serving says why in its log.
    let logs = dir.path().join(format!("restored-{attempt}"));
    let compared =
        compared.with_context(|| restored_members_state(&mut members, &endpoints, &logs));
    stop(members).await;
    compared
}

/// Each restored member's endpoint, whether its process still runs, and its log's last lines
/// (the restore and start blocks log next to the data directories).
fn restored_members_state(
    members: &mut [tokio::process::Child],
    endpoints: &[String],
    logs: &Path,
) -> String {
    members
        .iter_mut()
        .zip(endpoints)
        .zip(MEMBER_NAMES)
        .map(|((member, endpoint), name)| {
            let state = match member.try_wait() {
                Ok(None) => "running".to_string(),
                Ok(Some(status)) => format!("exited ({status})"),
                Err(err) => format!("unknown ({err})"),
            };
            format!(
                "{name} at {endpoint}: {state}; last log lines, newest first:\n{}",
                log_tail(logs, name, 5).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The last `lines` lines of restored member `name`'s log under `dir`, newest first.
fn log_tail(dir: &Path, name: &str, lines: usize) -> Option<String> {
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).ok()?;
    Some(log.lines().rev().take(lines).collect::<Vec<_>>().join("\n"))
}

const MEMBER_NAMES: [&str; 3] = ["m1", "m2", "m3"];

const LOST_PORT: &str = "a restored member exited";

async fn stop(members: Vec<tokio::process::Child>) {
    for mut member in members {
        let _ = member.start_kill();
        let _ = member.wait().await;
    }
}

/// Restores three members from `backup` with the document's `restore` block under
/// `dir/restored-<attempt>`, starts them with its `start` block, and waits until they serve
/// reads: the client, the endpoints and the member processes. An error containing
/// [`LOST_PORT`] when a member exited (its port was taken).
async fn restore_and_start(
    dir: &Path,
    attempt: usize,
    backup: &Path,
    restore_tool: &str,
    bin_dir: &Path,
) -> Result<(etcd_client::Client, Vec<String>, Vec<tokio::process::Child>)> {
    let ports = free_ports(6)?;
    let names = MEMBER_NAMES;
    let peer = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i]);
    let client_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
    let initial_cluster = (0..3)
        .map(|i| format!("{}={}", names[i], peer(i)))
        .collect::<Vec<_>>()
        .join(",");
    let restored_dir = dir.join(format!("restored-{attempt}"));
    let member_env = |i: usize| {
        vec![
            ("BACKUP", backup.display().to_string()),
            ("MEMBER", names[i].to_string()),
            ("PEER_URL", peer(i)),
            ("CLIENT_URL", client_url(i)),
            ("INITIAL_CLUSTER", initial_cluster.clone()),
            (
                "DATA_DIR",
                restored_dir.join(names[i]).display().to_string(),
            ),
            ("RESTORE", restore_tool.to_string()),
        ]
    };
    for i in 0..3 {
        document(bin_dir).run("restore", &member_env(i)).await?;
    }
    let mut members = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let log = std::fs::File::create(restored_dir.join(format!("{name}.log")))?;
        let member = document(bin_dir)
            .command("start", &member_env(i))?
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting a restored member")?;
        members.push(member);
    }
    let endpoints: Vec<String> = (0..3).map(client_url).collect();
    let mut our_peers: Vec<String> = (0..3).map(peer).collect();
    our_peers.sort();
    let members = std::sync::Mutex::new(members);
    let served = eventually(
        "the restored cluster serves reads",
        Duration::from_secs(60),
        || {
            let endpoints = endpoints.clone();
            let members = &members;
            let our_peers = &our_peers;
            async move {
                let exited = members
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .iter_mut()
                    .any(|m| matches!(m.try_wait(), Ok(Some(_))));
                if exited {
                    // Not retried by `eventually`'s caller: reported at once below.
                    return Ok(None);
                }
                for endpoint in &endpoints {
                    let mut one = etcd_client::Client::connect([endpoint], None).await?;
                    let status = one.status().await?;
                    ensure!(status.leader() != 0, "{endpoint} knows no leader");
                    // A port handed out free may have been bound by another test's etcd
                    // just before ours failed to bind it: that one answers too, but for
                    // another cluster, and goes away when its test ends.
                    let listed = one.member_list().await?;
                    let mut peers: Vec<String> = listed
                        .members()
                        .iter()
                        .flat_map(|m| m.peer_urls().iter().cloned())
                        .collect();
                    peers.sort();
                    ensure!(
                        &peers == our_peers,
                        "{endpoint} answers for another cluster: {peers:?}"
                    );
                }
                // Only now, with every member listening: a client made earlier keeps the
                // refused first connection to a member that started late, and hands that
                // error to the first request it sends there.
                let mut client = etcd_client::Client::connect(&endpoints, None).await?;
                client.get("/", None).await?;
                Ok(Some(client))
            }
        },
    )
    .await
    .with_context(|| std::fs::read_to_string(restored_dir.join("m1.log")).unwrap_or_default());
    let members = members.into_inner().unwrap_or_default();
    match served {
        Ok(Some(client)) => Ok((client, endpoints, members)),
        Ok(None) => {
            let logs: String = names
                .iter()
                .filter_map(|name| log_tail(&restored_dir, name, 3))
                .collect::<Vec<_>>()
                .join("\n---\n");
            stop(members).await;
            bail!("{LOST_PORT}:\n{logs}")
        }
        Err(err) => {
            stop(members).await;
            Err(err)
        }
    }
}
