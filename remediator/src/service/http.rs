//! The HTTP surface: `POST /webhook/alertmanager`, the `/api/v1` runs API, the web pages
//! (`/` and `/ui/`, see `ui`), `/metrics`, `/healthz` and `/readyz`. Webhook and API need the configured credentials; metrics and
//! probes do not (Prometheus and the kubelet call them).
//!
//! Every error is JSON `{"error": "..."}` with the status Alertmanager acts on: 5xx only
//! when retrying can help (the state store is unavailable), 4xx for everything that a retry
//! would repeat.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Authenticator, Denied, Role};
use super::backups;
use super::listener::ClientCertificate;
use super::metrics::{self, Metrics};
use super::payload;
use super::scheduler::{RequestError, Scheduler};
use super::store::{RunFilter, StoreError};
use crate::report::Outcome;

const DEFAULT_PAGE: usize = 50;
pub(super) const MAX_PAGE: usize = 500;

#[derive(Clone)]
pub struct App {
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    pub auth: Authenticator,
    pub max_body_bytes: usize,
    pub read_body_timeout: std::time::Duration,
    /// `tls.client_ca_file` is set: the webhook and API need a client certificate, which the
    /// handshake asks for without requiring it (probes and metrics do without).
    pub requires_client_certificate: bool,
    /// The web pages' logins.
    pub sessions: super::ui::Sessions,
    /// Served over TLS: session cookies are `Secure`.
    pub serves_tls: bool,
}

pub(super) fn router(app: App) -> Router {
    let webhook = Router::new()
        .route("/webhook/alertmanager", post(webhook))
        .layer(middleware::from_fn_with_state(
            (app.clone(), Role::Webhook),
            authenticate,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), count_webhook));
    let read = Router::new()
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(show_run))
        .route("/api/v1/backups", get(backups::api::list))
        .route("/api/v1/status", get(status))
        .layer(middleware::from_fn_with_state(
            (app.clone(), Role::Viewer),
            authenticate,
        ));
    let act = Router::new()
        .route("/api/v1/clusters/{name}/remediate", post(remediate))
        .route(
            "/api/v1/clusters/{name}/backup",
            post(backups::api::request),
        )
        .route("/api/v1/pause", post(pause))
        .route("/api/v1/resume", post(resume))
        .layer(middleware::from_fn_with_state(
            (app.clone(), Role::Operator),
            authenticate,
        ));
    Router::new()
        .merge(webhook)
        .merge(read)
        .merge(act)
        .merge(super::ui::router(app.clone()))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .with_state(app)
}

/// A store that failed is 503, which Alertmanager and probes read as "try again".
pub(super) fn unavailable(err: StoreError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
}

/// 404 for a cluster the configuration does not name, with the ones it does.
pub(super) fn unknown_cluster(app: &App, name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "unknown cluster {name:?}; configured clusters: {}",
            app.scheduler.cluster_names().join(", ")
        ),
    )
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Lets through a request whose credential's role covers `needed`: 401 without a good
/// credential, 403 with another role's.
async fn authenticate(
    State((app, needed)): State<(App, Role)>,
    request: Request,
    next: Next,
) -> Response {
    let certificate = request.extensions().get::<ClientCertificate>().copied();
    if app.requires_client_certificate && certificate != Some(ClientCertificate(true)) {
        return error(
            StatusCode::UNAUTHORIZED,
            "a client certificate signed by remediator.tls.client_ca_file is required for the \
             webhook and the API",
        );
    }
    match app.auth.check(request.headers(), needed) {
        Ok(()) => next.run(request).await,
        Err(refused @ Denied::Forbidden { .. }) => {
            tracing::warn!(path = %request.uri().path(), reason = %refused, "refused a request made with another role's credential (403)");
            error(StatusCode::FORBIDDEN, refused.to_string())
        }
        Err(Denied::Unauthenticated(why)) => {
            let mut response = error(StatusCode::UNAUTHORIZED, why);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer, Basic"),
            );
            response
        }
    }
}

async fn count_webhook(State(app): State<App>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    app.metrics.webhook_request(response.status().as_u16());
    response
}

async fn webhook(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json (Alertmanager's webhook payload)",
        );
    }
    // Alertmanager does not retry a 413: the notification is lost, so it must be seen.
    let too_large = |declared: Option<usize>| {
        tracing::error!(
            declared_bytes = declared,
            max_body_bytes = app.max_body_bytes,
            "refused a webhook body over max_body_bytes (413); Alertmanager does not retry it, so those alerts are lost: raise remediator.max_body_bytes or group alerts more finely"
        );
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the {} byte limit", app.max_body_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > app.max_body_bytes) {
        return too_large(declared);
    }
    let read = tokio::time::timeout(app.read_body_timeout, to_bytes(body, app.max_body_bytes));
    let bytes = match read.await {
        Err(_) => {
            tracing::error!(
                timeout_seconds = app.read_body_timeout.as_secs_f64(),
                "a webhook body did not arrive in time; answering 408"
            );
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}",
                    humantime::format_duration(app.read_body_timeout)
                ),
            );
        }
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err)) => {
            let message = err.to_string();
            let over_limit = err.into_inner().is::<http_body_util::LengthLimitError>();
            return if over_limit {
                too_large(None)
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {message}"),
                )
            };
        }
    };
    let payload = match payload::parse(&bytes) {
        Ok(payload) => payload,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let group_key = payload.group_key.clone();
    match app.scheduler.accept(payload).await {
        Ok(alerts) => {
            tracing::info!(group_key = %group_key, alerts = alerts.len(), decisions = ?alerts.iter().map(|a| (a.decision.action.as_str(), a.decision.run_id)).collect::<Vec<_>>(), "webhook accepted");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "group_key": group_key, "alerts": alerts })),
            )
                .into_response()
        }
        Err(err) => {
            tracing::error!(error = %err, "the state store is unavailable; answering 503 so Alertmanager retries");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the state store is unavailable, nothing was recorded; retry later ({err})"
                ),
            )
        }
    }
}

/// `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    cluster: Option<String>,
    outcome: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct RunsPage<T> {
    runs: Vec<T>,
    /// Pass as `before=` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<i64>,
}

async fn list_runs(State(app): State<App>, Query(query): Query<RunsQuery>) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_PAGE}"),
        );
    }
    let outcome = match query
        .outcome
        .as_deref()
        .map(|text| (text, Outcome::parse(text)))
    {
        None => None,
        Some((_, Some(outcome))) => Some(outcome),
        Some((text, None)) => {
            let known: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown outcome {text:?}; one of {}", known.join(", ")),
            );
        }
    };
    let filter = RunFilter {
        cluster: query.cluster,
        outcome,
        before: query.before,
        // One more than asked tells whether there is a next page.
        limit: limit + 1,
    };
    let mut runs = match app.scheduler.runs(filter).await {
        Ok(runs) => runs,
        Err(err) => return unavailable(err),
    };
    let next = (runs.len() > limit).then(|| {
        runs.truncate(limit);
        runs.last().map(|run| run.id)
    });
    Json(RunsPage {
        runs,
        next: next.flatten(),
    })
    .into_response()
}

async fn show_run(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("run id {id:?} is not a number"),
        );
    };
    match app.scheduler.run(id).await {
        Ok(Some((detail, progress))) => {
            let mut value = serde_json::to_value(&detail).unwrap_or_default();
            if let (Some(progress), Some(object)) = (progress, value.as_object_mut()) {
                object.insert("progress".into(), progress.into());
            }
            Json(value).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(err) => unavailable(err),
    }
}

#[derive(Debug, Deserialize)]
struct RemediateQuery {
    #[serde(default)]
    dry_run: bool,
}

async fn remediate(
    State(app): State<App>,
    Path(name): Path<String>,
    query: Result<Query<RemediateQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "dry_run must be true or false");
    };
    match app.scheduler.request(&name, query.dry_run).await {
        Ok(decision) => (
            StatusCode::ACCEPTED,
            Json(json!({ "cluster": name, "decision": decision })),
        )
            .into_response(),
        Err(RequestError::UnknownCluster(_)) => unknown_cluster(&app, &name),
        Err(err @ (RequestError::Paused | RequestError::NoBackupDestination(_))) => {
            error(StatusCode::CONFLICT, err.to_string())
        }
        Err(RequestError::Store(err)) => unavailable(err),
    }
}

async fn pause(State(app): State<App>) -> Response {
    set_paused(app, true).await
}

async fn resume(State(app): State<App>) -> Response {
    set_paused(app, false).await
}

async fn set_paused(app: App, paused: bool) -> Response {
    match app.scheduler.set_paused(paused).await {
        Ok(()) => Json(json!({ "paused": paused })).into_response(),
        Err(err) => unavailable(err),
    }
}

async fn status(State(app): State<App>) -> Response {
    let (paused, clusters) = match app.scheduler.status().await {
        Ok(status) => status,
        Err(err) => return unavailable(err),
    };
    Json(json!({
        "mode": app.scheduler.mode().as_str(),
        "paused": paused,
        "clusters": clusters,
    }))
    .into_response()
}

/// OpenMetrics when the scraper asks for it (Prometheus does), the classic text format
/// otherwise.
async fn metrics_text(State(app): State<App>, headers: HeaderMap) -> Response {
    metrics_response(&app.metrics, &headers)
}

/// `/metrics` in the format the scraper asked for.
pub(super) fn metrics_response(metrics: &super::Metrics, headers: &HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    match metrics.encode() {
        Ok(text) if openmetrics => (
            [(header::CONTENT_TYPE, metrics::OPENMETRICS_CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Ok(text) => (
            [(header::CONTENT_TYPE, metrics::PROMETHEUS_CONTENT_TYPE)],
            metrics::to_prometheus_text(&text),
        )
            .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        ),
    }
}

/// Ready while the state store answers: without it no alert can be recorded.
async fn ready(State(app): State<App>) -> Response {
    match app.scheduler.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(err) => unavailable(err),
    }
}
