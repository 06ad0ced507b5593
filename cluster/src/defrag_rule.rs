//! Which members need defragmenting, decided from their live Status.
//!
//! The built-in rule, and expressions in the variables of etcd-defrag's `--defrag-rule`
//! (`dbSize`, `dbSizeInUse`, `dbSizeFree`, `dbQuota`, `dbQuotaUsage`) so users of that tool
//! can bring theirs. Expressions are evaluated in floating point, as etcd-defrag does, so
//! `dbSizeInUse / dbSize < 0.5` means what it says.

use std::fmt;

use evalexpr::{ContextWithMutableVariables, DefaultNumericTypes, HashMapContext, Node, Value};
use serde::{Serialize, Serializer};

use crate::model::EndpointStatus;
use crate::table::human_bytes;

/// The built-in rule's thresholds.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 100 * 1024 * 1024;
pub const DEFAULT_MAX_IN_USE_RATIO: f64 = 0.5;
pub const DEFAULT_QUOTA_USAGE: f64 = 0.8;

const VARIABLES: [&str; 5] = [
    "dbSize",
    "dbSizeInUse",
    "dbSizeFree",
    "dbQuota",
    "dbQuotaUsage",
];

/// A rule that decides, per member, whether defragmenting it is worth it.
#[derive(Clone, Default)]
pub enum DefragRule {
    /// Free bytes >= 100 MiB and in use < 50%, or db size >= 80% of quota.
    #[default]
    Builtin,
    Expression {
        source: String,
        tree: Box<Node>,
    },
}

/// Why a member was or was not chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub matches: bool,
    pub reason: String,
}

impl DefragRule {
    /// Compiles an etcd-defrag style expression, or says what is wrong with it.
    pub fn expression(source: &str) -> Result<Self, String> {
        let tree = evalexpr::build_operator_tree::<DefaultNumericTypes>(source)
            .map_err(|err| format!("{source:?} does not parse: {err}"))?;
        if let Some(function) = tree.iter_function_identifiers().next() {
            return Err(format!(
                "{source:?} calls {function}(); only arithmetic, comparisons and && || ! are allowed"
            ));
        }
        if let Some(unknown) = tree
            .iter_variable_identifiers()
            .find(|name| !VARIABLES.contains(name))
        {
            return Err(format!(
                "{source:?} uses unknown variable {unknown}; known: {}",
                VARIABLES.join(", ")
            ));
        }
        let rule = DefragRule::Expression {
            source: source.to_string(),
            tree: Box::new(tree),
        };
        // Parsing accepts some incomplete expressions (`dbSize +`) and non-boolean ones
        // (`dbSize`); evaluating once on sample figures catches both at load time.
        rule.evaluate(&Figures {
            db_size: 300.0 * 1024.0 * 1024.0,
            db_size_in_use: 100.0 * 1024.0 * 1024.0,
            quota: 2.0 * 1024.0 * 1024.0 * 1024.0,
        })
        .map_err(|err| format!("{source:?} {err}"))?;
        Ok(rule)
    }

    /// Whether `status`'s member needs defragmenting. A NOSPACE alarm anywhere in the
    /// cluster makes every member match whatever the rule: only a defragmentation gives the
    /// space back, and writes are refused until then.
    pub fn verdict(&self, status: &EndpointStatus, cluster_has_nospace: bool) -> Verdict {
        if cluster_has_nospace {
            return Verdict {
                matches: true,
                reason: "NOSPACE alarm on the cluster".into(),
            };
        }
        match self {
            DefragRule::Builtin => builtin_verdict(status),
            DefragRule::Expression { source, .. } => {
                // The rule itself is printed once with the plan; each member says how it fared.
                match self.evaluate(&Figures::of(status)) {
                    Ok(true) => Verdict {
                        matches: true,
                        reason: "matches the rule".into(),
                    },
                    Ok(false) => Verdict {
                        matches: false,
                        reason: "does not match the rule".into(),
                    },
                    // Checked at load time, so only reachable with figures that break
                    // arithmetic; not defragmenting is the safe reading.
                    Err(err) => Verdict {
                        matches: false,
                        reason: format!("rule {source:?} {err}"),
                    },
                }
            }
        }
    }

    fn evaluate(&self, figures: &Figures) -> Result<bool, String> {
        let DefragRule::Expression { tree, .. } = self else {
            return Ok(false);
        };
        let mut context = HashMapContext::<DefaultNumericTypes>::new();
        let values = [
            figures.db_size,
            figures.db_size_in_use,
            (figures.db_size - figures.db_size_in_use).max(0.0),
            figures.quota,
            figures.db_size / figures.quota.max(1.0),
        ];
        for (name, value) in VARIABLES.iter().zip(values) {
            context
                .set_value((*name).to_string(), Value::Float(value))
                .map_err(|err| format!("cannot be evaluated: {err}"))?;
        }
        tree.eval_boolean_with_context(&context)
            .map_err(|err| format!("does not give true or false: {err}"))
    }
}

struct Figures {
    db_size: f64,
    db_size_in_use: f64,
    quota: f64,
}

impl Figures {
    fn of(status: &EndpointStatus) -> Self {
        Figures {
            db_size: status.db_size_bytes as f64,
            db_size_in_use: status.db_size_in_use_bytes as f64,
            quota: status.quota_bytes as f64,
        }
    }
}

fn builtin_verdict(status: &EndpointStatus) -> Verdict {
    let free = status.free_bytes();
    let ratio = status.in_use_ratio();
    let usage = status.quota_usage();
    let percent = |value: f64| format!("{:.0}%", value * 100.0);
    if usage >= DEFAULT_QUOTA_USAGE {
        return Verdict {
            matches: true,
            reason: format!(
                "db size {} is {} of the {} quota (>= {})",
                human_bytes(status.db_size_bytes),
                percent(usage),
                human_bytes(status.quota_bytes),
                percent(DEFAULT_QUOTA_USAGE)
            ),
        };
    }
    let fragmented = free >= DEFAULT_MIN_FREE_BYTES && ratio < DEFAULT_MAX_IN_USE_RATIO;
    Verdict {
        matches: fragmented,
        reason: format!(
            "{} free ({} 100 MiB) and {} in use ({} 50%)",
            human_bytes(free),
            if free >= DEFAULT_MIN_FREE_BYTES {
                ">="
            } else {
                "<"
            },
            percent(ratio),
            if ratio < DEFAULT_MAX_IN_USE_RATIO {
                "<"
            } else {
                ">="
            },
        ),
    }
}

impl fmt::Display for DefragRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefragRule::Builtin => f.write_str(
                "built-in: free >= 100 MiB and in use < 50%, or db size >= 80% of quota",
            ),
            DefragRule::Expression { source, .. } => f.write_str(source),
        }
    }
}

impl fmt::Debug for DefragRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DefragRule({self})")
    }
}

impl Serialize for DefragRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MemberId, QuotaSource};

    const MIB: u64 = 1024 * 1024;

    fn member(db_size: u64, in_use: u64, quota: u64) -> EndpointStatus {
        EndpointStatus {
            member_id: MemberId(1),
            cluster_id: 1,
            revision: 1,
            version: "3.5.1".into(),
            storage_version: None,
            db_size_bytes: db_size,
            db_size_in_use_bytes: in_use,
            quota_bytes: quota,
            quota_source: QuotaSource::Config,
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

    #[test]
    fn etcd_defrag_expressions_are_evaluated_in_floating_point() {
        let rule =
            DefragRule::expression("dbSizeFree >= 100*1024*1024 && dbSizeInUse / dbSize < 0.5")
                .unwrap();
        assert!(
            rule.verdict(&member(300 * MIB, 100 * MIB, 1 << 31), false)
                .matches
        );
        assert!(
            !rule
                .verdict(&member(300 * MIB, 151 * MIB, 1 << 31), false)
                .matches
        );
        let usage = DefragRule::expression("dbQuotaUsage >= 0.8 || dbQuota - dbSize < 1").unwrap();
        assert!(usage.verdict(&member(81, 81, 100), false).matches);
        assert!(!usage.verdict(&member(79, 79, 100), false).matches);
        let upstream_example = DefragRule::expression(
            "dbSize > dbQuota*80/100 || dbSize - dbSizeInUse > 200*1024*1024",
        )
        .unwrap();
        assert!(
            upstream_example
                .verdict(&member(500 * MIB, 250 * MIB, 1 << 31), false)
                .matches
        );
    }

    #[test]
    fn invalid_expressions_are_rejected_with_the_reason() {
        let cases = [
            ("dbSize >", "does not give true or false"),
            ("dbSize", "does not give true or false"),
            ("dbsize > 1", "unknown variable dbsize"),
            ("max(dbSize, 1) > 0", "calls max()"),
            ("dbSize > (1", "does not parse"),
        ];
        for (source, expected) in cases {
            let got = DefragRule::expression(source).unwrap_err();
            assert!(
                got.contains(expected),
                "for {source:?}: expected {expected:?} in {got:?}"
            );
        }
    }
}
