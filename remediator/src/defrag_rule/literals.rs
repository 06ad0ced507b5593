//! Number and string literals, read as Go reads them (goval takes both from Go's scanner and
//! `strconv`): `0x`, `0o`, `0b` and legacy octal integers, decimal and hexadecimal floats, `_`
//! between digits, and Go's string escapes.

use super::value::Value;
use super::RuleError;

/// A number literal as Go scans it: decimal, `0x`, `0o`, `0b` or legacy octal integers,
/// decimal or hexadecimal floats, `_` between digits. Integers are 64-bit and wrap like Go's
/// `int` for `0x` literals; floats are f64.
pub(super) fn number(rest: &str, at: usize) -> Result<(Value, usize), RuleError> {
    let bytes = rest.as_bytes();
    let mut len = 0;
    let prefix = if bytes.len() > 1 && bytes[0] == b'0' {
        bytes[1].to_ascii_lowercase()
    } else {
        0
    };
    let hex = prefix == b'x';
    let digit = |b: u8| {
        b == b'_'
            || if hex {
                b.is_ascii_hexdigit()
            } else {
                b.is_ascii_digit()
            }
    };
    if matches!(prefix, b'x' | b'o' | b'b') {
        len = 2;
    }
    while len < bytes.len() && digit(bytes[len]) {
        len += 1;
    }
    let mut float = false;
    if len < bytes.len() && bytes[len] == b'.' {
        float = true;
        len += 1;
        while len < bytes.len() && digit(bytes[len]) {
            len += 1;
        }
    }
    let exponent = if hex { b'p' } else { b'e' };
    if len < bytes.len() && bytes[len].to_ascii_lowercase() == exponent {
        float = true;
        len += 1;
        if len < bytes.len() && matches!(bytes[len], b'+' | b'-') {
            len += 1;
        }
        while len < bytes.len() && (bytes[len].is_ascii_digit() || bytes[len] == b'_') {
            len += 1;
        }
    }
    if len < bytes.len() && bytes[len] == b'i' {
        return Err(RuleError::lex(at, "imaginary numbers are not numbers here"));
    }
    let literal = &rest[..len];
    let value = if float {
        parse_float(literal).map(Value::Float)
    } else {
        parse_int(literal).map(Value::Int)
    };
    value
        .map(|value| (value, len))
        .ok_or_else(|| RuleError::lex(at, format!("{literal:?} is not a valid number")))
}

/// Go's rule for `_` in number literals (strconv's underscoreOK): only between two digits,
/// or between a base prefix and a digit.
fn underscores_ok(literal: &str) -> bool {
    let bytes = literal.as_bytes();
    let mut i = 0;
    let mut hex = false;
    // What came last: b'^' the start, b'0' a digit or a base prefix, b'_', or b'!' other.
    let mut saw = b'^';
    if bytes.len() >= 2
        && bytes[0] == b'0'
        && matches!(bytes[1].to_ascii_lowercase(), b'b' | b'o' | b'x')
    {
        i = 2;
        saw = b'0';
        hex = bytes[1].eq_ignore_ascii_case(&b'x');
    }
    for &b in &bytes[i..] {
        if b.is_ascii_digit() || (hex && b.is_ascii_hexdigit()) {
            saw = b'0';
        } else if b == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else if saw == b'_' {
            return false;
        } else {
            saw = b'!';
        }
    }
    saw != b'_'
}

fn parse_int(literal: &str) -> Option<i64> {
    if !underscores_ok(literal) {
        return None;
    }
    let digits: String = literal.chars().filter(|&c| c != '_').collect();
    let lower = digits.to_ascii_lowercase();
    // goval parses "0x..." (lower-case x only) as unsigned and keeps the bits, so
    // 0xFFFFFFFFFFFFFFFF is -1; every other form must fit a signed 64-bit integer.
    if let Some(hex) = digits.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(|v| v as i64);
    }
    let (radix, body) = if let Some(body) = lower.strip_prefix("0x") {
        (16, body)
    } else if let Some(body) = lower.strip_prefix("0o") {
        (8, body)
    } else if let Some(body) = lower.strip_prefix("0b") {
        (2, body)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if body.is_empty() {
        return None;
    }
    i64::from_str_radix(body, radix).ok()
}

fn parse_float(literal: &str) -> Option<f64> {
    if !underscores_ok(literal) {
        return None;
    }
    let text: String = literal.chars().filter(|&c| c != '_').collect();
    let lower = text.to_ascii_lowercase();
    let value = match lower.strip_prefix("0x") {
        Some(hex) => parse_hex_float(hex)?,
        None => text.parse::<f64>().ok()?,
    };
    // Go's ParseFloat refuses what overflows; Rust's parse gives infinity.
    value.is_finite().then_some(value)
}

/// `1.8p3` (after `0x`): hexadecimal mantissa, binary exponent, which Go requires.
fn parse_hex_float(text: &str) -> Option<f64> {
    let (mantissa, exponent) = text.split_once('p')?;
    let exponent: i32 = exponent.parse().ok()?;
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut value = 0f64;
    for digit in whole.chars() {
        value = value * 16.0 + f64::from(digit.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for digit in fraction.chars() {
        value += f64::from(digit.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    Some(value * 2f64.powi(exponent))
}

/// A Go string literal: `"..."` with escapes or `` `...` `` raw. Strings are bytes, as in Go.
pub(super) fn string(rest: &str, at: usize) -> Result<(Value, usize), RuleError> {
    let bytes = rest.as_bytes();
    let quote = bytes[0];
    let unterminated = || RuleError::lex(at, "the string is not terminated");
    if quote == b'`' {
        let end = rest[1..].find('`').ok_or_else(unterminated)? + 1;
        let raw: Vec<u8> = rest[1..end].bytes().filter(|&b| b != b'\r').collect();
        return Ok((Value::Str(raw), end + 1));
    }
    let mut out = Vec::new();
    let mut i = 1;
    let bad_escape = |i: usize| RuleError::lex(at + i, "invalid escape in the string");
    loop {
        let Some(&b) = bytes.get(i) else {
            return Err(unterminated());
        };
        match b {
            b'"' => return Ok((Value::Str(out), i + 1)),
            b'\n' => return Err(unterminated()),
            b'\\' => {
                let Some(&e) = bytes.get(i + 1) else {
                    return Err(unterminated());
                };
                i += 2;
                let simple = match e {
                    b'a' => Some(7),
                    b'b' => Some(8),
                    b'f' => Some(12),
                    b'n' => Some(b'\n'),
                    b'r' => Some(b'\r'),
                    b't' => Some(b'\t'),
                    b'v' => Some(11),
                    b'\\' => Some(b'\\'),
                    b'"' => Some(b'"'),
                    _ => None,
                };
                if let Some(byte) = simple {
                    out.push(byte);
                    continue;
                }
                let (digits, radix) = match e {
                    b'0'..=b'7' => (3, 8),
                    b'x' => (2, 16),
                    b'u' => (4, 16),
                    b'U' => (8, 16),
                    _ => return Err(bad_escape(i - 2)),
                };
                let start = if radix == 8 { i - 1 } else { i };
                let text = rest
                    .get(start..start + digits)
                    .ok_or_else(|| bad_escape(i - 2))?;
                let code = u32::from_str_radix(text, radix).map_err(|_| bad_escape(i - 2))?;
                i = start + digits;
                if matches!(e, b'u' | b'U') {
                    let ch = char::from_u32(code).ok_or_else(|| bad_escape(i))?;
                    out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                } else {
                    out.push(u8::try_from(code).map_err(|_| bad_escape(i))?);
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
}
