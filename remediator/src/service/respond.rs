//! The answers every HTTP surface of the service shares: JSON errors with the status
//! Alertmanager and probes act on, and the API's page limit.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::store::StoreError;

/// The most items one page of the API returns.
pub(super) const MAX_PAGE: usize = 500;

/// `{"error": message}` with `status`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A store that failed is 503, which Alertmanager and probes read as "try again".
pub(super) fn unavailable(err: StoreError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
}
