//! `backup.encryption` against real etcd 3.6 and moto's S3 server: copies in a directory and
//! a bucket are age files (`.db.zst.age`) that hold no byte of the keyspace in the clear
//! and decrypt, with the age crate, to the database the manifest describes. Without an
//! identity the backup lands but is recorded "not drilled", never passed; the drill and
//! `restore` decrypt with `--identity`, and refuse without one, naming it.

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use age::x25519::Identity;
use anyhow::{ensure, Context, Result};
use etcdmedic_tests::s3::S3Server;
use etcdmedic_tests::{EtcdCluster, EtcdVersion};
use serde_json::Value;

use crate::documented::Document;
use crate::support::{
    ensure_drills_pass, ensure_snapshot_of, remediator_json as remediator, stderr, stdout,
    write_file,
};

const BUCKET: &str = "etcd-backups";
const SECRET: &[u8] = b"a-kubernetes-secret-nobody-may-read-in-a-bucket";

/// An identity file as `age-keygen -o` writes it, 0600.
fn identity_file(dir: &Path, name: &str, identity: &Identity) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let text = format!(
        "# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    );
    let path = write_file(dir, name, &text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// The database inside an encrypted, compressed copy, decrypted with the age crate (not
/// etcdmedic's code) and checked against the manifest.
fn database_of(stored: &[u8], identity: &Identity, manifest: &Value) -> Result<Vec<u8>> {
    ensure!(
        stored.starts_with(b"age-encryption.org/v1\n"),
        "not an age file"
    );
    ensure!(
        !stored.windows(SECRET.len()).any(|w| w == SECRET),
        "the secret value is in the stored copy in the clear"
    );
    let compressed = age::decrypt(identity, stored)?;
    let db = zstd::stream::decode_all(compressed.as_slice())?;
    ensure!(
        db.windows(SECRET.len()).any(|w| w == SECRET),
        "the decrypted database lacks the secret value"
    );
    ensure_snapshot_of(&db, manifest)?;
    Ok(db)
}

/// Backups compressed and encrypted to `recipients`, into a directory and moto's bucket; the
/// drill decrypts with `drill.key` when `drill_identity`.
fn config(
    dir: &Path,
    s3: &S3Server,
    cluster: &EtcdCluster,
    recipients: &[String],
    drill_identity: bool,
) -> Result<PathBuf> {
    let identity = if drill_identity {
        ", identity_file: drill.key"
    } else {
        ""
    };
    let yaml = format!(
        "remediation: {{snapshot_dir: {}}}\nbackup:\n  compression: zstd\n  encryption: \
         {{recipients: {recipients:?}}}\n  restore_drill: {{bin_dir: {}{identity}}}\n  \
         destinations:\n    - {{name: near, kind: local, path: {}}}\n    - {{name: offsite, \
         kind: s3, bucket: {BUCKET}, endpoint: '{}', path_style: true, access_key_id_file: id, \
         secret_access_key_file: secret}}\nclusters:\n{}",
        dir.join("snapshots").display(),
        EtcdVersion::V3_6.bin_dir()?.display(),
        dir.join("near").display(),
        s3.endpoint(),
        cluster.config_entry("prod-a")
    );
    write_file(dir, "c.yaml", &yaml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_hide_the_keyspace_and_restore_only_with_an_identity() -> Result<()> {
    let s3 = S3Server::start(BUCKET).await?;
    let cluster = EtcdCluster::builder(EtcdVersion::V3_6)
        .members(3)
        .start()
        .await?;
    let mut client = cluster.client(0).await?;
    client
        .put("/registry/secrets/default/token", SECRET, None)
        .await?;
    for index in 0..4 {
        client
            .put(format!("/blob/{index:02}"), vec![b'z'; 1 << 20], None)
            .await?;
    }
    let dir = tempfile::tempdir()?;
    write_file(dir.path(), "id", "test\n")?;
    write_file(dir.path(), "secret", "test\n")?;
    // The operator's key is kept offline; the drill's is the remediator's own.
    let (operator, drill) = (Identity::generate(), Identity::generate());
    let operator_key = identity_file(dir.path(), "operator.key", &operator)?;
    identity_file(dir.path(), "drill.key", &drill)?;

    // Encrypted to the operator alone: the backup lands, checked as the bytes it wrote, and
    // is recorded as not drilled.
    let (to_operator, to_drill) = (
        operator.to_public().to_string(),
        drill.to_public().to_string(),
    );
    let config = config(
        dir.path(),
        &s3,
        &cluster,
        std::slice::from_ref(&to_operator),
        false,
    )?;
    let output = remediator(&config, &["backup"]).await?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output))?;
    let manifest = &report["manifest"];
    let file = manifest["file"].as_str().context("file")?;
    ensure!(file.ends_with(".db.zst.age"), "{manifest}");
    ensure!(
        manifest["encryption"]["recipients"] == serde_json::json!([to_operator]),
        "{manifest}"
    );
    let drilled = &manifest["restore_drill"];
    ensure!(
        drilled["passed"] == false && drilled["not_drilled"] == "no_identity",
        "{drilled}"
    );
    let local = std::fs::read(dir.path().join("near/prod-a").join(file))?;
    let object = s3.object(&format!("prod-a/{file}")).await?;
    ensure!(local != object, "each copy is encrypted anew");
    let from_dir = database_of(&local, &operator, manifest)?;
    ensure!(from_dir == database_of(&object, &operator, manifest)?);

    // The by-hand path of docs/disaster-recovery.md: Debian's age and zstd decrypt the copy
    // with the operator's identity file, and the document's trailer check passes on it.
    let by_hand = tempfile::tempdir()?;
    let snapshot_name = file.trim_end_matches(".zst.age");
    std::fs::write(by_hand.path().join(file), &local)?;
    std::fs::copy(
        dir.path()
            .join("near/prod-a")
            .join(snapshot_name.replace(".db", ".json")),
        by_hand.path().join(snapshot_name.replace(".db", ".json")),
    )?;
    let document = Document::new("disaster-recovery.md", &[]);
    let decrypted = document
        .command(
            "decrypt",
            &[
                ("STORED", file.to_string()),
                ("IDENTITY", operator_key.display().to_string()),
            ],
        )?
        .current_dir(by_hand.path())
        .output()
        .await?;
    ensure!(decrypted.status.success(), "{}", stderr(&decrypted));
    let database = by_hand.path().join(snapshot_name);
    ensure!(
        std::fs::read(&database)? == from_dir,
        "age -d | zstd -d gave another database"
    );
    let verified = document
        .run("verify", &[("BACKUP", database.display().to_string())])
        .await?;
    ensure!(verified.starts_with("sha256 ok"), "{verified}");

    // The drill without an identity says so; with the operator's it passes from the bucket.
    let not_drilled = remediator(&config, &["drill", "--destination", "offsite"]).await?;
    let record: Value = serde_json::from_str(&stdout(&not_drilled))?;
    ensure!(
        !not_drilled.status.success() && record["drill"]["not_drilled"] == "no_identity",
        "{record}"
    );
    let key_arg = operator_key.display().to_string();
    ensure_drills_pass(&config, &["near", "offsite"], &["--identity", &key_arg]).await?;

    // restore: refused without an identity or with one that is no recipient, nothing
    // written; with the operator's, the snapshot is the backup's database.
    let into = dir.path().join("restored");
    let into_arg = into.display().to_string();
    let restore = ["restore", "--from", "offsite", "--into", &into_arg];
    let refused = remediator(&config, &restore).await?;
    ensure!(refused.status.code() == Some(2), "{}", stderr(&refused));
    ensure!(
        stderr(&refused).contains("--identity FILE"),
        "{}",
        stderr(&refused)
    );
    let drill_key = dir.path().join("drill.key").display().to_string();
    let wrong = remediator(
        &config,
        &[&restore[..], &["--identity", &drill_key]].concat(),
    )
    .await?;
    ensure!(
        wrong.status.code() == Some(2) && stderr(&wrong).contains("is among backup"),
        "{}",
        stderr(&wrong)
    );
    ensure!(!into.exists(), "a refused restore wrote {}", into.display());
    let restored = remediator(&config, &[&restore[..], &["--identity", &key_arg]].concat()).await?;
    ensure!(restored.status.success(), "{}", stderr(&restored));
    let restored: Value = serde_json::from_str(&stdout(&restored))?;
    ensure!(restored["sha256"] == manifest["sha256"], "{restored}");
    let snapshot = std::fs::read(restored["plan"]["snapshot"].as_str().context("snapshot")?)?;
    ensure!(
        snapshot == from_dir,
        "the restored snapshot is not the backup's database"
    );
    ensure!(
        std::fs::read_dir(&into)?.count() == 4,
        "the snapshot and three data directories, nothing left over"
    );

    // With the drill's own identity among the recipients, each backup is drilled as it is
    // taken, and each copy decrypted as it is written.
    let config = self::config(dir.path(), &s3, &cluster, &[to_operator, to_drill], true)?;
    let output = remediator(&config, &["backup"]).await?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output))?;
    let manifest = &report["manifest"];
    ensure!(manifest["restore_drill"]["passed"] == true, "{manifest}");
    let file = manifest["file"].as_str().context("file")?;
    database_of(
        &s3.object(&format!("prod-a/{file}")).await?,
        &drill,
        manifest,
    )?;
    database_of(
        &std::fs::read(dir.path().join("near/prod-a").join(file))?,
        &operator,
        manifest,
    )?;
    Ok(())
}
