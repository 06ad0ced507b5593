//! HTTP endpoints: `/metrics` (every cluster), `/probe?target=` (one cluster), `/healthz`,
//! `/readyz`, `POST /-/reload` and a landing page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::metrics;
use crate::reload::LiveTargets;

/// Answer this much before the scraper gives up, so a slow member costs its series, not
/// the whole scrape (blackbox_exporter's default offset).
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

pub fn router(targets: Arc<LiveTargets>) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/metrics", get(all_clusters))
        .route("/probe", get(one_cluster))
        .route("/-/reload", post(reload))
        .route("/healthz", get(|| async { "ok\n" }))
        // Ready as soon as it serves: readiness must not depend on etcd, or an outage would
        // also remove the `up 0` series that report it.
        .route("/readyz", get(|| async { "ready\n" }))
        .with_state(targets)
}

async fn all_clusters(State(live): State<Arc<LiveTargets>>, headers: HeaderMap) -> Response {
    let statuses = live.targets().collect_all(scrape_deadline(&headers)).await;
    exposition(statuses, Some(live.state()))
}

/// Reads the config file again; 500 with the reason when it is not valid (the clusters
/// served so far stay).
async fn reload(State(live): State<Arc<LiveTargets>>) -> Response {
    match live.reload() {
        Ok(names) => {
            tracing::info!(clusters = ?names, "configuration reloaded");
            format!("reloaded: {} clusters: {}\n", names.len(), names.join(", ")).into_response()
        }
        Err(err) => {
            tracing::error!(error = %err, "reloading the configuration failed; serving the previous one");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload failed, still serving the previous configuration: {err}\n"),
            )
                .into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
struct ProbeQuery {
    target: Option<String>,
}

async fn one_cluster(
    State(live): State<Arc<LiveTargets>>,
    Query(query): Query<ProbeQuery>,
    headers: HeaderMap,
) -> Response {
    let targets = live.targets();
    let known = || targets.names().join(", ");
    let name = match query.target.as_deref() {
        None | Some("") => {
            return bad_request(format!(
                "missing ?target=<cluster name>; configured clusters: {}",
                known()
            ))
        }
        Some(name) => name,
    };
    let Some(probe) = targets.get(name) else {
        return bad_request(format!(
            "unknown target {name:?}; configured clusters: {}",
            known()
        ));
    };
    let deadline = scrape_deadline(&headers).map(|left| Instant::now() + left);
    let status = targets.collect(probe, deadline).await;
    exposition(vec![status], None)
}

fn exposition(
    statuses: Vec<etcdmedic_cluster::ClusterStatus>,
    exporter: Option<crate::reload::ReloadState>,
) -> Response {
    match metrics::encode(statuses, exporter) {
        Ok(body) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

/// The scraper's own timeout (Prometheus sends it with every scrape), less a margin.
fn scrape_deadline(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get("X-Prometheus-Scrape-Timeout-Seconds")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let timeout = Duration::try_from_secs_f64(seconds).ok()?;
    Some(
        timeout
            .saturating_sub(SCRAPE_TIMEOUT_OFFSET)
            .max(timeout / 2),
    )
}

async fn landing(State(live): State<Arc<LiveTargets>>) -> Html<String> {
    let targets = live.targets();
    let probes: String = targets
        .names()
        .iter()
        .map(|name| {
            let escaped = html_escape(name);
            let query = url_encode(name);
            format!("<li><a href=\"/probe?target={query}\">/probe?target={escaped}</a></li>")
        })
        .collect();
    Html(format!(
        "<!doctype html><html><head><title>etcdmedic exporter</title></head><body>\
         <h1>etcdmedic exporter</h1>\
         <p>Per-member etcd status: db size, in-use size, leader, alarms, raft progress, quota.</p>\
         <ul><li><a href=\"/metrics\">/metrics</a> (every cluster)</li>{probes}\
         <li><a href=\"/healthz\">/healthz</a></li><li><a href=\"/readyz\">/readyz</a></li></ul>\
         <p>version {} ({})</p></body></html>",
        etcdmedic_cluster::build_info::VERSION,
        etcdmedic_cluster::build_info::REVISION,
    ))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrape_deadline_leaves_a_margin_before_the_scrapers_timeout() {
        let mut headers = HeaderMap::new();
        assert_eq!(scrape_deadline(&headers), None);
        headers.insert("X-Prometheus-Scrape-Timeout-Seconds", "10".parse().unwrap());
        assert_eq!(scrape_deadline(&headers), Some(Duration::from_millis(9500)));
        headers.insert(
            "X-Prometheus-Scrape-Timeout-Seconds",
            "0.5".parse().unwrap(),
        );
        assert_eq!(scrape_deadline(&headers), Some(Duration::from_millis(250)));
        headers.insert(
            "X-Prometheus-Scrape-Timeout-Seconds",
            "soon".parse().unwrap(),
        );
        assert_eq!(scrape_deadline(&headers), None);
    }
}
