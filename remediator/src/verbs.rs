//! The text the operator's one-off verbs print: one line per alarm or per member, in
//! `talosctl etcd`'s spirit (`MEMBER  MESSAGE`), columns aligned.

use etcdmedic_cluster::table::align;

use crate::{AlarmLine, Disarmed, Forfeited};

/// Rows of cells, each column as wide as its widest cell, two spaces apart; no final newline.
pub fn table(rows: &[Vec<String>]) -> String {
    align(rows, 2).trim_end_matches('\n').to_string()
}

fn alarm_rows(alarms: &[AlarmLine]) -> Vec<Vec<String>> {
    alarms
        .iter()
        .map(|a| {
            vec![
                a.member.clone(),
                a.member_id.clone(),
                a.alarm.as_str().to_string(),
            ]
        })
        .collect()
}

/// `alarm list`: a header and one line per alarm.
pub fn alarm_list(alarms: &[AlarmLine]) -> String {
    let mut rows = vec![vec!["MEMBER".into(), "ID".into(), "ALARM".into()]];
    rows.extend(alarm_rows(alarms));
    let mut text = table(&rows);
    if alarms.is_empty() {
        text.push_str("\n(no alarms)");
    }
    text
}

/// `alarm disarm`: what was disarmed, what remains and why.
pub fn alarm_disarm(disarmed: &Disarmed) -> String {
    let mut rows = vec![vec![
        "MEMBER".into(),
        "ID".into(),
        "ALARM".into(),
        "".into(),
    ]];
    for (alarms, what) in [
        (&disarmed.disarmed, "disarmed"),
        (&disarmed.remaining, "still raised"),
    ] {
        for mut row in alarm_rows(alarms) {
            row.push(what.to_string());
            rows.push(row);
        }
    }
    let mut text = table(&rows);
    if disarmed.disarmed.is_empty() && disarmed.remaining.is_empty() {
        text.push_str("\n(no alarms)");
    }
    if let Some(reason) = &disarmed.reason {
        text.push_str(&format!("\n{reason}"));
    }
    text
}

/// `MEMBER  MESSAGE` and one line per member, as `talosctl etcd` prints its verbs.
pub fn member_messages(lines: &[(&str, &str)]) -> String {
    let mut rows = vec![vec!["MEMBER".to_string(), "MESSAGE".to_string()]];
    rows.extend(
        lines
            .iter()
            .map(|(member, message)| vec![member.to_string(), message.to_string()]),
    );
    table(&rows)
}

/// `forfeit-leadership`: the member and what became of its leadership.
pub fn forfeited(forfeited: &Forfeited) -> String {
    let message = match (&forfeited.to, &forfeited.leader) {
        (Some(to), _) => format!("leadership moved to {}; every member follows it", to.name),
        (None, Some(leader)) => format!("not the leader ({leader} leads): nothing to do"),
        (None, None) => "not the leader: nothing to do".to_string(),
    };
    member_messages(&[(&forfeited.member.name, &message)])
}

#[cfg(test)]
mod tests {
    use etcdmedic_cluster::model::AlarmKind;

    use super::*;

    fn alarm(member: &str, alarm: AlarmKind) -> AlarmLine {
        AlarmLine {
            member: member.into(),
            member_id: "8e9e05c52164694d".into(),
            alarm,
        }
    }

    #[test]
    fn alarms_are_listed_one_per_line_under_a_header_in_aligned_columns() {
        let text = alarm_list(&[
            alarm("m0", AlarmKind::NoSpace),
            alarm("member-2", AlarmKind::Corrupt),
        ]);
        assert_eq!(
            text,
            "MEMBER    ID                ALARM\n\
             m0        8e9e05c52164694d  NOSPACE\n\
             member-2  8e9e05c52164694d  CORRUPT"
        );
        assert!(alarm_list(&[]).ends_with("(no alarms)"));
    }

    #[test]
    fn a_disarm_says_what_went_what_stays_and_why() {
        let text = alarm_disarm(&Disarmed {
            disarmed: vec![alarm("m0", AlarmKind::NoSpace)],
            remaining: vec![alarm("m1", AlarmKind::Corrupt)],
            reason: Some("a CORRUPT alarm needs a human".into()),
        });
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("m0") && lines[1].ends_with("NOSPACE  disarmed"),
            "{text}"
        );
        assert!(lines[2].ends_with("CORRUPT  still raised"), "{text}");
        assert_eq!(lines[3], "a CORRUPT alarm needs a human");
    }
}
