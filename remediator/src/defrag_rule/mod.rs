//! Which members need defragmenting, decided from their live Status.
//!
//! The built-in rule, or an expression in etcd-defrag's `--defrag-rule` language, so users of
//! that tool can bring theirs and get the same verdicts: the variables `dbSize`,
//! `dbSizeInUse`, `dbSizeFree`, `dbQuota` and `dbQuotaUsage` (floats, as etcd-defrag passes
//! them), and goval's operators with goval's meaning and precedence (etcd-defrag evaluates
//! rules with github.com/maja42/goval). An empty rule selects every member, as etcd-defrag's
//! default does.
//!
//! # Layout
//! - `lexer`, `literals`: tokens, split as Go's scanner splits them.
//! - `parser`: goval's grammar and precedence, into a tree.
//! - `eval`, `value`: evaluation with goval's integer/float semantics.
//! - `go_math`: Go's `math.Pow`, for `**`.

mod eval;
mod go_math;
mod lexer;
mod literals;
mod parser;
#[cfg(test)]
mod tests;
mod value;

use std::fmt;

use serde::{Serialize, Serializer};

use etcdmedic_cluster::model::EndpointStatus;
use etcdmedic_cluster::table::human_bytes;
use parser::Expr;
use value::Value;

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
    /// The empty rule: every member, as etcd-defrag does without `--defrag-rule`.
    EveryMember,
    Expression(Box<Expression>),
}

/// A compiled etcd-defrag rule.
#[derive(Clone)]
pub struct Expression {
    source: String,
    tree: Expr,
}

/// Why a rule cannot be used, with the place in the rule where that shows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("does not parse: {message} (at byte {at})")]
    Lex { at: usize, message: String },
    #[error("does not parse: {message} (at byte {at})")]
    Syntax { at: usize, message: String },
    #[error("uses unknown variable {0}; known: {known}", known = VARIABLES.join(", "))]
    UnknownVariable(String),
    #[error(transparent)]
    Evaluation(#[from] value::EvalError),
    #[error("does not give true or false (it gives {0}); compare something, such as dbSizeFree > 100*1024*1024")]
    NotBoolean(&'static str),
}

impl RuleError {
    fn lex(at: usize, message: impl Into<String>) -> Self {
        RuleError::Lex {
            at,
            message: message.into(),
        }
    }

    fn syntax(at: usize, message: impl Into<String>) -> Self {
        RuleError::Syntax {
            at,
            message: message.into(),
        }
    }
}

/// Why a member was or was not chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub matches: bool,
    pub reason: String,
}

/// A rule that does not load; the message starts with the rule, quoted.
#[derive(Debug, thiserror::Error)]
#[error("{rule:?} {error}")]
pub struct BadRule {
    rule: String,
    error: RuleError,
}

impl DefragRule {
    /// Compiles an etcd-defrag rule, or says what is wrong with it (the message starts with
    /// the rule, quoted).
    pub fn expression(source: &str) -> Result<Self, BadRule> {
        Self::compile(source).map_err(|error| BadRule {
            rule: source.to_string(),
            error,
        })
    }

    fn compile(source: &str) -> Result<Self, RuleError> {
        if source.is_empty() {
            return Ok(DefragRule::EveryMember);
        }
        let tree = parser::parse(&lexer::tokens(source)?)?;
        if let Some(unknown) = unknown_variable(&tree) {
            return Err(RuleError::UnknownVariable(unknown.to_string()));
        }
        let rule = DefragRule::Expression(Box::new(Expression {
            source: source.to_string(),
            tree,
        }));
        // etcd-defrag refuses a rule that does not evaluate to a boolean on these figures
        // (2 GiB quota, 100 MiB file, 60 MiB in use); so does this.
        rule.evaluate(&Figures {
            db_size: 100 * 1024 * 1024,
            db_size_in_use: 60 * 1024 * 1024,
            quota: 2 * 1024 * 1024 * 1024,
        })?;
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
        let (matches, reason) = match self {
            DefragRule::Builtin => return builtin_verdict(status),
            DefragRule::EveryMember => (true, "the empty rule selects every member".into()),
            // The rule itself is printed once with the plan; each member says how it fared.
            DefragRule::Expression(rule) => match self.evaluate(&Figures::of(status)) {
                Ok(true) => (true, "matches the rule".into()),
                Ok(false) => (false, "does not match the rule".into()),
                // Checked at load time, so only reachable with figures that break the
                // arithmetic (a zero divisor); not defragmenting is the safe reading, and
                // etcd-defrag skips such a member too.
                Err(err) => (false, format!("rule {:?} {err}", rule.source)),
            },
        };
        Verdict { matches, reason }
    }

    fn evaluate(&self, figures: &Figures) -> Result<bool, RuleError> {
        let DefragRule::Expression(rule) = self else {
            return Ok(matches!(self, DefragRule::EveryMember));
        };
        match eval::evaluate(&rule.tree, figures)? {
            Value::Bool(result) => Ok(result),
            other => Err(RuleError::NotBoolean(other.type_name())),
        }
    }
}

/// The first variable the rule reads that etcd-defrag does not define.
fn unknown_variable(expr: &Expr) -> Option<&str> {
    let children: Vec<&Expr> = match expr {
        Expr::Variable(name) => return (!VARIABLES.contains(&name.as_str())).then_some(name),
        Expr::Literal(_) => vec![],
        Expr::Array(items) | Expr::Call(_, items) => items.iter().collect(),
        Expr::Object(members) => members.iter().flat_map(|(k, v)| [k, v]).collect(),
        Expr::Unary(_, operand) => vec![operand],
        Expr::Binary(_, left, right) | Expr::Member(left, right) => vec![left, right],
        Expr::Ternary(a, b, c) => vec![a, b, c],
        Expr::Slice(target, from, to) => std::iter::once(&**target)
            .chain(from.as_deref())
            .chain(to.as_deref())
            .collect(),
    };
    children.into_iter().find_map(unknown_variable)
}

/// A member's figures, as etcd-defrag turns them into the rule's variables.
struct Figures {
    db_size: u64,
    db_size_in_use: u64,
    quota: u64,
}

impl Figures {
    fn of(status: &EndpointStatus) -> Self {
        Figures {
            db_size: status.db_size_bytes,
            db_size_in_use: status.db_size_in_use_bytes,
            quota: status.quota_bytes,
        }
    }
}

impl eval::Variables for Figures {
    fn get(&self, name: &str) -> Option<Value> {
        let (size, in_use, quota) = (
            self.db_size as f64,
            self.db_size_in_use as f64,
            self.quota as f64,
        );
        Some(Value::Float(match name {
            "dbSize" => size,
            "dbSizeInUse" => in_use,
            // etcd-defrag subtracts before converting, and does not clamp at zero.
            "dbSizeFree" => (self.db_size as i64).wrapping_sub(self.db_size_in_use as i64) as f64,
            "dbQuota" => quota,
            "dbQuotaUsage" => size / quota,
            _ => return None,
        }))
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
            DefragRule::EveryMember => f.write_str("every member (the empty rule)"),
            DefragRule::Expression(rule) => f.write_str(&rule.source),
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
