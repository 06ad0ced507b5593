//! The exporter's metrics: [`ClusterStatus`] snapshots written as OpenMetrics text.
//!
//! Status is collected at scrape time, so the metrics are a [`Collector`] over one snapshot
//! registered in a fresh [`Registry`] per request (the multi-target exporter pattern). Series
//! come out in a fixed order (clusters as configured, members sorted by name), which keeps
//! the golden fixture byte-for-byte stable.

use std::fmt;

use etcdmedic_cluster::{build_info, AlarmKind, ClusterStatus, EndpointStatus, MemberStatus};

use crate::reload::ReloadState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A gauge value: integers print without a fractional part.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Int(i64),
    Float(f64),
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

/// A per-member gauge. `value` returns `None` where the metric has no honest value, e.g.
/// db size of a member that did not answer: an absent series, not a made-up zero.
struct MemberGauge {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    value: fn(&MemberStatus) -> Option<Value>,
}

fn when_up(member: &MemberStatus, value: impl Fn(&EndpointStatus) -> Value) -> Option<Value> {
    member.reachable().map(value)
}

fn member_gauges() -> [MemberGauge; 11] {
    [
        MemberGauge {
            name: "etcdmedic_member_up",
            help: "1 when the member answered Maintenance Status within the timeout, else 0.",
            unit: None,
            value: |m| Some(m.status.is_ok().into()),
        },
        MemberGauge {
            name: "etcdmedic_member_db_size",
            help: "Size of the member's backend database file (allocated, including free pages).",
            unit: Some(Unit::Bytes),
            value: |m| when_up(m, |s| s.db_size_bytes.into()),
        },
        MemberGauge {
            name: "etcdmedic_member_db_size_in_use",
            help: "Bytes of the backend database logically in use; the rest is reclaimable by defragmentation.",
            unit: Some(Unit::Bytes),
            value: |m| when_up(m, |s| s.db_size_in_use_bytes.into()),
        },
        MemberGauge {
            name: "etcdmedic_member_db_in_use",
            help: "In-use size divided by db size (0..1); low means fragmented.",
            unit: Some(Unit::Other("ratio".into())),
            value: |m| when_up(m, |s| Value::Float(s.in_use_ratio())),
        },
        MemberGauge {
            name: "etcdmedic_member_quota_backend",
            help: "Backend quota; etcd raises NOSPACE when the db size reaches it. From Status (3.6+) or the member's /metrics; etcdmedic_member_quota_source says which.",
            unit: Some(Unit::Bytes),
            value: |m| when_up(m, |s| s.quota_bytes.into()),
        },
        MemberGauge {
            name: "etcdmedic_member_is_leader",
            help: "1 when this member is the raft leader.",
            unit: None,
            value: |m| when_up(m, |s| s.is_leader().into()),
        },
        MemberGauge {
            name: "etcdmedic_member_has_leader",
            help: "1 when this member knows a leader.",
            unit: None,
            value: |m| when_up(m, |s| s.leader.is_some().into()),
        },
        MemberGauge {
            name: "etcdmedic_member_is_learner",
            help: "1 when this member is a raft learner (non-voting).",
            unit: None,
            value: |m| Some(m.is_learner.into()),
        },
        MemberGauge {
            name: "etcdmedic_member_raft_term",
            help: "Raft term the member is in; it grows with every election.",
            unit: None,
            value: |m| when_up(m, |s| s.raft_term.into()),
        },
        MemberGauge {
            name: "etcdmedic_member_raft_index",
            help: "Raft committed index of the member.",
            unit: None,
            value: |m| when_up(m, |s| s.raft_index.into()),
        },
        MemberGauge {
            name: "etcdmedic_member_raft_applied_index",
            help: "Raft applied index of the member.",
            unit: None,
            value: |m| when_up(m, |s| s.raft_applied_index.into()),
        },
    ]
}

/// One collection's worth of cluster status, written out on scrape.
#[derive(Debug)]
pub struct StatusCollector {
    clusters: Vec<ClusterStatus>,
    exporter: Option<ReloadState>,
}

impl StatusCollector {
    /// `exporter` adds the exporter's own series (`etcdmedic_build_info`, the config reload
    /// state), which belong on `/metrics` but not on the per-target `/probe` output.
    pub fn new(clusters: Vec<ClusterStatus>, exporter: Option<ReloadState>) -> Self {
        StatusCollector { clusters, exporter }
    }

    fn members(&self) -> impl Iterator<Item = (&ClusterStatus, &MemberStatus)> {
        self.clusters
            .iter()
            .flat_map(|c| c.rows().map(move |m| (c, m)))
    }

    fn member_labels<'a>(cluster: &'a ClusterStatus, member: &'a MemberStatus) -> Labels<'a> {
        vec![
            ("etcd_cluster", cluster.cluster.as_str().into()),
            ("member", member.display_name().into()),
            (
                "member_id",
                member
                    .id
                    .map(|id| id.to_string())
                    .unwrap_or_default()
                    .into(),
            ),
            ("endpoint", member.endpoint.as_str().into()),
        ]
    }

    fn gauge<'a>(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        series: impl Iterator<Item = (Labels<'a>, Value)>,
    ) -> fmt::Result {
        let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for (labels, value) in series {
            if labels.is_empty() {
                // A process-wide series: `name 1`, not `name{} 1`.
                match value {
                    Value::Int(v) => metric.encode_gauge(&v)?,
                    Value::Float(v) => metric.encode_gauge(&v)?,
                }
            } else {
                encode_value(metric.encode_family(&labels)?, value)?;
            }
        }
        Ok(())
    }
}

fn cluster_labels(cluster: &ClusterStatus) -> Labels<'_> {
    vec![("etcd_cluster", cluster.cluster.as_str().into())]
}

type Labels<'a> = Vec<(&'static str, std::borrow::Cow<'a, str>)>;

fn encode_value(mut metric: MetricEncoder<'_>, value: Value) -> fmt::Result {
    match value {
        Value::Int(v) => metric.encode_gauge(&v),
        Value::Float(v) => metric.encode_gauge(&v),
    }
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for gauge in member_gauges() {
            Self::gauge(
                &mut encoder,
                gauge.name,
                gauge.help,
                gauge.unit.as_ref(),
                self.members().filter_map(|(cluster, member)| {
                    (gauge.value)(member).map(|v| (Self::member_labels(cluster, member), v))
                }),
            )?;
        }

        // Both alarm series for every member, so `== 1` alerts and `absent()` checks behave;
        // none at all when the alarms are unknown (no member answered), since 0 would claim
        // "no alarm".
        Self::gauge(
            &mut encoder,
            "etcdmedic_member_alarm",
            "1 when the alarm is active on the member (from the members' Status).",
            None,
            self.members()
                .filter(|(cluster, _)| cluster.alarms.is_ok())
                .flat_map(|(cluster, member)| {
                    AlarmKind::ALL.into_iter().map(move |alarm| {
                        let mut labels = Self::member_labels(cluster, member);
                        labels.push(("alarm", alarm.as_str().into()));
                        (labels, member.has_alarm(alarm).into())
                    })
                }),
        )?;

        Self::gauge(
            &mut encoder,
            "etcdmedic_member_quota_source",
            "Always 1; source says where the quota came from: status (etcd 3.6+ Status), metrics (the member's /metrics), or, only assumed, config (quota_backend_bytes) or default (2 GiB).",
            None,
            self.members().filter_map(|(cluster, member)| {
                let status = member.reachable()?;
                let mut labels = Self::member_labels(cluster, member);
                labels.push(("source", status.quota_source.as_str().into()));
                Some((labels, Value::Int(1)))
            }),
        )?;

        Self::gauge(
            &mut encoder,
            "etcdmedic_member_info",
            "Always 1; labels carry the member's server version and storage version (3.6+).",
            None,
            self.members().filter_map(|(cluster, member)| {
                let status = member.reachable()?;
                let mut labels = Self::member_labels(cluster, member);
                labels.push(("version", status.version.as_str().into()));
                labels.push((
                    "storage_version",
                    status.storage_version.as_deref().unwrap_or("").into(),
                ));
                Some((labels, Value::Int(1)))
            }),
        )?;

        Self::gauge(
            &mut encoder,
            "etcdmedic_member_downgrade_enabled",
            "1 while the member reports a downgrade enabled, to target_version; 0 when it reports none. Reported by etcd 3.6+ only.",
            None,
            self.members().filter_map(|(cluster, member)| {
                let downgrade = member.reachable()?.downgrade.as_ref()?;
                let mut labels = Self::member_labels(cluster, member);
                labels.push(("target_version", downgrade.target_version.as_str().into()));
                Some((labels, downgrade.enabled.into()))
            }),
        )?;

        Self::gauge(
            &mut encoder,
            "etcdmedic_member_upgrade_ready",
            "0 when an etcd upgrade guide asks for a newer patch of the member's release before the next minor upgrade (3.5 members before 3.5.32, for 3.6), else 1.",
            None,
            self.members().filter_map(|(cluster, member)| {
                let status = member.reachable()?;
                let labels = Self::member_labels(cluster, member);
                Some((labels, status.upgrade_advice.is_none().into()))
            }),
        )?;

        Self::gauge(
            &mut encoder,
            "etcdmedic_member_status_duration",
            "How long Maintenance Status took to answer or fail.",
            Some(&Unit::Seconds),
            self.members().map(|(cluster, member)| {
                (
                    Self::member_labels(cluster, member),
                    Value::Float(member.probe_latency.as_secs_f64()),
                )
            }),
        )?;

        Self::gauge(
            &mut encoder,
            "etcdmedic_cluster_members",
            "Voting members in MemberList (learners excluded).",
            None,
            self.clusters.iter().filter_map(|c| {
                let membership = c.membership.as_ref().ok()?;
                Some((cluster_labels(c), (membership.voting_members as u64).into()))
            }),
        )?;
        Self::gauge(
            &mut encoder,
            "etcdmedic_cluster_up",
            "1 when any member answered MemberList.",
            None,
            self.clusters
                .iter()
                .map(|c| (cluster_labels(c), c.is_up().into())),
        )?;
        Self::gauge(
            &mut encoder,
            "etcdmedic_cluster_leader_agreement",
            "1 when every reachable member names the same leader, else 0 (split view or no leader).",
            None,
            self.clusters
                .iter()
                .map(|c| (cluster_labels(c), c.agreed_leader().is_some().into())),
        )?;
        Self::gauge(
            &mut encoder,
            "etcdmedic_scrape_duration",
            "How long collecting this cluster's status took.",
            Some(&Unit::Seconds),
            self.clusters
                .iter()
                .map(|c| (cluster_labels(c), Value::Float(c.duration.as_secs_f64()))),
        )?;

        if let Some(reload) = self.exporter {
            Self::gauge(
                &mut encoder,
                "etcdmedic_exporter_config_last_reload_successful",
                "1 when the last configuration reload (SIGHUP or POST /-/reload) succeeded.",
                None,
                std::iter::once((vec![], reload.successful.into())),
            )?;
            Self::gauge(
                &mut encoder,
                "etcdmedic_exporter_config_last_reload_success_timestamp",
                "When the configuration in use was loaded (Unix time).",
                Some(&Unit::Seconds),
                std::iter::once((
                    vec![],
                    Value::Float(
                        reload
                            .last_success
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs_f64(),
                    ),
                )),
            )?;
            Self::gauge(
                &mut encoder,
                "etcdmedic_build_info",
                "Always 1; labels carry the exporter's version and git revision.",
                None,
                std::iter::once((
                    vec![
                        ("version", build_info::VERSION.into()),
                        ("revision", build_info::REVISION.into()),
                    ],
                    Value::Int(1),
                )),
            )?;
        }
        Ok(())
    }
}

/// Bytes of exposition per member and per cluster, measured on real output and rounded up:
/// sizing the buffer once avoids re-allocating a megabyte-sized string several times per
/// scrape of a hundred clusters.
const BYTES_PER_MEMBER: usize = 5 * 512;
const BYTES_PER_CLUSTER: usize = 512;
const BYTES_OF_HELP_TEXT: usize = 4 * 1024;

/// Writes `clusters` as an OpenMetrics text exposition.
pub fn encode(
    clusters: Vec<ClusterStatus>,
    exporter: Option<ReloadState>,
) -> Result<String, fmt::Error> {
    let members: usize = clusters.iter().map(|c| c.members.len()).sum();
    let capacity =
        BYTES_OF_HELP_TEXT + clusters.len() * BYTES_PER_CLUSTER + members * BYTES_PER_MEMBER;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatusCollector::new(clusters, exporter)));
    let mut out = String::with_capacity(capacity);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}
