//! The backup metrics: when each destination last holds a verified backup, how long backups
//! take and how big they are, failures per destination, and the restore drill's last success.
//! The alerts `EtcdmedicBackupMissing`, `EtcdmedicBackupFailing`,
//! `EtcdmedicRestoreDrillFailed` and `EtcdmedicBackupNotDrilled` read them.

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use crate::config::when::CronIn;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::super::backups::{BackupOutcome, BackupRecord};
use super::super::store::unix;
use super::ClusterLabels;

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    etcd_cluster: String,
    destination: String,
}

#[derive(Debug)]
pub(super) struct BackupMetrics {
    last_success: Family<DestinationLabels, FloatGauge>,
    last_failure: Family<DestinationLabels, FloatGauge>,
    duration: Family<ClusterLabels, FloatGauge>,
    size: Family<ClusterLabels, Gauge>,
    stored_size: Family<DestinationLabels, Gauge>,
    failures: Family<DestinationLabels, Counter>,
    drill_last_success: Family<ClusterLabels, FloatGauge>,
    drill_failures: Family<ClusterLabels, Counter>,
    drill_last_failure: Family<ClusterLabels, FloatGauge>,
    drill_last_skipped: Family<ClusterLabels, FloatGauge>,
    interval: Family<ClusterLabels, FloatGauge>,
}

impl BackupMetrics {
    pub(super) fn register(registry: &mut Registry) -> BackupMetrics {
        let metrics = BackupMetrics {
            last_success: Family::default(),
            last_failure: Family::default(),
            duration: Family::default(),
            size: Family::default(),
            stored_size: Family::default(),
            failures: Family::default(),
            drill_last_success: Family::default(),
            drill_failures: Family::default(),
            drill_last_failure: Family::default(),
            drill_last_skipped: Family::default(),
            interval: Family::default(),
        };
        registry.register_with_unit(
            "etcdmedic_backup_last_success_timestamp",
            "When the destination last received a verified backup of the cluster (Unix time)",
            Unit::Seconds,
            metrics.last_success.clone(),
        );
        registry.register_with_unit(
            "etcdmedic_backup_last_failure_timestamp",
            "When a backup of the cluster last failed to reach the destination (Unix time)",
            Unit::Seconds,
            metrics.last_failure.clone(),
        );
        registry.register_with_unit(
            "etcdmedic_backup_duration",
            "How long the cluster's latest backup took, snapshot, drill and uploads included",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register_with_unit(
            "etcdmedic_backup_size",
            "Size of the cluster's latest backup (the snapshot, uncompressed)",
            Unit::Bytes,
            metrics.size.clone(),
        );
        registry.register_with_unit(
            "etcdmedic_backup_stored_size",
            "Size of the latest verified backup as the destination holds it (compressed when the copies are)",
            Unit::Bytes,
            metrics.stored_size.clone(),
        );
        registry.register(
            "etcdmedic_backup_failures",
            "Backups that did not reach the destination (a failed snapshot or drill counts for every destination)",
            metrics.failures.clone(),
        );
        registry.register_with_unit(
            "etcdmedic_restore_drill_last_success_timestamp",
            "When a backup of the cluster last passed its restore drill (Unix time)",
            Unit::Seconds,
            metrics.drill_last_success.clone(),
        );
        registry.register(
            "etcdmedic_restore_drill_failures",
            "Backups of the cluster that failed their restore drill",
            metrics.drill_failures.clone(),
        );
        registry.register_with_unit(
            "etcdmedic_restore_drill_last_failure_timestamp",
            "When a backup of the cluster last failed its restore drill (Unix time)",
            Unit::Seconds,
            metrics.drill_last_failure.clone(),
        );
        registry.register_with_unit(
            "etcdmedic_restore_drill_last_skipped_timestamp",
            "When a backup of the cluster last landed without a drill: encrypted, and no identity to decrypt it (Unix time)",
            Unit::Seconds,
            metrics.drill_last_skipped.clone(),
        );
        registry.register_with_unit(
            "etcdmedic_backup_schedule_interval",
            "Time between two scheduled backups of the cluster (only clusters with backup.schedule)",
            Unit::Seconds,
            metrics.interval.clone(),
        );
        metrics
    }

    /// Every destination's failures at 0, so `increase()` works before the first failure;
    /// the last undrilled backup at 0 (never), so `EtcdmedicBackupNotDrilled` has its series
    /// before the first one lands.
    pub(super) fn configured(&self, cluster: &str, destinations: &[String]) {
        for destination in destinations {
            self.failures
                .get_or_create(&labels(cluster, destination))
                .inc_by(0);
        }
        self.drill_failures
            .get_or_create(&cluster_labels(cluster))
            .inc_by(0);
        self.drill_last_skipped
            .get_or_create(&cluster_labels(cluster))
            .set(0.0);
    }

    pub(super) fn set_interval(&self, cluster: &str, schedule: &CronIn, now: SystemTime) {
        let first = schedule.next_after(now);
        let second = first.and_then(|first| schedule.next_after(first));
        if let (Some(first), Some(second)) = (first, second) {
            let seconds = second
                .duration_since(first)
                .unwrap_or_default()
                .as_secs_f64();
            self.interval
                .get_or_create(&cluster_labels(cluster))
                .set(seconds);
        }
    }

    pub(super) fn finished(&self, record: &BackupRecord, destinations: &[String]) {
        for destination in missed(record, destinations) {
            self.failures
                .get_or_create(&labels(&record.cluster, destination))
                .inc();
        }
        if record.drill_failed {
            self.drill_failures
                .get_or_create(&cluster_labels(&record.cluster))
                .inc();
        }
        self.restore(record, destinations);
    }

    /// The gauges one record sets; also after a restart, from the store, oldest first.
    pub(super) fn restore(&self, record: &BackupRecord, destinations: &[String]) {
        let at = unix(record.finished_at);
        for destination in missed(record, destinations) {
            self.last_failure
                .get_or_create(&labels(&record.cluster, destination))
                .set(at);
        }
        if record.drill_failed {
            self.drill_last_failure
                .get_or_create(&cluster_labels(&record.cluster))
                .set(at);
        }
        let Some(report) = record
            .report
            .as_ref()
            .filter(|_| record.outcome != BackupOutcome::Failed)
        else {
            return;
        };
        for landed in &report.destinations {
            let destination = labels(&record.cluster, &landed.destination);
            self.last_success.get_or_create(&destination).set(at);
            self.stored_size
                .get_or_create(&destination)
                .set(i64::try_from(landed.stored_bytes).unwrap_or(i64::MAX));
        }
        let cluster = cluster_labels(&record.cluster);
        self.duration
            .get_or_create(&cluster)
            .set(report.duration.as_secs_f64());
        self.size
            .get_or_create(&cluster)
            .set(i64::try_from(report.manifest.size_bytes).unwrap_or(i64::MAX));
        match &report.manifest.restore_drill {
            Some(drill) if drill.passed => {
                self.drill_last_success.get_or_create(&cluster).set(at);
            }
            Some(drill) if drill.not_drilled.is_some() => {
                self.drill_last_skipped.get_or_create(&cluster).set(at);
            }
            _ => {}
        }
    }
}

/// The destinations a record did not reach: those its report says it missed, or all of the
/// cluster's when there was no backup at all.
fn missed<'a>(record: &'a BackupRecord, destinations: &'a [String]) -> Vec<&'a str> {
    match &record.report {
        Some(report) => report
            .missed
            .iter()
            .map(|m| m.destination.as_str())
            .collect(),
        None => destinations.iter().map(String::as_str).collect(),
    }
}

fn labels(cluster: &str, destination: &str) -> DestinationLabels {
    DestinationLabels {
        etcd_cluster: cluster.to_string(),
        destination: destination.to_string(),
    }
}

fn cluster_labels(cluster: &str) -> ClusterLabels {
    ClusterLabels {
        etcd_cluster: cluster.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A succeeded backup of cluster `a` whose drill is `drill`.
    fn landed(drill: serde_json::Value) -> BackupRecord {
        let at = "2026-12-05T15:00:00.000Z";
        serde_json::from_value(serde_json::json!({
            "id": 1, "cluster": "a", "source": "api", "requested_at": at, "started_at": at,
            "finished_at": at, "outcome": "succeeded",
            "report": {
                "manifest": {
                    "cluster": "a", "member": {"id": "1", "name": "m1", "endpoint": "http://m1:2379"},
                    "revision": 7, "etcd_version": "3.6.15", "size_bytes": 4096, "sha256": "00",
                    "file": "a-20261205T150000.000Z-rev7.db.age", "created_at": at,
                    "etcdmedic_version": "test", "restore_drill": drill,
                    "encryption": {"format": "age", "recipients": ["age1x"]}
                },
                "destinations": [], "missed": [], "duration": 1.0
            }
        }))
        .unwrap_or_else(|err| panic!("a backup record: {err}"))
    }

    /// What fresh backup metrics expose once `record` is restored into them.
    fn exposed(record: &BackupRecord) -> String {
        let mut registry = Registry::default();
        let metrics = BackupMetrics::register(&mut registry);
        metrics.configured("a", &["near".into()]);
        metrics.restore(record, &["near".into()]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .unwrap_or_else(|err| panic!("{err}"));
        text
    }

    #[test]
    fn an_undrilled_backup_sets_its_own_timestamp_and_never_the_drills_success() {
        let text = exposed(&landed(
            serde_json::json!({"passed": false, "at": "2026-12-05T15:00:00.000Z",
                "duration_seconds": 0.0, "not_drilled": "no_identity"}),
        ));
        assert!(
            text.contains(
                "etcdmedic_restore_drill_last_skipped_timestamp_seconds{etcd_cluster=\"a\"} 1796482800.0"
            ),
            "{text}"
        );
        assert!(
            !text.contains("etcdmedic_restore_drill_last_success_timestamp_seconds{"),
            "{text}"
        );

        let text = exposed(&landed(
            serde_json::json!({"passed": true, "at": "2026-12-05T15:00:00.000Z",
                "duration_seconds": 1.0}),
        ));
        assert!(
            text.contains(
                "etcdmedic_restore_drill_last_skipped_timestamp_seconds{etcd_cluster=\"a\"} 0.0"
            ),
            "0 (never) until one lands undrilled: {text}"
        );
        assert!(
            text.contains("etcdmedic_restore_drill_last_success_timestamp_seconds{etcd_cluster=\"a\"} 1796482800.0"),
            "{text}"
        );
    }
}
