//! `object_lock` against moto's S3 server with Object Lock: every object a backup writes
//! (the snapshot, and each version of its manifest, the drill's included) is locked until
//! the backup's time plus the configured days, as boto3 reads it back; the same credentials
//! cannot delete a locked version; the retention keeps an expired backup while it is locked
//! and removes it once the store says the lock is over. A bucket without Object Lock is
//! refused by `--config.check` and by the backup itself, before anything is written.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::s3::S3Server;
use etcdmedic_tests::{project_binary, EtcdCluster, EtcdVersion};
use serde_json::Value;

use crate::support::{remediator_json as remediator, stderr, stdout, write_file};

const LOCKED: &str = "etcd-backups-locked";
const PLAIN: &str = "etcd-backups-plain";
const DAYS: i64 = 3;

fn config(dir: &Path, s3: &S3Server, cluster: &EtcdCluster, bucket: &str) -> Result<PathBuf> {
    let yaml = format!(
        "remediation: {{snapshot_dir: {}}}\nbackup:\n  retention: {{keep: 1}}\n  \
         restore_drill: {{bin_dir: {}}}\n  destinations:\n    - {{name: vault, kind: s3, \
         bucket: {bucket}, endpoint: '{}', path_style: true, access_key_id_file: id, \
         secret_access_key_file: secret, object_lock: {{mode: governance, days: {DAYS}}}}}\n\
         clusters:\n{}",
        dir.join("snapshots").display(),
        EtcdVersion::V3_6.bin_dir()?.display(),
        s3.endpoint(),
        cluster.config_entry("prod-a")
    );
    write_file(dir, &format!("{bucket}.yaml"), &yaml)
}

/// Every version of `key` in the bucket with its lock, one line each: `version mode
/// until_epoch_seconds` (`-` for none), read by boto3.
async fn versions(s3: &S3Server, key: &str) -> Result<Vec<(String, String, i64)>> {
    let listed = s3
        .boto3(&format!(
            "for v in s3.list_object_versions(Bucket={LOCKED:?}, Prefix={key:?}).get('Versions', \
             []):\n    if v['Key'] != {key:?}: continue\n    \
             h = s3.head_object(Bucket={LOCKED:?}, Key={key:?}, VersionId=v['VersionId'])\n    \
             until = h.get('ObjectLockRetainUntilDate')\n    \
             print(v['VersionId'], h.get('ObjectLockMode', '-'), \
             int(until.timestamp()) if until else -1)"
        ))
        .await?;
    listed
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            ensure!(fields.len() == 3, "{line}");
            Ok((
                fields[0].to_string(),
                fields[1].to_string(),
                fields[2].parse()?,
            ))
        })
        .collect()
}

/// What boto3, with the remediator's own credentials, gets for deleting that version.
async fn delete_version(s3: &S3Server, key: &str, version: &str) -> Result<String> {
    s3.boto3(&format!(
        "from botocore.exceptions import ClientError\ntry:\n    \
         s3.delete_object(Bucket={LOCKED:?}, Key={key:?}, VersionId={version:?})\n    \
         print('deleted')\nexcept ClientError as e:\n    print(e.response['Error']['Code'])"
    ))
    .await
    .map(|out| out.trim().to_string())
}

async fn config_check(config: &Path) -> Result<std::process::Output> {
    let run = tokio::process::Command::new(project_binary("etcdmedic-remediator")?)
        .args([
            "serve",
            "--config.check",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(config)
        .kill_on_drop(true)
        .output();
    Ok(tokio::time::timeout(std::time::Duration::from_secs(60), run).await??)
}

async fn backup(config: &Path) -> Result<Value> {
    let output = remediator(config, &["backup"]).await?;
    ensure!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).with_context(|| stdout(&output))
}

/// The `.db` keys under the cluster's prefix, as a plain listing shows them.
async fn listed_backups(s3: &S3Server) -> Result<Vec<String>> {
    Ok(s3
        .keys("prod-a/")
        .await?
        .into_iter()
        .filter(|key| key.ends_with(".db"))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_backups_outlive_a_delete_and_the_retention_until_their_date() -> Result<()> {
    let s3 = S3Server::start_with_object_lock(LOCKED).await?;
    s3.boto3(&format!("s3.create_bucket(Bucket={PLAIN:?})"))
        .await?;
    let cluster = EtcdCluster::builder(EtcdVersion::V3_6)
        .members(1)
        .start()
        .await?;
    let mut client = cluster.client(0).await?;
    client.put("/registry/a", "1", None).await?;
    let dir = tempfile::tempdir()?;
    write_file(dir.path(), "id", "test\n")?;
    write_file(dir.path(), "secret", "test\n")?;

    // A bucket without Object Lock: refused at --config.check and by the backup, and
    // nothing is written to it.
    let plain = config(dir.path(), &s3, &cluster, PLAIN)?;
    let checked = config_check(&plain).await?;
    ensure!(
        checked.status.code() == Some(2)
            && stderr(&checked).contains(&format!("s3://{PLAIN} does not have Object Lock")),
        "{checked:?}"
    );
    let refused = remediator(&plain, &["backup"]).await?;
    ensure!(
        refused.status.code() == Some(1)
            && stdout(&refused).contains("does not have Object Lock enabled"),
        "{}{}",
        stdout(&refused),
        stderr(&refused)
    );
    let written = s3
        .boto3(&format!(
            "print(len(s3.list_object_versions(Bucket={PLAIN:?}).get('Versions', [])))"
        ))
        .await?;
    ensure!(written.trim() == "0", "written to {PLAIN}: {written}");

    let locked = config(dir.path(), &s3, &cluster, LOCKED)?;
    let checked = config_check(&locked).await?;
    ensure!(checked.status.success(), "{}", stderr(&checked));

    // The first backup, then drilled from the bucket: its object and both versions of its
    // manifest (the backup's and the drill's) are locked to the backup's time + DAYS.
    let first = backup(&locked).await?;
    let manifest = &first["manifest"];
    let drilled = remediator(&locked, &["drill", "--destination", "vault"]).await?;
    ensure!(
        drilled.status.success() && stdout(&drilled).contains("\"passed\": true"),
        "{}{}",
        stdout(&drilled),
        stderr(&drilled)
    );
    let file = manifest["file"].as_str().context("file")?.to_string();
    let created = chrono::DateTime::parse_from_rfc3339(
        manifest["created_at"].as_str().context("created_at")?,
    )?
    .timestamp();
    let (object, manifest_key) = (
        format!("prod-a/{file}"),
        format!("prod-a/{}", file.replace(".db", ".json")),
    );
    let object_versions = versions(&s3, &object).await?;
    let manifest_versions = versions(&s3, &manifest_key).await?;
    ensure!(
        object_versions.len() == 1 && manifest_versions.len() == 2,
        "{object_versions:?} {manifest_versions:?}"
    );
    for (version, mode, until) in object_versions.iter().chain(&manifest_versions) {
        ensure!(
            mode == "GOVERNANCE" && (until - (created + DAYS * 86_400)).abs() <= 1,
            "{version}: {mode} until {until}, backup at {created}"
        );
    }

    // The same credentials cannot remove the locked version.
    let (version, _, _) = &object_versions[0];
    let deleted = delete_version(&s3, &object, version).await?;
    ensure!(deleted == "AccessDenied", "{deleted}");
    ensure!(versions(&s3, &object).await? == object_versions);

    // keep: 1, and the first backup is still locked: the retention keeps it.
    client.put("/registry/b", "2", None).await?;
    let second = backup(&locked).await?;
    ensure!(
        second["destinations"][0]["removed"] == serde_json::json!([]),
        "{second}"
    );
    let backups = listed_backups(&s3).await?;
    ensure!(
        backups.len() == 2 && backups[0] == object,
        "both backups stay while the first is locked: {backups:?}"
    );

    // The lock lifted early (governance mode, with the bypass permission): the next
    // retention removes the first backup, and keeps the second, still locked.
    s3.boto3(&format!(
        "import datetime\npast = datetime.datetime.now(datetime.timezone.utc) - \
         datetime.timedelta(minutes=1)\nfor key in ({object:?}, {manifest_key:?}):\n    \
         s3.put_object_retention(Bucket={LOCKED:?}, Key=key, Retention={{'Mode': 'GOVERNANCE', \
         'RetainUntilDate': past}}, BypassGovernanceRetention=True)"
    ))
    .await?;
    client.put("/registry/c", "3", None).await?;
    let third = backup(&locked).await?;
    let removed = third["destinations"][0]["removed"].clone();
    ensure!(
        removed == serde_json::json!([format!("s3://{LOCKED}/{object}")]),
        "{third}"
    );
    let backups = listed_backups(&s3).await?;
    let second_file = second["manifest"]["file"].as_str().context("file")?;
    ensure!(
        backups.len() == 2 && backups[0].ends_with(second_file),
        "the first backup went, the second stays: {backups:?}"
    );
    Ok(())
}
