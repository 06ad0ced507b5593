//! Browser sessions for the web pages: a browser cannot send the bearer token the API wants,
//! so the login form takes the same credential once and sets a cookie naming a random
//! session. The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
//! page sends it, so a forged request from elsewhere arrives without it) and `Secure` when the
//! service serves TLS. Sessions live in memory: a restart logs everyone out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

pub(super) const COOKIE: &str = "etcdmedic_session";
/// How long a login lasts.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// More sessions than any team opens: the oldest go first, so logins cannot fill memory.
const MAX_SESSIONS: usize = 1024;

#[derive(Clone, Default)]
pub(crate) struct Sessions {
    /// sha256 of each session id: a memory dump does not hand out live sessions.
    live: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
}

impl Sessions {
    /// A new session; the id for the cookie. `None` when the system has no randomness.
    pub(super) fn open(&self) -> Option<String> {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).ok()?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|_, expires| *expires > now);
        if live.len() >= MAX_SESSIONS {
            if let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) {
                live.remove(&oldest);
            }
        }
        live.insert(digest(&id), now + LIFETIME);
        Some(id)
    }

    /// Whether the request's cookie names a live session.
    pub(super) fn is_valid(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie(headers) else {
            return false;
        };
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(&digest(&id))
            .is_some_and(|expires| *expires > Instant::now())
    }

    pub(super) fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            live.remove(&digest(&id));
        }
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The session id from the `Cookie` header(s).
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value for session `id` (empty `id`: the cookie removed).
pub(super) fn set_cookie(id: &str, secure: bool) -> String {
    let max_age = match id.is_empty() {
        true => 0,
        false => LIFETIME.as_secs(),
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_session_is_valid_until_closed_and_only_its_own_id_counts() {
        let sessions = Sessions::default();
        let id = sessions.open().unwrap();
        assert_eq!(id.len(), 64);
        let headers = with_cookie(&format!("theme=dark; {COOKIE}={id}"));
        assert!(sessions.is_valid(&headers));
        assert!(!sessions.is_valid(&with_cookie(&format!("{COOKIE}={}", &id[1..]))));
        assert!(!sessions.is_valid(&with_cookie(&format!("other={id}"))));
        assert!(!sessions.is_valid(&HeaderMap::new()));
        sessions.close(&headers);
        assert!(!sessions.is_valid(&headers));
        assert_ne!(sessions.open().unwrap(), id);
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        let first = sessions.open().unwrap();
        for _ in 0..MAX_SESSIONS {
            sessions.open().unwrap();
        }
        assert_eq!(sessions.live.lock().unwrap().len(), MAX_SESSIONS);
        assert!(!sessions.is_valid(&with_cookie(&format!("{COOKIE}={first}"))));
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let cookie = set_cookie("abc", true);
        assert_eq!(
            cookie,
            "etcdmedic_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
        );
        assert!(set_cookie("", false).contains("Max-Age=0"));
    }
}
