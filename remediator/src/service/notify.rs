//! Optional side effects of a run, both off unless configured: an Alertmanager silence over
//! the alerts that triggered it while it is active (so the on-call is not paged for what is
//! already being fixed), and a Grafana annotation per run. Neither can fail a run: a
//! failure is logged and the run goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::settings::{GrafanaSettings, ServiceSettings, SilenceSettings};
use serde::Deserialize;
use serde_json::json;

use crate::report::RunReport;

/// A silence outlives a run that hangs or a service that dies by at most this; a run that
/// ends expires it at once.
const SILENCE_LENGTH: Duration = Duration::from_secs(2 * 60 * 60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(super) struct Notifier {
    /// Alertmanager's settings and the client that reaches it (its own TLS).
    silences: Option<(SilenceSettings, reqwest::Client)>,
    grafana: Option<(GrafanaSettings, reqwest::Client)>,
}

/// The HTTP client for one of them, over `tls` for https; `None` (that one is off, said in
/// the log) when it cannot be built.
fn client(tls: Option<&rustls::ClientConfig>, what: &str) -> Option<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
    if let Some(tls) = tls {
        builder = builder.tls_backend_preconfigured(tls.clone());
    }
    builder
        .build()
        .map_err(
            |err| tracing::error!(error = %err, "cannot build the HTTP client; {what} are off"),
        )
        .ok()
}

/// A silence this service created.
#[derive(Debug, Clone)]
pub(super) struct SilenceId(String);

impl Notifier {
    pub(super) fn new(settings: &ServiceSettings) -> Notifier {
        Notifier {
            silences: settings.silences.as_ref().and_then(|silences| {
                let http = client(silences.tls.as_deref(), "silences")?;
                Some((silences.clone(), http))
            }),
            grafana: settings.grafana.as_ref().and_then(|grafana| {
                let http = client(grafana.tls.as_deref(), "Grafana annotations")?;
                Some((grafana.clone(), http))
            }),
        }
    }

    /// Silences each triggering alert name for this cluster; returns what to expire later.
    pub(super) async fn silence(
        &self,
        run_id: i64,
        cluster: &str,
        alert_labels: &BTreeMap<String, String>,
        alertnames: &BTreeSet<String>,
    ) -> Vec<SilenceId> {
        let Some((settings, http)) = &self.silences else {
            return Vec::new();
        };
        let mut created = Vec::new();
        for alertname in alertnames {
            let mut matchers = vec![matcher("alertname", alertname)];
            matchers.extend(
                alert_labels
                    .iter()
                    .map(|(name, value)| matcher(name, value)),
            );
            let now = SystemTime::now();
            let body = json!({
                "matchers": matchers,
                "startsAt": humantime::format_rfc3339_millis(now).to_string(),
                "endsAt": humantime::format_rfc3339_millis(now + SILENCE_LENGTH).to_string(),
                "createdBy": "etcdmedic-remediator",
                "comment": format!("etcdmedic run {run_id} is remediating {cluster}; expires when the run ends"),
            });
            let url = join(&settings.alertmanager_url, "api/v2/silences");
            let request = authorized(http.post(url).json(&body), settings);
            #[derive(Deserialize)]
            struct Created {
                #[serde(rename = "silenceID")]
                silence_id: String,
            }
            let result = async {
                let response = request.send().await?.error_for_status()?;
                response.json::<Created>().await
            }
            .await;
            match result {
                Ok(created_silence) => {
                    tracing::info!(run = run_id, %cluster, %alertname, silence = %created_silence.silence_id, "silenced the triggering alert while the run is active");
                    created.push(SilenceId(created_silence.silence_id));
                }
                Err(err) => {
                    tracing::warn!(run = run_id, %cluster, %alertname, error = %err, "cannot create the Alertmanager silence; the run goes on")
                }
            }
        }
        created
    }

    pub(super) async fn expire(&self, silences: &[SilenceId]) {
        let Some((settings, http)) = &self.silences else {
            return;
        };
        for SilenceId(id) in silences {
            let url = join(&settings.alertmanager_url, &format!("api/v2/silence/{id}"));
            let request = authorized(http.delete(url), settings);
            match request.send().await.and_then(|r| r.error_for_status()) {
                Ok(_) => tracing::info!(silence = %id, "expired the run's silence"),
                Err(err) => {
                    tracing::warn!(silence = %id, error = %err, "cannot expire the silence; it ends by itself at its end time")
                }
            }
        }
    }

    /// One annotation spanning the run, tagged with the cluster and outcome.
    pub(super) async fn annotate(&self, run_id: i64, report: &RunReport) {
        let Some((settings, http)) = &self.grafana else {
            return;
        };
        let millis = |time: SystemTime| {
            time.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64
        };
        let mut tags = vec![
            "etcdmedic".to_string(),
            report.cluster.clone(),
            report.outcome.as_str().to_string(),
        ];
        tags.extend(settings.tags.iter().cloned());
        let body = json!({
            "time": millis(report.started_at),
            "timeEnd": millis(report.finished_at),
            "tags": tags,
            "text": format!(
                "etcdmedic run {run_id} on {}: {}{}",
                report.cluster,
                report.outcome.as_str(),
                report.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        });
        let url = join(&settings.url, "api/annotations");
        let result = http
            .post(url)
            .bearer_auth(settings.token.expose())
            .json(&body)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        if let Err(err) = result {
            tracing::warn!(run = run_id, error = %err, "cannot post the Grafana annotation");
        }
    }
}

/// The request with Alertmanager's bearer token, when one is configured.
fn authorized(
    request: reqwest::RequestBuilder,
    settings: &SilenceSettings,
) -> reqwest::RequestBuilder {
    match &settings.bearer_token {
        Some(token) => request.bearer_auth(token.expose()),
        None => request,
    }
}

fn matcher(name: &str, value: &str) -> serde_json::Value {
    json!({"name": name, "value": value, "isRegex": false, "isEqual": true})
}

/// `base` + `path`, whether or not the base URL ends with a slash.
fn join(base: &url::Url, path: &str) -> String {
    format!("{}/{path}", base.as_str().trim_end_matches('/'))
}
