//! A standby passes requests on to the active replica and its answer back: the same method,
//! path, query, body and credentials (the active one authenticates them, as if asked
//! directly), and the answer's status, body and the headers a client acts on.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

use etcdmedic_cluster::member_client::with_sources;

use super::super::origin::{FORWARDED, FORWARDED_HOST};
use super::super::respond::error;
use super::super::settings::ServiceSettings;
use super::super::Error;

/// Longer than the active replica's own body timeout: its answer, not ours, says why.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(45);

const REQUEST_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::COOKIE,
    header::ORIGIN,
];
/// What a client acts on, and what keeps a page safe in its browser (no framing, no script
/// from elsewhere, no referrer to other sites): a page through a standby is the same page.
const RESPONSE_HEADERS: [HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::SET_COOKIE,
    header::LOCATION,
    header::WWW_AUTHENTICATE,
    header::CACHE_CONTROL,
    header::CONTENT_SECURITY_POLICY,
    header::X_FRAME_OPTIONS,
    header::REFERRER_POLICY,
];

#[derive(Clone)]
pub(super) struct Forwarder {
    http: reqwest::Client,
    max_body_bytes: usize,
}

impl Forwarder {
    pub(super) fn new(settings: &ServiceSettings) -> Result<Forwarder, Error> {
        let http = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| Error::Serve(std::io::Error::other(err)))?;
        Ok(Forwarder {
            http,
            max_body_bytes: settings.max_body_bytes,
        })
    }

    /// `request` sent to the replica at `base`; its answer, or why there is none.
    pub(super) async fn forward(
        &self,
        base: &str,
        request: Request,
    ) -> Result<Response, NotForwarded> {
        let (parts, body) = request.into_parts();
        if parts.headers.contains_key(FORWARDED) {
            return Err(NotForwarded::Loop);
        }
        let Ok(body) = axum::body::to_bytes(body, self.max_body_bytes).await else {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than remediator.max_body_bytes ({} bytes)",
                    self.max_body_bytes
                ),
            ));
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut outgoing = self
            .http
            .request(parts.method, format!("{base}{path}"))
            .header(FORWARDED, "1")
            .body(body);
        // The address the client used: what its browser's Origin names (see `origin`).
        if let Some(host) = parts.headers.get(header::HOST) {
            outgoing = outgoing.header(FORWARDED_HOST, host.clone());
        }
        for name in REQUEST_HEADERS {
            for value in parts.headers.get_all(&name) {
                outgoing = outgoing.header(name.clone(), value.clone());
            }
        }
        let answer = outgoing.send().await?;
        let status = answer.status();
        let headers = answer.headers().clone();
        let body = answer.bytes().await?;
        let mut response = (status, Body::from(body)).into_response();
        for name in RESPONSE_HEADERS {
            for value in headers.get_all(&name) {
                response.headers_mut().append(name.clone(), value.clone());
            }
        }
        Ok(response)
    }
}

/// Why a request could not be forwarded to the active replica.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotForwarded {
    #[error("it was forwarded here by another standby; the lock is changing hands")]
    Loop,
    #[error("{}", describe(.0))]
    Failed(#[from] reqwest::Error),
}

/// reqwest's error with its causes: its own text alone is "error sending request".
fn describe(err: &reqwest::Error) -> String {
    with_sources(&err.to_string(), err)
}
