//! Tokens of etcd-defrag's rule language. etcd-defrag evaluates `--defrag-rule` with goval,
//! whose lexer is Go's own scanner (`go/scanner`); this one splits text the same way, so
//! that an operator Go reads as one token (`&^`, `++`, `=`, `;`) is refused here too rather
//! than read as two tokens that happen to mean something.

use super::literals::{number, string};
use super::value::Value;
use super::RuleError;

/// One token and the byte offset it starts at.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub kind: Kind,
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Literal(Value),
    Ident(String),
    In,
    /// An operator or punctuation: `+`, `&&`, `<<`, `(`, `?`...
    Op(&'static str),
    End,
}

/// Every operator Go's scanner knows, longest first (`<<=` before `<<` before `<`), and
/// whether goval gives it a meaning. Go reads `&^`, `++`, `=` or `;` as one token, which goval
/// refuses, so they are refused here too instead of being read as two operators.
const OPERATORS: [(&str, bool); 49] = [
    ("&^=", false),
    ("<<=", false),
    (">>=", false),
    ("...", false),
    ("&^", false),
    ("+=", false),
    ("-=", false),
    ("*=", false),
    ("/=", false),
    ("%=", false),
    ("&=", false),
    ("|=", false),
    ("^=", false),
    ("++", false),
    ("--", false),
    (":=", false),
    ("&&", true),
    ("||", true),
    ("==", true),
    ("!=", true),
    ("<=", true),
    (">=", true),
    ("<<", true),
    (">>", true),
    ("<-", true),
    ("=", false),
    (";", false),
    ("+", true),
    ("-", true),
    ("*", true),
    ("/", true),
    ("%", true),
    ("!", true),
    ("<", true),
    (">", true),
    ("&", true),
    ("|", true),
    ("^", true),
    ("~", true),
    ("?", true),
    (":", true),
    (".", true),
    (",", true),
    ("(", true),
    (")", true),
    ("[", true),
    ("]", true),
    ("{", true),
    ("}", true),
];

pub(super) fn tokens(source: &str) -> Result<Vec<Token>, RuleError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &source[at..];
        let c = bytes[at];
        if c.is_ascii_whitespace() {
            at += 1;
        } else if rest.starts_with("//") {
            at += rest.find('\n').unwrap_or(rest.len());
        } else if let Some(comment) = rest.strip_prefix("/*") {
            // Go's scanner reports an unterminated comment but still ends the input there,
            // and goval never looks at that report.
            at += comment.find("*/").map_or(rest.len(), |end| end + 4);
        } else if c.is_ascii_digit()
            || (c == b'.' && bytes.get(at + 1).is_some_and(u8::is_ascii_digit))
        {
            let (value, len) = number(rest, at)?;
            tokens.push(Token {
                kind: Kind::Literal(value),
                at,
            });
            at += len;
        } else if c == b'"' || c == b'`' {
            let (value, len) = string(rest, at)?;
            tokens.push(Token {
                kind: Kind::Literal(value),
                at,
            });
            at += len;
        } else if c == b'\'' {
            return Err(RuleError::lex(
                at,
                "single quotes make a Go rune, not a string; use \"...\"",
            ));
        } else if is_letter(rest) {
            let len = rest
                .char_indices()
                .find(|&(_, ch)| !(ch == '_' || ch.is_alphanumeric()))
                .map_or(rest.len(), |(i, _)| i);
            let word = &rest[..len];
            let kind = match word {
                "nil" => Kind::Literal(Value::Nil),
                "true" => Kind::Literal(Value::Bool(true)),
                "false" => Kind::Literal(Value::Bool(false)),
                "in" | "IN" => Kind::In,
                _ => Kind::Ident(word.to_string()),
            };
            tokens.push(Token { kind, at });
            at += len;
        } else if let Some(&(op, known)) = OPERATORS.iter().find(|(op, _)| rest.starts_with(op)) {
            if !known {
                return Err(RuleError::lex(
                    at,
                    format!("{op:?} is not an operator of the rule language"),
                ));
            }
            if op == "<-" {
                // Go's channel arrow: goval reads it as `<` then unary `-`.
                tokens.push(Token {
                    kind: Kind::Op("<"),
                    at,
                });
                tokens.push(Token {
                    kind: Kind::Op("-"),
                    at: at + 1,
                });
            } else {
                tokens.push(Token {
                    kind: Kind::Op(op),
                    at,
                });
            }
            at += op.len();
        } else {
            let ch = rest.chars().next().unwrap_or('?');
            return Err(RuleError::lex(at, format!("unexpected character {ch:?}")));
        }
    }
    tokens.push(Token {
        kind: Kind::End,
        at: source.len(),
    });
    Ok(tokens)
}

fn is_letter(rest: &str) -> bool {
    rest.chars()
        .next()
        .is_some_and(|ch| ch == '_' || ch.is_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<Kind> {
        tokens(source)
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn go_number_literals_read_as_go_reads_them() {
        let value = |source: &str| match &kinds(source)[0] {
            Kind::Literal(value) => value.clone(),
            other => panic!("{source}: {other:?}"),
        };
        assert_eq!(value("017"), Value::Int(15));
        assert_eq!(value("0o17"), Value::Int(15));
        assert_eq!(value("0b101"), Value::Int(5));
        assert_eq!(value("0X10"), Value::Int(16));
        assert_eq!(value("0xFFFFFFFFFFFFFFFF"), Value::Int(-1));
        assert_eq!(value("1_000"), Value::Int(1000));
        assert_eq!(value("1."), Value::Float(1.0));
        assert_eq!(value(".5"), Value::Float(0.5));
        assert_eq!(value("1e2"), Value::Float(100.0));
        assert_eq!(value("0x1p-2"), Value::Float(0.25));
        for invalid in [
            "08",
            "1__0",
            "0x1.8",
            "1e400",
            "9223372036854775808",
            "0x",
            "1i",
        ] {
            assert!(tokens(invalid).is_err(), "{invalid} should not lex");
        }
    }

    #[test]
    fn go_operators_that_goval_does_not_know_are_refused_whole() {
        for source in ["a &^ b", "a = 1", "a++", "a; b", "a >>= 1", "a # b", "'a'"] {
            assert!(tokens(source).is_err(), "{source} should not lex");
        }
        assert_eq!(
            kinds("a<-1"),
            [
                Kind::Ident("a".into()),
                Kind::Op("<"),
                Kind::Op("-"),
                Kind::Literal(Value::Int(1)),
                Kind::End
            ]
        );
    }

    #[test]
    fn strings_keep_bytes_and_comments_are_skipped() {
        assert_eq!(
            kinds(r#""\377\x41\u00e9" // gone"#),
            [
                Kind::Literal(Value::Str(vec![0xff, b'A', 0xc3, 0xa9])),
                Kind::End
            ]
        );
        assert_eq!(
            kinds("1 /* never closed"),
            [Kind::Literal(Value::Int(1)), Kind::End]
        );
        assert!(tokens(r#""\q""#).is_err());
    }
}
