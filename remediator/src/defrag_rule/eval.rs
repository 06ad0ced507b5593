//! Evaluating a parsed rule. Like goval, which computes while it parses, every operand is
//! evaluated: `&&`, `||` and `?:` do not short-circuit, so an error anywhere in a rule is an
//! error of the whole rule, whatever the figures.

use std::collections::BTreeMap;

use super::parser::Expr;
use super::value::{self, EvalError, OpResult, Value};

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
            .ok_or_else(|| EvalError::UnknownVariable(name.to_string())),
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
                    return Err(EvalError::ObjectKey(key.type_name()));
                };
                if object.insert(key.clone(), value).is_some() {
                    return Err(EvalError::DuplicateKey(
                        String::from_utf8_lossy(&key).into_owned(),
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
            Err(EvalError::Function(name.to_string()))
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
