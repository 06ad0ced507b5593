//! Values and operators with goval's semantics, which etcd-defrag's `--defrag-rule` inherits:
//! integers and floats are both "numbers", an operation on two integers stays an integer (with
//! Go's wrapping and truncating division), anything with a float is a float, `==` compares
//! across the two (`2147483648.0 == 2*1024*1024*1024`), and bit operators take whole numbers
//! only. Strings are bytes, as in Go.

use std::collections::BTreeMap;
use std::fmt;

use super::go_math::TWO_TO_63;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Vec<u8>),
    Array(Vec<Value>),
    Object(BTreeMap<Vec<u8>, Value>),
}

/// Why an operation has no result; the message says what a rule's author must change.
pub(super) type OpResult<T = Value> = Result<T, EvalError>;

/// Why a rule has no value on some figures. A type is named as [`Value::type_name`] does.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("{operator} needs true or false, but got {got}")]
    NotBoolean { operator: String, got: &'static str },
    #[error("{operator} needs whole numbers, but got {value}, which is not one")]
    Fraction { operator: String, value: f64 },
    #[error("{operator} needs whole numbers, but got {got}")]
    NotWhole { operator: String, got: &'static str },
    #[error("{operator} needs numbers, but got {a} and {b}")]
    NotNumbers {
        operator: String,
        a: &'static str,
        b: &'static str,
    },
    #[error("{operator} compares numbers, but got {a} and {b}")]
    NotComparable {
        operator: String,
        a: &'static str,
        b: &'static str,
    },
    #[error("+ cannot add {0} and {1}")]
    CannotAdd(&'static str, &'static str),
    #[error("unary - needs a number, but got {0}")]
    CannotNegate(&'static str),
    #[error("divides by zero")]
    DivisionByZero,
    #[error("takes a whole number modulo zero (etcd-defrag crashes on it)")]
    ModuloZero,
    #[error("{0} (^ is bitwise XOR in etcd-defrag's rules; ** is the power)")]
    Xor(Box<EvalError>),
    #[error("an object key must be a string, not {0}")]
    ObjectKey(&'static str),
    #[error("the object has the key {0:?} twice")]
    DuplicateKey(String),
    #[error("the object has no member {0:?}")]
    NoMember(String),
    #[error("an array index must be a number, not {0}")]
    ArrayIndex(&'static str),
    #[error("array index {index} is out of range [0, {len}]")]
    IndexOutOfRange { index: i64, len: usize },
    #[error("{0} has no members")]
    NoMembers(&'static str),
    #[error("only strings and arrays can be sliced, not {0}")]
    NotSliceable(&'static str),
    #[error("slice start {0} is negative")]
    NegativeStart(i64),
    #[error("slice end {end} is out of range [0, {len}]")]
    EndOutOfRange { end: i64, len: usize },
    #[error("slice start {from} is after its end {to}")]
    StartAfterEnd { from: i64, to: i64 },
    #[error("in needs an array on its right, not {0}")]
    NotAnArray(&'static str),
    #[error("uses unknown variable {0}")]
    UnknownVariable(String),
    #[error("calls {0}(); etcd-defrag's rules have no functions (operators only)")]
    Function(String),
}

impl Value {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    fn number(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    pub(super) fn as_bool(&self, operator: &str) -> OpResult<bool> {
        match self {
            Value::Bool(b) => Ok(*b),
            other => Err(EvalError::NotBoolean {
                operator: operator.to_string(),
                got: other.type_name(),
            }),
        }
    }

    /// A whole number, as goval's bit operators and indexes require.
    pub(super) fn as_integer(&self, operator: &str) -> OpResult<i64> {
        match *self {
            Value::Int(i) => Ok(i),
            // Exactly the floats Go converts to int and back unchanged.
            Value::Float(f) if f.fract() == 0.0 && (-TWO_TO_63..TWO_TO_63).contains(&f) => {
                Ok(f as i64)
            }
            Value::Float(f) => Err(EvalError::Fraction {
                operator: operator.to_string(),
                value: f,
            }),
            ref other => Err(EvalError::NotWhole {
                operator: operator.to_string(),
                got: other.type_name(),
            }),
        }
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest text that reads back as `f`.
fn go_float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{f}")
    }
}

/// `+`: numbers add; strings concatenate with numbers, booleans and nil; arrays and objects
/// join.
pub(super) fn add(a: Value, b: Value) -> OpResult {
    use Value::*;
    Ok(match (a, b) {
        (Str(mut x), Str(y)) => {
            x.extend(y);
            Str(x)
        }
        (Int(x), Int(y)) => Int(x.wrapping_add(y)),
        (a, b) if a.number().is_some() && b.number().is_some() => {
            Float(a.number().unwrap_or_default() + b.number().unwrap_or_default())
        }
        (Str(mut x), b) if text(&b).is_some() => {
            x.extend(text(&b).unwrap_or_default().bytes());
            Str(x)
        }
        (a, Str(y)) if text(&a).is_some() => {
            let mut x = text(&a).unwrap_or_default().into_bytes();
            x.extend(y);
            Str(x)
        }
        (Array(mut x), Array(y)) => {
            x.extend(y);
            Array(x)
        }
        (Object(mut x), Object(y)) => {
            x.extend(y);
            Object(x)
        }
        (a, b) => return Err(EvalError::CannotAdd(a.type_name(), b.type_name())),
    })
}

/// How goval writes a number, boolean or nil into a string.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::Nil => Some("nil".into()),
        Value::Bool(b) => Some(b.to_string()),
        other => other.number().map(go_float_text),
    }
}

/// `-`, `*`, `/`, `%` and `**` between numbers.
pub(super) fn arithmetic(operator: &str, a: Value, b: Value) -> OpResult {
    let mismatch = |a: &Value, b: &Value| EvalError::NotNumbers {
        operator: operator.to_string(),
        a: a.type_name(),
        b: b.type_name(),
    };
    if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
        let (x, y) = (*x, *y);
        return match operator {
            "-" => Ok(Value::Int(x.wrapping_sub(y))),
            "*" => Ok(Value::Int(x.wrapping_mul(y))),
            "/" if y == 0 => Err(EvalError::DivisionByZero),
            "/" => Ok(Value::Int(x.wrapping_div(y))),
            // goval does not check this one: the Go runtime panics and etcd-defrag exits.
            "%" if y == 0 => Err(EvalError::ModuloZero),
            "%" => Ok(Value::Int(x.wrapping_rem(y))),
            _ => Ok(power(x as f64, y as f64, true)),
        };
    }
    let (Some(x), Some(y)) = (a.number(), b.number()) else {
        return Err(mismatch(&a, &b));
    };
    Ok(match operator {
        "-" => Value::Float(x - y),
        "*" => Value::Float(x * y),
        "/" if y == 0.0 => return Err(EvalError::DivisionByZero),
        "/" => Value::Float(x / y),
        // Go's math.Mod, like Rust's %, takes the dividend's sign and gives NaN for y = 0.
        "%" => Value::Float(x % y),
        _ => power(x, y, false),
    })
}

/// `**`: an integer when both sides are integers and the result is one.
fn power(x: f64, y: f64, integers: bool) -> Value {
    let result = super::go_math::pow(x, y);
    if integers && result.fract() == 0.0 && (-TWO_TO_63..TWO_TO_63).contains(&result) {
        Value::Int(result as i64)
    } else {
        Value::Float(result)
    }
}

/// `-x`.
pub(super) fn negate(value: Value) -> OpResult {
    match value {
        Value::Int(i) => Ok(Value::Int(i.wrapping_neg())),
        Value::Float(f) => Ok(Value::Float(-f)),
        other => Err(EvalError::CannotNegate(other.type_name())),
    }
}

/// `==`: a deep comparison in which an integer equals the float of the same value.
pub(super) fn equal(a: &Value, b: &Value) -> bool {
    use Value::*;
    match (a, b) {
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| equal(x, y)),
        // goval looks every key of the left object up in the right one, where a missing key
        // reads as nil.
        (Object(x), Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, value)| equal(value, y.get(key).unwrap_or(&Nil)))
        }
        (Int(x), Int(y)) => x == y,
        (Int(_) | Float(_), Int(_) | Float(_)) => a.number() == b.number(),
        (Nil, Nil) => true,
        (Bool(x), Bool(y)) => x == y,
        (Str(x), Str(y)) => x == y,
        _ => false,
    }
}

/// `<`, `<=`, `>`, `>=` between numbers.
pub(super) fn compare(operator: &str, a: &Value, b: &Value) -> OpResult<bool> {
    let ordering = match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.partial_cmp(y),
        _ => match (a.number(), b.number()) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => {
                return Err(EvalError::NotComparable {
                    operator: operator.to_string(),
                    a: a.type_name(),
                    b: b.type_name(),
                })
            }
        },
    };
    // NaN compares false with everything, as in Go.
    Ok(ordering.is_some_and(|ordering| match operator {
        "<" => ordering.is_lt(),
        "<=" => ordering.is_le(),
        ">" => ordering.is_gt(),
        _ => ordering.is_ge(),
    }))
}

/// `&`, `|`, `^`, `<<`, `>>` on whole numbers, with Go's shifts: a negative count shifts the
/// other way, 64 or more clears (or fills with the sign).
pub(super) fn bits(operator: &str, a: &Value, b: &Value) -> OpResult {
    let hint = |err: EvalError| match operator {
        "^" => EvalError::Xor(Box::new(err)),
        _ => err,
    };
    let x = a.as_integer(operator).map_err(hint)?;
    let y = b.as_integer(operator).map_err(hint)?;
    let shift_left = |x: i64, by: u64| if by >= 64 { 0 } else { x << by };
    let shift_right = |x: i64, by: u64| if by >= 64 { x >> 63 } else { x >> by };
    let by = y.unsigned_abs();
    Ok(Value::Int(match (operator, y >= 0) {
        ("&", _) => x & y,
        ("|", _) => x | y,
        ("^", _) => x ^ y,
        ("<<", true) | (">>", false) => shift_left(x, by),
        _ => shift_right(x, by),
    }))
}

/// `x.name`, `x[i]`: an object's member or an array's element.
pub(super) fn member(container: &Value, key: &Value) -> OpResult {
    match container {
        Value::Object(object) => {
            let Value::Str(name) = key else {
                return Err(EvalError::ObjectKey(key.type_name()));
            };
            object
                .get(name)
                .cloned()
                .ok_or_else(|| EvalError::NoMember(String::from_utf8_lossy(name).into_owned()))
        }
        Value::Array(array) => {
            let index = match key {
                Value::Int(_) | Value::Float(_) => key.as_integer("an array index")?,
                other => return Err(EvalError::ArrayIndex(other.type_name())),
            };
            usize::try_from(index)
                .ok()
                .and_then(|i| array.get(i).cloned())
                .ok_or(EvalError::IndexOutOfRange {
                    index,
                    len: array.len(),
                })
        }
        other => Err(EvalError::NoMembers(other.type_name())),
    }
}

/// `x[from:to]` on a string (bytes) or an array.
pub(super) fn slice(value: &Value, from: Option<&Value>, to: Option<&Value>) -> OpResult {
    let len = match value {
        Value::Str(bytes) => bytes.len(),
        Value::Array(items) => items.len(),
        other => return Err(EvalError::NotSliceable(other.type_name())),
    };
    let from = from.map_or(Ok(0), |v| v.as_integer("a slice index"))?;
    let to = to.map_or(Ok(len as i64), |v| v.as_integer("a slice index"))?;
    if from < 0 {
        return Err(EvalError::NegativeStart(from));
    }
    if to < 0 || to as u64 > len as u64 {
        return Err(EvalError::EndOutOfRange { end: to, len });
    }
    if from > to {
        return Err(EvalError::StartAfterEnd { from, to });
    }
    let (from, to) = (from as usize, to as usize);
    Ok(match value {
        Value::Str(bytes) => Value::Str(bytes[from..to].to_vec()),
        Value::Array(items) => Value::Array(items[from..to].to_vec()),
        other => other.clone(),
    })
}

/// `x in array`.
pub(super) fn contains(array: &Value, item: &Value) -> OpResult<bool> {
    match array {
        Value::Array(items) => Ok(items.iter().any(|candidate| equal(candidate, item))),
        other => Err(EvalError::NotAnArray(other.type_name())),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("nil"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&go_float_text(*x)),
            Value::Str(s) => write!(f, "{:?}", String::from_utf8_lossy(s)),
            Value::Array(_) => f.write_str("an array"),
            Value::Object(_) => f.write_str("an object"),
        }
    }
}
