//! Alertmanager's webhook payload, version 4
//! (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>). Every field is
//! read with its type checked; fields Alertmanager may add later are accepted and ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The one payload version this service reads.
pub(super) const SUPPORTED_VERSION: &str = "4";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: String,
    pub group_key: String,
    /// How many alerts Alertmanager left out because of the receiver's `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: AlertStatus,
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL", default)]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339, kept as sent: only recorded, never computed with.
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    pub fn name(&self) -> Option<&str> {
        self.labels.get("alertname").map(String::as_str)
    }

    /// Alertmanager's fingerprint, or (from a sender that leaves it out) a hash of the
    /// labels, so the same alert always has the same identity.
    pub fn identity(&self) -> String {
        if !self.fingerprint.is_empty() {
            return self.fingerprint.clone();
        }
        let mut hasher = Sha256::new();
        for (name, value) in &self.labels {
            hasher.update(name.as_bytes());
            hasher.update([0xff]);
            hasher.update(value.as_bytes());
            hasher.update([0xff]);
        }
        let digest = hasher.finalize();
        digest[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// Why a body is not a payload this service reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum PayloadError {
    #[error("the body is not valid JSON for an Alertmanager webhook: {0}")]
    Malformed(String),
    #[error(
        "unsupported payload version {0:?}; etcdmedic reads Alertmanager's webhook version \"4\""
    )]
    Version(String),
}

/// Parses a webhook body. Errors name the field (`alerts[0].labels: ...`).
pub(super) fn parse(body: &[u8]) -> Result<Payload, PayloadError> {
    // The version is checked first so that a future version with another shape gets the
    // clearer of the two errors.
    #[derive(Deserialize)]
    struct VersionOnly {
        version: Option<serde_json::Value>,
    }
    if let Ok(VersionOnly {
        version: Some(version),
    }) = serde_json::from_slice::<VersionOnly>(body)
    {
        if version != SUPPORTED_VERSION {
            return Err(PayloadError::Version(match version {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            }));
        }
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        PayloadError::Malformed(if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const EXAMPLE: &str = r#"{
      "version": "4",
      "groupKey": "{}:{etcd_cluster=\"prod-a\"}",
      "truncatedAlerts": 0,
      "status": "firing",
      "receiver": "etcdmedic",
      "groupLabels": {"etcd_cluster": "prod-a"},
      "commonLabels": {"alertname": "EtcdmedicDatabaseHighFragmentation", "etcd_cluster": "prod-a"},
      "commonAnnotations": {"summary": "fragmented"},
      "externalURL": "http://alertmanager:9093",
      "somethingNew": {"ignored": true},
      "alerts": [{
        "status": "firing",
        "labels": {"alertname": "EtcdmedicDatabaseHighFragmentation", "etcd_cluster": "prod-a", "member": "m1"},
        "annotations": {"summary": "fragmented"},
        "startsAt": "2026-11-21T07:00:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "4a7f0c9e12ab34cd"
      }]
    }"#;

    #[test]
    fn reads_every_field_of_a_version_4_payload() {
        let payload = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(payload.receiver, "etcdmedic");
        assert_eq!(payload.external_url, "http://alertmanager:9093");
        assert_eq!(payload.group_labels["etcd_cluster"], "prod-a");
        let alert = &payload.alerts[0];
        assert_eq!(alert.status, AlertStatus::Firing);
        assert_eq!(alert.name(), Some("EtcdmedicDatabaseHighFragmentation"));
        assert_eq!(alert.generator_url, "http://prometheus:9090/graph");
        assert_eq!(alert.identity(), "4a7f0c9e12ab34cd");
    }

    #[test]
    fn errors_name_the_field_that_is_wrong() {
        let missing_labels = EXAMPLE.replace(
            r#""labels": {"alertname": "EtcdmedicDatabaseHighFragmentation", "etcd_cluster": "prod-a", "member": "m1"},"#,
            "",
        );
        let err = parse(missing_labels.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("alerts[0]") && err.contains("labels"), "{err}");

        let wrong_type = EXAMPLE.replace(r#""truncatedAlerts": 0"#, r#""truncatedAlerts": "none""#);
        let err = parse(wrong_type.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("truncatedAlerts"), "{err}");

        let bad_status = EXAMPLE.replace(r#""status": "firing","#, r#""status": "burning","#);
        assert!(parse(bad_status.as_bytes()).is_err());
    }

    #[test]
    fn other_versions_are_refused_by_name() {
        let v3 = EXAMPLE.replace(r#""version": "4""#, r#""version": "3""#);
        assert_eq!(parse(v3.as_bytes()), Err(PayloadError::Version("3".into())));
        let number = EXAMPLE.replace(r#""version": "4""#, r#""version": 4"#);
        assert_eq!(
            parse(number.as_bytes()),
            Err(PayloadError::Version("4".into()))
        );
    }

    #[test]
    fn deep_nesting_and_broken_bytes_are_errors_not_crashes() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(deep.as_bytes()).is_err());
        let deep_unknown_field = format!(
            "{{\"version\": \"4\", \"extra\": {}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse(deep_unknown_field.as_bytes()).is_err());
        assert!(parse(b"{\"version\": \"4\", \"groupKey\": \"\xff\xfe\"}").is_err());
        assert!(parse(&EXAMPLE.as_bytes()[..EXAMPLE.len() / 2]).is_err());
    }

    #[test]
    fn a_missing_fingerprint_is_derived_from_the_labels() {
        let without = EXAMPLE.replace(
            r#""fingerprint": "4a7f0c9e12ab34cd""#,
            r#""fingerprint": """#,
        );
        let a = parse(without.as_bytes()).unwrap().alerts[0].identity();
        let b = parse(without.as_bytes()).unwrap().alerts[0].identity();
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&body);
        }

        #[test]
        fn mutated_payloads_never_panic(
            cut in 0usize..EXAMPLE.len(),
            position in 0usize..EXAMPLE.len(),
            byte in any::<u8>(),
        ) {
            let mut body = EXAMPLE.as_bytes().to_vec();
            body[position] = byte;
            body.truncate(cut.max(position + 1));
            let _ = parse(&body);
        }
    }
}
