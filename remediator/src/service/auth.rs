//! Request authentication the way Alertmanager's `http_config` sends it: a bearer token or
//! basic auth. Both sides are hashed before comparing, and the hashes compared in constant
//! time, so neither the content nor the length of the secret leaks through timing.

use super::settings::WebhookAuth;
use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The fields of the web page's login form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginForm {
    /// No credentials are configured: no login.
    None,
    Token,
    UsernamePassword,
}

/// What a request must carry, prepared for comparison.
#[derive(Clone)]
pub struct Authenticator {
    expected: Option<Expected>,
}

#[derive(Clone)]
enum Expected {
    Bearer([u8; 32]),
    Basic([u8; 32]),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.expected {
            None => "Authenticator(none)",
            Some(Expected::Bearer(_)) => "Authenticator(bearer)",
            Some(Expected::Basic(_)) => "Authenticator(basic)",
        })
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Authenticator {
    pub fn new(auth: &WebhookAuth) -> Authenticator {
        let expected = match auth {
            WebhookAuth::None => None,
            WebhookAuth::Bearer(token) => Some(Expected::Bearer(digest(token.expose().as_bytes()))),
            WebhookAuth::Basic { username, password } => Some(Expected::Basic(digest(
                format!("{username}:{}", password.expose()).as_bytes(),
            ))),
        };
        Authenticator { expected }
    }

    pub fn is_enabled(&self) -> bool {
        self.expected.is_some()
    }

    /// What the web page's login form asks for.
    pub fn login_form(&self) -> LoginForm {
        match self.expected {
            None => LoginForm::None,
            Some(Expected::Bearer(_)) => LoginForm::Token,
            Some(Expected::Basic(_)) => LoginForm::UsernamePassword,
        }
    }

    /// Whether what a login form sent is the configured credential: the bearer token, or
    /// the basic auth username and password. Compared like [`check`](Self::check).
    pub fn accepts_login(&self, token: &str, username: &str, password: &str) -> bool {
        let (given, wanted) = match &self.expected {
            None => return true,
            Some(Expected::Bearer(wanted)) => (digest(token.as_bytes()), wanted),
            Some(Expected::Basic(wanted)) => {
                (digest(format!("{username}:{password}").as_bytes()), wanted)
            }
        };
        bool::from(given.ct_eq(wanted))
    }

    /// `Ok` when the request carries the configured credentials; otherwise what is wrong,
    /// in words that do not reveal the secret.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(expected) = &self.expected else {
            return Ok(());
        };
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err("missing Authorization header");
        };
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        let (given, wanted) = match expected {
            Expected::Bearer(wanted) if scheme.eq_ignore_ascii_case("bearer") => {
                (digest(credentials.as_bytes()), wanted)
            }
            Expected::Basic(wanted) if scheme.eq_ignore_ascii_case("basic") => {
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials)
                else {
                    return Err("malformed basic credentials");
                };
                (digest(&decoded), wanted)
            }
            Expected::Bearer(_) => return Err("expected Authorization: Bearer <token>"),
            Expected::Basic(_) => return Err("expected Authorization: Basic <credentials>"),
        };
        if bool::from(given.ct_eq(wanted)) {
            Ok(())
        } else {
            Err("wrong credentials")
        }
    }
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

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let auth = Authenticator::new(&WebhookAuth::Bearer(Secret::new("s3cret")));
        assert_eq!(auth.check(&headers("Bearer s3cret")), Ok(()));
        assert_eq!(auth.check(&headers("bearer s3cret")), Ok(()));
        assert_eq!(
            auth.check(&headers("Bearer s3cre")),
            Err("wrong credentials")
        );
        assert_eq!(
            auth.check(&headers("Bearer s3cret2")),
            Err("wrong credentials")
        );
        assert_eq!(
            auth.check(&HeaderMap::new()),
            Err("missing Authorization header")
        );
        assert!(auth.check(&headers("Basic czNjcmV0")).is_err());
    }

    #[test]
    fn basic_auth_checks_user_and_password_together() {
        let auth = Authenticator::new(&WebhookAuth::Basic {
            username: "alertmanager".into(),
            password: Secret::new("pw"),
        });
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            auth.check(&headers(&format!("Basic {}", encode("alertmanager:pw")))),
            Ok(())
        );
        assert!(auth
            .check(&headers(&format!("Basic {}", encode("alertmanager:px"))))
            .is_err());
        assert!(auth
            .check(&headers(&format!("Basic {}", encode("other:pw"))))
            .is_err());
        assert!(auth.check(&headers("Basic %%%")).is_err());
        assert!(auth.check(&headers("Bearer pw")).is_err());
        assert_eq!(auth.login_form(), LoginForm::UsernamePassword);
        assert!(auth.accepts_login("", "alertmanager", "pw"));
        assert!(!auth.accepts_login("alertmanager:pw", "alertmanager", "px"));
    }

    #[test]
    fn a_login_form_sends_the_token() {
        let auth = Authenticator::new(&WebhookAuth::Bearer(Secret::new("s3cret")));
        assert_eq!(auth.login_form(), LoginForm::Token);
        assert!(auth.accepts_login("s3cret", "", ""));
        assert!(!auth.accepts_login("s3cre", "", ""));
        assert!(!auth.accepts_login("", "s3cret", ""));
    }

    #[test]
    fn without_auth_everything_passes() {
        let auth = Authenticator::new(&WebhookAuth::None);
        assert!(!auth.is_enabled());
        assert_eq!(auth.check(&HeaderMap::new()), Ok(()));
    }
}
