//! The rule's grammar: goval's yacc grammar (C operator precedence, with goval's quirks: `in`
//! binds tighter than unary operators, `**` is two `*` tokens at the level of `*`, the
//! ternary is right-associative), parsed by precedence climbing into a tree.

use super::lexer::{Kind, Token};
use super::value::Value;
use super::RuleError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    Literal(Value),
    Variable(String),
    Array(Vec<Expr>),
    Object(Vec<(Expr, Expr)>),
    /// `-`, `!` or `~`.
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    Member(Box<Expr>, Box<Expr>),
    Slice(Box<Expr>, Option<Box<Expr>>, Option<Box<Expr>>),
    Call(String, Vec<Expr>),
}

/// Binding strength, lowest first, as goval's `%left`/`%right` lines order them.
const TERNARY: u8 = 1;
const UNARY: u8 = 12;
const IN: u8 = 13;

fn binary_level(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 2,
        "&&" => 3,
        "|" => 4,
        "^" => 5,
        "&" => 6,
        "==" | "!=" => 7,
        "<" | "<=" | ">" | ">=" => 8,
        "<<" | ">>" => 9,
        "+" | "-" => 10,
        "*" | "/" | "%" => 11,
        _ => return None,
    })
}

pub(super) fn parse(tokens: &[Token]) -> Result<Expr, RuleError> {
    let mut parser = Parser { tokens, next: 0 };
    if parser.peek() == &Kind::End {
        return Err(RuleError::syntax(0, "the rule is blank"));
    }
    let expr = parser.expression(0)?;
    match parser.peek() {
        Kind::End => Ok(expr),
        _ => Err(parser.unexpected("where the rule should end")),
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    next: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Kind {
        &self.tokens[self.next.min(self.tokens.len() - 1)].kind
    }

    fn at(&self) -> usize {
        self.tokens[self.next.min(self.tokens.len() - 1)].at
    }

    fn bump(&mut self) -> Kind {
        let kind = self.peek().clone();
        self.next += 1;
        kind
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Kind::Op(found) if *found == op)
    }

    fn expect(&mut self, op: &str) -> Result<(), RuleError> {
        if self.is_op(op) {
            self.next += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("where {op:?} should be")))
        }
    }

    fn unexpected(&self, place: &str) -> RuleError {
        let found = match self.peek() {
            Kind::End => "the end of the rule".to_string(),
            Kind::Literal(value) => value.to_string(),
            Kind::Ident(name) => name.clone(),
            Kind::In => "in".to_string(),
            Kind::Op(op) => format!("{op:?}"),
        };
        RuleError::syntax(self.at(), format!("unexpected {found} {place}"))
    }

    /// An expression whose operators all bind at least as strongly as `min`.
    fn expression(&mut self, min: u8) -> Result<Expr, RuleError> {
        let mut left = self.prefix()?;
        loop {
            left = match self.peek().clone() {
                Kind::In if IN >= min => {
                    self.next += 1;
                    let right = self.expression(IN + 1)?;
                    Expr::Binary("in", Box::new(left), Box::new(right))
                }
                Kind::Op("?") if TERNARY >= min => {
                    self.next += 1;
                    let then = self.expression(0)?;
                    self.expect(":")?;
                    let otherwise = self.expression(TERNARY)?;
                    Expr::Ternary(Box::new(left), Box::new(then), Box::new(otherwise))
                }
                Kind::Op(op) => match binary_level(op) {
                    Some(level) if level >= min => {
                        self.next += 1;
                        // `**` is `*` followed by `*`: a power at the level of `*`.
                        let op = if op == "*" && self.is_op("*") {
                            self.next += 1;
                            "**"
                        } else {
                            op
                        };
                        let right = self.expression(level + 1)?;
                        Expr::Binary(op, Box::new(left), Box::new(right))
                    }
                    _ => return Ok(left),
                },
                _ => return Ok(left),
            };
        }
    }

    /// A unary operator and its operand, or a primary with its postfix accesses.
    fn prefix(&mut self) -> Result<Expr, RuleError> {
        if let Kind::Op(op @ ("-" | "!" | "~")) = self.peek().clone() {
            self.next += 1;
            let operand = self.expression(UNARY)?;
            return Ok(Expr::Unary(op, Box::new(operand)));
        }
        let primary = self.primary()?;
        self.postfix(primary)
    }

    fn primary(&mut self) -> Result<Expr, RuleError> {
        match self.bump() {
            Kind::Literal(value) => Ok(Expr::Literal(value)),
            Kind::Ident(name) if self.is_op("(") => {
                self.next += 1;
                let arguments = self.list(")")?;
                Ok(Expr::Call(name, arguments))
            }
            Kind::Ident(name) => Ok(Expr::Variable(name)),
            Kind::Op("(") => {
                let inner = self.expression(0)?;
                self.expect(")")?;
                Ok(inner)
            }
            Kind::Op("[") => Ok(Expr::Array(self.list("]")?)),
            Kind::Op("{") => self.object(),
            _ => {
                self.next -= 1;
                Err(self.unexpected("where a value should be"))
            }
        }
    }

    /// `a, b, c` up to `close` (which may follow at once).
    fn list(&mut self, close: &str) -> Result<Vec<Expr>, RuleError> {
        let mut items = Vec::new();
        if self.is_op(close) {
            self.next += 1;
            return Ok(items);
        }
        loop {
            items.push(self.expression(0)?);
            if self.is_op(",") {
                self.next += 1;
            } else {
                self.expect(close)?;
                return Ok(items);
            }
        }
    }

    fn object(&mut self) -> Result<Expr, RuleError> {
        let mut members = Vec::new();
        if self.is_op("}") {
            self.next += 1;
            return Ok(Expr::Object(members));
        }
        loop {
            let key = self.expression(0)?;
            self.expect(":")?;
            members.push((key, self.expression(0)?));
            if self.is_op(",") {
                self.next += 1;
            } else {
                self.expect("}")?;
                return Ok(Expr::Object(members));
            }
        }
    }

    /// `.name`, `[index]` and `[from:to]`, which bind tightest of all.
    fn postfix(&mut self, mut expr: Expr) -> Result<Expr, RuleError> {
        loop {
            if self.is_op(".") {
                self.next += 1;
                let Kind::Ident(name) = self.bump() else {
                    self.next -= 1;
                    return Err(self.unexpected("after \".\", where a member name should be"));
                };
                let key = Expr::Literal(Value::Str(name.into_bytes()));
                expr = Expr::Member(Box::new(expr), Box::new(key));
            } else if self.is_op("[") {
                self.next += 1;
                let from = if self.is_op(":") {
                    None
                } else {
                    Some(Box::new(self.expression(0)?))
                };
                if self.is_op(":") {
                    self.next += 1;
                    let to = if self.is_op("]") {
                        None
                    } else {
                        Some(Box::new(self.expression(0)?))
                    };
                    self.expect("]")?;
                    expr = Expr::Slice(Box::new(expr), from, to);
                } else {
                    self.expect("]")?;
                    match from {
                        Some(index) => expr = Expr::Member(Box::new(expr), index),
                        None => return Err(self.unexpected("inside []")),
                    }
                }
            } else {
                return Ok(expr);
            }
        }
    }
}
