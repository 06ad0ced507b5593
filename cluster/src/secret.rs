use std::fmt;

/// A credential read from a file or the environment. It prints as `<secret>` in `Debug` and
/// `Display`, so it cannot reach a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it (the etcd Authenticate call).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<secret>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "<secret> <secret>");
        assert_eq!(secret.expose(), "hunter2");
    }
}

/// Says so in the log when the secret file at `path` (named by `key` in the configuration)
/// can be read by every user on this host. Only a warning: a group that may read it (a
/// Kubernetes `fsGroup` mounts Secrets 0440) is a choice, and the service still starts.
pub fn warn_if_world_readable(path: &std::path::Path, key: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o777;
    if world_readable(mode) {
        tracing::warn!(
            path = %path.display(),
            key,
            mode = format!("{mode:04o}"),
            "a secret file every user on this host can read: chmod o-r (0600, or 0640 for a group such as an fsGroup)"
        );
    }
}

fn world_readable(mode: u32) -> bool {
    mode & 0o004 != 0
}

#[cfg(test)]
mod readable_tests {
    use super::world_readable;

    #[test]
    fn only_a_file_others_may_read_is_world_readable() {
        for mode in [0o600, 0o640, 0o440, 0o400, 0o660] {
            assert!(!world_readable(mode), "{mode:o}");
        }
        for mode in [0o644, 0o604, 0o444, 0o666] {
            assert!(world_readable(mode), "{mode:o}");
        }
    }
}
