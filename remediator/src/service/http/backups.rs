//! `POST /api/v1/clusters/{name}/backup` and `GET /api/v1/backups?cluster=&limit=`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::service::backups::BackupFilter;
use crate::service::respond::{error, unavailable, MAX_PAGE};
use crate::service::scheduler::RequestError;
use crate::service::App;

/// Backups listed when `limit` is not given.
const DEFAULT_BACKUPS: usize = 20;

pub(crate) async fn request(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.scheduler.request_backup(&name).await {
        Ok(decision) => (
            StatusCode::ACCEPTED,
            Json(json!({ "cluster": name, "decision": decision })),
        )
            .into_response(),
        Err(RequestError::UnknownCluster(_)) => app.unknown_cluster(&name),
        Err(err @ (RequestError::NoBackupDestination(_) | RequestError::Paused)) => {
            error(StatusCode::CONFLICT, err.to_string())
        }
        Err(RequestError::Store(err)) => unavailable(err),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct BackupsQuery {
    cluster: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(app): State<App>,
    query: Result<Query<BackupsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "cluster is a name, limit a number");
    };
    let limit = query.limit.unwrap_or(DEFAULT_BACKUPS);
    if limit == 0 || limit > MAX_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_PAGE}"),
        );
    }
    if let Some(cluster) = query.cluster.as_deref().filter(|c| !app.scheduler.knows(c)) {
        return app.unknown_cluster(cluster);
    }
    let filter = BackupFilter {
        cluster: query.cluster,
        limit,
    };
    match app.scheduler.backups(filter).await {
        Ok(backups) => Json(json!({ "backups": backups })).into_response(),
        Err(err) => unavailable(err),
    }
}
