//! How one backup's copies are written: compressed or not, encrypted to the configured
//! recipients or not, and, when the drill holds an identity, decrypted again as they are
//! written so that a copy counts only once it is known to decrypt.

use age::x25519::Recipient;

use super::stored::{Encoded, Encoder, Form, StoredError};
use super::{BackupError, Encryption, Manifest};
use crate::age_keys::{self, Identities};
use crate::config::{BackupSettings, Compression};

#[derive(Clone, Default)]
pub(crate) struct Sealing {
    pub(crate) form: Form,
    recipients: Vec<Recipient>,
    /// The drill's identities: what checks an encrypted copy as it is written, and drills it.
    pub(crate) identities: Option<Identities>,
}

impl Sealing {
    /// The sealing `backup` asks for; the identity file is read now, so a backup that could
    /// not be checked fails before it starts.
    pub(crate) fn of(backup: &BackupSettings) -> Result<Sealing, BackupError> {
        let config = |err: age_keys::KeyError| BackupError::Config(err.to_string());
        let recipients = match &backup.encryption {
            Some(keys) => age_keys::recipients(keys).map_err(config)?,
            None => Vec::new(),
        };
        let identities = match backup
            .restore_drill
            .as_ref()
            .and_then(|d| d.identity_file.as_deref())
        {
            Some(path) => Some(Identities::read(path).map_err(config)?),
            None => None,
        };
        Ok(Sealing {
            form: Form {
                compressed: backup.compression == Compression::Zstd,
                encrypted: !recipients.is_empty(),
            },
            recipients,
            identities,
        })
    }

    /// Copies encrypted to `identities`' public keys (compressed first when asked), checked
    /// by decrypting them as they are written when `verify`.
    #[cfg(test)]
    pub(crate) fn encrypting_to(
        identities: &Identities,
        compressed: bool,
        verify: bool,
    ) -> Sealing {
        Sealing {
            form: Form {
                compressed,
                encrypted: true,
            },
            recipients: age_keys::recipients(&identities.public()).unwrap_or_default(),
            identities: verify.then(|| identities.clone()),
        }
    }

    /// A new encoder into this form (each copy is encrypted anew), keeping the sha256 of
    /// what it produces when `hash_produced` (a file's check; a bucket's is its ETag).
    pub(crate) fn encoder(&self, hash_produced: bool) -> Result<Encoder, StoredError> {
        Encoder::new(
            self.form.compressed,
            &self.recipients,
            self.identities.as_ref(),
            hash_produced,
        )
    }

    /// What the manifest of a backup of this form records.
    pub(crate) fn record(&self, manifest: &mut Manifest) {
        manifest.compression = self.form.compressed.then(|| "zstd".to_string());
        manifest.encryption = self.form.encrypted.then(|| {
            let recipients: Vec<String> = self.recipients.iter().map(|r| r.to_string()).collect();
            Encryption::age(&recipients)
        });
    }
}

/// Whether what an encoder produced is a copy of the backup `manifest` describes, as far as
/// it can be known here: decrypted again to the database when there was an identity.
pub(crate) fn produced_matches(encoded: &Encoded, manifest: &Manifest) -> Result<(), NotACopy> {
    match &encoded.decoded {
        Some((size, sha256))
            if (*size, sha256.as_str()) != (manifest.size_bytes, manifest.sha256.as_str()) =>
        {
            Err(NotACopy {
                size: *size,
                sha256: sha256.clone(),
                expected_size: manifest.size_bytes,
                expected_sha256: manifest.sha256.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// An encrypted copy that does not decrypt to the snapshot it was made from.
#[derive(Debug, thiserror::Error)]
#[error(
    "the encrypted copy decrypts to {size} bytes with sha256 {sha256}, not the snapshot's \
     {expected_size} bytes with sha256 {expected_sha256}"
)]
pub(crate) struct NotACopy {
    size: u64,
    sha256: String,
    expected_size: u64,
    expected_sha256: String,
}
