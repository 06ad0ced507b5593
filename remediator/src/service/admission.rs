//! What a request must show before its body is read, and how much body it may send. Every
//! request passes here first, on the active replica and on a standby alike: the webhook and
//! the API are authenticated from their headers alone (a client certificate, a role's
//! credential), then the body is read whole, within the route's size limit and
//! `read_body_timeout`, so that no handler and no forwarder ever waits on a slow client or
//! holds more than the route needs. A login form is a few hundred bytes; only Alertmanager's
//! payload may be large.

use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::auth::{Authenticator, Denied, Role};
use super::origin;
use super::respond::error;
use super::settings::ServiceSettings;
use etcdmedic_cluster::listener::ClientCertificate;

/// The largest body of anything but the webhook: the login form (token, username, password
/// and the page to return to) with room to spare; the API's calls take none.
pub(super) const SMALL_BODY_BYTES: usize = 16 * 1024;
pub(super) const WEBHOOK_PATH: &str = "/webhook/alertmanager";

/// What a request needs before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Needs {
    /// The role whose credential it must carry in its headers; `None` for the pages (they
    /// check their own sessions), the login form (the credential is in its body), metrics
    /// and probes.
    pub(super) role: Option<Role>,
    pub(super) max_body_bytes: usize,
}

/// What `method` on `path` needs. By prefix, so that an API call added later is
/// authenticated without being listed here: reads need a viewer, everything else an operator.
pub(super) fn needs(method: &Method, path: &str, max_body_bytes: usize) -> Needs {
    let small = |role| Needs {
        role,
        max_body_bytes: SMALL_BODY_BYTES,
    };
    if path == WEBHOOK_PATH || path.starts_with("/webhook/") {
        return Needs {
            role: Some(Role::Webhook),
            max_body_bytes,
        };
    }
    if path == "/api" || path.starts_with("/api/") {
        let reads = matches!(*method, Method::GET | Method::HEAD);
        return small(Some(if reads { Role::Viewer } else { Role::Operator }));
    }
    small(None)
}

/// How a service admits requests.
#[derive(Clone)]
pub(super) struct Admission {
    pub(super) auth: Authenticator,
    /// `tls.client_ca_file` is set: the webhook and API need a client certificate.
    pub(super) requires_client_certificate: bool,
    pub(super) max_body_bytes: usize,
    pub(super) read_body_timeout: Duration,
    /// Where people reach the service behind a proxy: an `Origin` it may come from.
    pub(super) public_url: Option<url::Url>,
}

impl Admission {
    pub(super) fn new(auth: Authenticator, settings: &ServiceSettings) -> Admission {
        Admission {
            auth,
            requires_client_certificate: settings
                .tls
                .as_ref()
                .is_some_and(|tls| tls.requires_client_certificate),
            max_body_bytes: settings.max_body_bytes,
            read_body_timeout: settings.read_body_timeout,
            public_url: settings.public_url.clone(),
        }
    }

    /// `request` with its body read, or the answer that refuses it (boxed: an answer is
    /// large beside a request).
    pub(super) async fn admit(&self, request: Request) -> Result<Request, Box<Response>> {
        let needs = needs(request.method(), request.uri().path(), self.max_body_bytes);
        if let Some(role) = needs.role {
            if let Some(refused) = self.refuse(&request, role) {
                return Err(Box::new(refused));
            }
        }
        // With a browser's cached basic credentials, a page of another site could post a
        // form to the API: what changes state must come from here or from a script.
        if needs.role == Some(Role::Operator) {
            if let Some(why) = origin::forged(request.headers(), self.public_url.as_ref()) {
                tracing::warn!(path = %request.uri().path(), reason = %why, "refused an API call a page of another site may have sent (403)");
                return Err(Box::new(error(StatusCode::FORBIDDEN, why)));
            }
        }
        let webhook = needs.role == Some(Role::Webhook);
        let (parts, body) = request.into_parts();
        if declared_length(&parts.headers).is_some_and(|length| length > needs.max_body_bytes) {
            let declared = declared_length(&parts.headers);
            return Err(Box::new(too_large(webhook, needs.max_body_bytes, declared)));
        }
        let bytes = self
            .read(body, needs.max_body_bytes, webhook)
            .await
            .map_err(Box::new)?;
        Ok(Request::from_parts(parts, Body::from(bytes)))
    }

    /// A client certificate is required and `request` came without one the CA signed.
    pub(super) fn lacks_certificate(&self, request: &Request) -> bool {
        let certificate = request.extensions().get::<ClientCertificate>().copied();
        self.requires_client_certificate && certificate != Some(ClientCertificate(true))
    }

    /// Why `request` may not do what `role` may, from its headers alone; `None` when it may.
    fn refuse(&self, request: &Request, role: Role) -> Option<Response> {
        if self.lacks_certificate(request) {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "a client certificate signed by remediator.tls.client_ca_file is required for \
                 the webhook and the API",
            ));
        }
        match self.auth.check(request.headers(), role) {
            Ok(()) => None,
            Err(refused @ Denied::Forbidden { .. }) => {
                tracing::warn!(path = %request.uri().path(), reason = %refused, "refused a request made with another role's credential (403)");
                Some(error(StatusCode::FORBIDDEN, refused.to_string()))
            }
            Err(Denied::Unauthenticated(why)) => {
                let mut response = error(StatusCode::UNAUTHORIZED, why);
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer, Basic"),
                );
                Some(response)
            }
        }
    }

    /// The whole body, within `limit` bytes and `read_body_timeout` from now.
    async fn read(&self, body: Body, limit: usize, webhook: bool) -> Result<Bytes, Response> {
        let read = tokio::time::timeout(self.read_body_timeout, to_bytes(body, limit));
        match read.await {
            Ok(Ok(bytes)) => Ok(bytes),
            Err(_) => {
                tracing::error!(
                    timeout_seconds = self.read_body_timeout.as_secs_f64(),
                    webhook,
                    "a request body did not arrive in time; answering 408"
                );
                Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {} (remediator.read_body_timeout)",
                        humantime::format_duration(self.read_body_timeout)
                    ),
                ))
            }
            Ok(Err(err)) => {
                let message = err.to_string();
                if err.into_inner().is::<http_body_util::LengthLimitError>() {
                    return Err(too_large(webhook, limit, None));
                }
                Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {message}"),
                ))
            }
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// The answer to a body over its route's limit. For the webhook it is also an error in the
/// log: Alertmanager does not retry a 413, so those alerts are lost and someone must see it.
fn too_large(webhook: bool, limit: usize, declared: Option<usize>) -> Response {
    if webhook {
        tracing::error!(
            declared_bytes = declared,
            max_body_bytes = limit,
            "refused a webhook body over max_body_bytes (413); Alertmanager does not retry it, so those alerts are lost: raise remediator.max_body_bytes or group alerts more finely"
        );
    }
    let key = if webhook {
        " (remediator.max_body_bytes)"
    } else {
        ""
    };
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is over the {limit} byte limit{key}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_and_the_api_need_a_role_and_only_the_webhook_a_large_body() {
        let large = 16 << 20;
        let cases = [
            (
                Method::POST,
                "/webhook/alertmanager",
                Some(Role::Webhook),
                large,
            ),
            (Method::POST, "/webhook/other", Some(Role::Webhook), large),
            (
                Method::GET,
                "/api/v1/runs",
                Some(Role::Viewer),
                SMALL_BODY_BYTES,
            ),
            (
                Method::HEAD,
                "/api/v1/status",
                Some(Role::Viewer),
                SMALL_BODY_BYTES,
            ),
            (
                Method::POST,
                "/api/v1/pause",
                Some(Role::Operator),
                SMALL_BODY_BYTES,
            ),
            (
                Method::DELETE,
                "/api/v2/anything",
                Some(Role::Operator),
                SMALL_BODY_BYTES,
            ),
            (Method::POST, "/api", Some(Role::Operator), SMALL_BODY_BYTES),
            (Method::POST, "/ui/login", None, SMALL_BODY_BYTES),
            (Method::GET, "/", None, SMALL_BODY_BYTES),
            (Method::GET, "/metrics", None, SMALL_BODY_BYTES),
            (Method::GET, "/apiary", None, SMALL_BODY_BYTES),
        ];
        for (method, path, role, max_body_bytes) in cases {
            assert_eq!(
                needs(&method, path, large),
                Needs {
                    role,
                    max_body_bytes
                },
                "{method} {path}"
            );
        }
    }
}
