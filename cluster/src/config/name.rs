//! Cluster names. A name becomes a Prometheus label value, a directory and file name under
//! `snapshot_dir`, and a URL path segment of the remediator's API, so it is checked once,
//! when the configuration loads, and only a checked name can be used for any of those.

use std::fmt;
use std::ops::Deref;

use serde::{Serialize, Serializer};

/// The longest name accepted: a Kubernetes label value's limit, far from any file-name limit.
pub const MAX_NAME_LEN: usize = 63;

/// A name [`ClusterName::new`] refused; it says what a name may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a cluster name: use letters, digits, '.', '_' and '-', starting with a letter \
     or digit, at most {MAX_NAME_LEN} characters ([A-Za-z0-9][A-Za-z0-9._-]*); the name becomes \
     a label, a directory under snapshot_dir and a URL path segment"
)]
pub struct BadName(pub String);

/// A cluster name that matches `[A-Za-z0-9][A-Za-z0-9._-]*` and is at most 63 characters:
/// safe as a path component (never `.`, `..`, empty or containing `/`), a label value and a
/// URL path segment without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName(String);

impl ClusterName {
    /// Checks `raw`, or says what a name may be.
    pub fn new(raw: &str) -> Result<Self, BadName> {
        let mut chars = raw.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if first_ok && rest_ok && raw.len() <= MAX_NAME_LEN {
            Ok(ClusterName(raw.to_string()))
        } else {
            Err(BadName(raw.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for ClusterName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ClusterName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for ClusterName {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl PartialEq<str> for ClusterName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ClusterName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ClusterName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_a_directory_or_need_escaping_are_refused() {
        for bad in [
            "",
            "..",
            ".",
            "../../etc",
            "/etc",
            "team/prod",
            "a b",
            "-a",
            ".hidden",
            "a\\b",
            "é",
            "a%2Fb",
            "a\nb",
        ] {
            let err = ClusterName::new(bad).unwrap_err();
            assert!(
                err.to_string().contains("[A-Za-z0-9][A-Za-z0-9._-]*"),
                "{bad:?}: {err}"
            );
        }
        assert!(ClusterName::new(&"a".repeat(64)).is_err());
        for good in ["prod-a", "eu.west_1", "0", "A.b-c_d", &"a".repeat(63)] {
            assert_eq!(ClusterName::new(good).unwrap().as_str(), good);
        }
    }
}
