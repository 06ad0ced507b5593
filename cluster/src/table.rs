//! The status table, laid out like `talosctl etcd status` so that people who know that
//! output can read this one without a legend.

use crate::model::{ClusterStatus, MemberStatus, QuotaSource};

/// The columns of [`render`] and [`member_row`], in order.
pub const HEADERS: [&str; 13] = [
    "ENDPOINT",
    "NAME",
    "MEMBER",
    "DB SIZE",
    "IN USE",
    "LEADER",
    "RAFT INDEX",
    "RAFT TERM",
    "RAFT APPLIED INDEX",
    "LEARNER",
    "PROTOCOL",
    "STORAGE",
    "ERRORS",
];

/// Renders one row per member. A leading CLUSTER column appears when more than one cluster
/// is shown. Cells that an unreachable member could not fill show `-`. Below the table, a
/// note for every quota that is only assumed (the members did not report theirs).
pub fn render(clusters: &[ClusterStatus]) -> String {
    let with_cluster = clusters.len() > 1;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = HEADERS.iter().map(|h| h.to_string()).collect();
    if with_cluster {
        header.insert(0, "CLUSTER".into());
    }
    rows.push(header);
    for cluster in clusters {
        if cluster.members.is_empty() {
            let mut row = vec!["-".to_string(); HEADERS.len()];
            row[HEADERS.len() - 1] = match &cluster.membership {
                Err(err) => err.to_string(),
                Ok(_) => "no member with a client URL".into(),
            };
            if with_cluster {
                row.insert(0, cluster.cluster.clone());
            }
            rows.push(row);
        }
        for member in cluster.rows() {
            let mut row = member_row(member);
            if with_cluster {
                row.insert(0, cluster.cluster.clone());
            }
            rows.push(row);
        }
    }
    let mut out = align(&rows, 3);
    for note in clusters.iter().flat_map(|c| quota_note(c, with_cluster)) {
        out.push_str(&note);
        out.push('\n');
    }
    out
}

/// "quota assumed for m0, m1: 2.1 GB, etcd's default (...)", when some members' quota came
/// from the config or the default rather than from the members.
fn quota_note(cluster: &ClusterStatus, with_cluster: bool) -> Option<String> {
    let assumed: Vec<(&MemberStatus, u64, QuotaSource)> = cluster
        .members
        .iter()
        .filter_map(|m| {
            let s = m.reachable()?;
            s.quota_source
                .is_assumed()
                .then_some((m, s.quota_bytes, s.quota_source))
        })
        .collect();
    let (_, bytes, source) = *assumed.first()?;
    let names: Vec<String> = assumed.iter().map(|(m, ..)| m.display_name()).collect();
    let prefix = if with_cluster {
        format!("{}: ", cluster.cluster)
    } else {
        String::new()
    };
    let origin = match source {
        QuotaSource::Config => "quota_backend_bytes from the config",
        _ => "etcd's default",
    };
    Some(format!(
        "{prefix}quota assumed for {}: {}, {origin}; not reported in Status (etcd < 3.6) or on \
         /metrics (set metrics_url if the members serve it elsewhere)",
        names.join(", "),
        human_bytes(bytes)
    ))
}

/// One member's cells, under [`HEADERS`]; `-` where an unreachable member left them empty.
pub fn member_row(member: &MemberStatus) -> Vec<String> {
    let id = member.id.map_or("-".to_string(), |id| id.to_string());
    let name = member.name.clone().unwrap_or_else(|| "-".into());
    let mut errors: Vec<String> = member
        .alarms
        .iter()
        .map(|alarm| format!("alarm:{alarm}"))
        .collect();
    let mut row = vec![member.endpoint.clone(), name, id];
    match &member.status {
        Ok(status) => {
            // etcd's own error strings repeat the alarms already listed above.
            errors.extend(
                status
                    .errors
                    .iter()
                    .filter(|e| !e.contains("alarm:"))
                    .map(|e| e.trim().to_string()),
            );
            row.extend([
                human_bytes(status.db_size_bytes),
                format!(
                    "{} ({:.2}%)",
                    human_bytes(status.db_size_in_use_bytes),
                    status.in_use_ratio() * 100.0
                ),
                status
                    .leader
                    .map_or("none".to_string(), |leader| leader.to_string()),
                status.raft_index.to_string(),
                status.raft_term.to_string(),
                status.raft_applied_index.to_string(),
                member.is_learner.to_string(),
                status.version.clone(),
                status.storage_version.clone().unwrap_or_default(),
            ]);
        }
        Err(err) => {
            errors.push(err.to_string());
            row.extend(std::iter::repeat_n("-".to_string(), 6));
            row.push(member.is_learner.to_string());
            row.extend(["-".to_string(), "-".to_string()]);
        }
    }
    row.push(errors.join(", "));
    row
}

/// `rows` (all of the header's length) in columns, each as wide as its widest cell and `gap`
/// spaces apart, one line each.
pub fn align(rows: &[Vec<String>], gap: usize) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < columns {
                let pad = widths[c] - cell.chars().count() + gap;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes in SI units the way talosctl (go-humanize) prints them: `21 MB`, `4.5 MB`, `17 kB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let exponent = ((bytes as f64).log10() / 3.0).floor() as usize;
    let exponent = exponent.min(UNITS.len() - 1);
    let value = bytes as f64 / 1000f64.powi(exponent as i32);
    // go-humanize rounds to one decimal first, then drops it from 10 upwards.
    let rounded = (value * 10.0).round() / 10.0;
    if rounded < 10.0 {
        format!("{rounded:.1} {}", UNITS[exponent])
    } else {
        format!("{rounded:.0} {}", UNITS[exponent])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::time::Duration;

    #[test]
    fn sizes_print_like_talosctl() {
        let cases = [
            (0, "0 B"),
            (9, "9 B"),
            (999, "999 B"),
            (17_000, "17 kB"),
            (4_500_000, "4.5 MB"),
            (6_000_000, "6.0 MB"),
            (21_000_000, "21 MB"),
            (2_147_483_648, "2.1 GB"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(human_bytes(bytes), expected, "for {bytes} bytes");
        }
    }

    #[test]
    fn an_unreachable_member_shows_its_error_and_dashes() {
        let cluster = ClusterStatus {
            cluster: "prod".into(),
            unlisted_endpoints: vec![],
            members: vec![
                MemberStatus {
                    endpoint: "http://127.0.0.1:1".into(),
                    id: Some(MemberId(0xa)),
                    name: Some("m0".into()),
                    is_learner: false,
                    peer_urls: Vec::new(),
                    alarms: vec![AlarmKind::NoSpace],
                    probe_latency: Duration::from_millis(1),
                    status: Ok(EndpointStatus {
                        member_id: MemberId(0xa),
                        cluster_id: 1,
                        revision: 5,
                        version: "3.5.1".into(),
                        storage_version: None,
                        downgrade: None,
                        upgrade_advice: None,
                        db_size_bytes: 21_000_000,
                        db_size_in_use_bytes: 6_000_000,
                        quota_bytes: 2_147_483_648,
                        quota_source: QuotaSource::Metrics,
                        stop_grpc_on_defrag: None,
                        leader: Some(MemberId(0xa)),
                        raft_term: 4,
                        raft_index: 53391,
                        raft_applied_index: 53391,
                        is_learner: false,
                        errors: vec!["memberID:10 alarm:NOSPACE ".into()],
                    }),
                },
                MemberStatus {
                    endpoint: "http://127.0.0.1:2".into(),
                    id: Some(MemberId(0xb)),
                    name: Some("m1".into()),
                    is_learner: false,
                    peer_urls: Vec::new(),
                    alarms: vec![],
                    probe_latency: Duration::from_secs(1),
                    status: Err(ProbeError::Timeout(Duration::from_secs(1))),
                },
            ],
            membership: Ok(Membership {
                cluster_id: 1,
                voting_members: 2,
                learners: 0,
            }),
            alarms: Ok(vec![]),
            duration: Duration::from_secs(1),
        };
        let expected = "\
ENDPOINT             NAME   MEMBER             DB SIZE   IN USE            LEADER             RAFT INDEX   RAFT TERM   RAFT APPLIED INDEX   LEARNER   PROTOCOL   STORAGE   ERRORS
http://127.0.0.1:1   m0     000000000000000a   21 MB     6.0 MB (28.57%)   000000000000000a   53391        4           53391                false     3.5.1                alarm:NOSPACE
http://127.0.0.1:2   m1     000000000000000b   -         -                 -                  -            -           -                    false     -          -         no answer within 1s
";
        let got = render(std::slice::from_ref(&cluster));
        assert_eq!(got, expected, "expected:\n{expected}\ngot:\n{got}");

        // A quota nobody reported is marked under the table.
        let mut assumed = cluster;
        if let Ok(status) = &mut assumed.members[0].status {
            status.quota_source = QuotaSource::Default;
        }
        let got = render(&[assumed]);
        let note = "quota assumed for m0: 2.1 GB, etcd's default; not reported in Status (etcd < 3.6) or on /metrics (set metrics_url if the members serve it elsewhere)\n";
        assert!(got.ends_with(note), "got:\n{got}");
    }
}
