//! Request authentication the way Alertmanager's `http_config` sends it: a bearer token or
//! basic auth, one per role (see `settings::auth`). Both sides are hashed before comparing,
//! and the hashes compared in constant time, so neither the content nor the length of a
//! secret leaks through timing.

use super::settings::{Credential, ServiceAuth, ROLES};
use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a request may do, by the credential it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Deliver alerts (`POST /webhook/alertmanager`).
    Webhook,
    /// Pause, resume, start runs and backups; read as a viewer does.
    Operator,
    /// Read: the web pages and the API's GET endpoints.
    Viewer,
}

impl Role {
    const ALL: [Role; 3] = [Role::Webhook, Role::Operator, Role::Viewer];

    pub(crate) fn as_str(self) -> &'static str {
        ROLES[self as usize]
    }

    /// Whether this role's credential is good for what `needed` may do.
    fn covers(self, needed: Role) -> bool {
        self == needed || (self == Role::Operator && needed == Role::Viewer)
    }
}

/// Why a request is refused: no good credential (401), or a good one for another role (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    Unauthenticated(&'static str),
    Forbidden { held: Role, needed: Role },
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Unauthenticated(why) => f.write_str(why),
            Denied::Forbidden { held, needed } => write!(
                f,
                "this is the {} credential; this needs the {} credential \
                 (remediator.auth.{})",
                held.as_str(),
                needed.as_str(),
                needed.as_str()
            ),
        }
    }
}

/// The fields of the web page's login form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginForm {
    /// No credentials are configured: no login.
    None,
    Token,
    UsernamePassword,
    /// The viewer's and the operator's credentials are of different kinds.
    Either,
}

/// What requests must carry, prepared for comparison.
#[derive(Clone)]
pub(crate) struct Authenticator {
    /// Each role's expected credential, in [`Role`] order; `None` when every request passes.
    roles: Option<[Option<Expected>; 3]>,
}

#[derive(Clone)]
enum Expected {
    Bearer([u8; 32]),
    Basic([u8; 32]),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.roles {
            None => f.write_str("Authenticator(open)"),
            Some(roles) => {
                let kinds: Vec<String> = Role::ALL
                    .iter()
                    .zip(roles)
                    .map(|(role, expected)| {
                        let kind = match expected {
                            None => "nobody",
                            Some(Expected::Bearer(_)) => "bearer",
                            Some(Expected::Basic(_)) => "basic",
                        };
                        format!("{}: {kind}", role.as_str())
                    })
                    .collect();
                write!(f, "Authenticator({})", kinds.join(", "))
            }
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn expected(credential: &Credential) -> Expected {
    match credential {
        Credential::Bearer(token) => Expected::Bearer(digest(token.expose().as_bytes())),
        Credential::Basic { username, password } => Expected::Basic(digest(
            format!("{username}:{}", password.expose()).as_bytes(),
        )),
    }
}

impl Authenticator {
    pub(crate) fn new(auth: &ServiceAuth) -> Authenticator {
        let roles = match auth {
            ServiceAuth::Open { .. } => None,
            ServiceAuth::Roles {
                webhook,
                operator,
                viewer,
            } => Some([webhook, operator, viewer].map(|c| c.as_ref().map(expected))),
        };
        Authenticator { roles }
    }

    /// The roles nobody holds (no credential configured).
    pub(crate) fn unheld(&self) -> Vec<Role> {
        match &self.roles {
            None => Vec::new(),
            Some(roles) => Role::ALL
                .into_iter()
                .filter(|role| roles[*role as usize].is_none())
                .collect(),
        }
    }

    /// What the web page's login form asks for: the viewer's or the operator's credential.
    pub(crate) fn login_form(&self) -> LoginForm {
        let Some(roles) = &self.roles else {
            return LoginForm::None;
        };
        let (mut token, mut basic) = (false, false);
        for role in [Role::Operator, Role::Viewer] {
            match roles[role as usize] {
                Some(Expected::Bearer(_)) => token = true,
                Some(Expected::Basic(_)) => basic = true,
                None => {}
            }
        }
        match (token, basic) {
            (true, true) => LoginForm::Either,
            (false, true) => LoginForm::UsernamePassword,
            _ => LoginForm::Token,
        }
    }

    /// The role a login form's credential holds (a viewer's or an operator's; the webhook's
    /// opens no page). Compared like [`check`](Self::check).
    pub(crate) fn accepts_login(
        &self,
        token: &str,
        username: &str,
        password: &str,
    ) -> Option<Role> {
        let Some(_) = &self.roles else {
            return Some(Role::Operator);
        };
        let given = [
            Some(Given::Bearer(digest(token.as_bytes()))),
            (!username.is_empty())
                .then(|| Given::Basic(digest(format!("{username}:{password}").as_bytes()))),
        ];
        [Role::Operator, Role::Viewer]
            .into_iter()
            .find(|role| given.iter().flatten().any(|g| self.holds(g, *role)))
    }

    /// Whether `given` is `role`'s credential, compared in constant time.
    fn holds(&self, given: &Given, role: Role) -> bool {
        let Some(roles) = &self.roles else {
            return true;
        };
        match (given, &roles[role as usize]) {
            (Given::Bearer(given), Some(Expected::Bearer(wanted)))
            | (Given::Basic(given), Some(Expected::Basic(wanted))) => {
                bool::from(given.ct_eq(wanted))
            }
            _ => false,
        }
    }

    /// `Ok` when the request carries a credential whose role covers `needed`; otherwise
    /// what is wrong, in words that do not reveal any secret.
    pub(crate) fn check(&self, headers: &HeaderMap, needed: Role) -> Result<(), Denied> {
        if self.roles.is_none() {
            return Ok(());
        }
        let given = given(headers).map_err(Denied::Unauthenticated)?;
        // Every role is compared, so the time taken does not tell which one matched.
        let held: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|role| self.holds(&given, *role))
            .collect();
        if held.iter().any(|role| role.covers(needed)) {
            return Ok(());
        }
        match held.first() {
            Some(held) => Err(Denied::Forbidden {
                held: *held,
                needed,
            }),
            None => Err(Denied::Unauthenticated("wrong credentials")),
        }
    }
}

/// A credential as a request carried it, hashed.
enum Given {
    Bearer([u8; 32]),
    Basic([u8; 32]),
}

fn given(headers: &HeaderMap) -> Result<Given, &'static str> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err("missing Authorization header");
    };
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Given::Bearer(digest(credentials.as_bytes())));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        return match base64::engine::general_purpose::STANDARD.decode(credentials) {
            Ok(decoded) => Ok(Given::Basic(digest(&decoded))),
            Err(_) => Err("malformed basic credentials"),
        };
    }
    Err("expected Authorization: Bearer <token> or Basic <credentials>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcdmedic_cluster::Secret;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn bearer(token: &str) -> Option<Credential> {
        Some(Credential::Bearer(Secret::new(token)))
    }

    fn basic64(pair: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let auth = Authenticator::new(&ServiceAuth::shared(Credential::Bearer(Secret::new(
            "s3cret",
        ))));
        for role in Role::ALL {
            assert_eq!(auth.check(&headers("Bearer s3cret"), role), Ok(()));
        }
        assert_eq!(
            auth.check(&headers("bearer s3cret"), Role::Operator),
            Ok(())
        );
        let wrong = Err(Denied::Unauthenticated("wrong credentials"));
        assert_eq!(auth.check(&headers("Bearer s3cre"), Role::Viewer), wrong);
        assert_eq!(auth.check(&headers("Bearer s3cret2"), Role::Viewer), wrong);
        assert_eq!(
            auth.check(&HeaderMap::new(), Role::Webhook),
            Err(Denied::Unauthenticated("missing Authorization header"))
        );
        assert!(auth
            .check(&headers("Basic czNjcmV0"), Role::Webhook)
            .is_err());
        assert!(auth.check(&headers("Token s3cret"), Role::Webhook).is_err());
    }

    #[test]
    fn basic_auth_checks_user_and_password_together() {
        let auth = Authenticator::new(&ServiceAuth::shared(Credential::Basic {
            username: "alertmanager".into(),
            password: Secret::new("pw"),
        }));
        let check = |value: &str| auth.check(&headers(value), Role::Webhook);
        assert_eq!(check(&basic64("alertmanager:pw")), Ok(()));
        assert!(check(&basic64("alertmanager:px")).is_err());
        assert!(check(&basic64("other:pw")).is_err());
        assert_eq!(
            check("Basic %%%"),
            Err(Denied::Unauthenticated("malformed basic credentials"))
        );
        assert!(check("Bearer pw").is_err());
        assert_eq!(auth.login_form(), LoginForm::UsernamePassword);
        assert_eq!(
            auth.accepts_login("", "alertmanager", "pw"),
            Some(Role::Operator)
        );
        assert_eq!(
            auth.accepts_login("alertmanager:pw", "alertmanager", "px"),
            None
        );
    }

    #[test]
    fn each_role_may_do_its_own_work_and_an_operator_also_reads() {
        let auth = Authenticator::new(&ServiceAuth::Roles {
            webhook: bearer("from-alertmanager"),
            operator: Some(Credential::Basic {
                username: "sre".into(),
                password: Secret::new("pw"),
            }),
            viewer: bearer("to-look"),
        });
        let operator = basic64("sre:pw");
        let may = |credential: &str, role: Role| auth.check(&headers(credential), role);
        assert_eq!(may("Bearer from-alertmanager", Role::Webhook), Ok(()));
        assert_eq!(
            may("Bearer from-alertmanager", Role::Operator),
            Err(Denied::Forbidden {
                held: Role::Webhook,
                needed: Role::Operator
            })
        );
        assert!(may("Bearer from-alertmanager", Role::Viewer).is_err());
        assert_eq!(may(&operator, Role::Operator), Ok(()));
        assert_eq!(may(&operator, Role::Viewer), Ok(()));
        assert!(may(&operator, Role::Webhook).is_err());
        assert_eq!(may("Bearer to-look", Role::Viewer), Ok(()));
        let refused = may("Bearer to-look", Role::Operator).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "this is the viewer credential; this needs the operator credential \
             (remediator.auth.operator)"
        );
        assert_eq!(auth.login_form(), LoginForm::Either);
        assert_eq!(auth.accepts_login("to-look", "", ""), Some(Role::Viewer));
        assert_eq!(auth.accepts_login("", "sre", "pw"), Some(Role::Operator));
        assert_eq!(auth.accepts_login("from-alertmanager", "", ""), None);
        assert!(auth.unheld().is_empty());
        let debug = format!("{auth:?}");
        assert!(
            !debug.contains("to-look") && debug.contains("operator: basic"),
            "{debug}"
        );
    }

    #[test]
    fn a_role_without_a_credential_is_nobodys() {
        let auth = Authenticator::new(&ServiceAuth::Roles {
            webhook: bearer("w"),
            operator: bearer("o"),
            viewer: None,
        });
        assert_eq!(auth.unheld(), vec![Role::Viewer]);
        assert_eq!(auth.check(&headers("Bearer o"), Role::Viewer), Ok(()));
        assert!(auth.check(&headers("Bearer w"), Role::Viewer).is_err());
        assert_eq!(auth.login_form(), LoginForm::Token);
    }

    #[test]
    fn without_auth_everything_passes() {
        let auth = Authenticator::new(&ServiceAuth::Open { explicit: true });
        assert_eq!(auth.check(&HeaderMap::new(), Role::Operator), Ok(()));
        assert_eq!(auth.login_form(), LoginForm::None);
    }
}
