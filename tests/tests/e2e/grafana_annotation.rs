//! The Grafana annotation a run posts, against Grafana's documented annotations API (the
//! HTTP API's `POST /api/annotations`: a bearer service-account token, a JSON body of
//! `text`, `tags` and `time`/`timeEnd` in epoch milliseconds, optionally `dashboardUID` and
//! `panelId`; answered `{"message":"Annotation added","id":N}`). No Grafana runs here, so a
//! stand-in on loopback holds the request to that contract, field by field, and refuses
//! anything else as Grafana would (401 without the token, 400 for a body it cannot take).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion, RemediatorService};
use serde_json::{json, Value};

use crate::service::{ServiceFiles, TOKEN};
use crate::support::{serve_on_loopback, SETTLE};

const GRAFANA_TOKEN: &str = "glsa_test_service_account_token";
/// The body fields the documented endpoint takes.
const DOCUMENTED: [&str; 7] = [
    "dashboardUID",
    "dashboardId",
    "panelId",
    "time",
    "timeEnd",
    "tags",
    "text",
];

type Received = Arc<Mutex<Vec<Value>>>;

/// What Grafana would answer: 401, 400 with why, or 200 and the request kept.
async fn annotations(
    State(received): State<Received>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let refuse = |status, message: String| (status, Json(json!({ "message": message })));
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {GRAFANA_TOKEN}"))
    {
        return refuse(StatusCode::UNAUTHORIZED, "Unauthorized".into());
    }
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !v.starts_with("application/json"))
    {
        return refuse(StatusCode::BAD_REQUEST, "bad request data".into());
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "bad request data".into());
    };
    if let Err(why) = documented(&body) {
        return refuse(StatusCode::BAD_REQUEST, why);
    }
    received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(body);
    (
        StatusCode::OK,
        Json(json!({"message": "Annotation added", "id": 1})),
    )
}

/// The body as the documentation describes it, or why not.
fn documented(body: &Value) -> Result<(), String> {
    let fields = body.as_object().ok_or("not a JSON object")?;
    if let Some(unknown) = fields.keys().find(|k| !DOCUMENTED.contains(&k.as_str())) {
        return Err(format!("{unknown} is not a field of the annotations API"));
    }
    if body["text"].as_str().is_none_or(str::is_empty) {
        return Err("text must be a non-empty string".into());
    }
    if !body["tags"]
        .as_array()
        .is_some_and(|tags| tags.iter().all(Value::is_string))
    {
        return Err("tags must be an array of strings".into());
    }
    let (Some(time), Some(end)) = (body["time"].as_u64(), body["timeEnd"].as_u64()) else {
        return Err("time and timeEnd must be epoch milliseconds".into());
    };
    if end < time {
        return Err("timeEnd is before time".into());
    }
    Ok(())
}

fn epoch_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_posts_one_annotation_grafana_takes() -> Result<()> {
    // The stand-in serves under a sub-path, as a Grafana behind a proxy does (`root_url`).
    let received: Received = Arc::default();
    let app = Router::new()
        .route("/grafana/api/annotations", post(annotations))
        .with_state(received.clone());
    let (address, server) = serve_on_loopback(app).await?;
    let grafana = format!("http://{address}/grafana/");

    let cluster = EtcdCluster::builder(EtcdVersion::NEWEST).start().await?;
    let files = ServiceFiles::new()?;
    std::fs::write(files.path("grafana-token"), format!("{GRAFANA_TOKEN}\n"))?;
    let config = files.write_config(
        &cluster.config_entry("prod-a"),
        &format!(
            "  grafana_annotations: {{url: \"{grafana}\", token_file: {}, tags: [prod]}}\n",
            files.path("grafana-token").display()
        ),
    )?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let before = epoch_millis(SystemTime::now());
    let (status, answer) = service
        .post("/api/v1/clusters/prod-a/remediate?dry_run=true")
        .await?;
    ensure!(status == 202, "{status} {answer}");
    let id = answer["decision"]["run_id"]
        .as_i64()
        .context("decision.run_id")?;
    let run = service.wait_for_run(id, Duration::from_secs(60)).await?;

    let posted = eventually("the annotation reaches Grafana", SETTLE, || async {
        let received = received.lock().unwrap_or_else(PoisonError::into_inner);
        ensure!(received.len() == 1, "{received:?}\n{}", service.output());
        Ok(received[0].clone())
    })
    .await?;
    let after = epoch_millis(SystemTime::now());
    let (time, end) = (
        posted["time"].as_u64().context("time")?,
        posted["timeEnd"].as_u64().context("timeEnd")?,
    );
    ensure!(
        before <= time && time <= end && end <= after,
        "the annotation spans {time}..{end}, the run ran within {before}..{after}"
    );
    let tags: Vec<&str> = posted["tags"]
        .as_array()
        .context("tags")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // A fresh cluster has nothing to defragment: the dry run ends `skipped`, and says so.
    let outcome = run["outcome"].as_str().context("outcome")?;
    ensure!(
        tags == ["etcdmedic", "prod-a", outcome, "prod"],
        "tags {tags:?}, the run ended {outcome}"
    );
    let text = posted["text"].as_str().unwrap_or("");
    ensure!(
        text.starts_with(&format!("etcdmedic run {id} on prod-a: {outcome}")),
        "{text}"
    );
    server.abort();
    Ok(())
}

#[test]
fn the_stand_in_refuses_what_grafana_refuses() {
    let good = json!({"time": 1, "timeEnd": 2, "tags": ["a"], "text": "t"});
    assert!(documented(&good).is_ok());
    for bad in [
        json!({"time": 1, "timeEnd": 2, "tags": ["a"], "text": "t", "cluster": "x"}),
        json!({"time": 1, "timeEnd": 2, "tags": ["a"], "text": ""}),
        json!({"time": 1, "timeEnd": 2, "tags": "a", "text": "t"}),
        json!({"time": "now", "timeEnd": 2, "tags": ["a"], "text": "t"}),
        json!({"time": 3, "timeEnd": 2, "tags": ["a"], "text": "t"}),
    ] {
        assert!(documented(&bad).is_err(), "{bad}");
    }
}
