//! `etcdmedic-remediator backup` against real etcd: a verified snapshot lands in every local
//! destination with its manifest, the copies are identical, etcdctl reads the revision the
//! manifest states and every member answers the HashKV it recorded, the retention keeps the
//! newest (as many as each destination's own `retention` says), one destination can be chosen, and bad backup configuration exits 2 naming its key.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::{project_binary, EtcdCluster, EtcdVersion};
use serde_json::Value;

use crate::on_each_etcd_version;
use crate::support::{hex, stderr, stdout, write_file};

on_each_etcd_version!(
    a_backup_lands_verified_in_every_destination_and_the_oldest_go,
    a_backup_passes_its_drill_with_the_etcd_release_the_image_ships,
);

async fn backup(config: &Path, extra: &[&str]) -> Result<Output> {
    let run = tokio::process::Command::new(project_binary("etcdmedic-remediator")?)
        .args(["backup", "--cluster", "prod-a", "-o", "json", "--config"])
        .arg(config)
        .args(extra)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("backup did not finish within 120s")?
        .map_err(Into::into)
}

/// The `.db` files (and separately the manifests) in `dir`, sorted.
fn files(dir: &Path, extension: &str) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    Ok(found)
}

/// The image drills every cluster's backups with the one etcd release it ships: a backup of
/// each version must restore with that release's etcdutl, boot on its etcd, and answer the
/// cluster's HashKV.
async fn a_backup_passes_its_drill_with_the_etcd_release_the_image_ships(
    version: EtcdVersion,
) -> Result<()> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let dir = tempfile::tempdir()?;
    let yaml =
        format!(
        "remediation: {{snapshot_dir: {}}}\nbackup:\n  destinations: [{{name: near, kind: local, \
         path: {}}}]\n  restore_drill: {{bin_dir: {}}}\nclusters:\n{}",
        dir.path().join("snapshots").display(),
        dir.path().join("near").display(),
        etcdmedic_tests::shipped::etcd_release()?.bin_dir()?.display(),
        cluster.config_entry("prod-a")
    );
    let config = write_file(dir.path(), "image.yaml", &yaml)?;
    let mut client = cluster.client(0).await?;
    for i in 0..20 {
        client.put(format!("/image/{i}"), "x", None).await?;
    }
    let output = backup(&config, &[]).await?;
    ensure!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let report: Value = serde_json::from_str(&stdout(&output))?;
    let manifest = &report["manifest"];
    ensure!(
        manifest["restore_drill"]["passed"] == true
            && manifest["restore_drill"]["hash"] == manifest["hash_kv"]["hash"],
        "{manifest}"
    );
    Ok(())
}

async fn a_backup_lands_verified_in_every_destination_and_the_oldest_go(
    version: EtcdVersion,
) -> Result<()> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let dir = tempfile::tempdir()?;
    let (near, far) = (dir.path().join("near"), dir.path().join("far"));
    let yaml = format!(
        "remediation: {{snapshot_dir: {}}}\nbackup:\n  destinations:\n    - {{name: near, kind: local, path: {}}}\n    \
         - {{name: far, kind: local, path: {}, retention: {{keep: 3}}}}\n  retention: {{keep: 2}}\n  restore_drill: {{bin_dir: {}}}\nclusters:\n{}",
        dir.path().join("snapshots").display(),
        near.display(),
        far.display(),
        version.bin_dir()?.display(),
        cluster.config_entry("prod-a")
    );
    let config = write_file(dir.path(), "backup.yaml", &yaml)?;
    let mut client = cluster.client(0).await?;

    let mut last = Value::Null;
    let mut written_at = 0;
    for round in 0..3 {
        let put = client.put(format!("/backup/{round}"), "x", None).await?;
        written_at = put.header().context("no header")?.revision();
        let output = backup(&config, &[]).await?;
        ensure!(
            output.status.success(),
            "round {round}: {}{}",
            stdout(&output),
            stderr(&output)
        );
        last = serde_json::from_str(&stdout(&output))
            .with_context(|| format!("backup -o json: {}", stdout(&output)))?;
    }
    let manifest = &last["manifest"];
    ensure!(manifest["revision"] == written_at, "{manifest}");
    ensure!(manifest["cluster"] == "prod-a", "{manifest}");
    // Restored into a throwaway etcd of the same release, it answered the recorded HashKV.
    let drill = &manifest["restore_drill"];
    ensure!(
        drill["passed"] == true && drill["hash"] == manifest["hash_kv"]["hash"],
        "{manifest}"
    );
    ensure!(
        manifest["etcd_version"]
            .as_str()
            .is_some_and(|v| v.starts_with(version.prefix())),
        "{manifest}"
    );
    // The HashKV recorded with the backup is what every member answers for that revision.
    ensure!(manifest["hash_kv"]["revision"] == written_at, "{manifest}");
    let hashes = cluster.etcdctl(&[
        "endpoint",
        "hashkv",
        "--rev",
        &written_at.to_string(),
        "-w",
        "json",
    ])?;
    let hashes: Value = serde_json::from_str(&hashes).with_context(|| hashes.clone())?;
    let hashes = hashes.as_array().context("etcdctl endpoint hashkv")?;
    ensure!(hashes.len() == 3, "{hashes:?}");
    for member in hashes {
        ensure!(
            member["HashKV"]["hash"] == manifest["hash_kv"]["hash"],
            "{member} vs {manifest}"
        );
    }
    let landed = last["destinations"].as_array().context("destinations")?;
    ensure!(landed.len() == 2, "{last}");

    let mut copies = Vec::new();
    // near keeps the backup's 2, far its own 3.
    for (name, root, keep) in [("near", &near, 2), ("far", &far, 3)] {
        let dir = root.join("prod-a");
        let snapshots = files(&dir, "db")?;
        let manifests = files(&dir, "json")?;
        ensure!(
            snapshots.len() == keep && manifests.len() == keep,
            "{name}: keep {keep}, found {snapshots:?} and {manifests:?}"
        );
        let newest = snapshots.last().context("no snapshot")?;
        let bytes = std::fs::read(newest)?;
        let trailer = &bytes[bytes.len() - 32..];
        ensure!(manifest["sha256"] == hex(trailer), "{name}: {manifest}");
        ensure!(manifest["size_bytes"] == bytes.len(), "{name}: {manifest}");
        let beside: Value = serde_json::from_slice(&std::fs::read(newest.with_extension("json"))?)?;
        ensure!(&beside == manifest, "{name}: {beside} vs {manifest}");
        let removed = landed
            .iter()
            .find(|l| l["destination"] == name)
            .and_then(|l| l["removed"].as_array())
            .context("removed")?;
        // The third backup removed the oldest where 2 are kept, nothing where 3 are.
        ensure!(removed.len() == 3 - keep, "{name}: {last}");
        copies.push(bytes);

        // etcd's own tool reads the revision the manifest states.
        let status = cluster.etcdctl(&[
            "snapshot",
            "status",
            "-w",
            "json",
            &newest.display().to_string(),
        ])?;
        let status: Value = serde_json::from_str(&status).with_context(|| status.clone())?;
        ensure!(status["revision"] == written_at, "{name}: {status}");
    }
    ensure!(copies[0] == copies[1], "the two destinations differ");

    let only = backup(&config, &["--destination", "far"]).await?;
    ensure!(only.status.success(), "{}", stderr(&only));
    let only: Value = serde_json::from_str(&stdout(&only))?;
    ensure!(
        only["destinations"].as_array().map(Vec::len) == Some(1)
            && only["destinations"][0]["destination"] == "far",
        "{only}"
    );
    let unknown = backup(&config, &["--destination", "tape"]).await?;
    ensure!(unknown.status.code() == Some(2), "{}", stderr(&unknown));
    ensure!(
        stderr(&unknown).contains("unknown destination \"tape\"; configured: near, far"),
        "{}",
        stderr(&unknown)
    );
    Ok(())
}

/// `backup` with the configuration `yaml` (written to `dir/name`) must exit 2; its stderr.
async fn refused(dir: &Path, name: &str, yaml: &str) -> Result<String> {
    let config = write_file(dir, name, yaml)?;
    let output = backup(&config, &[]).await?;
    let err = stderr(&output);
    ensure!(output.status.code() == Some(2), "{err}");
    Ok(err)
}

#[tokio::test]
async fn bad_backup_configuration_exits_2_naming_the_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let yaml = "backup:\n  destinations:\n    - {name: offsite, kind: s3, bucket: etcd, access_key_id_file: /nonexistent/id, \
                secret_access_key_file: /nonexistent/secret}\n    - {name: '../up', kind: local, path: x}\n    \
                - {name: nopath, kind: local}\n  retention: {keep: 0}\n  restore_drill: {bin_dir: /nonexistent}\n\
                clusters:\n  - name: prod-a\n    endpoints: [http://127.0.0.1:2379]\n";
    let err = refused(dir.path(), "bad.yaml", yaml).await?;
    for expected in [
        "backup.destinations[0].access_key_id_file: /nonexistent/id: ",
        "backup.destinations[0].secret_access_key_file: /nonexistent/secret: ",
        "backup.destinations[1].name: \"../up\" is not a destination name",
        "backup.destinations[2].path: a local destination needs its directory",
        "backup.retention.keep: must keep at least 1 backup",
        "backup.restore_drill.bin_dir: the restore drill needs etcd, not found in /nonexistent",
    ] {
        ensure!(err.contains(expected), "missing {expected:?} in {err}");
    }

    let yaml = "clusters:\n  - name: prod-a\n    endpoints: [http://127.0.0.1:2379]\n";
    let err = refused(dir.path(), "none.yaml", yaml).await?;
    ensure!(
        err.contains("no backup destination is configured for cluster prod-a"),
        "{err}"
    );

    let yaml = "backup:\n  destinations:\n    - {name: tape, kind: ftp}\nclusters:\n  - name: prod-a\n    endpoints: [http://127.0.0.1:2379]\n";
    let err = refused(dir.path(), "kind.yaml", yaml).await?;
    ensure!(
        err.contains("backup.destinations[0].kind") && err.contains("unknown variant `ftp`"),
        "{err}"
    );
    Ok(())
}
