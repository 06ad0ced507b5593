//! The exposition for a fixed set of cluster states, byte for byte. Any change to names,
//! help texts, labels or ordering shows up here; when it is intended, regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p etcdmedic-exporter --test golden` and review the diff.

use std::time::Duration;

use etcdmedic_cluster::{
    Alarm, AlarmKind, ClusterStatus, EndpointStatus, MemberId, MemberStatus, Membership,
    ProbeError, QuotaSource,
};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/metrics.golden.txt"
);

fn reachable(id: u64, name: &str, leader: u64, alarms: Vec<AlarmKind>) -> MemberStatus {
    MemberStatus {
        endpoint: format!("https://10.0.0.{id}:2379"),
        id: Some(MemberId(id)),
        name: Some(name.into()),
        is_learner: false,
        peer_urls: Vec::new(),
        alarms,
        probe_latency: Duration::from_micros(1500),
        status: Ok(EndpointStatus {
            member_id: MemberId(id),
            cluster_id: 99,
            revision: 1234,
            version: "3.6.4".into(),
            storage_version: Some("3.6.0".into()),
            downgrade: None,
            upgrade_advice: None,
            db_size_bytes: 21_000_000,
            db_size_in_use_bytes: 6_300_000,
            quota_bytes: 2_147_483_648,
            quota_source: QuotaSource::Status,
            stop_grpc_on_defrag: None,
            leader: Some(MemberId(leader)),
            raft_term: 4,
            raft_index: 53391,
            raft_applied_index: 53390,
            is_learner: false,
            errors: vec![],
        }),
    }
}

fn states() -> Vec<ClusterStatus> {
    let mut unreachable = reachable(3, "cp-3", 1, vec![]);
    unreachable.status = Err(ProbeError::Timeout(Duration::from_secs(5)));
    unreachable.probe_latency = Duration::from_secs(5);
    let mut learner = reachable(4, "cp-4", 1, vec![]);
    learner.is_learner = true;
    vec![
        ClusterStatus {
            cluster: "prod-a".into(),
            // A configured endpoint MemberList does not list, which did not answer.
            unlisted_endpoints: vec![MemberStatus {
                endpoint: "https://10.0.0.9:2379".into(),
                id: None,
                name: None,
                is_learner: false,
                peer_urls: Vec::new(),
                alarms: vec![],
                probe_latency: Duration::from_micros(300),
                status: Err(ProbeError::Unreachable("connection refused".into())),
            }],
            members: vec![
                reachable(1, "cp-1", 1, vec![AlarmKind::NoSpace]),
                reachable(2, "cp-2", 1, vec![]),
                unreachable,
                learner,
            ],
            membership: Ok(Membership {
                cluster_id: 99,
                voting_members: 3,
                learners: 1,
            }),
            alarms: Ok(vec![Alarm {
                member_id: MemberId(1),
                alarm: AlarmKind::NoSpace,
            }]),
            duration: Duration::from_millis(5002),
        },
        ClusterStatus {
            cluster: "lab".into(),
            unlisted_endpoints: vec![],
            members: vec![MemberStatus {
                endpoint: "http://127.0.0.1:2379".into(),
                id: None,
                name: None,
                is_learner: false,
                peer_urls: Vec::new(),
                alarms: vec![],
                probe_latency: Duration::from_micros(250),
                status: Err(ProbeError::Unreachable("connection refused".into())),
            }],
            membership: Err(ProbeError::Unreachable("connection refused".into())),
            alarms: Err(ProbeError::Unreachable("connection refused".into())),
            duration: Duration::from_micros(300),
        },
    ]
}

#[test]
fn the_exposition_matches_the_golden_file() {
    let got = etcdmedic_exporter::metrics::encode(states(), None).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &got).unwrap();
    }
    let expected = std::fs::read_to_string(GOLDEN)
        .expect("missing golden file; create it with UPDATE_GOLDEN=1");
    if got != expected {
        let first_difference = got
            .lines()
            .zip(expected.lines())
            .position(|(g, e)| g != e)
            .unwrap_or(got.lines().count().min(expected.lines().count()));
        panic!(
            "the exposition differs from {GOLDEN} at line {}:\nexpected: {:?}\ngot:      {:?}\n(UPDATE_GOLDEN=1 regenerates it)",
            first_difference + 1,
            expected.lines().nth(first_difference),
            got.lines().nth(first_difference),
        );
    }
}

#[test]
fn build_info_is_added_only_when_asked() {
    let with = etcdmedic_exporter::metrics::encode(
        vec![],
        Some(etcdmedic_exporter::reload::ReloadState {
            successful: true,
            last_success: std::time::SystemTime::UNIX_EPOCH,
        }),
    )
    .unwrap();
    let without = etcdmedic_exporter::metrics::encode(vec![], None).unwrap();
    assert!(with.contains(&format!(
        "etcdmedic_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        etcdmedic_cluster::build_info::VERSION,
        etcdmedic_cluster::build_info::REVISION
    )));
    assert!(!without.contains("etcdmedic_build_info"));
    assert!(without.ends_with("# EOF\n"));
}
