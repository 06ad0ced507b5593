//! The HTTP surface: `POST /webhook/alertmanager`, the `/api/v1` runs API, the web pages
//! (`/` and `/ui/`, see `ui`), `/metrics`, `/healthz` and `/readyz`. Webhook and API need the configured credentials; metrics and
//! probes do not (Prometheus and the kubelet call them).
//!
//! Every error is JSON `{"error": "..."}` with the status Alertmanager acts on: 5xx only
//! when retrying can help (the state store is unavailable), 4xx for everything that a retry
//! would repeat.

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

mod backups;

use super::admission::WEBHOOK_PATH;
use super::auth::Role;
use super::metrics;
use super::payload;
use super::respond::{error, unavailable, MAX_PAGE};
use super::scheduler::RequestError;
use super::store::RunFilter;
use super::App;
use crate::report::Outcome;

const DEFAULT_PAGE: usize = 50;

pub(super) fn router(app: App) -> Router {
    // Who may call what is decided by path in `admission`, before any body is read, for
    // every route below and for those added later.
    Router::new()
        .route(WEBHOOK_PATH, post(webhook))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(show_run))
        .route("/api/v1/backups", get(backups::list))
        .route("/api/v1/status", get(status))
        .route("/api/v1/clusters/{name}/remediate", post(remediate))
        .route("/api/v1/clusters/{name}/backup", post(backups::request))
        .route("/api/v1/pause", post(pause))
        .route("/api/v1/resume", post(resume))
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
        .layer(middleware::from_fn_with_state(app.clone(), admit))
        .layer(middleware::from_fn_with_state(app.clone(), count_webhook))
        .with_state(app)
}

/// Authenticates and reads every request before it is routed (see `admission`).
async fn admit(State(app): State<App>, request: Request, next: Next) -> Response {
    match app.admission.admit(request).await {
        Ok(request) => next.run(request).await,
        Err(refused) => *refused,
    }
}

/// Every answer to the webhook, refusals before it is read included.
async fn count_webhook(State(app): State<App>, request: Request, next: Next) -> Response {
    let webhook = request.uri().path() == WEBHOOK_PATH;
    let response = next.run(request).await;
    if webhook {
        app.metrics.webhook_request(response.status().as_u16());
    }
    response
}

async fn webhook(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json (Alertmanager's webhook payload)",
        );
    }
    // Read whole by `admission`, within max_body_bytes and read_body_timeout.
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return error(StatusCode::BAD_REQUEST, "cannot read the body");
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
        Err(RequestError::UnknownCluster(_)) => app.unknown_cluster(&name),
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
    metrics::response(&app.metrics, &headers)
}

/// Ready while the state store answers: without it no alert can be recorded. Why not is
/// logged, and said to a viewer: a store's error names its database's user and host, which
/// a probe (or anyone) does not need.
async fn ready(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.scheduler.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "not ready: the state store is unavailable");
            if app.admission.auth.check(&headers, Role::Viewer).is_ok() {
                return unavailable(err);
            }
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the state store is unavailable; the reason is in the log, and here with a \
                 viewer's credential",
            )
        }
    }
}
