//! The age keys of encrypted backups: recipients (X25519 public keys, `age1…`) in the
//! configuration, which is all a remediator needs to write a backup, and identity files
//! (`AGE-SECRET-KEY-1…`, as `age-keygen` writes them), which only the drill and `restore`
//! read. A remediator without an identity cannot read the backups it wrote.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use age::x25519::{Identity, Recipient};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{key:?} is not an age X25519 public key (age1…, as age-keygen prints): {why}")]
    Recipient { key: String, why: &'static str },
    #[error("no recipients: an encrypted backup nobody can decrypt would be no backup")]
    NoRecipient,
    #[error("{path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: not an age identity (AGE-SECRET-KEY-1…, as age-keygen writes): {why}", path = .path.display())]
    Identity {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
    #[error("{path} holds no age identity", path = .path.display())]
    NoIdentity { path: PathBuf },
    #[error("{path} can be read by other users (mode {mode:o}); an identity file must be 0600 or 0400", path = .path.display())]
    Readable { path: PathBuf, mode: u32 },
}

/// Parses the recipients of `backup.encryption.recipients`.
pub(crate) fn recipients(keys: &[String]) -> Result<Vec<Recipient>, KeyError> {
    if keys.is_empty() {
        return Err(KeyError::NoRecipient);
    }
    keys.iter()
        .map(|key| {
            key.trim().parse().map_err(|why| KeyError::Recipient {
                key: key.clone(),
                why,
            })
        })
        .collect()
}

/// The identities of an identity file: the keys that decrypt a backup.
#[derive(Clone)]
pub(crate) struct Identities(Arc<Vec<Identity>>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets: only whose they are.
        f.debug_list().entries(self.public()).finish()
    }
}

impl Identities {
    /// Reads `path`: one identity per line, `#` comments and blank lines allowed (what
    /// `age-keygen -o` writes). Refused when other users can read it.
    pub(crate) fn read(path: &Path) -> Result<Identities, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let read = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Readable {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let mut identities = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            identities.push(line.parse().map_err(|why| KeyError::Identity {
                path: path.to_path_buf(),
                line: index + 1,
                why,
            })?);
        }
        if identities.is_empty() {
            return Err(KeyError::NoIdentity {
                path: path.to_path_buf(),
            });
        }
        Ok(Identities(Arc::new(identities)))
    }

    /// The public keys (`age1…`) of these identities.
    pub(crate) fn public(&self) -> Vec<String> {
        self.0.iter().map(|i| i.to_public().to_string()).collect()
    }

    pub(crate) fn each(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0.iter().map(|identity| identity as &dyn age::Identity)
    }

    #[cfg(test)]
    pub(crate) fn generated() -> Identities {
        Identities(Arc::new(vec![Identity::generate()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("backup.key");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn an_identity_file_as_age_keygen_writes_it_is_read_and_a_readable_or_bad_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate();
        let public = identity.to_public().to_string();
        let text = format!(
            "# created: 2026-12-05T14:00:00Z\n# public key: {public}\n{}\n",
            identity.to_string().expose_secret()
        );
        let path = write(dir.path(), &text, 0o600);
        assert_eq!(
            Identities::read(&path).unwrap().public(),
            vec![public.clone()]
        );

        let path = write(dir.path(), &text, 0o644);
        let err = Identities::read(&path).unwrap_err().to_string();
        assert!(err.contains("mode 644") && err.contains("0600"), "{err}");

        let path = write(dir.path(), &format!("{public}\n"), 0o600);
        let err = Identities::read(&path).unwrap_err().to_string();
        assert!(err.contains("line 1: not an age identity"), "{err}");
        let path = write(dir.path(), "# nothing\n", 0o400);
        let err = Identities::read(&path).unwrap_err().to_string();
        assert!(err.contains("holds no age identity"), "{err}");
    }

    #[test]
    fn recipients_are_public_keys_and_at_least_one() {
        let public = Identity::generate().to_public().to_string();
        assert_eq!(recipients(std::slice::from_ref(&public)).unwrap().len(), 1);
        let err = recipients(&["AGE-SECRET-KEY-1XYZ".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an age X25519 public key"), "{err}");
        assert!(matches!(recipients(&[]), Err(KeyError::NoRecipient)));
    }
}
