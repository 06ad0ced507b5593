//! `remediator.auth`: who may do what. Three roles, each with its own credential: `webhook`
//! (Alertmanager: may deliver alerts), `operator` (may pause, resume, start runs and backups,
//! and read) and `viewer` (may read: the pages and the API's GET endpoints). One credential
//! for all three is still accepted (the top-level `bearer_token_file` or `basic_auth`), and
//! `auth: none` accepts every request, said on purpose. Without `auth:` the service starts
//! only on a loopback address: anyone who reaches a wider one could pause remediation.

use std::net::SocketAddr;
use std::path::Path;

use etcdmedic_cluster::{ConfigProblems, Secret};

use super::read_secret;
use crate::config::file::{AuthFile, CredentialFile, CredentialsFile};

/// A role's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

/// What requests must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAuth {
    /// Every request is accepted: `auth: none`, or no `auth:` on a loopback listener.
    Open { explicit: bool },
    /// Each role's credential; a role without one is nobody's (an operator still reads).
    Roles {
        webhook: Option<Credential>,
        operator: Option<Credential>,
        viewer: Option<Credential>,
    },
}

impl ServiceAuth {
    /// One credential for every role.
    pub fn shared(credential: Credential) -> ServiceAuth {
        ServiceAuth::Roles {
            webhook: Some(credential.clone()),
            operator: Some(credential.clone()),
            viewer: Some(credential),
        }
    }
}

/// The roles as their keys name them, for messages.
pub const ROLES: [&str; 3] = ["webhook", "operator", "viewer"];

pub(super) fn resolve(
    auth: Option<&AuthFile>,
    listen: SocketAddr,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> ServiceAuth {
    match auth {
        Some(AuthFile::None) => ServiceAuth::Open { explicit: true },
        Some(AuthFile::Credentials(file)) => resolve_credentials(file, base, key, problems),
        None if listen.ip().is_loopback() => ServiceAuth::Open { explicit: false },
        None => {
            problems.push(
                key,
                format!(
                    "is required when listening on {listen} (not a loopback address): give \
                     webhook, operator and viewer credentials, or write `auth: none` to \
                     accept any request from anyone who reaches the port"
                ),
            );
            ServiceAuth::Open { explicit: false }
        }
    }
}

fn resolve_credentials(
    file: &CredentialsFile,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> ServiceAuth {
    let shared = file.bearer_token_file.is_some() || file.basic_auth.is_some();
    let roles = [&file.webhook, &file.operator, &file.viewer];
    let per_role = roles.iter().any(|role| role.is_some());
    match (shared, per_role) {
        (true, true) => {
            problems.push(
                key,
                "set either one credential for every role (bearer_token_file or basic_auth) \
                 or one per role (webhook, operator, viewer), not both",
            );
            ServiceAuth::Open { explicit: false }
        }
        (true, false) => {
            let one = CredentialFile {
                bearer_token_file: file.bearer_token_file.clone(),
                basic_auth: file.basic_auth.clone(),
            };
            match resolve_one(&one, base, key, problems) {
                Some(credential) => ServiceAuth::shared(credential),
                None => ServiceAuth::Open { explicit: false },
            }
        }
        (false, true) => {
            let [webhook, operator, viewer] = std::array::from_fn(|index| {
                roles[index].as_ref().and_then(|role| {
                    resolve_one(role, base, &format!("{key}.{}", ROLES[index]), problems)
                })
            });
            refuse_shared_credentials([&webhook, &operator, &viewer], key, problems);
            ServiceAuth::Roles {
                webhook,
                operator,
                viewer,
            }
        }
        (false, false) => {
            problems.push(
                key,
                "needs credentials: webhook, operator and viewer (each a bearer_token_file or \
                 basic_auth), or one bearer_token_file or basic_auth for every role; write \
                 `auth: none` to accept any request",
            );
            ServiceAuth::Open { explicit: false }
        }
    }
}

/// Roles written one by one are meant apart: the same secret in two of them would let
/// Alertmanager's token pause remediation, which is what the roles are for.
fn refuse_shared_credentials(
    credentials: [&Option<Credential>; 3],
    key: &str,
    problems: &mut ConfigProblems,
) {
    for later in 1..credentials.len() {
        for earlier in 0..later {
            let (Some(a), Some(b)) = (credentials[earlier], credentials[later]) else {
                continue;
            };
            if same_secret(a, b) {
                problems.push(
                    format!("{key}.{}", ROLES[later]),
                    format!(
                        "is the same secret as {key}.{}: give each role its own, or use one \
                         credential for every role on purpose (bearer_token_file or \
                         basic_auth directly under {key})",
                        ROLES[earlier]
                    ),
                );
            }
        }
    }
}

fn same_secret(a: &Credential, b: &Credential) -> bool {
    match (a, b) {
        (Credential::Bearer(a), Credential::Bearer(b)) => a.expose() == b.expose(),
        (
            Credential::Basic { username, password },
            Credential::Basic {
                username: other,
                password: other_password,
            },
        ) => username == other && password.expose() == other_password.expose(),
        _ => false,
    }
}

fn resolve_one(
    file: &CredentialFile,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<Credential> {
    match (&file.bearer_token_file, &file.basic_auth) {
        (Some(path), None) => {
            read_secret(base, path, &format!("{key}.bearer_token_file"), problems)
                .map(Credential::Bearer)
        }
        (None, Some(basic)) => {
            if basic.username.is_empty() || basic.username.contains(':') {
                problems.push(
                    format!("{key}.basic_auth.username"),
                    "must be non-empty and without ':'",
                );
            }
            let password = read_secret(
                base,
                &basic.password_file,
                &format!("{key}.basic_auth.password_file"),
                problems,
            )?;
            Some(Credential::Basic {
                username: basic.username.clone(),
                password,
            })
        }
        (Some(_), Some(_)) => {
            problems.push(key, "set one of bearer_token_file or basic_auth, not both");
            None
        }
        (None, None) => {
            problems.push(key, "needs bearer_token_file or basic_auth");
            None
        }
    }
}
