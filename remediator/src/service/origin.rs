//! Whether a request that changes something was sent by this service's own pages or by a
//! script, and not by another site's page in a browser that holds a session cookie or
//! cached basic credentials for this one. Browsers say where a request comes from in
//! `Origin` (or `Referer`); a page of another site can also post a form, whose content type
//! is one of three, but it cannot set other headers without asking first.

use axum::http::{header, HeaderMap};

/// Set on a request a standby forwards: a replica that receives one while it is a standby
/// itself (the lock changed hands meanwhile) answers 503 instead of forwarding again.
pub(super) const FORWARDED: &str = "x-etcdmedic-forwarded";
/// The `Host` the client sent to the standby, on a forwarded request.
pub(super) const FORWARDED_HOST: &str = "x-etcdmedic-forwarded-host";

/// The content types a page of another site may post without asking first (a form).
const FORM_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// The address the client used: the `Host` it sent, or the one it sent to the standby that
/// forwarded the request (a browser's page cannot add that header to a form's request).
fn reached_as(headers: &HeaderMap) -> Option<&str> {
    let forwarded = headers
        .contains_key(FORWARDED)
        .then(|| headers.get(FORWARDED_HOST))
        .flatten();
    forwarded
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
}

/// `scheme://host[:port]` as `Origin` writes it.
fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// Whether the request's `Origin` (or `Referer`) is this service: the address the client
/// used, or `public_url` (the address behind a proxy). Without either header it is not a
/// browser's cross-site request: a script, curl, Alertmanager.
pub(super) fn same_origin(headers: &HeaderMap, public_url: Option<&url::Url>) -> bool {
    let Some(origin) = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let Ok(origin) = url::Url::parse(origin) else {
        return false;
    };
    if public_url.is_some_and(|public| origin_of(public) == origin_of(&origin)) {
        return true;
    }
    let authority = match origin.port() {
        Some(port) => format!("{}:{port}", origin.host_str().unwrap_or_default()),
        None => origin.host_str().unwrap_or_default().to_string(),
    };
    reached_as(headers).is_some_and(|host| authority.eq_ignore_ascii_case(host))
}

/// Why a call of the API that changes state may have been forged by another site's page,
/// if it may: another `Origin`, or a form's content type (the API's calls take no body, or
/// JSON).
pub(super) fn forged(headers: &HeaderMap, public_url: Option<&url::Url>) -> Option<String> {
    if !same_origin(headers, public_url) {
        return Some(
            "refused: the request came from a page of another site (its Origin is not this \
             service's; behind a proxy, set remediator.public_url)"
                .to_string(),
        );
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())?;
    FORM_TYPES.contains(&media.as_str()).then(|| {
        format!(
            "refused: Content-Type {media} is what a form of another site sends; send no \
             body, or application/json"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_request_from_another_site_is_not_of_this_origin() {
        let public = url::Url::parse("https://etcdmedic.example.com/").unwrap();
        let cases = [
            (vec![("host", "127.0.0.1:9380")], true),
            (
                vec![
                    ("host", "127.0.0.1:9380"),
                    ("origin", "http://127.0.0.1:9380"),
                ],
                true,
            ),
            (
                vec![
                    ("host", "127.0.0.1:9380"),
                    ("origin", "http://evil.example"),
                ],
                false,
            ),
            (
                vec![
                    ("host", "127.0.0.1:9380"),
                    ("referer", "http://evil.example/x"),
                ],
                false,
            ),
            (vec![("host", "127.0.0.1:9380"), ("origin", "null")], false),
            (vec![("origin", "http://127.0.0.1:9380")], false),
            // Behind a proxy: the public address, not the pod's.
            (
                vec![
                    ("host", "10.0.0.7:9380"),
                    ("origin", "https://etcdmedic.example.com"),
                ],
                true,
            ),
            (
                vec![
                    ("host", "10.0.0.7:9380"),
                    ("origin", "http://etcdmedic.example.com"),
                ],
                false,
            ),
            // Forwarded by a standby: the address the browser used was the standby's.
            (
                vec![
                    ("host", "10.0.0.8:9380"),
                    ("origin", "http://10.0.0.9:9380"),
                    ("x-etcdmedic-forwarded", "1"),
                    ("x-etcdmedic-forwarded-host", "10.0.0.9:9380"),
                ],
                true,
            ),
            // The forwarded host counts only on a forwarded request.
            (
                vec![
                    ("host", "10.0.0.8:9380"),
                    ("origin", "http://10.0.0.9:9380"),
                    ("x-etcdmedic-forwarded-host", "10.0.0.9:9380"),
                ],
                false,
            ),
        ];
        for (pairs, same) in cases {
            assert_eq!(
                same_origin(&headers(&pairs), Some(&public)),
                same,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn a_forms_content_type_or_another_origin_is_refused_on_the_api() {
        let host = ("host", "127.0.0.1:9380");
        assert_eq!(forged(&headers(&[host]), None), None);
        assert_eq!(
            forged(
                &headers(&[host, ("content-type", "application/json")]),
                None
            ),
            None
        );
        for form in FORM_TYPES {
            let refused = forged(&headers(&[host, ("content-type", form)]), None).unwrap();
            assert!(refused.contains(form), "{refused}");
        }
        let refused = forged(
            &headers(&[host, ("content-type", "Text/Plain; charset=utf-8")]),
            None,
        );
        assert!(refused.is_some());
        let refused = forged(&headers(&[host, ("origin", "https://evil.example")]), None);
        assert!(refused.unwrap().contains("another site"));
    }
}
