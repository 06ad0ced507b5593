//! Where a collection learns the cluster's alarms.
//!
//! AlarmList is a raft proposal even when it only reads (etcd 3.4 to 3.6 send every Alarm
//! request through raft), so a monitor that calls it on every scrape writes one raft entry per
//! scrape per cluster. Status carries the same alarms without a write: etcd's
//! `maintenanceServer.Status` (3.4.x, 3.5.x, 3.6.x: `server/etcdserver/api/v3rpc/maintenance.go`)
//! appends every alarm of the member's alarm store to `errors`, each as the AlarmMember's
//! protobuf text, `memberID:8114236640271573054 alarm:NOSPACE `, after `etcdserver: no leader`
//! when it has none. The alarm store is replicated through raft, so each member answers for the
//! whole cluster as far as it has applied: a member a moment behind may miss an alarm just
//! raised or still show one just disarmed. Monitoring takes the union over every member that
//! answered; the remediator, which acts on the answer, asks AlarmList.

use crate::model::{Alarm, AlarmKind, MemberId};

/// How [`ClusterProbe`](crate::collect::ClusterProbe) reads the cluster's alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmSource {
    /// From each member's Status `errors`: writes nothing. Monitoring's choice.
    Status,
    /// From AlarmList: authoritative (linearized through raft), one raft entry per call. For
    /// decisions that change the cluster.
    AlarmList,
}

/// The alarms a member's Status lists in `errors`; other errors (no leader) are not alarms,
/// and an alarm kind etcdmedic does not know is left out.
pub fn alarms_in_status_errors(errors: &[String]) -> Vec<Alarm> {
    errors
        .iter()
        .filter_map(|error| parse_alarm(error))
        .collect()
}

/// `memberID:8114236640271573054 alarm:NOSPACE ` (protobuf text; a zero field is omitted).
fn parse_alarm(error: &str) -> Option<Alarm> {
    let mut member_id = None;
    let mut alarm = None;
    for field in error.split_whitespace() {
        let (name, value) = field.split_once(':')?;
        match name {
            "memberID" => member_id = Some(value.parse().ok()?),
            "alarm" => {
                alarm = Some(match value {
                    "NOSPACE" => AlarmKind::NoSpace,
                    "CORRUPT" => AlarmKind::Corrupt,
                    _ => return None,
                })
            }
            _ => return None,
        }
    }
    Some(Alarm {
        member_id: MemberId(member_id?),
        alarm: alarm?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn alarms_are_read_from_etcds_protobuf_text_and_nothing_else_is() {
        let found = alarms_in_status_errors(&errors(&[
            "etcdserver: no leader",
            "memberID:8114236640271573054 alarm:NOSPACE ",
            "memberID:42 alarm:CORRUPT",
        ]));
        assert_eq!(
            found,
            vec![
                Alarm {
                    member_id: MemberId(8114236640271573054),
                    alarm: AlarmKind::NoSpace
                },
                Alarm {
                    member_id: MemberId(42),
                    alarm: AlarmKind::Corrupt
                },
            ]
        );
    }

    #[test]
    fn anything_not_an_alarm_of_a_member_is_ignored() {
        for error in [
            "",
            "alarm:NOSPACE ",
            "memberID:12 ",
            "memberID:x alarm:NOSPACE",
            "memberID:12 alarm:SOMETHING_NEW",
            "memberID:12 alarm:NOSPACE extra:1",
            "database space exceeded",
        ] {
            assert_eq!(
                alarms_in_status_errors(&errors(&[error])),
                vec![],
                "{error:?}"
            );
        }
    }
}
