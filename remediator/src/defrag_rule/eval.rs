//! Evaluating a parsed rule. Like goval, which computes while it parses, every operand is
//! evaluated: `&&`, `||` and `?:` do not short-circuit, so an error anywhere in a rule is an
//! error of the whole rule, whatever the figures.

use std::collections::BTreeMap;

use super::parser::Expr;
use super::value::{self, OpResult, Value};

/// The variables a rule can read, by name.
pub(super) trait Variables {
    fn get(&self, name: &str) -> Option<Value>;
}

pub(super) fn evaluate(expr: &Expr, variables: &impl Variables) -> OpResult {
    let eval = |e: &Expr| evaluate(e, variables);
    match expr {
        Expr::Literal(value) => Ok(value.clone()),
        Expr::Variable(name) => variables
            .get(name)
            .ok_or_else(|| format!("uses unknown variable {name}")),
        Expr::Array(items) => items
            .iter()
            .map(eval)
            .collect::<OpResult<Vec<_>>>()
            .map(Value::Array),
        Expr::Object(members) => {
            let mut object = BTreeMap::new();
            for (key, value) in members {
                let (key, value) = (eval(key)?, eval(value)?);
                let Value::Str(key) = key else {
                    return Err(format!(
                        "an object key must be a string, not {}",
                        key.type_name()
                    ));
                };
                if object.insert(key.clone(), value).is_some() {
                    return Err(format!(
                        "the object has the key {:?} twice",
                        String::from_utf8_lossy(&key)
                    ));
                }
            }
            Ok(Value::Object(object))
        }
        Expr::Unary(op, operand) => {
            let operand = eval(operand)?;
            match *op {
                "-" => value::negate(operand),
                "!" => Ok(Value::Bool(!operand.as_bool("!")?)),
                _ => Ok(Value::Int(!operand.as_integer("~")?)),
            }
        }
        Expr::Binary(op, left, right) => binary(op, eval(left)?, eval(right)?),
        Expr::Ternary(condition, then, otherwise) => {
            let (condition, then, otherwise) = (eval(condition)?, eval(then)?, eval(otherwise)?);
            Ok(if condition.as_bool("?:")? {
                then
            } else {
                otherwise
            })
        }
        Expr::Member(container, key) => value::member(&eval(container)?, &eval(key)?),
        Expr::Slice(target, from, to) => {
            let target = eval(target)?;
            let from = from.as_deref().map(eval).transpose()?;
            let to = to.as_deref().map(eval).transpose()?;
            value::slice(&target, from.as_ref(), to.as_ref())
        }
        Expr::Call(name, arguments) => {
            for argument in arguments {
                eval(argument)?;
            }
            Err(format!(
                "calls {name}(); etcd-defrag's rules have no functions (operators only)"
            ))
        }
    }
}

fn binary(op: &str, left: Value, right: Value) -> OpResult {
    match op {
        "+" => value::add(left, right),
        "-" | "*" | "/" | "%" | "**" => value::arithmetic(op, left, right),
        "==" => Ok(Value::Bool(value::equal(&left, &right))),
        "!=" => Ok(Value::Bool(!value::equal(&left, &right))),
        "<" | "<=" | ">" | ">=" => value::compare(op, &left, &right).map(Value::Bool),
        "&&" | "||" => {
            let (left, right) = (left.as_bool(op)?, right.as_bool(op)?);
            Ok(Value::Bool(if op == "&&" {
                left && right
            } else {
                left || right
            }))
        }
        "in" => value::contains(&right, &left).map(Value::Bool),
        _ => value::bits(op, &left, &right),
    }
}
