//! Backups to Azure Blob Storage (Microsoft's emulator, Azurite) and Google Cloud Storage
//! (object_store's GCS client speaks GCS's XML API, which Google documents as S3-compatible:
//! here it talks to moto's S3 server with a key file that turns OAuth off, as GCS emulators
//! are used). Each: three backups of a multi-part snapshot, the newest read back through the
//! store's own client equal to what etcd sent (its sha256 is the manifest's), the manifest
//! beside it, the retention applied in the store, a drill from the store, and a wrong
//! credential refused with nothing left behind.

use std::path::Path;
use std::process::Output;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::azurite::{self, Azurite};
use etcdmedic_tests::s3::S3Server;
use etcdmedic_tests::{EtcdCluster, EtcdVersion};
use serde_json::Value;

use crate::support::{
    ensure_snapshot_of, remediator_json as remediator, stderr, stdout, write_file,
};

const CONTAINER: &str = "etcd-backups";
const PREFIX: &str = "etcd/eu-1/prod-a/";

fn json(output: &Output) -> Result<Value> {
    serde_json::from_str(&stdout(output))
        .with_context(|| format!("{}{}", stdout(output), stderr(output)))
}

/// A 3-member cluster holding 24 MiB of values: its snapshot spans several 8 MiB parts.
async fn cluster(version: EtcdVersion) -> Result<EtcdCluster> {
    let cluster = EtcdCluster::builder(version).members(3).start().await?;
    let mut client = cluster.client(0).await?;
    for index in 0..24 {
        client
            .put(format!("/blob/{index:02}"), vec![b'v'; 1 << 20], None)
            .await?;
    }
    Ok(cluster)
}

fn config(
    dir: &Path,
    cluster: &EtcdCluster,
    version: EtcdVersion,
    destination: &str,
) -> Result<std::path::PathBuf> {
    let yaml = format!(
        "remediation: {{snapshot_dir: {snapshots}}}\nbackup:\n  destinations:\n    - {destination}\n  \
         retention: {{keep: 2}}\n  restore_drill: {{bin_dir: {bin}}}\nclusters:\n{entry}",
        snapshots = dir.join("snapshots").display(),
        bin = version.bin_dir()?.display(),
        entry = cluster.config_entry("prod-a"),
    );
    write_file(dir, "backup.yaml", &yaml)
}

/// Three backups; the report of the last, with its landing in `offsite` checked.
async fn three_backups(
    config: &Path,
    location_of: impl Fn(&str) -> String,
) -> Result<(Value, String)> {
    let mut last = Value::Null;
    for round in 0..3 {
        let output = remediator(config, &["backup"]).await?;
        ensure!(
            output.status.success(),
            "round {round}: {}",
            stderr(&output)
        );
        last = json(&output)?;
    }
    let file = last["manifest"]["file"]
        .as_str()
        .context("file")?
        .to_string();
    let offsite = &last["destinations"][0];
    ensure!(
        offsite["destination"] == "offsite"
            && offsite["location"] == location_of(&file)
            && offsite["streamed"] == true
            && offsite["removed"].as_array().map(Vec::len) == Some(1),
        "{last}"
    );
    ensure!(
        last["manifest"]["restore_drill"]["passed"] == true,
        "{last}"
    );
    Ok((last, file))
}

/// `retention: {keep: 2}` left two backups, each with its manifest, among `names`.
fn ensure_two_kept(names: &[String]) -> Result<()> {
    let count = |ext: &str| names.iter().filter(|n| n.ends_with(ext)).count();
    ensure!(
        count(".db") == 2 && count(".json") == 2,
        "keep 2 in the store: {names:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_reach_azure_blob_storage_verified_and_drill_from_it() -> Result<()> {
    let version = EtcdVersion::V3_5;
    let azure = Azurite::start(CONTAINER).await?;
    let cluster = cluster(version).await?;
    let dir = tempfile::tempdir()?;
    write_file(
        dir.path(),
        "account-key",
        &format!("{}\n", azurite::ACCOUNT_KEY),
    )?;
    let destination = format!(
        "{{name: offsite, kind: azure, account: {account}, container: {CONTAINER}, prefix: \
         etcd/eu-1, endpoint: '{endpoint}', account_key_file: account-key}}",
        account = azurite::ACCOUNT,
        endpoint = azure.endpoint(),
    );
    let config = config(dir.path(), &cluster, version, &destination)?;

    let url = |file: &str| format!("{}/{CONTAINER}/{PREFIX}{file}", azure.endpoint());
    let (last, file) = three_backups(&config, url).await?;
    // Azure's ETag says nothing about the content: the blob is read back.
    ensure!(
        last["destinations"][0]["verified_by"] == "read_back",
        "{last}"
    );
    let object = azure.blob(&format!("{PREFIX}{file}")).await?;
    ensure_snapshot_of(&object, &last["manifest"])?;
    let manifest: Value = serde_json::from_slice(
        &azure
            .blob(&format!("{PREFIX}{}", file.replace(".db", ".json")))
            .await?,
    )?;
    ensure!(
        manifest == last["manifest"],
        "{manifest} vs {}",
        last["manifest"]
    );
    let blobs = azure.blobs(PREFIX).await?;
    ensure_two_kept(&blobs)?;

    let drilled = remediator(&config, &["drill", "--destination", "offsite"]).await?;
    ensure!(drilled.status.success(), "{}", stderr(&drilled));
    let drilled = json(&drilled)?;
    ensure!(
        drilled["location"] == url(&file) && drilled["drill"]["passed"] == true,
        "{drilled}"
    );

    // A wrong key: refused by the store, reported, nothing new in the container.
    write_file(
        dir.path(),
        "account-key",
        "d3Jvbmcta2V5LW5vdC1henVyaXRlcw==\n",
    )?;
    let output = remediator(&config, &["backup"]).await?;
    let report = json(&output)?;
    ensure!(
        output.status.code() == Some(1) && report["missed"][0]["destination"] == "offsite",
        "{report}"
    );
    ensure!(
        azure.blobs(PREFIX).await? == blobs,
        "{:?}",
        azure.blobs(PREFIX).await?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_reach_google_cloud_storage_through_its_xml_api() -> Result<()> {
    let version = EtcdVersion::V3_5;
    let s3 = S3Server::start_as_gcs(CONTAINER).await?;
    let cluster = cluster(version).await?;
    let dir = tempfile::tempdir()?;
    // The form object_store documents for emulators: OAuth off, empty identities.
    write_file(
        dir.path(),
        "service-account.json",
        r#"{"disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}"#,
    )?;
    let destination = format!(
        "{{name: offsite, kind: gcs, bucket: {CONTAINER}, prefix: etcd/eu-1, endpoint: \
         '{endpoint}', service_account_file: service-account.json}}",
        endpoint = s3.endpoint(),
    );
    let config = config(dir.path(), &cluster, version, &destination)?;
    let url = |file: &str| format!("gs://{CONTAINER}/{PREFIX}{file}");
    let (last, file) = three_backups(&config, url).await?;
    let object = s3.object(&format!("{PREFIX}{file}")).await?;
    ensure_snapshot_of(&object, &last["manifest"])?;
    ensure_two_kept(&s3.keys(PREFIX).await?)?;
    let drilled = remediator(&config, &["drill", "--destination", "offsite"]).await?;
    ensure!(drilled.status.success(), "{}", stderr(&drilled));
    ensure!(
        json(&drilled)?["drill"]["passed"] == true,
        "{}",
        stdout(&drilled)
    );
    Ok(())
}
