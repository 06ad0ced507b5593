use std::fmt;
use std::path::PathBuf;

/// Errors of the `etcdmedic-cluster` library.
///
/// Per-member probe failures are not errors of the library: they are data
/// ([`crate::ProbeError`] inside a [`crate::MemberStatus`]), because one dead member must
/// never hide the others.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reason is in the message (not a `source`), so a chain printed with `{:#}` says
    /// it once.
    #[error("config {path}: {reason}", path = .path.display())]
    ConfigRead {
        path: PathBuf,
        reason: std::io::Error,
    },

    #[error("config {path}: {message}", path = .path.display())]
    ConfigSyntax { path: PathBuf, message: String },

    #[error("config {origin}: {problems}")]
    ConfigInvalid {
        origin: String,
        problems: ConfigProblems,
    },

    #[error("cluster {cluster}: TLS: {message}")]
    Tls { cluster: String, message: String },

    #[error("cluster {cluster}: endpoint {endpoint}: {message}")]
    Endpoint {
        cluster: String,
        endpoint: String,
        message: String,
    },
}

impl Error {
    /// A short, stable name for metric labels and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ConfigRead { .. } => "config_read",
            Error::ConfigSyntax { .. } => "config_syntax",
            Error::ConfigInvalid { .. } => "config_invalid",
            Error::Tls { .. } => "tls",
            Error::Endpoint { .. } => "endpoint",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One thing wrong with a configuration, at a key path such as `clusters[1].tls.ca_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

/// Every problem found in one configuration: users fix them all in one go rather than
/// discovering them one restart at a time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigProblems(pub Vec<ConfigProblem>);

impl ConfigProblems {
    /// Records a problem once: a bad top-level default is seen by every cluster.
    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let problem = ConfigProblem {
            key: key.into(),
            message: message.into(),
        };
        if !self.0.contains(&problem) {
            self.0.push(problem);
        }
    }

    /// Records each of `other`'s problems that is not already recorded.
    pub fn extend(&mut self, other: ConfigProblems) {
        for problem in other.0 {
            self.push(problem.key, problem.message);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigProblem> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", problem.key, problem.message)?;
        }
        Ok(())
    }
}
