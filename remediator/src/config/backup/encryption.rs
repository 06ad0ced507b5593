//! `backup.encryption` and `backup.restore_drill.identity_file`: the recipients are checked
//! as age public keys when the configuration loads, and the identity file is read (it must be
//! 0600 and hold an identity of one of the recipients), so a drill that could never decrypt
//! its backups is a configuration error, not a surprise on the day of a restore.

use std::path::Path;

use super::{setting, BackupSettings};
use crate::age_keys::{self, Identities, KeyError};
use crate::config::file::BackupFile;
use etcdmedic_cluster::tls;
use etcdmedic_cluster::ConfigProblems;

pub(super) fn resolve(
    own: Option<&BackupFile>,
    defaults: Option<&BackupFile>,
    own_key: &str,
    base: &Path,
    settings: &mut BackupSettings,
    problems: &mut ConfigProblems,
) {
    if let Some((encryption, key)) = setting(own, defaults, own_key, "encryption", |b| {
        b.encryption.clone()
    }) {
        let key = format!("{key}.recipients");
        match age_keys::recipients(&encryption.recipients) {
            Ok(_) => settings.encryption = Some(encryption.recipients.clone()),
            Err(KeyError::NoRecipient) => problems.push(key, KeyError::NoRecipient.to_string()),
            Err(err) => {
                let index = encryption
                    .recipients
                    .iter()
                    .position(|r| age_keys::recipients(std::slice::from_ref(r)).is_err())
                    .unwrap_or_default();
                problems.push(format!("{key}[{index}]"), err.to_string());
            }
        }
    }
    let identity_file = setting(own, defaults, own_key, "restore_drill.identity_file", |b| {
        b.restore_drill.as_ref()?.identity_file.clone()
    });
    let (Some((file, key)), Some(drill)) = (identity_file, settings.restore_drill.as_mut()) else {
        return;
    };
    let path = tls::resolve(base, &file);
    match Identities::read(&path) {
        Err(err) => problems.push(key, err.to_string()),
        Ok(identities) => {
            let public = identities.public();
            let recipients = settings.encryption.as_deref().unwrap_or_default();
            if !recipients.is_empty() && !public.iter().any(|p| recipients.contains(p)) {
                problems.push(
                    key,
                    format!(
                        "none of its identities ({}) is among backup.encryption.recipients: the \
                         drill could not decrypt a single backup",
                        public.join(", ")
                    ),
                );
            } else {
                drill.identity_file = Some(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RemediatorConfig as Config;
    use age::secrecy::ExposeSecret;
    use age::x25519::Identity;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn config(dir: &Path, block: &str) -> Result<Config, String> {
        let yaml = format!(
            "backup:\n  destinations: [{{name: d, kind: local, path: b}}]\n{block}clusters:\n  \
             - name: a\n    endpoints: [http://127.0.0.1:2379]\n"
        );
        Config::from_yaml(&yaml, &dir.join("c.yaml")).map_err(|err| format!("{err:#}"))
    }

    fn identity_file(dir: &Path, identity: &Identity, mode: u32) {
        let path = dir.join("backup.key");
        std::fs::write(&path, format!("{}\n", identity.to_string().expose_secret())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn recipients_and_the_drill_identity_are_checked_when_the_configuration_loads() {
        let dir = tempfile::tempdir().unwrap();
        for binary in ["etcd", "etcdutl"] {
            let path = dir.path().join(binary);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let ours = Identity::generate();
        let public = ours.to_public().to_string();
        identity_file(dir.path(), &ours, 0o600);
        let block = |recipient: &str| {
            format!(
                "  encryption: {{recipients: [\"{recipient}\"]}}\n  restore_drill: {{bin_dir: \
                 {}, identity_file: backup.key}}\n",
                dir.path().display()
            )
        };
        let loaded = config(dir.path(), &block(&public)).unwrap();
        let backup = &loaded.cluster("a").unwrap().backup;
        assert_eq!(backup.encryption, Some(vec![public.clone()]));
        let drill = backup.restore_drill.as_ref().unwrap();
        assert_eq!(drill.identity_file, Some(dir.path().join("backup.key")));

        let err = config(dir.path(), &block("age1nope")).unwrap_err();
        assert!(err.contains("backup.encryption.recipients[0]"), "{err}");
        let other = Identity::generate().to_public().to_string();
        let err = config(dir.path(), &block(&other)).unwrap_err();
        assert!(
            err.contains("backup.restore_drill.identity_file") && err.contains(&public),
            "{err}"
        );
        identity_file(dir.path(), &ours, 0o644);
        let err = config(dir.path(), &block(&public)).unwrap_err();
        assert!(err.contains("must be 0600"), "{err}");
        let err = config(
            dir.path(),
            "  encryption: {recipients: []}\n  restore_drill: {enabled: false}\n",
        )
        .unwrap_err();
        assert!(err.contains("no recipients"), "{err}");
    }
}
