//! S3 Object Lock on one bucket: whether the bucket has it, locking an object until a date,
//! and reading an object's date back. `object_store` makes none of these requests, so they
//! are made here with its credentials and its SigV4 signer, as the S3 API documents them
//! (`GET /?object-lock`, `PUT /key?retention`, and the lock headers of `HEAD /key`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, Method, StatusCode};
use md5::Digest as _;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::HttpRequestBody;
use object_store::path::Path as Key;
use serde::Deserialize;
use url::Url;

use crate::config::{LockMode, ObjectLock};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const RETAIN_UNTIL: &str = "x-amz-object-lock-retain-until-date";
const LOCK_MODE: &str = "x-amz-object-lock-mode";

#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error("{what}: no credentials: {source}")]
    Credentials {
        what: &'static str,
        source: object_store::Error,
    },
    #[error("{what}: cannot sign the request: {source}")]
    Signing {
        what: &'static str,
        source: object_store::Error,
    },
    #[error("{what}: {source}")]
    Request {
        what: &'static str,
        source: reqwest::Error,
    },
    #[error("{what}: the store answered {status}: {body}")]
    Refused {
        what: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("{what}: the store's answer is not S3's: {detail}")]
    Answer {
        what: &'static str,
        detail: Unexpected,
    },
    #[error("{what}: {url} is not a request URI: {source}")]
    Uri {
        what: &'static str,
        url: Url,
        source: http::uri::InvalidUri,
    },
}

/// What in a store's answer is not what S3 sends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unexpected {
    #[error("{0}")]
    Configuration(#[from] quick_xml::DeError),
    #[error("{RETAIN_UNTIL} {0:?} is not a date")]
    RetainUntil(http::HeaderValue),
}

/// What the bucket says of Object Lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BucketLock {
    Enabled,
    /// Object Lock can only be turned on for a bucket by its owner (versioning first).
    NotEnabled,
}

/// One object's lock, from `HEAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) mode: Option<LockMode>,
    pub(crate) until: SystemTime,
}

#[derive(Clone)]
pub(crate) struct Locker {
    s3: Arc<AmazonS3>,
    region: String,
    /// `http://endpoint/bucket` or `https://bucket.s3.region.amazonaws.com`, as
    /// `object_store` addresses the bucket.
    bucket_url: Url,
    http: reqwest::Client,
    pub(crate) lock: ObjectLock,
}

impl Locker {
    pub(super) fn new(
        s3: Arc<AmazonS3>,
        region: String,
        bucket_url: Url,
        lock: ObjectLock,
    ) -> Result<Locker, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Locker {
            s3,
            region,
            bucket_url,
            http,
            lock,
        })
    }

    /// `GET /?object-lock`: S3 answers 404 `ObjectLockConfigurationNotFoundError` for a
    /// bucket without it.
    pub(crate) async fn bucket(&self) -> Result<BucketLock, LockError> {
        const WHAT: &str = "reading the bucket's Object Lock configuration";
        let mut url = self.bucket_url.clone();
        url.set_query(Some("object-lock"));
        let (status, _, body) = self.send(WHAT, Method::GET, url, Vec::new()).await?;
        match status {
            StatusCode::OK => lock_enabled(&body)
                .map_err(|detail| LockError::Answer { what: WHAT, detail })
                .map(|enabled| match enabled {
                    true => BucketLock::Enabled,
                    false => BucketLock::NotEnabled,
                }),
            StatusCode::NOT_FOUND if body.contains("ObjectLockConfigurationNotFound") => {
                Ok(BucketLock::NotEnabled)
            }
            status => Err(LockError::Refused {
                what: WHAT,
                status,
                body: first_line(&body),
            }),
        }
    }

    /// `PUT /key?retention`: locks the object's current version until `until` in this
    /// destination's mode.
    pub(crate) async fn retain(&self, key: &Key, until: SystemTime) -> Result<(), LockError> {
        const WHAT: &str = "locking the object";
        let mut url = self.object_url(key);
        url.set_query(Some("retention"));
        let body = retention_xml(self.lock.mode, until).into_bytes();
        let (status, _, answer) = self.send(WHAT, Method::PUT, url, body).await?;
        match status.is_success() {
            true => Ok(()),
            false => Err(LockError::Refused {
                what: WHAT,
                status,
                body: first_line(&answer),
            }),
        }
    }

    /// The lock on the object's current version, from the headers of `HEAD /key`; `None`
    /// for an object without one.
    pub(crate) async fn held(&self, key: &Key) -> Result<Option<Held>, LockError> {
        const WHAT: &str = "reading the object's lock";
        let url = self.object_url(key);
        let (status, headers, _) = self.send(WHAT, Method::HEAD, url, Vec::new()).await?;
        if !status.is_success() {
            return Err(LockError::Refused {
                what: WHAT,
                status,
                body: String::new(),
            });
        }
        held(&headers).map_err(|detail| LockError::Answer { what: WHAT, detail })
    }

    fn object_url(&self, key: &Key) -> Url {
        let mut url = self.bucket_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(key.parts().map(|part| part.as_ref().to_string()));
        }
        url
    }

    /// Signs and sends one request; its status, headers and body.
    async fn send(
        &self,
        what: &'static str,
        method: Method,
        url: Url,
        body: Vec<u8>,
    ) -> Result<(StatusCode, HeaderMap, String), LockError> {
        let credential = self
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(|source| LockError::Credentials { what, source })?;
        let mut request = http::Request::new(HttpRequestBody::from(body.clone()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = match url.as_str().parse() {
            Ok(uri) => uri,
            Err(source) => return Err(LockError::Uri { what, url, source }),
        };
        if !body.is_empty() {
            // S3 wants a checksum of every request that sets a lock.
            let md5 = md5::Md5::digest(&body);
            request
                .headers_mut()
                .insert("content-md5", base64_header(md5.as_slice()));
        }
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|source| LockError::Signing { what, source })?;
        let response = self
            .http
            .request(method, url)
            .headers(request.headers().clone())
            .body(body)
            .send()
            .await
            .map_err(|source| LockError::Request { what, source })?;
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response
            .text()
            .await
            .map_err(|source| LockError::Request { what, source })?;
        Ok((status, headers, text))
    }
}

fn base64_header(bytes: &[u8]) -> http::HeaderValue {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    // Base64 is always a valid header value.
    http::HeaderValue::from_str(&encoded).unwrap_or(http::HeaderValue::from_static(""))
}

/// When an object written for a backup made at `created_at` may go: the same date for the
/// snapshot and every version of its manifest.
pub(crate) fn retain_until(created_at: SystemTime, days: u32) -> SystemTime {
    created_at + Duration::from_secs(u64::from(days) * 86_400)
}

/// The body of `PutObjectRetention`.
fn retention_xml(mode: LockMode, until: SystemTime) -> String {
    let until: DateTime<Utc> = until.into();
    format!(
        "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
         <RetainUntilDate>{}</RetainUntilDate></Retention>",
        mode.as_s3(),
        until.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ObjectLockConfiguration {
    object_lock_enabled: Option<String>,
}

/// Whether `GetObjectLockConfiguration`'s answer says `Enabled`.
fn lock_enabled(xml: &str) -> Result<bool, Unexpected> {
    let configuration: ObjectLockConfiguration = quick_xml::de::from_str(xml)?;
    Ok(configuration.object_lock_enabled.as_deref() == Some("Enabled"))
}

/// The lock `HEAD` reports: S3 sends both headers for a locked version, neither otherwise.
fn held(headers: &HeaderMap) -> Result<Option<Held>, Unexpected> {
    let Some(until) = headers.get(RETAIN_UNTIL) else {
        return Ok(None);
    };
    let until = until
        .to_str()
        .ok()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .ok_or_else(|| Unexpected::RetainUntil(until.clone()))?;
    let mode = match headers.get(LOCK_MODE).and_then(|v| v.to_str().ok()) {
        Some("GOVERNANCE") => Some(LockMode::Governance),
        Some("COMPLIANCE") => Some(LockMode::Compliance),
        _ => None,
    };
    Ok(Some(Held {
        mode,
        until: SystemTime::from(until.with_timezone(&Utc)),
    }))
}

fn first_line(body: &str) -> String {
    body.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_runs_whole_days_from_the_backup() {
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let until = retain_until(created, 7);
        assert_eq!(
            until.duration_since(created).unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            retention_xml(LockMode::Compliance, until),
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>COMPLIANCE</Mode>\
             <RetainUntilDate>2027-01-22T08:00:00Z</RetainUntilDate></Retention>"
        );
    }

    #[test]
    fn the_bucket_answer_says_whether_object_lock_is_enabled() {
        let enabled = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ObjectLockConfiguration \
                       xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>\
                       Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE\
                       </Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>";
        assert_eq!(lock_enabled(enabled).ok(), Some(true));
        assert_eq!(
            lock_enabled("<ObjectLockConfiguration></ObjectLockConfiguration>").ok(),
            Some(false)
        );
        assert!(lock_enabled("<html>proxy error").is_err());
    }

    #[test]
    fn the_head_headers_give_the_lock_or_none() {
        let mut headers = HeaderMap::new();
        assert_eq!(held(&headers).ok(), Some(None));
        headers.insert(RETAIN_UNTIL, "2026-12-06T16:51:16.738448Z".parse().unwrap());
        headers.insert(LOCK_MODE, "GOVERNANCE".parse().unwrap());
        let lock = held(&headers).unwrap().unwrap();
        assert_eq!(lock.mode, Some(LockMode::Governance));
        let until: DateTime<Utc> = lock.until.into();
        assert_eq!(
            until.to_rfc3339_opts(SecondsFormat::Micros, true),
            "2026-12-06T16:51:16.738448Z"
        );
        headers.insert(RETAIN_UNTIL, "tomorrow".parse().unwrap());
        assert!(held(&headers)
            .unwrap_err()
            .to_string()
            .contains("is not a date"));
    }
}
