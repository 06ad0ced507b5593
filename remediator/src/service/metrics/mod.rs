//! The service's own metrics: runs and their outcomes, reclaimed bytes, snapshots, webhook
//! traffic and the pause switch. Series for every configured cluster exist from the start
//! (at 0), so `increase()` and absence alerts work before the first run.

use super::store::unix;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::backups::BackupRecord;
use crate::config::when::CronIn;
use crate::report::{MemberAction, Outcome, RunReport, StepKind};

mod backups;
mod prometheus_text;
pub(crate) use prometheus_text::to_prometheus_text;

/// The content type of [`Metrics::encode`]'s output.
pub(super) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`to_prometheus_text`]'s output.
pub(super) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    etcd_cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    etcd_cluster: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    etcd_cluster: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    etcd_cluster: String,
    member: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<OutcomeLabels, Counter>,
    failures: Family<KindLabels, Counter>,
    duration: Histogram,
    in_progress: Family<ClusterLabels, Gauge>,
    next_window: Family<ClusterLabels, FloatGauge>,
    next_scheduled_run: Family<ClusterLabels, FloatGauge>,
    last_run: Family<OutcomeLabels, FloatGauge>,
    reclaimed: Family<MemberLabels, Counter>,
    snapshot_last_success: Family<ClusterLabels, FloatGauge>,
    snapshot_size: Family<ClusterLabels, Gauge>,
    webhook_requests: Family<CodeLabels, Counter>,
    webhook_alerts: Family<ActionLabels, Counter>,
    connections_refused: Counter,
    store_unreadable: Counter,
    paused: Gauge,
    backups: backups::BackupMetrics,
}

impl Metrics {
    pub fn new(clusters: &[String]) -> Metrics {
        let mut registry = Registry::default();
        let runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "etcdmedic_remediation_runs",
            "Remediation runs finished, by cluster and outcome",
            runs.clone(),
        );
        // Not created at 0 for every cluster and kind: 23 kinds times a fleet is many series
        // of nothing; the `failed`/`partial` outcomes above are the ones to alert on.
        let failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "etcdmedic_remediation_failures",
            "Runs that ended early, by cluster and error kind (the report's error_kind)",
            failures.clone(),
        );
        // From a 1 s skip to a 2 h run of a big cluster with settle times.
        let duration = Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
        ]);
        registry.register_with_unit(
            "etcdmedic_remediation_duration",
            "How long remediation runs took, from the first step to the outcome (runs that reached the engine)",
            Unit::Seconds,
            duration.clone(),
        );
        let in_progress = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "etcdmedic_remediation_in_progress",
            "1 while a run of the cluster is under way",
            in_progress.clone(),
        );
        let next_window = Family::<ClusterLabels, FloatGauge>::default();
        registry.register_with_unit(
            "etcdmedic_remediation_next_window_timestamp",
            "When the cluster's next maintenance window opens, or now while one is open (Unix time; only clusters with windows)",
            Unit::Seconds,
            next_window.clone(),
        );
        let next_scheduled_run = Family::<ClusterLabels, FloatGauge>::default();
        registry.register_with_unit(
            "etcdmedic_remediation_next_scheduled_run_timestamp",
            "When remediation.schedule next starts a run of the cluster (Unix time; only clusters with a schedule)",
            Unit::Seconds,
            next_scheduled_run.clone(),
        );
        let last_run = Family::<OutcomeLabels, FloatGauge>::default();
        registry.register_with_unit(
            "etcdmedic_remediation_last_run_timestamp",
            "When the cluster's latest run with this outcome finished (Unix time)",
            Unit::Seconds,
            last_run.clone(),
        );
        let reclaimed = Family::<MemberLabels, Counter>::default();
        registry.register_with_unit(
            "etcdmedic_defrag_reclaimed",
            "Bytes of database file given back by defragmentation, per member",
            Unit::Bytes,
            reclaimed.clone(),
        );
        let snapshot_last_success = Family::<ClusterLabels, FloatGauge>::default();
        registry.register_with_unit(
            "etcdmedic_snapshot_last_success_timestamp",
            "When the cluster's latest verified snapshot was written (Unix time)",
            Unit::Seconds,
            snapshot_last_success.clone(),
        );
        let snapshot_size = Family::<ClusterLabels, Gauge>::default();
        registry.register_with_unit(
            "etcdmedic_snapshot_size",
            "Size of the cluster's latest verified snapshot",
            Unit::Bytes,
            snapshot_size.clone(),
        );
        let webhook_requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "etcdmedic_webhook_requests",
            "Requests to /webhook/alertmanager, by HTTP status code",
            webhook_requests.clone(),
        );
        let webhook_alerts = Family::<ActionLabels, Counter>::default();
        registry.register(
            "etcdmedic_webhook_alerts",
            "Alerts received, by what was done with them (queued, joined, cancelled, ignored) \
             and why",
            webhook_alerts.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "etcdmedic_remediator_connections_refused",
            "Connections closed on arrival because max_connections were open",
            connections_refused.clone(),
        );
        let store_unreadable = Counter::default();
        registry.register(
            "etcdmedic_store_unreadable_rows",
            "Rows of the state store this build could not read (logged, left out of answers)",
            store_unreadable.clone(),
        );
        let backups = backups::BackupMetrics::register(&mut registry);
        let paused = Gauge::default();
        registry.register(
            "etcdmedic_remediator_paused",
            "1 while runs are paused (POST /api/v1/pause)",
            paused.clone(),
        );
        // A gauge at 1 rather than an OpenMetrics info: promtool and older Prometheus
        // parsers reject the info type.
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: etcdmedic_cluster::build_info::VERSION.into(),
                revision: etcdmedic_cluster::build_info::REVISION.into(),
            })
            .set(1);
        registry.register(
            "etcdmedic_remediator_build_info",
            "Version and git revision of this build (always 1)",
            build_info,
        );

        for cluster in clusters {
            in_progress
                .get_or_create(&ClusterLabels {
                    etcd_cluster: cluster.clone(),
                })
                .set(0);
            for outcome in Outcome::ALL {
                runs.get_or_create(&OutcomeLabels {
                    etcd_cluster: cluster.clone(),
                    outcome: outcome.as_str().into(),
                })
                .inc_by(0);
            }
        }
        Metrics {
            registry,
            runs,
            failures,
            duration,
            in_progress,
            next_window,
            next_scheduled_run,
            last_run,
            reclaimed,
            snapshot_last_success,
            snapshot_size,
            webhook_requests,
            webhook_alerts,
            connections_refused,
            store_unreadable,
            paused,
            backups,
        }
    }

    /// The cluster's backup destinations, whose failure counters start at 0.
    pub fn backup_destinations(&self, cluster: &str, destinations: &[String]) {
        self.backups.configured(cluster, destinations);
    }

    pub fn set_backup_interval(&self, cluster: &str, schedule: &CronIn, now: SystemTime) {
        self.backups.set_interval(cluster, schedule, now);
    }

    /// A backup finished (`destinations`: the cluster's, all missed when it failed).
    pub fn backup_finished(&self, record: &BackupRecord, destinations: Vec<String>) {
        self.backups.finished(record, &destinations);
    }

    /// The backup gauges from the store's records (newest first), after a restart;
    /// `destinations` gives each cluster's configured ones.
    pub fn restore_backups(
        &self,
        newest_first: &[BackupRecord],
        destinations: impl Fn(&str) -> Vec<String>,
    ) {
        for record in newest_first.iter().rev() {
            self.backups.restore(record, &destinations(&record.cluster));
        }
    }

    /// The counter the state store counts unreadable rows in.
    pub fn store_unreadable(&self) -> Counter {
        self.store_unreadable.clone()
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    pub fn set_in_progress(&self, cluster: &str, running: bool) {
        self.in_progress
            .get_or_create(&ClusterLabels {
                etcd_cluster: cluster.into(),
            })
            .set(i64::from(running));
    }

    pub fn set_next_window(&self, cluster: &str, at: SystemTime) {
        self.next_window
            .get_or_create(&ClusterLabels {
                etcd_cluster: cluster.into(),
            })
            .set(unix(at));
    }

    pub fn set_next_scheduled_run(&self, cluster: &str, at: SystemTime) {
        self.next_scheduled_run
            .get_or_create(&ClusterLabels {
                etcd_cluster: cluster.into(),
            })
            .set(unix(at));
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.set(i64::from(paused));
    }

    pub fn webhook_request(&self, code: u16) {
        self.webhook_requests
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    pub fn webhook_alert(&self, action: &str, reason: &str) {
        self.webhook_alerts
            .get_or_create(&ActionLabels {
                action: action.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// A run finished: counts, duration, reclaimed bytes, snapshot.
    pub fn run_finished(&self, report: &RunReport) {
        let cluster = &report.cluster;
        self.runs
            .get_or_create(&OutcomeLabels {
                etcd_cluster: cluster.clone(),
                outcome: report.outcome.as_str().into(),
            })
            .inc();
        if let Some(kind) = &report.error_kind {
            self.failures
                .get_or_create(&KindLabels {
                    etcd_cluster: cluster.clone(),
                    kind: kind.clone(),
                })
                .inc();
        }
        // Only runs the engine carried out: cancellations and cooldown skips take no time
        // and would drag the distribution towards zero.
        if !report.steps.is_empty() {
            self.duration.observe(report.duration().as_secs_f64());
        }
        for member in &report.members {
            if member.action == MemberAction::Defragmented {
                if let Some(bytes) = member.reclaimed_bytes() {
                    self.reclaimed
                        .get_or_create(&MemberLabels {
                            etcd_cluster: cluster.clone(),
                            member: member.member.name.clone(),
                        })
                        .inc_by(bytes);
                }
            }
        }
        self.restore(report);
    }

    /// Sets the gauges a report determines; also used after a restart, from the store.
    pub fn restore(&self, report: &RunReport) {
        let cluster = &report.cluster;
        self.last_run
            .get_or_create(&OutcomeLabels {
                etcd_cluster: cluster.clone(),
                outcome: report.outcome.as_str().into(),
            })
            .set(unix(report.finished_at));
        let snapshot_written = report
            .steps
            .iter()
            .find(|step| step.step == StepKind::Snapshot && step.ok)
            .map(|step| step.started_at + step.duration);
        if let (Some(written), Some(snapshot)) = (snapshot_written, &report.snapshot) {
            let labels = ClusterLabels {
                etcd_cluster: cluster.clone(),
            };
            let gauge = self.snapshot_last_success.get_or_create(&labels);
            if unix(written) > gauge.get() {
                gauge.set(unix(written));
                self.snapshot_size
                    .get_or_create(&labels)
                    .set(i64::try_from(snapshot.size_bytes).unwrap_or(i64::MAX));
            }
        }
    }
}

/// `/metrics` in the format the scraper asked for.
pub(in crate::service) fn response(metrics: &Metrics, headers: &HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    match metrics.encode() {
        Ok(text) if openmetrics => {
            ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response()
        }
        Ok(text) => (
            [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
            to_prometheus_text(&text),
        )
            .into_response(),
        Err(_) => super::respond::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        ),
    }
}
