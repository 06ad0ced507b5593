//! Verdicts against etcd-defrag's. `fixtures/goval_verdicts.jsonl` holds rules with the
//! verdict etcd-defrag's own evaluator (github.com/maja42/goval v1.6.0, called as etcd-defrag's
//! `internal/eval` calls it: ValidateRule, then Evaluate with the figures) gave for them:
//! `refused` (ValidateRule failed), `error` (Evaluate failed), `true` or `false`. They are
//! etcd-defrag's own test cases, the cases of issue 11, goval's documented corner cases, and
//! 3,000 random rules and figures.

use serde::Deserialize;

use super::*;
use etcdmedic_cluster::model::{MemberId, QuotaSource};

const MIB: u64 = 1024 * 1024;

fn member(db_size: u64, in_use: u64, quota: u64) -> EndpointStatus {
    EndpointStatus {
        member_id: MemberId(1),
        cluster_id: 1,
        revision: 1,
        version: "3.5.1".into(),
        storage_version: None,
        downgrade: None,
        upgrade_advice: None,
        db_size_bytes: db_size,
        db_size_in_use_bytes: in_use,
        quota_bytes: quota,
        quota_source: QuotaSource::Config,
        stop_grpc_on_defrag: None,
        leader: Some(MemberId(1)),
        raft_term: 1,
        raft_index: 1,
        raft_applied_index: 1,
        is_learner: false,
        errors: vec![],
    }
}

#[test]
fn builtin_rule_needs_both_100_mib_free_and_less_than_half_in_use() {
    let quota = 8 * 1024 * MIB;
    let rule = DefragRule::Builtin;
    assert!(
        rule.verdict(&member(300 * MIB, 100 * MIB, quota), false)
            .matches
    );
    // 99.9 MiB free: too little to be worth it.
    let just_under = member(200 * MIB, 200 * MIB - 99 * MIB - 900 * 1024, quota);
    let verdict = rule.verdict(&just_under, false);
    assert!(!verdict.matches, "{verdict:?}");
    assert!(verdict.reason.contains("< 100 MiB"), "{}", verdict.reason);
    // Exactly half in use: not fragmented enough.
    assert!(
        !rule
            .verdict(&member(400 * MIB, 200 * MIB, quota), false)
            .matches
    );
    // Exactly 100 MiB free and 49% in use: matches.
    assert!(
        rule.verdict(&member(200 * MIB, 100 * MIB - 1, quota), false)
            .matches
    );
}

#[test]
fn builtin_rule_matches_at_80_percent_of_quota_even_when_not_fragmented() {
    let rule = DefragRule::Builtin;
    let at = rule.verdict(&member(80 * MIB, 80 * MIB, 100 * MIB), false);
    assert!(at.matches);
    assert!(at.reason.contains("80% of the"), "{}", at.reason);
    assert!(
        !rule
            .verdict(&member(79 * MIB, 79 * MIB, 100 * MIB), false)
            .matches
    );
}

#[test]
fn a_nospace_alarm_makes_every_member_match_whatever_the_rule() {
    let never = DefragRule::expression("dbSize < 0").unwrap();
    let verdict = never.verdict(&member(10, 10, 100), true);
    assert!(verdict.matches);
    assert_eq!(verdict.reason, "NOSPACE alarm on the cluster");
}

#[derive(Debug, Deserialize)]
struct Case {
    rule: String,
    #[serde(rename = "dbQuota")]
    quota: u64,
    #[serde(rename = "dbSize")]
    size: u64,
    #[serde(rename = "dbSizeInUse")]
    in_use: u64,
    goval: String,
}

/// What etcdmedic makes of a case, in the fixture's words.
fn verdict_of(case: &Case) -> String {
    match DefragRule::compile(&case.rule) {
        Err(_) => "refused".into(),
        Ok(rule) => match rule.evaluate(&Figures {
            db_size: case.size,
            db_size_in_use: case.in_use,
            quota: case.quota,
        }) {
            Ok(result) => result.to_string(),
            Err(_) => "error".into(),
        },
    }
}

#[test]
fn every_rule_gets_the_verdict_etcd_defrag_gives_it() {
    let fixture = include_str!("fixtures/goval_verdicts.jsonl");
    let mut disagreements = Vec::new();
    let mut count = 0;
    for line in fixture.lines() {
        let case: Case = serde_json::from_str(line).expect("fixture line is a case");
        count += 1;
        let got = verdict_of(&case);
        if got != case.goval {
            disagreements.push(format!(
                "{:?} with dbQuota={} dbSize={} dbSizeInUse={}: etcd-defrag {}, etcdmedic {got}",
                case.rule, case.quota, case.size, case.in_use, case.goval
            ));
        }
    }
    assert!(count > 3000, "the fixture holds {count} cases");
    assert!(
        disagreements.is_empty(),
        "{} of {count} verdicts differ:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

/// etcd-defrag's `internal/eval/evaluator_test.go`, case by case (its figures, its verdicts).
#[test]
fn etcd_defrags_own_test_cases_pass() {
    let valid = [
        "dbSize > dbQuota*80/100",
        "dbSize - dbSizeInUse > 200*1024*1024",
        "dbSize > dbQuota*80/100 || dbSize - dbSizeInUse > 200*1024*1024",
        "dbSize > dbQuota*80/100 && dbSize - dbSizeInUse > 200*1024*1024",
        "(dbSize > dbQuota*80/100) || (dbSize - dbSizeInUse > 200*1024*1024)",
        "dbQuotaUsage > 0.3",
        "dbSizeFree > 100",
    ];
    for rule in valid {
        assert!(DefragRule::expression(rule).is_ok(), "{rule} should load");
    }
    for rule in ["dbSize - dbSizeInUse", "dbSizE > 100"] {
        assert!(
            DefragRule::expression(rule).is_err(),
            "{rule} should be refused"
        );
    }
    let evaluations: [(&str, u64, u64, u64, bool); 16] = [
        ("dbSize > dbQuota*80/100", 100, 81, 0, true),
        ("dbQuotaUsage > 0.8", 100, 81, 0, true),
        ("dbSize > dbQuota*80/100", 100, 79, 0, false),
        ("dbQuotaUsage > 0.8", 100, 79, 0, false),
        ("dbSize - dbSizeInUse > 200", 0, 301, 100, true),
        ("dbSizeFree > 200", 0, 301, 100, true),
        ("dbSize - dbSizeInUse > 200", 0, 299, 100, false),
        ("dbSizeFree > 200", 0, 299, 100, false),
        (
            "dbSize > dbQuota*80/100 && dbSize - dbSizeInUse > 200",
            1000,
            801,
            600,
            true,
        ),
        (
            "dbSize > dbQuota*80/100 && dbSize - dbSizeInUse > 200",
            100,
            81,
            60,
            false,
        ),
        (
            "dbSize > dbQuota*80/100 || dbSize - dbSizeInUse > 200",
            1000,
            801,
            600,
            true,
        ),
        (
            "dbSize > dbQuota*80/100 || dbSize - dbSizeInUse > 200",
            100,
            81,
            60,
            true,
        ),
        (
            "dbQuotaUsage > 0.8 && dbSizeFree > 200",
            1000,
            801,
            600,
            true,
        ),
        ("dbQuotaUsage > 0.8 || dbSizeFree > 200", 100, 81, 60, true),
        ("dbSizeInUse / dbSize < 0.5", 0, 81, 60, false),
        ("dbSizeInUse / dbSize < 0.5", 0, 81, 40, true),
    ];
    for (rule, quota, size, in_use, expected) in evaluations {
        let case = Case {
            rule: rule.into(),
            quota,
            size,
            in_use,
            goval: expected.to_string(),
        };
        assert_eq!(verdict_of(&case), case.goval, "{case:?}");
    }
}

/// The cases issue 11 names, each with etcd-defrag's verdict.
#[test]
fn integer_literals_compare_with_the_float_variables_as_in_etcd_defrag() {
    let gib = 2 * 1024 * 1024 * 1024;
    let member = |size: u64| member(size, size / 2, gib);
    let matches = |rule: &str, size: u64| {
        DefragRule::expression(rule)
            .unwrap()
            .verdict(&member(size), false)
            .matches
    };
    assert!(matches("dbQuota == 2*1024*1024*1024", 100));
    assert!(!matches("dbQuota != 2*1024*1024*1024", 100));
    assert!(matches("dbSize % 2 == 0", 100));
    assert!(!matches("dbSize % 2 == 0", 101));
    assert!(matches("dbSize in [1, 100]", 100));
    assert!(!matches("dbSize in [1, 2]", 100));
    assert!(matches("dbSize > 10 ? true : false", 100));
    assert!(matches("(1 << 4) == 16 && dbSize >> 1 == 50", 100));
    // The empty rule is etcd-defrag's default: every member.
    assert!(matches("", 100));
    assert_eq!(
        DefragRule::expression("").unwrap().to_string(),
        "every member (the empty rule)"
    );
}

#[test]
fn rules_etcd_defrag_refuses_are_refused_with_the_problem_named() {
    let cases = [
        (
            "dbSize ^ 2 > 0",
            "^ needs whole numbers, but got a boolean (^ is bitwise XOR in etcd-defrag's rules; ** is the power)",
        ),
        ("dbSize > 100; true", "\";\" is not an operator of the rule language (at byte 12)"),
        ("dbSize / 0 > 1", "divides by zero"),
        ("5 % 0 > 1", "modulo zero"),
        ("dbSize >", "unexpected the end of the rule where a value should be"),
        ("dbSize", "does not give true or false (it gives a number)"),
        ("dbsize > 1", "uses unknown variable dbsize; known: dbSize"),
        ("max(dbSize, 1) > 0", "calls max(); etcd-defrag's rules have no functions"),
        ("dbSize > (1", "unexpected the end of the rule where \")\" should be"),
        (" ", "the rule is blank"),
        ("dbSize > 1 && 1", "&& needs true or false, but got a number"),
        ("1 < 2 < 3", "< compares numbers, but got a boolean and a number"),
    ];
    for (rule, expected) in cases {
        let got = DefragRule::expression(rule).unwrap_err().to_string();
        assert!(
            got.starts_with(&format!("{rule:?} ")) && got.contains(expected),
            "for {rule:?}: expected {expected:?} in {got:?}"
        );
    }
}

#[test]
fn a_rule_that_fails_on_a_members_figures_leaves_the_member_alone_and_says_why() {
    let rule = DefragRule::expression("dbSize / dbSizeInUse > 2").unwrap();
    let verdict = rule.verdict(&member(100, 0, 1000), false);
    assert!(!verdict.matches);
    assert_eq!(
        verdict.reason,
        "rule \"dbSize / dbSizeInUse > 2\" divides by zero"
    );
}

#[test]
fn free_space_can_be_negative_as_etcd_defrag_computes_it() {
    let rule = DefragRule::expression("dbSizeFree < 0").unwrap();
    assert!(rule.verdict(&member(100, 200, 1000), false).matches);
}
