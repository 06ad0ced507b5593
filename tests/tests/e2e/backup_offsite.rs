//! Backups to a real S3-compatible server (moto's) beside a local directory: the object,
//! uploaded while the snapshot arrives and confirmed by its ETag, read back through the server
//! equals the local file, the retention works in the bucket too, an
//! outage mid-upload is retried, then reported with nothing of that backup left in the bucket
//! while the local copy still lands, and the next backup after the outage succeeds. Then the
//! restore drill on backups already taken: a flipped byte and a manifest whose hash is not
//! the cluster's both fail it with their reason, kept in the manifest.

use std::path::Path;
use std::process::Output;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::s3::S3Server;
use etcdmedic_tests::{EtcdCluster, EtcdVersion};
use serde_json::Value;

use crate::support::{remediator_json as remediator, stderr, stdout, write_file};

const BUCKET: &str = "etcd-backups";
const PREFIX: &str = "etcd/eu-1/prod-a/";

fn json(output: &Output) -> Result<Value> {
    serde_json::from_str(&stdout(output))
        .with_context(|| format!("{}{}", stdout(output), stderr(output)))
}

/// The backups (`.db` keys) and manifests in the bucket.
async fn in_bucket(s3: &S3Server) -> Result<(Vec<String>, Vec<String>)> {
    let keys = s3.keys(PREFIX).await?;
    let of = |ext: &str| keys.iter().filter(|k| k.ends_with(ext)).cloned().collect();
    Ok((of(".db"), of(".json")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_reach_s3_verified_survive_an_outage_and_restore_drills_catch_damage() -> Result<()>
{
    let version = EtcdVersion::V3_5;
    let s3 = S3Server::start(BUCKET).await?;
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let dir = tempfile::tempdir()?;
    write_file(dir.path(), "access-key-id", "etcdmedic-test\n")?;
    write_file(dir.path(), "secret-access-key", "not-checked-by-moto\n")?;
    let near = dir.path().join("near");
    let yaml = format!(
        "remediation: {{snapshot_dir: {snapshots}}}\nbackup:\n  destinations:\n    \
         - {{name: near, kind: local, path: {near}}}\n    \
         - {{name: offsite, kind: s3, bucket: {BUCKET}, prefix: etcd/eu-1, endpoint: '{endpoint}', \
         region: us-east-1, path_style: true, access_key_id_file: access-key-id, \
         secret_access_key_file: secret-access-key}}\n  retention: {{keep: 2}}\n  \
         restore_drill: {{bin_dir: {bin}}}\nclusters:\n{entry}",
        snapshots = dir.path().join("snapshots").display(),
        near = near.display(),
        endpoint = s3.endpoint(),
        bin = version.bin_dir()?.display(),
        entry = cluster.config_entry("prod-a"),
    );
    let config = write_file(dir.path(), "backup.yaml", &yaml)?;
    let mut client = cluster.client(0).await?;
    // 24 MiB of values: the snapshot spans several 8 MiB parts.
    for index in 0..24 {
        client
            .put(format!("/blob/{index:02}"), vec![b'v'; 1 << 20], None)
            .await?;
    }

    let mut last = Value::Null;
    for round in 0..3 {
        client.put(format!("/round/{round}"), "x", None).await?;
        let output = remediator(&config, &["backup"]).await?;
        ensure!(
            output.status.success(),
            "round {round}: {}",
            stderr(&output)
        );
        last = json(&output)?;
    }
    let manifest = &last["manifest"];
    let file = manifest["file"].as_str().context("file")?;
    let offsite = last["destinations"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["destination"] == "offsite"))
        .context("offsite landed")?;
    ensure!(
        offsite["location"] == format!("s3://{BUCKET}/{PREFIX}{file}")
            && offsite["verified_by"] == "etag"
            && offsite["streamed"] == true
            && offsite["removed"].as_array().map(Vec::len) == Some(1),
        "{offsite}"
    );
    let local_copy = std::fs::read(near.join("prod-a").join(file))?;
    let object = s3.object(&format!("{PREFIX}{file}")).await?;
    ensure!(
        object == local_copy,
        "the object read back through the server differs from the local file"
    );
    ensure!(manifest["size_bytes"] == object.len(), "{manifest}");
    let keys = s3.keys(PREFIX).await?;
    let manifest_object: Value = serde_json::from_slice(
        &s3.object(&format!("{PREFIX}{}", file.replace(".db", ".json")))
            .await
            .with_context(|| format!("{keys:?}"))?,
    )?;
    ensure!(
        &manifest_object == manifest,
        "{manifest_object} vs {manifest}; {keys:?}"
    );
    ensure!(manifest["restore_drill"]["passed"] == true, "{manifest}");
    let (backups, manifests) = in_bucket(&s3).await?;
    ensure!(
        backups.len() == 2 && manifests.len() == 2,
        "keep 2 in the bucket: {backups:?} {manifests:?}"
    );
    ensure!(backups[1].ends_with(file), "{backups:?}");

    // The newest backup in the bucket, drilled from the bucket: downloaded, checked, restored,
    // and the outcome written to the manifest there.
    let drilled = remediator(&config, &["drill", "--destination", "offsite"]).await?;
    ensure!(drilled.status.success(), "{}", stderr(&drilled));
    let drilled = json(&drilled)?;
    ensure!(
        drilled["location"] == format!("s3://{BUCKET}/{PREFIX}{file}")
            && drilled["drill"]["passed"] == true,
        "{drilled}"
    );
    let updated: Value = serde_json::from_slice(
        &s3.object(&format!("{PREFIX}{}", file.replace(".db", ".json")))
            .await?,
    )?;
    ensure!(
        updated["restore_drill"]["at"] == drilled["drill"]["at"],
        "the bucket's manifest records the drill: {updated}"
    );

    // The server goes away 12 MiB into the next upload and stays away.
    s3.proxy.cut_after(12 << 20);
    client.put("/round/outage", "x", None).await?;
    let output = remediator(&config, &["backup"]).await?;
    ensure!(
        output.status.code() == Some(1),
        "an unreachable destination fails the backup: {}",
        stderr(&output)
    );
    ensure!(s3.proxy.is_cut(), "the upload never reached 12 MiB");
    let report = json(&output)?;
    let missed = &report["missed"];
    ensure!(
        missed[0]["destination"] == "offsite"
            && missed[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("failed 3 times")),
        "{report}"
    );
    let outage_file = report["manifest"]["file"].as_str().context("file")?;
    ensure!(
        near.join("prod-a").join(outage_file).exists(),
        "the local destination still holds it"
    );
    ensure!(
        in_bucket(&s3).await? == (backups.clone(), manifests.clone()),
        "nothing of the failed upload is left in the bucket, nothing old was removed: {:?}",
        in_bucket(&s3).await?
    );

    s3.proxy.restore();
    let output = remediator(&config, &["backup"]).await?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let after = json(&output)?;
    let (backups, _) = in_bucket(&s3).await?;
    ensure!(
        backups.len() == 2
            && backups[1].ends_with(after["manifest"]["file"].as_str().context("file")?),
        "{backups:?}"
    );

    drills_fail_on_damage(&config, &near.join("prod-a")).await?;

    // An etcd that will not start: the drill fails, and the backup is kept nowhere, not
    // even the object that was uploaded while the snapshot arrived.
    let broken = dir.path().join("broken-bin");
    std::fs::create_dir_all(&broken)?;
    std::os::unix::fs::symlink(version.bin_dir()?.join("etcdutl"), broken.join("etcdutl"))?;
    write_file(
        &broken,
        "etcd",
        "#!/bin/sh\necho 'cannot start' >&2\nexit 3\n",
    )?;
    std::fs::set_permissions(
        broken.join("etcd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let broken_config = write_file(
        dir.path(),
        "broken.yaml",
        &yaml.replace(
            &format!("bin_dir: {}", version.bin_dir()?.display()),
            &format!("bin_dir: {}", broken.display()),
        ),
    )?;
    let before = in_bucket(&s3).await?;
    let local_before = std::fs::read_dir(near.join("prod-a"))?.count();
    let output = remediator(&broken_config, &["backup"]).await?;
    ensure!(output.status.code() == Some(1), "{}", stderr(&output));
    ensure!(
        stderr(&output).contains("the restore drill failed: the restored etcd exited"),
        "{}",
        stderr(&output)
    );
    ensure!(
        in_bucket(&s3).await? == before,
        "the bucket changed: {:?}",
        s3.keys(PREFIX).await?
    );
    ensure!(
        std::fs::read_dir(near.join("prod-a"))?.count() == local_before,
        "a local file was left"
    );
    Ok(())
}

/// The restore drill on backups already in the local destination.
async fn drills_fail_on_damage(config: &Path, dir: &Path) -> Result<()> {
    let mut backups: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .collect();
    backups.sort();
    let [older, newest] = &backups[..] else {
        anyhow::bail!("keep 2 locally: {backups:?}");
    };

    let passed = remediator(config, &["drill"]).await?;
    ensure!(passed.status.success(), "{}", stderr(&passed));
    let passed = json(&passed)?;
    ensure!(
        passed["location"] == newest.display().to_string() && passed["drill"]["passed"] == true,
        "{passed}"
    );

    // A flipped byte in the middle of the database.
    let mut bytes = std::fs::read(newest)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(newest, &bytes)?;
    let failed = remediator(config, &["drill"]).await?;
    ensure!(failed.status.code() == Some(1), "{}", stderr(&failed));
    let failed = json(&failed)?;
    let reason = failed["drill"]["reason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("differs from etcd's trailer"),
        "a damaged backup fails with the reason: {failed}"
    );
    let kept: Value = serde_json::from_slice(&std::fs::read(newest.with_extension("json"))?)?;
    ensure!(
        kept["restore_drill"]["passed"] == false
            && kept["restore_drill"]["reason"].as_str() == Some(reason),
        "the manifest keeps the outcome: {kept}"
    );

    // A backup that restores fine but does not hold what the cluster held at its revision.
    let manifest_path = older.with_extension("json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path)?)?;
    let real = manifest["hash_kv"]["hash"].as_u64().context("hash")?;
    manifest["hash_kv"]["hash"] = Value::from(real ^ 1);
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest)?)?;
    let name = older.file_name().and_then(|n| n.to_str()).context("name")?;
    let mismatch = remediator(config, &["drill", "--file", name]).await?;
    ensure!(mismatch.status.code() == Some(1), "{}", stderr(&mismatch));
    let mismatch = json(&mismatch)?;
    ensure!(
        mismatch["drill"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("is {real}, the cluster's was {}", real ^ 1))),
        "{mismatch}"
    );

    let hostile = remediator(config, &["drill", "--file", "../../etc/passwd"]).await?;
    ensure!(hostile.status.code() == Some(2), "{}", stderr(&hostile));
    ensure!(
        stderr(&hostile).contains("is not a backup file name of cluster prod-a"),
        "{}",
        stderr(&hostile)
    );
    Ok(())
}
