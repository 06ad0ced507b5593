//! Where the active replica says it is reached, as it writes it into the database and as a
//! standby believes it. A standby forwards its clients' requests there, credentials and
//! cookies included, so an address anyone with write access to the database could put there
//! must not be taken on trust. The active replica seals its address with a key made from
//! the service's credentials (`remediator.auth`), which every replica of one service holds
//! and the database never sees; a standby forwards only to an address sealed with its own.
//! Replicas whose credentials differ (one restarted with new ones before the other) do not
//! forward to each other until both have them.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::service::settings::{Credential, ServiceAuth};

/// What separates the seal from the address: a URL fragment, never sent over HTTP.
const SEAL: &str = "#seal=";

/// The key of one service's announcements; `None` for a service without credentials
/// (`auth: none`, or none on loopback), whose requests carry nothing to steal.
#[derive(Clone)]
pub(crate) struct AnnouncementKey([u8; 32]);

impl std::fmt::Debug for AnnouncementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnnouncementKey(<secret>)")
    }
}

impl AnnouncementKey {
    pub(crate) fn of(auth: &ServiceAuth) -> Option<AnnouncementKey> {
        let ServiceAuth::Roles {
            webhook,
            operator,
            viewer,
        } = auth
        else {
            return None;
        };
        let mut hasher = Sha256::new();
        hasher.update(b"etcdmedic replica announcement, version 1\0");
        for (role, credential) in [
            ("webhook", webhook),
            ("operator", operator),
            ("viewer", viewer),
        ] {
            hasher.update(role.as_bytes());
            match credential {
                None => hasher.update(b"\0none\0"),
                Some(Credential::Bearer(token)) => {
                    hasher.update(b"\0bearer\0");
                    hasher.update(token.expose().as_bytes());
                }
                Some(Credential::Basic { username, password }) => {
                    hasher.update(b"\0basic\0");
                    hasher.update(username.as_bytes());
                    hasher.update(b"\0");
                    hasher.update(password.expose().as_bytes());
                }
            }
            hasher.update(b"\0");
        }
        Some(AnnouncementKey(hasher.finalize().into()))
    }

    fn mac(&self, url: &str) -> Hmac<Sha256> {
        // A key of any length is accepted: this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(url.as_bytes());
        mac
    }
}

/// What the active replica writes for `url`.
pub(crate) fn seal(url: &str, key: Option<&AnnouncementKey>) -> String {
    match key {
        Some(key) => {
            let tag = key.mac(url).finalize().into_bytes();
            let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
            format!("{url}{SEAL}{hex}")
        }
        None => url.to_string(),
    }
}

/// Why a standby will not forward to the address the database holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotToForward {
    #[error("it is not sealed (another service's replica, or written by hand)")]
    Unsealed,
    #[error("its seal is not hexadecimal")]
    SealNotHex,
    #[error("its seal was not made with this service's credentials")]
    OtherCredentials,
    #[error("{url:?}: {why}")]
    NotAUrl { url: String, why: String },
    #[error("{0:?} is not http(s)://host:port")]
    NotAnAddress(String),
}

/// The address in `announced`, if a replica with the same credentials wrote it and it is
/// an address to forward to at all; otherwise why not.
pub(crate) fn open(announced: &str, key: Option<&AnnouncementKey>) -> Result<String, NotToForward> {
    let (url, tag) = match announced.split_once(SEAL) {
        Some((url, tag)) => (url, Some(tag)),
        None => (announced, None),
    };
    if let Some(key) = key {
        let tag = tag.ok_or(NotToForward::Unsealed)?;
        let tag = decode_hex(tag).ok_or(NotToForward::SealNotHex)?;
        key.mac(url)
            .verify_slice(&tag)
            .map_err(|_| NotToForward::OtherCredentials)?;
    }
    let parsed = url::Url::parse(url).map_err(|err| NotToForward::NotAUrl {
        url: url.to_owned(),
        why: err.to_string(),
    })?;
    let plain_address = matches!(parsed.scheme(), "http" | "https")
        && parsed.has_host()
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if !plain_address {
        return Err(NotToForward::NotAnAddress(url.to_owned()));
    }
    Ok(url.to_string())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcdmedic_cluster::Secret;

    fn key(token: &str) -> Option<AnnouncementKey> {
        AnnouncementKey::of(&ServiceAuth::shared(Credential::Bearer(Secret::new(token))))
    }

    #[test]
    fn a_standby_forwards_only_to_what_a_replica_with_its_credentials_announced() {
        let ours = key("ours");
        let url = "http://10.0.0.7:9380";
        let sealed = seal(url, ours.as_ref());
        assert!(sealed.starts_with("http://10.0.0.7:9380#seal="), "{sealed}");
        assert_eq!(open(&sealed, ours.as_ref()), Ok(url.to_string()));
        // Someone with write access to the database, without the credentials.
        for forged in [
            "http://attacker.example:9380".to_string(),
            sealed.replace("10.0.0.7", "10.0.0.8"),
            seal("http://attacker.example:9380", key("theirs").as_ref()),
            format!("{url}#seal=zz"),
            format!("{url}#seal=abc"),
        ] {
            assert!(open(&forged, ours.as_ref()).is_err(), "{forged}");
        }
        // Without credentials there is nothing to steal; the address must still be one.
        assert_eq!(open(url, None), Ok(url.to_string()));
        for odd in [
            "ftp://10.0.0.7",
            "http://user:pw@10.0.0.7:9380",
            "http://10.0.0.7/?a=b",
        ] {
            assert!(open(odd, None).is_err(), "{odd}");
        }
        let debug = format!("{ours:?}");
        assert!(debug.contains("<secret>"), "{debug}");
    }

    #[test]
    fn every_credential_changes_the_key_and_open_services_have_none() {
        assert!(AnnouncementKey::of(&ServiceAuth::Open { explicit: true }).is_none());
        let roles = |viewer: &str| ServiceAuth::Roles {
            webhook: Some(Credential::Bearer(Secret::new("w"))),
            operator: Some(Credential::Basic {
                username: "sre".into(),
                password: Secret::new("pw"),
            }),
            viewer: Some(Credential::Bearer(Secret::new(viewer))),
        };
        let a = AnnouncementKey::of(&roles("v1"));
        let b = AnnouncementKey::of(&roles("v2"));
        let url = "http://10.0.0.7:9380";
        assert!(open(&seal(url, a.as_ref()), b.as_ref()).is_err());
        assert!(open(&seal(url, a.as_ref()), a.as_ref()).is_ok());
    }
}
