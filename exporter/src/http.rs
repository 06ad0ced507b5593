//! HTTP endpoints: `/metrics` (every cluster), `/probe?target=` (one cluster), `/healthz`,
//! `/readyz`, `POST /-/reload` and a landing page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::metrics;
use crate::reload::LiveTargets;

/// Answer this much before the scraper gives up, so a slow member costs its series, not
/// the whole scrape (blackbox_exporter's default offset).
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

/// The exporter's endpoints; `remote_reload` accepts `POST /-/reload` from any address.
pub fn router(targets: Arc<LiveTargets>, remote_reload: bool) -> Router {
    let reload = post(reload).layer(middleware::from_fn_with_state(remote_reload, reload_guard));
    Router::new()
        .route("/", get(landing))
        .route("/metrics", get(all_clusters))
        .route("/probe", get(one_cluster))
        .route("/-/reload", reload)
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

/// Whether a client at `peer` may reload: loopback always (a sidecar, the host), any
/// address only with `--web.remote-reload`. Without the peer's address, only that flag.
pub fn may_reload(peer: Option<std::net::SocketAddr>, remote_reload: bool) -> bool {
    remote_reload || peer.is_some_and(|peer| peer.ip().to_canonical().is_loopback())
}

/// Anyone who reaches the port could otherwise make the exporter read its file again at
/// will: 403 for clients off loopback unless `--web.remote-reload`.
async fn reload_guard(State(remote_reload): State<bool>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    if may_reload(peer, remote_reload) {
        return next.run(request).await;
    }
    tracing::warn!(peer = ?peer, "refused POST /-/reload from a client off loopback (403); start with --web.remote-reload to accept it");
    (
        StatusCode::FORBIDDEN,
        "POST /-/reload is accepted from loopback only; start the exporter with \
         --web.remote-reload to accept it from anywhere, or send SIGHUP\n",
    )
        .into_response()
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
    use crate::Targets;

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

    #[test]
    fn only_loopback_clients_may_reload_unless_remote_reload_is_on() {
        let peer = |text: &str| Some(text.parse::<std::net::SocketAddr>().unwrap());
        for local in [
            "127.0.0.1:4000",
            "127.0.0.9:4000",
            "[::1]:4000",
            "[::ffff:127.0.0.1]:4000",
        ] {
            assert!(may_reload(peer(local), false), "{local}");
        }
        for remote in [
            "10.0.0.5:4000",
            "192.168.1.2:4000",
            "[fd00::1]:4000",
            "[::ffff:10.0.0.5]:4000",
        ] {
            assert!(!may_reload(peer(remote), false), "{remote}");
            assert!(may_reload(peer(remote), true), "{remote}");
        }
        assert!(!may_reload(None, false));
    }

    /// The guard reads the peer axum's connect-info puts on each request (no socket here:
    /// this address is only a value on the request).
    #[tokio::test]
    async fn a_reload_from_off_loopback_is_refused_and_changes_nothing() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcdmedic.yaml");
        let write = |name: &str| {
            let yaml =
                format!("clusters:\n  - name: {name}\n    endpoints: [http://127.0.0.1:1]\n");
            std::fs::write(&path, yaml).unwrap();
        };
        write("before");
        let limits = crate::targets::Limits::default();
        let targets =
            Targets::new(&etcdmedic_cluster::Config::load(&path).unwrap(), limits).unwrap();
        let live = Arc::new(LiveTargets::new(targets, Some(path.clone()), limits));
        let names = || live.targets().names().join(",");
        write("after");
        let reload_from = |peer: &str, remote_reload: bool| {
            let mut request = axum::http::Request::post("/-/reload")
                .body(axum::body::Body::empty())
                .unwrap();
            request
                .extensions_mut()
                .insert(ConnectInfo(peer.parse::<std::net::SocketAddr>().unwrap()));
            router(live.clone(), remote_reload).oneshot(request)
        };
        let refused = reload_from("10.1.2.3:5000", false).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(names(), "before");
        let accepted = reload_from("127.0.0.1:5000", false).await.unwrap();
        assert_eq!(accepted.status(), StatusCode::OK);
        assert_eq!(names(), "after");
        write("anywhere");
        let accepted = reload_from("10.1.2.3:5000", true).await.unwrap();
        assert_eq!(accepted.status(), StatusCode::OK);
        assert_eq!(names(), "anywhere");
    }
}
