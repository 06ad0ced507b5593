//! The classic Prometheus text format, from the OpenMetrics text the registry writes.

/// OpenMetrics text as Prometheus' classic text format, for scrapers and tools that only
/// read that (promtool among them): a counter's HELP and TYPE name the `_total` series, and
/// the UNIT and EOF lines go.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name.to_string());
        }
    }
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(rewritten.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Outcome, RunReport};
    use crate::service::metrics::Metrics;

    #[test]
    fn prometheus_text_names_counters_by_their_total_series() {
        let metrics = Metrics::new(&["a".to_string()]);
        metrics.webhook_request(202);
        let mut report = RunReport::ended("a", "test", false, Outcome::Failed, "x".into());
        report.error_kind = Some("no_room".into());
        metrics.run_finished(&report);
        let text = to_prometheus_text(&metrics.encode().unwrap());
        assert!(
            text.contains("# HELP etcdmedic_webhook_requests_total Requests"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE etcdmedic_webhook_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("etcdmedic_webhook_requests_total{code=\"202\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE etcdmedic_remediation_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(
                "etcdmedic_remediation_failures_total{etcd_cluster=\"a\",kind=\"no_room\"} 1"
            ),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }
}
