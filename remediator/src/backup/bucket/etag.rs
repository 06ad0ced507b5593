//! The ETag S3 gives a multipart object (the md5 of its parts' md5s, then `-<parts>`),
//! computed from what was sent: when the store answers the same, it received exactly that.

use md5::{Digest, Md5};

use super::PART_SIZE;

/// The ETag S3 gives a multipart object: the md5 of the parts' md5s, then `-<parts>`.
#[derive(Default)]
pub(super) struct PartDigests {
    current: Md5,
    in_part: usize,
    digests: Vec<u8>,
    parts: usize,
}

impl PartDigests {
    pub(super) fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (PART_SIZE - self.in_part).min(bytes.len());
            self.current.update(&bytes[..take]);
            self.in_part += take;
            bytes = &bytes[take..];
            if self.in_part == PART_SIZE {
                self.close_part();
            }
        }
    }

    fn close_part(&mut self) {
        let digest = std::mem::take(&mut self.current).finalize();
        self.digests.extend_from_slice(&digest);
        self.parts += 1;
        self.in_part = 0;
    }

    pub(super) fn etag(mut self) -> String {
        if self.in_part > 0 || self.parts == 0 {
            self.close_part();
        }
        let digest = Md5::digest(&self.digests);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{}", self.parts)
    }
}

/// The multipart ETag computed from what was sent, and the one the store answered.
pub(super) struct Etags {
    pub(super) expected: String,
    pub(super) stored: Option<String>,
}

impl Etags {
    pub(super) fn agree(&self) -> bool {
        self.stored
            .as_deref()
            .is_some_and(|stored| stored.trim_matches('"') == self.expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from Python's hashlib, computed the way S3 documents the multipart ETag.
    #[test]
    fn the_multipart_etag_is_the_md5_of_the_parts_md5s_whatever_the_writes() {
        let data: Vec<u8> = (0..PART_SIZE + 1000).map(|i| (i % 251) as u8).collect();
        for write in [1000, 4096, 1 << 20, PART_SIZE + 1000] {
            let mut parts = PartDigests::default();
            for piece in data.chunks(write) {
                parts.update(piece);
            }
            assert_eq!(
                parts.etag(),
                "ca897bab563f4accaabce1f28f9219a3-2",
                "writes of {write}"
            );
        }
        let mut small = PartDigests::default();
        small.update(b"hello");
        assert_eq!(small.etag(), "62109206880d38a4010a98e11243924a-1");
        let agree = Etags {
            expected: small_etag(),
            stored: Some(format!("\"{}\"", small_etag())),
        };
        assert!(agree.agree());
        let kms = Etags {
            expected: small_etag(),
            stored: Some("\"5d41402abc4b2a76b9719d911017c592\"".into()),
        };
        assert!(
            !kms.agree(),
            "a store whose ETag is not md5-of-md5s is read back"
        );
    }

    fn small_etag() -> String {
        "62109206880d38a4010a98e11243924a-1".to_string()
    }
}
