//! The web pages: an overview of every configured cluster (its members live, its queue and
//! run with progress, the pause switch, the last run and backup), the runs with filters and
//! paging, and one run's page (steps, sizes before and after, snapshot, keyspace check, the
//! alerts that started it). Server-rendered HTML, no script; read-only.
//!
//! They need the same credentials as the API: a request that carries them (bearer token,
//! basic auth, client certificate) is let through, and a browser logs in once through a form
//! that takes the same credential and sets a session cookie (see [`session`]).

use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::auth::Role;
use super::http::App;
use super::listener::ClientCertificate;

mod chart;
mod pages;
mod session;

pub(super) use session::Sessions;

pub(super) fn router(app: App) -> Router<App> {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/logout", axum::routing::post(logout))
        .layer(middleware::from_fn_with_state(app.clone(), require_login));
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .merge(pages)
}

/// Lets a request with the API's credentials or a live session through; sends a browser
/// without either to the login form.
async fn require_login(State(app): State<App>, request: Request, next: Next) -> Response {
    let certificate = request.extensions().get::<ClientCertificate>().copied();
    if app.requires_client_certificate && certificate != Some(ClientCertificate(true)) {
        return pages::message(
            StatusCode::UNAUTHORIZED,
            "Client certificate required",
            "These pages, like the API, need a client certificate signed by \
             remediator.tls.client_ca_file.",
        );
    }
    let headers = request.headers();
    if app.auth.check(headers, Role::Viewer).is_ok() || app.sessions.is_valid(headers) {
        return next.run(request).await;
    }
    let wanted = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    Redirect::to(&format!("/ui/login?next={}", url_encode(wanted))).into_response()
}

#[derive(Debug, Deserialize, Default)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_page(
    State(app): State<App>,
    query: Result<axum::extract::Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let next = query.ok().and_then(|q| q.0.next).unwrap_or_default();
    pages::login(
        app.auth.login_form(),
        &safe_next(&next),
        None,
        StatusCode::OK,
    )
}

#[derive(Debug, Deserialize)]
struct LoginFields {
    #[serde(default)]
    token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

async fn login(State(app): State<App>, headers: HeaderMap, form: Form<LoginFields>) -> Response {
    if !same_origin(&headers) {
        return pages::message(
            StatusCode::FORBIDDEN,
            "Refused",
            "The login form was sent from another site.",
        );
    }
    let next = safe_next(&form.next);
    let Some(role) = app
        .auth
        .accepts_login(&form.token, &form.username, &form.password)
    else {
        tracing::warn!("web page login refused: not the viewer's or the operator's credentials");
        return pages::login(
            app.auth.login_form(),
            &next,
            Some("Those are not the viewer's or the operator's credentials."),
            StatusCode::UNAUTHORIZED,
        );
    };
    tracing::info!(role = role.as_str(), "web page login");
    let Some(id) = app.sessions.open() else {
        return pages::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No session",
            "The system gave no randomness for a session id.",
        );
    };
    let mut response = Redirect::to(&next).into_response();
    set_cookie(&mut response, &session::set_cookie(&id, app.serves_tls));
    response
}

async fn logout(State(app): State<App>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return pages::message(
            StatusCode::FORBIDDEN,
            "Refused",
            "The logout form was sent from another site.",
        );
    }
    app.sessions.close(&headers);
    let mut response = Redirect::to("/ui/login").into_response();
    set_cookie(&mut response, &session::set_cookie("", app.serves_tls));
    response
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
}

/// A form posted from a page of this service: the browser's `Origin` (or, without it,
/// `Referer`) names the host the request went to. A request with neither (curl) passes: it
/// carries no cookie a browser would add on another site's behalf.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match (origin, host) {
        (None, _) => true,
        (Some(origin), Some(host)) => url::Url::parse(origin).is_ok_and(|url| {
            let authority = match url.port() {
                Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                None => url.host_str().unwrap_or_default().to_string(),
            };
            authority.eq_ignore_ascii_case(host)
        }),
        (Some(_), None) => false,
    }
}

/// Where to go after logging in: a page of this service only, never another site.
/// `next` when it is a path of this service, else `/`. Browsers drop tabs and newlines from
/// a URL and treat `\` as `/`, so `/\t/evil.example` would lead to `//evil.example`: another
/// site. A path with any control character, whitespace or backslash is refused.
fn safe_next(next: &str) -> String {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace());
    match local {
        true => next.to_string(),
        false => "/".to_string(),
    }
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The page's HTML with the headers every page gets: no framing by other sites, no script
/// or style from elsewhere, never cached (it shows live state).
pub(super) fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_of_this_service_are_where_a_login_leads() {
        assert_eq!(safe_next("/ui/runs?cluster=a"), "/ui/runs?cluster=a");
        for hostile in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/ /evil.example",
            "/\u{a0}/evil.example",
            "/\u{0}/evil.example",
            "",
            "ui",
        ] {
            assert_eq!(safe_next(hostile), "/", "{hostile}");
        }
    }

    #[test]
    fn a_form_from_another_site_is_refused() {
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(name.clone(), value.parse().unwrap());
            }
            map
        };
        let host = (header::HOST, "127.0.0.1:9380");
        assert!(same_origin(&headers(std::slice::from_ref(&host))));
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:9380")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::REFERER, "http://127.0.0.1:9381/ui/login")
        ])));
        assert!(!same_origin(&headers(&[(
            header::ORIGIN,
            "http://127.0.0.1:9380"
        )])));
    }
}
