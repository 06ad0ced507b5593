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
        cluster_id: None,
        members: Vec::new(),
    };
    (path, manifest)
}

/// object_store's in-memory store numbers its ETags: not the multipart md5, so the
/// upload is confirmed by reading it back.
#[tokio::test]
async fn a_store_with_other_etags_is_read_back_and_the_manifest_goes_up_last() {
    let dir = tempfile::tempdir().unwrap();
    let (db, manifest) = snapshot_file(dir.path());
    let bucket = Bucket {
        store: Arc::new(object_store::memory::InMemory::new()),
        dir: Key::from_iter(["backups", "prod"]),
        shown_as: "s3://b".into(),
        destination: "offsite".into(),
        cluster: "prod".into(),
    };
    let stop = CancellationToken::new();
    let verified_by = bucket.upload(&db, &manifest, &stop).await.unwrap();
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
