//! The web pages: an overview of every configured cluster (its members live, its queue and
//! run with progress, the pause switch, the last run and backup), the runs with filters and
//! paging, and one run's page (steps, sizes before and after, snapshot, keyspace check, the
//! alerts that started it). Server-rendered HTML, no script; read-only.
//!
//! They need a viewer's or an operator's credential: a request that carries one (bearer
//! token, basic auth, and the client certificate when one is required) is let through, and
//! a browser logs in once through a form that takes it and sets a session cookie (see
//! [`session`]); wrong credentials from one address are throttled (see [`throttle`]).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::auth::Role;
use super::origin;
use super::App;

mod chart;
mod pages;
mod session;
mod throttle;

pub(super) use session::Sessions;
pub(super) use throttle::LoginThrottle;

pub(super) fn router(app: App) -> Router<App> {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/logout", axum::routing::post(logout))
        .layer(middleware::from_fn_with_state(app.clone(), require_login));
    // The login form too needs the client certificate: without it, it would be a place to
    // guess credentials from anywhere.
    let login = Router::new()
        .route("/ui/login", get(login_page).post(login))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            require_certificate,
        ));
    Router::new().merge(login).merge(pages)
}

/// The page that says a client certificate is needed, when one is and the request came
/// without it.
fn certificate_missing(app: &App, request: &Request) -> Option<Response> {
    app.admission.lacks_certificate(request).then(|| {
        pages::message(
            StatusCode::UNAUTHORIZED,
            "Client certificate required",
            "These pages, like the API, need a client certificate signed by \
             remediator.tls.client_ca_file.",
        )
    })
}

async fn require_certificate(State(app): State<App>, request: Request, next: Next) -> Response {
    match certificate_missing(&app, &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// Lets a request with a viewer's or an operator's credential or a live session through;
/// sends a browser without either to the login form.
async fn require_login(State(app): State<App>, request: Request, next: Next) -> Response {
    if let Some(refused) = certificate_missing(&app, &request) {
        return refused;
    }
    let headers = request.headers();
    if app.admission.auth.check(headers, Role::Viewer).is_ok() || app.sessions.is_valid(headers) {
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
        app.admission.auth.login_form(),
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

async fn login(
    State(app): State<App>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Form<LoginFields>,
) -> Response {
    if !origin::same_origin(&headers, app.admission.public_url.as_ref()) {
        return pages::message(
            StatusCode::FORBIDDEN,
            "Refused",
            "The login form was sent from another site.",
        );
    }
    let address = client.ip();
    if let Some(wait) = app.login_throttle.wait(address, Instant::now()) {
        tracing::warn!(%address, wait_seconds = wait.as_secs(), "web page login refused: too many wrong credentials from this address");
        let mut refused = pages::message(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "Too many wrong credentials were sent from your address. Wait a minute, then \
             try again.",
        );
        if let Ok(seconds) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            refused.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        return refused;
    }
    let next = safe_next(&form.next);
    let Some(role) = app
        .admission
        .auth
        .accepts_login(&form.token, &form.username, &form.password)
    else {
        app.login_throttle.failed(address, Instant::now());
        tracing::warn!(%address, "web page login refused: not the viewer's or the operator's credentials");
        return pages::login(
            app.admission.auth.login_form(),
            &next,
            Some("Those are not the viewer's or the operator's credentials."),
            StatusCode::UNAUTHORIZED,
        );
    };
    app.login_throttle.succeeded(address);
    tracing::info!(%address, role = role.as_str(), "web page login");
    let Some(id) = app.sessions.open() else {
        return pages::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No session",
            "The system gave no randomness for a session id.",
        );
    };
    let mut response = Redirect::to(&next).into_response();
    set_cookie(&mut response, &session::set_cookie(&id, app.secure_cookies));
    response
}

async fn logout(State(app): State<App>, headers: HeaderMap) -> Response {
    if !origin::same_origin(&headers, app.admission.public_url.as_ref()) {
        return pages::message(
            StatusCode::FORBIDDEN,
            "Refused",
            "The logout form was sent from another site.",
        );
    }
    app.sessions.close(&headers);
    let mut response = Redirect::to("/ui/login").into_response();
    set_cookie(&mut response, &session::set_cookie("", app.secure_cookies));
    response
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(header::SET_COOKIE, value);
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
}
