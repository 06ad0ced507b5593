//! The bucket against object_store's in-memory store.

use super::*;

/// A snapshot with etcd's trailer, as a file.
fn snapshot_file(dir: &Path) -> (std::path::PathBuf, Manifest) {
    use sha2::{Digest as _, Sha256};
    let db: Vec<u8> = (0..(PART_SIZE + 512 * 7))
        .map(|i| (i % 253) as u8)
        .collect();
    let digest = Sha256::digest(&db);
    let mut file = db.clone();
    file.extend_from_slice(&digest);
    let path = dir.join("prod-20261129T000000.000Z-rev7.db");
    std::fs::write(&path, &file).unwrap();
    let manifest = Manifest {
        cluster: "prod".into(),
        member: crate::report::MemberRef {
            id: etcdmedic_cluster::model::MemberId(1),
            name: "m1".into(),
            endpoint: "http://127.0.0.1:1".into(),
        },
        revision: 7,
        etcd_version: "3.5.1".into(),
        size_bytes: file.len() as u64,
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        file: "prod-20261129T000000.000Z-rev7.db".into(),
        created_at: std::time::SystemTime::now(),
        etcdmedic_version: "test".into(),
        hash_kv: None,
        restore_drill: None,
        compression: None,
        encryption: None,
        cluster_id: None,
        members: Vec::new(),
    };
    (path, manifest)
}

/// Cluster prod's backups under `backups/` in `store`, as destination `offsite`.
fn bucket_on(store: Arc<dyn ObjectStore>) -> Bucket {
    Bucket {
        store,
        dir: Key::from_iter(["backups", "prod"]),
        shown_as: "s3://b".into(),
        destination: "offsite".into(),
        cluster: "prod".into(),
        locker: None,
    }
}

/// object_store's in-memory store numbers its ETags: not the multipart md5, so the
/// upload is confirmed by reading it back.
#[tokio::test]
async fn a_store_with_other_etags_is_read_back_and_the_manifest_goes_up_last() {
    let dir = tempfile::tempdir().unwrap();
    let (db, manifest) = snapshot_file(dir.path());
    let bucket = bucket_on(Arc::new(object_store::memory::InMemory::new()));
    let stop = CancellationToken::new();
    let verified_by = bucket
        .upload(&db, &manifest, &Sealing::default(), &stop)
        .await
        .unwrap();
    assert_eq!(verified_by, "read_back");
    let key = bucket.dir.clone().join(manifest.file.as_str());
    let stored = bucket.store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(stored.as_ref(), std::fs::read(&db).unwrap().as_slice());
    let json = bucket.store.get(&manifest_key(&key)).await.unwrap();
    let back: Manifest = serde_json::from_slice(&json.bytes().await.unwrap()).unwrap();
    assert_eq!(back.sha256, manifest.sha256);
    let kept = crate::config::Kept {
        keep: 1,
        max_age: None,
    };
    assert!(
        bucket.retention(kept).await.unwrap().is_empty(),
        "the only backup stays"
    );
}

/// A store whose objects cannot be removed (a retention or immutability policy, Object
/// Lock): everything else is the in-memory store's.
#[derive(Debug, Default)]
struct Immutable(object_store::memory::InMemory);

impl std::fmt::Display for Immutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Immutable")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Immutable {
    async fn put_opts(
        &self,
        location: &Key,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Key,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Key,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Key>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Key>> {
        use futures::StreamExt;
        locations
            .map(|location| {
                Err(object_store::Error::PermissionDenied {
                    path: location.map(|l| l.to_string()).unwrap_or_default(),
                    source: "the object is under a retention policy".into(),
                })
            })
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&Key>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Key>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Key,
        to: &Key,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

/// An expired backup the store will not remove is kept and skipped: the retention does not
/// fail (which would report every new backup as missing that destination), and removes it
/// once the store allows it.
#[tokio::test]
async fn an_expired_backup_the_store_refuses_to_remove_is_kept_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, manifest) = snapshot_file(dir.path());
    let bucket = bucket_on(Arc::new(Immutable::default()));
    let stop = CancellationToken::new();
    bucket
        .upload(&db, &manifest, &Sealing::default(), &stop)
        .await
        .unwrap();
    let mut newer = manifest.clone();
    newer.file = "prod-20261130T000000.000Z-rev9.db".into();
    let newer_db = dir.path().join(&newer.file);
    std::fs::copy(&db, &newer_db).unwrap();
    bucket
        .upload(&newer_db, &newer, &Sealing::default(), &stop)
        .await
        .unwrap();

    let kept = crate::config::Kept {
        keep: 1,
        max_age: None,
    };
    let removed = bucket
        .retention(kept)
        .await
        .expect("a refusal is not a failure");
    assert!(removed.is_empty(), "{removed:?}");
    assert_eq!(
        bucket.listed().await.unwrap().len(),
        2,
        "both backups are still there"
    );
}

/// An encrypted copy is read back as the bytes sent (nobody here can decrypt it), and with
/// the drill's identity it is also decrypted as it is sent; either way no byte of the
/// database is in the bucket and the manifest names the recipients.
#[tokio::test]
async fn an_encrypted_copy_is_checked_as_sent_and_decrypted_when_an_identity_is_at_hand() {
    let dir = tempfile::tempdir().unwrap();
    let (db, plain) = snapshot_file(dir.path());
    let identities = crate::age_keys::Identities::generated();
    for verify in [false, true] {
        let sealing = Sealing::encrypting_to(&identities, true, verify);
        let mut manifest = plain.clone();
        sealing.record(&mut manifest);
        manifest.file = sealing.form.stored_name(&plain.file);
        assert_eq!(manifest.file, "prod-20261129T000000.000Z-rev7.db.zst.age");
        let bucket = bucket_on(Arc::new(object_store::memory::InMemory::new()));
        let stop = CancellationToken::new();
        let verified_by = bucket
            .upload(&db, &manifest, &sealing, &stop)
            .await
            .unwrap();
        assert_eq!(verified_by, "read_back");
        let key = bucket.dir.clone().join(manifest.file.as_str());
        let stored = bucket.store.get(&key).await.unwrap().bytes().await.unwrap();
        let database = std::fs::read(&db).unwrap();
        assert!(stored.starts_with(b"age-encryption.org/v1\n"));
        assert!(!stored
            .windows(64)
            .any(|w| database.windows(64).take(4096).any(|d| d == w)));
        let json = bucket.store.get(&manifest_key(&key)).await.unwrap();
        let back: Manifest = serde_json::from_slice(&json.bytes().await.unwrap()).unwrap();
        assert_eq!(back.encryption.unwrap().recipients, identities.public());
        let to = dir.path().join("downloaded");
        let err = bucket
            .download(&manifest, None, &to, &stop)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--identity FILE"), "{err}");
        let sha256 = bucket
            .download(&manifest, Some(&identities), &to, &stop)
            .await
            .unwrap();
        assert_eq!(sha256, manifest.sha256);
    }
}
