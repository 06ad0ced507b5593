use super::*;
use crate::age_keys::Identities;
use sha2::{Digest, Sha256};

/// A database of whole pages, mostly zeros like etcd's free pages, with its trailer; a
/// "value" written in it to look for in the stored copies.
fn snapshot() -> (Vec<u8>, String) {
    let mut db = vec![0u8; 4096 * 64];
    for (i, byte) in db.iter_mut().enumerate().step_by(7) {
        *byte = (i % 251) as u8;
    }
    db[8192..8192 + VALUE.len()].copy_from_slice(VALUE);
    let digest = Sha256::digest(&db);
    let sha = hex(&digest);
    db.extend_from_slice(&digest);
    (db, sha)
}

const VALUE: &[u8] = b"the-secret-value-of-a-kubernetes-secret";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every stored form: (compressed, encrypted).
fn forms() -> [Form; 4] {
    [(false, false), (true, false), (false, true), (true, true)].map(|(compressed, encrypted)| {
        Form {
            compressed,
            encrypted,
        }
    })
}

/// `db` encoded in `chunk`-sized writes into `form`.
fn encode(
    db: &[u8],
    chunk: usize,
    form: Form,
    keys: &Identities,
    verify: bool,
) -> (Vec<u8>, Encoded) {
    let recipients: Vec<_> = match form.encrypted {
        true => crate::age_keys::recipients(&keys.public()).unwrap(),
        false => vec![],
    };
    let mut encoder =
        Encoder::new(form.compressed, &recipients, verify.then_some(keys), true).unwrap();
    let mut stored = Vec::new();
    for piece in db.chunks(chunk) {
        stored.extend_from_slice(encoder.feed(piece).unwrap());
    }
    let (rest, encoded) = encoder.finish().unwrap();
    stored.extend_from_slice(&rest);
    (stored, encoded)
}

fn check(
    stored: &[u8],
    chunk: usize,
    form: Form,
    keys: Option<&Identities>,
) -> Result<(u64, String), StoredError> {
    let mut check = StoredCheck::new(form, keys)?;
    for piece in stored.chunks(chunk) {
        check.update(piece)?;
    }
    check.finish()
}

#[test]
fn every_form_checks_out_like_the_snapshot_whatever_the_chunks() {
    let (db, sha) = snapshot();
    let keys = Identities::generated();
    for form in forms() {
        for chunk in [1000, 32 * 1024, db.len()] {
            let (stored, encoded) = encode(&db, chunk, form, &keys, true);
            if form.compressed {
                assert!(
                    stored.len() < db.len() / 2,
                    "{form:?} compressed: {}",
                    stored.len()
                );
            }
            if form.encrypted {
                assert!(
                    !contains(&stored, VALUE),
                    "{form:?}: the value is in the clear"
                );
                assert_eq!(encoded.produced_sha256, Some(hex(&Sha256::digest(&stored))));
                assert_eq!(
                    encoded.decoded,
                    Some((db.len() as u64, sha.clone())),
                    "verified as produced"
                );
            } else {
                assert_eq!(
                    (encoded.produced_sha256.as_deref(), encoded.decoded.as_ref()),
                    (None, None)
                );
            }
            let checked = check(&stored, 777, form, Some(&keys)).unwrap();
            assert_eq!(
                checked,
                (db.len() as u64, sha.clone()),
                "{form:?} in writes of {chunk}"
            );
        }
    }
}

#[test]
fn a_cut_copy_or_another_key_fails_its_check_and_no_key_is_named() {
    let (db, _) = snapshot();
    let keys = Identities::generated();
    for form in forms() {
        let (mut stored, _) = encode(&db, 4096, form, &keys, false);
        stored.truncate(stored.len() - 10);
        assert!(
            check(&stored, 4096, form, Some(&keys)).is_err(),
            "{form:?}: a cut copy fails"
        );
    }
    let encrypted = Form {
        compressed: true,
        encrypted: true,
    };
    let (stored, _) = encode(&db, 4096, encrypted, &keys, false);
    let other = Identities::generated();
    let err = check(&stored, 4096, encrypted, Some(&other)).unwrap_err();
    assert!(matches!(err, StoredError::Decrypt(_)), "{err}");
    let err = check(&stored, 4096, encrypted, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--identity FILE"), "{err}");
}

#[test]
fn files_encode_decode_and_check_in_every_form() {
    let dir = tempfile::tempdir().unwrap();
    let (db, sha) = snapshot();
    let keys = Identities::generated();
    let plain = dir.path().join("s.db");
    std::fs::write(&plain, &db).unwrap();
    for form in forms() {
        let stored = dir.path().join(form.stored_name("copy.db"));
        let recipients = match form.encrypted {
            true => crate::age_keys::recipients(&keys.public()).unwrap(),
            false => vec![],
        };
        let encoder = Encoder::new(form.compressed, &recipients, None, true).unwrap();
        let encoded = encode_file(&plain, &stored, encoder).unwrap();
        if form.encrypted {
            assert_eq!(encoded.produced_sha256, Some(sha256_file(&stored).unwrap()));
        }
        assert_eq!(
            check_file(&stored, form, Some(&keys)).unwrap(),
            sha,
            "{form:?}"
        );
        let back = dir.path().join("back.db");
        decode_file(&stored, &back, form, Some(&keys)).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), db, "{form:?}");
    }
    assert_eq!(
        Form {
            compressed: true,
            encrypted: true
        }
        .stored_name("a.db"),
        "a.db.zst.age"
    );
}
