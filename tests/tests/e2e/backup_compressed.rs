//! `compression: zstd` against real etcd 3.5 and moto's S3 server: the copies in a directory
//! and a bucket are `.db.zst`, decompress to the database the manifest describes (size and
//! sha256 of the uncompressed snapshot), drill from either place, the retention removes
//! compressed backups like any other, and `restore` takes one from the bucket alone.

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::s3::S3Server;
use etcdmedic_tests::{EtcdCluster, EtcdVersion};
use serde_json::Value;

use crate::support::{
    ensure_drills_pass, ensure_snapshot_of, remediator_json as remediator, stderr, stdout,
    write_file,
};

const BUCKET: &str = "etcd-backups";

/// The database inside a `.zst` copy, checked against the manifest.
fn database_of(compressed: &[u8], manifest: &Value) -> Result<Vec<u8>> {
    let db = zstd::stream::decode_all(compressed)?;
    ensure_snapshot_of(&db, manifest)?;
    Ok(db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_backups_decompress_to_what_the_manifest_says_and_drill() -> Result<()> {
    let version = EtcdVersion::V3_5;
    let s3 = S3Server::start(BUCKET).await?;
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let mut client = cluster.client(0).await?;
    for index in 0..12 {
        client
            .put(format!("/blob/{index:02}"), vec![b'z'; 1 << 20], None)
            .await?;
    }
    let dir = tempfile::tempdir()?;
    write_file(dir.path(), "id", "test\n")?;
    write_file(dir.path(), "secret", "test\n")?;
    let near = dir.path().join("near");
    let yaml = format!(
        "remediation: {{snapshot_dir: {}}}\nbackup:\n  compression: zstd\n  retention: {{keep: 1}}\n  \
         destinations:\n    - {{name: near, kind: local, path: {}}}\n    - {{name: offsite, kind: s3, \
         bucket: {BUCKET}, endpoint: '{}', path_style: true, access_key_id_file: id, \
         secret_access_key_file: secret}}\n  restore_drill: {{bin_dir: {}}}\nclusters:\n{}",
        dir.path().join("snapshots").display(),
        near.display(),
        s3.endpoint(),
        version.bin_dir()?.display(),
        cluster.config_entry("prod-a")
    );
    let config = write_file(dir.path(), "c.yaml", &yaml)?;

    let mut reports = Vec::new();
    for round in 0..2 {
        client.put(format!("/round/{round}"), "x", None).await?;
        let output = remediator(&config, &["backup"]).await?;
        ensure!(output.status.success(), "{}", stderr(&output));
        reports.push(serde_json::from_str::<Value>(&stdout(&output))?);
    }
    let report = &reports[1];
    let manifest = &report["manifest"];
    let file = manifest["file"].as_str().context("file")?;
    ensure!(
        file.ends_with(".db.zst") && manifest["compression"] == "zstd",
        "{manifest}"
    );
    let local = std::fs::read(near.join("prod-a").join(file))?;
    ensure!(
        (local.len() as u64) < manifest["size_bytes"].as_u64().context("size")? / 4,
        "{} bytes stored for {}",
        local.len(),
        manifest["size_bytes"]
    );
    let from_dir = database_of(&local, manifest)?;
    let from_bucket = database_of(&s3.object(&format!("prod-a/{file}")).await?, manifest)?;
    ensure!(
        from_dir == from_bucket,
        "the two copies hold different databases"
    );
    let beside: Value = serde_json::from_slice(&std::fs::read(
        near.join("prod-a").join(file.replace(".db.zst", ".json")),
    )?)?;
    ensure!(&beside == manifest, "{beside}");

    // keep 1: the first backup is gone from both, manifest and copy.
    let keys = s3.keys("prod-a/").await?;
    ensure!(keys.len() == 2, "{keys:?}");
    ensure!(
        std::fs::read_dir(near.join("prod-a"))?.count() == 2,
        "the directory keeps one backup and its manifest"
    );

    ensure_drills_pass(&config, &["near", "offsite"], &[]).await?;

    // The worst day's path: restored from the bucket alone, downloaded and decompressed, the
    // snapshot beside the data directories is the database the manifest describes.
    let into = dir.path().join("restored");
    let into_arg = into.display().to_string();
    let restored = remediator(
        &config,
        &["restore", "--from", "offsite", "--into", &into_arg],
    )
    .await?;
    ensure!(restored.status.success(), "{}", stderr(&restored));
    let restored: Value = serde_json::from_str(&stdout(&restored))?;
    let plan = &restored["plan"];
    ensure!(
        plan["destination"] == "offsite" && restored["sha256"] == manifest["sha256"],
        "{restored}"
    );
    let snapshot = std::fs::read(plan["snapshot"].as_str().context("snapshot")?)?;
    ensure!(
        snapshot == from_bucket,
        "the restored snapshot is not the backup's database"
    );
    for member in plan["members"].as_array().context("members")? {
        let data_dir = member["data_dir"].as_str().context("data_dir")?;
        ensure!(
            std::path::Path::new(data_dir).join("member").is_dir(),
            "no data directory at {data_dir}"
        );
    }
    ensure!(
        std::fs::read_dir(&into)?.count() == 4,
        "the snapshot and three data directories, nothing left over: {:?}",
        std::fs::read_dir(&into)?.collect::<Vec<_>>()
    );
    Ok(())
}
