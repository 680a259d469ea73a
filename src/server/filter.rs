//! The content-filter language of the embedded server: parse once, evaluate against JSON records.
//!
//! # Model
//!
//! A filter is a boolean expression over one JSON record (a message body or a stored SOW
//! record). It is parsed into a [`Filter`] once and then evaluated with [`Filter::matches`] any
//! number of times; evaluation never fails, it only answers `true` or `false`.
//!
//! # Grammar
//!
//! ```text
//! filter     := or
//! or         := and ( OR and )*
//! and        := not ( AND not )*
//! not        := NOT not | primary
//! primary    := '(' or ')' | operand op operand
//! operand    := path | number | string
//! op         := '=' | '!=' | '<>' | '<' | '<=' | '>' | '>='
//! path       := ( '/' segment )+          e.g. /id, /order/qty
//! number     := '-'? digit+ ( '.' digit+ )?
//! string     := "'" ( any char, "''" for a quote )* "'"
//! ```
//!
//! Keywords (`AND`, `OR`, `NOT`) are case-insensitive; precedence is `NOT` > `AND` > `OR`, and a
//! comparison binds tighter than all three (`NOT /a = 1` is `NOT (/a = 1)`). The always-true
//! filter `1=1` is simply a comparison of two literals. A path segment is a run of alphanumeric
//! characters and `_ - . $ @`; a path walks nested JSON objects (no array indexing).
//!
//! Anything outside this grammar is a [`FilterError`], which the server reports as
//! `bad filter`: empty input, unknown characters or words (`LIKE`, `IN`, `IS`, `NULL`, `true`,
//! function names), a bare operand without a comparison, unbalanced parentheses, trailing input,
//! exponents (`1e5`), double-quoted strings. Nesting (parentheses and `NOT`) is limited to
//! [`MAX_DEPTH`] levels so that hostile input cannot overflow the stack; `AND`/`OR` chains are
//! flat lists and may be arbitrarily long. Parsing and evaluation never panic.
//!
//! # Comparison semantics
//!
//! Each operand evaluates to a number, a string, some other JSON value, or nothing:
//!
//! - A path that does not resolve (a missing field, a non-object on the way, a non-object
//!   record) or resolves to JSON `null` is *nothing*: every comparison involving it is false,
//!   including `!=`.
//! - Two numbers compare numerically and exactly: integers (up to the `i64`/`u64` range of JSON,
//!   and integer literals up to `i128`) compare as integers, and an integer compares with a
//!   decimal without rounding, so `9007199254740993 = 9007199254740992.0` is false and `1 = 1.0`
//!   is true.
//! - Two strings compare lexicographically by Unicode code point (byte order of UTF-8).
//! - Anything else (a string against a number, a boolean, an array or an object) is unequal
//!   and unordered: `!=` is true, `=`, `<`, `<=`, `>`, `>=` are false. In particular a JSON
//!   string never equals a number (`"5"` is not `5`).
//!
//! Error positions are byte offsets into the filter text, counted from 0.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;
use thiserror::Error;

use crate::protocol::Reason;

/// The deepest nesting of parentheses and `NOT` a filter may use.
pub const MAX_DEPTH: usize = 64;

/// Why a filter text was refused. The server reports every variant as reason `bad filter`
/// (see the `From<FilterError> for Reason` impl). Positions are byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The filter is empty or only whitespace.
    #[error("empty filter")]
    Empty,
    /// A character that starts no token (`#`, `"`, a lone `!`, a `-` not followed by a digit).
    #[error("unexpected character {ch:?} at byte {pos}")]
    UnexpectedChar {
        /// Where the character is.
        pos: usize,
        /// The character.
        ch: char,
    },
    /// A string literal without its closing quote.
    #[error("unterminated string starting at byte {pos}")]
    UnterminatedString {
        /// Where the opening quote is.
        pos: usize,
    },
    /// A malformed number literal, such as `1.` (a decimal point needs digits after it).
    #[error("malformed number {text:?} at byte {pos}")]
    BadNumber {
        /// Where the number starts.
        pos: usize,
        /// The text read as the number.
        text: String,
    },
    /// A field path with an empty segment (`/`, `/a/`, `//a`).
    #[error("malformed field path at byte {pos}")]
    BadPath {
        /// Where the empty segment is.
        pos: usize,
    },
    /// A word other than `AND`, `OR` and `NOT`: `LIKE`, `IN`, `IS`, `NULL`, `true`, a function
    /// name, ...
    #[error("unsupported word {word:?} at byte {pos}")]
    UnsupportedWord {
        /// Where the word starts.
        pos: usize,
        /// The word as written.
        word: String,
    },
    /// A token where something else was expected.
    #[error("expected {expected} at byte {pos}, found {found}")]
    Unexpected {
        /// Where the token is.
        pos: usize,
        /// What the parser wanted.
        expected: &'static str,
        /// The token it found.
        found: String,
    },
    /// The filter ended where more was expected (`/a =`, `1=1 AND`).
    #[error("filter ends early, expected {expected}")]
    UnexpectedEnd {
        /// What the parser wanted.
        expected: &'static str,
    },
    /// A `(` that is never closed.
    #[error("unclosed parenthesis opened at byte {pos}")]
    UnclosedParen {
        /// Where the `(` is.
        pos: usize,
    },
    /// A complete filter followed by more tokens (`1=1 1`, `1=1)`).
    #[error("unexpected {found} after the end of the filter at byte {pos}")]
    TrailingInput {
        /// Where the first extra token is.
        pos: usize,
        /// That token.
        found: String,
    },
    /// Parentheses and `NOT` nested deeper than [`MAX_DEPTH`].
    #[error("filter nested deeper than {limit} levels at byte {pos}")]
    TooDeep {
        /// Where the level beyond the limit opens.
        pos: usize,
        /// The limit, [`MAX_DEPTH`].
        limit: usize,
    },
}

impl From<FilterError> for Reason {
    fn from(_: FilterError) -> Reason {
        Reason::BadFilter
    }
}

/// A parsed content filter. Build it with [`Filter::parse`] (or `str::parse`), evaluate it with
/// [`Filter::matches`].
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: Expr,
}

impl Filter {
    /// Parses a filter text (grammar in the module docs).
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = lex(text)?;
        if tokens.is_empty() {
            return Err(FilterError::Empty);
        }
        let mut parser = Parser { tokens, next: 0 };
        let expr = parser.parse_or(0)?;
        if let Some(extra) = parser.tokens.get(parser.next) {
            return Err(FilterError::TrailingInput {
                pos: extra.pos,
                found: extra.tok.to_string(),
            });
        }
        Ok(Filter { expr })
    }

    /// Whether `record` satisfies the filter. A record that is not a JSON object resolves no
    /// path, so only literal-only comparisons (like `1=1`) can hold for it.
    pub fn matches(&self, record: &Value) -> bool {
        self.expr.eval(record)
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Filter, FilterError> {
        Filter::parse(text)
    }
}

// ---------------------------------------------------------------------------------------------
// Values

/// A number, kept exact: integers as `i128`, anything else as `f64`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn from_json(n: &serde_json::Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i128::from(i)))
        } else if let Some(u) = n.as_u64() {
            Some(Num::Int(i128::from(u)))
        } else {
            n.as_f64().map(Num::Float)
        }
    }

    fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
            (Num::Int(a), Num::Float(b)) => cmp_int_float(a, b),
            (Num::Float(a), Num::Int(b)) => cmp_int_float(b, a).map(Ordering::reverse),
        }
    }
}

/// Compares an integer with a float without rounding the integer.
fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // 2^127: the first float above i128::MAX.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    let floor = f.floor();
    if floor >= LIMIT {
        return Some(Ordering::Less);
    }
    if floor < -LIMIT {
        return Some(Ordering::Greater);
    }
    // In range, and integral, so the cast is exact.
    let whole = floor as i128;
    Some(match i.cmp(&whole) {
        Ordering::Equal if f > floor => Ordering::Less,
        other => other,
    })
}

/// What an operand evaluates to.
enum Scalar<'a> {
    Num(Num),
    Str(&'a str),
    /// A boolean, array or object: present but comparable with nothing.
    Other,
}

// ---------------------------------------------------------------------------------------------
// Syntax tree

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<String>),
    Num(Num),
    Str(String),
}

impl Operand {
    /// `None` when the operand is missing or JSON `null`.
    fn eval<'a>(&'a self, record: &'a Value) -> Option<Scalar<'a>> {
        match self {
            Operand::Num(n) => Some(Scalar::Num(*n)),
            Operand::Str(s) => Some(Scalar::Str(s)),
            Operand::Path(segments) => {
                let mut value = record;
                for segment in segments {
                    value = value.as_object()?.get(segment)?;
                }
                match value {
                    Value::Null => None,
                    Value::Number(n) => Num::from_json(n).map(Scalar::Num),
                    Value::String(s) => Some(Scalar::Str(s)),
                    Value::Bool(_) | Value::Array(_) | Value::Object(_) => Some(Scalar::Other),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(Operand, CmpOp, Operand),
}

impl Expr {
    fn eval(&self, record: &Value) -> bool {
        match self {
            Expr::Or(items) => items.iter().any(|e| e.eval(record)),
            Expr::And(items) => items.iter().all(|e| e.eval(record)),
            Expr::Not(inner) => !inner.eval(record),
            Expr::Cmp(lhs, op, rhs) => {
                let (Some(l), Some(r)) = (lhs.eval(record), rhs.eval(record)) else {
                    return false;
                };
                let ord = match (l, r) {
                    (Scalar::Num(a), Scalar::Num(b)) => a.compare(b),
                    (Scalar::Str(a), Scalar::Str(b)) => Some(a.cmp(b)),
                    _ => None,
                };
                match ord {
                    Some(ord) => op.holds(ord),
                    // Unequal and unordered.
                    None => *op == CmpOp::Ne,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Path(Vec<String>),
    Num(Num),
    Str(String),
    Op(CmpOp),
    And,
    Or,
    Not,
    LParen,
    RParen,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Path(segments) => {
                f.write_str("field ")?;
                for segment in segments {
                    write!(f, "/{segment}")?;
                }
                Ok(())
            }
            Tok::Num(_) => f.write_str("a number"),
            Tok::Str(_) => f.write_str("a string"),
            Tok::Op(op) => write!(f, "'{}'", op.as_str()),
            Tok::And => f.write_str("AND"),
            Tok::Or => f.write_str("OR"),
            Tok::Not => f.write_str("NOT"),
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
        }
    }
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    pos: usize,
}

fn is_segment_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '$' | '@')
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let pos = i;
        let tok = match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b'=' => {
                i += 1;
                Tok::Op(CmpOp::Eq)
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Op(CmpOp::Ne)
            }
            b'<' => match bytes.get(i + 1) {
                Some(b'=') => {
                    i += 2;
                    Tok::Op(CmpOp::Le)
                }
                Some(b'>') => {
                    i += 2;
                    Tok::Op(CmpOp::Ne)
                }
                _ => {
                    i += 1;
                    Tok::Op(CmpOp::Lt)
                }
            },
            b'>' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 2;
                    Tok::Op(CmpOp::Ge)
                } else {
                    i += 1;
                    Tok::Op(CmpOp::Gt)
                }
            }
            b'\'' => {
                let (s, end) = lex_string(text, pos)?;
                i = end;
                Tok::Str(s)
            }
            b'/' => {
                let (segments, end) = lex_path(text, pos)?;
                i = end;
                Tok::Path(segments)
            }
            b'0'..=b'9' => {
                let (n, end) = lex_number(text, pos)?;
                i = end;
                Tok::Num(n)
            }
            b'-' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let (n, end) = lex_number(text, pos)?;
                i = end;
                Tok::Num(n)
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let end = bytes[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map_or(bytes.len(), |n| i + n);
                let word = &text[i..end];
                i = end;
                if word.eq_ignore_ascii_case("and") {
                    Tok::And
                } else if word.eq_ignore_ascii_case("or") {
                    Tok::Or
                } else if word.eq_ignore_ascii_case("not") {
                    Tok::Not
                } else {
                    return Err(FilterError::UnsupportedWord {
                        pos,
                        word: word.to_owned(),
                    });
                }
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
                return Err(FilterError::UnexpectedChar { pos, ch });
            }
        };
        tokens.push(Token { tok, pos });
    }
    Ok(tokens)
}

/// Reads a single-quoted string starting at the quote at `start`; returns it and the index
/// after the closing quote.
fn lex_string(text: &str, start: usize) -> Result<(String, usize), FilterError> {
    let mut out = String::new();
    let mut i = start + 1;
    loop {
        let rest = text.get(i..).unwrap_or("");
        let Some(quote) = rest.find('\'') else {
            return Err(FilterError::UnterminatedString { pos: start });
        };
        out.push_str(&rest[..quote]);
        i += quote + 1;
        if text.as_bytes().get(i) == Some(&b'\'') {
            out.push('\'');
            i += 1;
        } else {
            return Ok((out, i));
        }
    }
}

/// Reads a path starting at the `/` at `start`; returns its segments and the index after it.
fn lex_path(text: &str, start: usize) -> Result<(Vec<String>, usize), FilterError> {
    let mut segments = Vec::new();
    let mut i = start;
    while text.as_bytes().get(i) == Some(&b'/') {
        i += 1;
        let rest = text.get(i..).unwrap_or("");
        let len = rest
            .char_indices()
            .find(|(_, c)| !is_segment_char(*c))
            .map_or(rest.len(), |(n, _)| n);
        if len == 0 {
            return Err(FilterError::BadPath { pos: i });
        }
        segments.push(rest[..len].to_owned());
        i += len;
    }
    Ok((segments, i))
}

/// Reads a number starting at `start` (a digit or a `-` before a digit); returns it and the
/// index after it.
fn lex_number(text: &str, start: usize) -> Result<(Num, usize), FilterError> {
    let bytes = text.as_bytes();
    let digits_from = |from: usize| {
        bytes[from..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(bytes.len(), |n| from + n)
    };
    let mut i = start;
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    i = digits_from(i);
    let mut decimal = false;
    if bytes.get(i) == Some(&b'.') {
        let after = digits_from(i + 1);
        if after == i + 1 {
            return Err(FilterError::BadNumber {
                pos: start,
                text: text[start..=i].to_owned(),
            });
        }
        decimal = true;
        i = after;
    }
    let literal = &text[start..i];
    let bad = || FilterError::BadNumber {
        pos: start,
        text: literal.to_owned(),
    };
    let num = if decimal {
        Num::Float(literal.parse().map_err(|_| bad())?)
    } else {
        match literal.parse::<i128>() {
            Ok(n) => Num::Int(n),
            // Beyond i128: still a valid number, compared as a float.
            Err(_) => Num::Float(literal.parse().map_err(|_| bad())?),
        }
    };
    Ok((num, i))
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    tokens: Vec<Token>,
    next: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.next).map(|t| &t.tok)
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.tokens.get_mut(self.next)?;
        self.next += 1;
        // Leave a cheap placeholder behind; the parser never looks back.
        Some(Token {
            tok: std::mem::replace(&mut token.tok, Tok::RParen),
            pos: token.pos,
        })
    }

    fn parse_or(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut items = vec![self.parse_and(depth)?];
        while self.peek() == Some(&Tok::Or) {
            self.bump();
            items.push(self.parse_and(depth)?);
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn parse_and(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut items = vec![self.parse_not(depth)?];
        while self.peek() == Some(&Tok::And) {
            self.bump();
            items.push(self.parse_not(depth)?);
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn deeper(depth: usize, pos: usize) -> Result<usize, FilterError> {
        if depth >= MAX_DEPTH {
            Err(FilterError::TooDeep {
                pos,
                limit: MAX_DEPTH,
            })
        } else {
            Ok(depth + 1)
        }
    }

    fn parse_not(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if self.peek() == Some(&Tok::Not) {
            let pos = self.tokens[self.next].pos;
            let depth = Self::deeper(depth, pos)?;
            self.bump();
            return Ok(Expr::Not(Box::new(self.parse_not(depth)?)));
        }
        self.parse_primary(depth)
    }

    fn parse_primary(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let Some(token) = self.bump() else {
            return Err(FilterError::UnexpectedEnd {
                expected: "a comparison, NOT or '('",
            });
        };
        match token.tok {
            Tok::LParen => {
                let depth = Self::deeper(depth, token.pos)?;
                let inner = self.parse_or(depth)?;
                match self.bump() {
                    Some(Token {
                        tok: Tok::RParen, ..
                    }) => Ok(inner),
                    Some(other) => Err(FilterError::Unexpected {
                        pos: other.pos,
                        expected: "')', AND or OR",
                        found: other.tok.to_string(),
                    }),
                    None => Err(FilterError::UnclosedParen { pos: token.pos }),
                }
            }
            tok => {
                let lhs = operand(tok).map_err(|tok| FilterError::Unexpected {
                    pos: token.pos,
                    expected: "a comparison, NOT or '('",
                    found: tok.to_string(),
                })?;
                let op = match self.bump() {
                    Some(Token {
                        tok: Tok::Op(op), ..
                    }) => op,
                    Some(other) => {
                        return Err(FilterError::Unexpected {
                            pos: other.pos,
                            expected: "a comparison operator",
                            found: other.tok.to_string(),
                        })
                    }
                    None => {
                        return Err(FilterError::UnexpectedEnd {
                            expected: "a comparison operator",
                        })
                    }
                };
                let rhs = match self.bump() {
                    Some(token) => operand(token.tok).map_err(|tok| FilterError::Unexpected {
                        pos: token.pos,
                        expected: "a field path or a literal",
                        found: tok.to_string(),
                    })?,
                    None => {
                        return Err(FilterError::UnexpectedEnd {
                            expected: "a field path or a literal",
                        })
                    }
                };
                Ok(Expr::Cmp(lhs, op, rhs))
            }
        }
    }
}

/// The operand a token is, or the token back when it is none.
fn operand(tok: Tok) -> Result<Operand, Tok> {
    match tok {
        Tok::Path(segments) => Ok(Operand::Path(segments)),
        Tok::Num(n) => Ok(Operand::Num(n)),
        Tok::Str(s) => Ok(Operand::Str(s)),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn check(filter: &str, record: &Value) -> bool {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{filter:?} should parse: {e}"))
            .matches(record)
    }

    fn err(filter: &str) -> FilterError {
        match Filter::parse(filter) {
            Ok(f) => panic!("{filter:?} should be refused, parsed as {f:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn one_equals_one_is_true_in_every_spelling() {
        for text in ["1=1", "1 = 1", "  1=1\t", "(1=1)", "\n1 =1\r\n"] {
            assert!(check(text, &json!({})), "{text}");
            assert!(check(text, &json!(null)), "{text}");
            assert!(check(text, &json!([1, 2])), "{text}");
        }
        assert!(!check("1=2", &json!({})));
    }

    #[test]
    fn every_operator_on_numbers() {
        let r = json!({"n": 5});
        let cases = [
            ("/n = 5", true),
            ("/n = 4", false),
            ("/n != 5", false),
            ("/n != 4", true),
            ("/n <> 5", false),
            ("/n <> 4", true),
            ("/n < 6", true),
            ("/n < 5", false),
            ("/n <= 5", true),
            ("/n <= 4", false),
            ("/n > 4", true),
            ("/n > 5", false),
            ("/n >= 5", true),
            ("/n >= 6", false),
            ("/n=5", true),
            ("/n<>5", false),
            ("/n<=5", true),
            ("/n>=6", false),
        ];
        for (filter, want) in cases {
            assert_eq!(check(filter, &r), want, "{filter}");
        }
    }

    #[test]
    fn every_operator_on_strings_is_lexicographic() {
        let r = json!({"s": "abc"});
        let cases = [
            ("/s = 'abc'", true),
            ("/s = 'ab'", false),
            ("/s != 'abc'", false),
            ("/s <> 'abd'", true),
            ("/s < 'abd'", true),
            ("/s < 'abc'", false),
            ("/s < 'b'", true),
            ("/s <= 'abc'", true),
            ("/s > 'ab'", true),
            ("/s > 'abcd'", false),
            ("/s >= 'abc'", true),
            ("/s >= 'b'", false),
            // Byte order: uppercase sorts before lowercase, and case matters for equality.
            ("/s > 'ABC'", true),
            ("/s = 'ABC'", false),
        ];
        for (filter, want) in cases {
            assert_eq!(check(filter, &r), want, "{filter}");
        }
        assert!(check("/s = 'héllo'", &json!({"s": "héllo"})));
    }

    #[test]
    fn strings_with_quotes_and_empty_strings() {
        assert!(check("/s = 'it''s'", &json!({"s": "it's"})));
        assert!(check("/s = ''''", &json!({"s": "'"})));
        assert!(check("/s = ''", &json!({"s": ""})));
        assert!(check("/s = 'a''''b'", &json!({"s": "a''b"})));
        assert!(check(
            "/s = 'and or not ( ) = /x'",
            &json!({"s": "and or not ( ) = /x"})
        ));
        assert!(!check("/s = 'it'", &json!({"s": "it's"})));
    }

    #[test]
    fn numbers_and_strings_never_equal() {
        let text = json!({"n": "5"});
        assert!(!check("/n = 5", &text));
        assert!(check("/n != 5", &text));
        assert!(check("/n <> 5", &text));
        for op in ["<", "<=", ">", ">="] {
            assert!(!check(&format!("/n {op} 5"), &text), "{op}");
            assert!(!check(&format!("/n {op} 'zzz'"), &json!({"n": 5})), "{op}");
        }
        assert!(!check("/n = '5'", &json!({"n": 5})));
        assert!(check("/n = '5'", &text));
        assert!(!check("5 = '5'", &json!({})));
    }

    #[test]
    fn booleans_arrays_and_objects_are_unequal_to_everything() {
        let r = json!({"b": true, "a": [1], "o": {"x": 1}});
        for path in ["/b", "/a", "/o"] {
            assert!(!check(&format!("{path} = 1"), &r), "{path}");
            assert!(!check(&format!("{path} = 'true'"), &r), "{path}");
            assert!(check(&format!("{path} != 1"), &r), "{path}");
            assert!(!check(&format!("{path} < 1"), &r), "{path}");
            assert!(!check(&format!("{path} >= 1"), &r), "{path}");
        }
    }

    #[test]
    fn decimals_negatives_and_exact_integers() {
        let r = json!({"p": -1.5, "i": 1, "big": 9_007_199_254_740_993_u64, "max": u64::MAX});
        assert!(check("/p = -1.5", &r));
        assert!(check("/p = -1.50", &r));
        assert!(check("/p < -1", &r));
        assert!(check("/p > -2", &r));
        assert!(check("/p < 0", &r));
        assert!(check("/i = 1.0", &r));
        assert!(check("/i < 1.5", &r));
        assert!(check("/i > 0.5", &r));
        assert!(check("/i > -0.5", &r));
        assert!(check("-2 < -1.5", &r));
        assert!(check("2 > 1.5", &r));
        assert!(check("1.5 > 1", &r));
        assert!(check("0.1 < 0.2", &r));
        assert!(check("-0 = 0", &r));
        assert!(check("/big = 9007199254740993", &r));
        assert!(!check("/big = 9007199254740992", &r));
        assert!(!check("/big = 9007199254740992.0", &r));
        assert!(check("/big > 9007199254740992.0", &r));
        assert!(check("/max = 18446744073709551615", &r));
        assert!(check("/max < 18446744073709551616", &r));
        // Beyond i128: a float, still ordered.
        let huge = format!("1{}", "0".repeat(60));
        assert!(check(&format!("/max < {huge}"), &r));
        assert!(check(&format!("/p > -{huge}"), &r));
        assert!(check(
            &format!("{huge} > 170141183460469231731687303715884105727"),
            &r
        ));
        // A decimal too large for f64 is infinity: still ordered, never a panic.
        let inf = format!("{}.0", "9".repeat(400));
        assert!(check(&format!("/max < {inf}"), &r));
        assert!(check(&format!("/p > -{inf}"), &r));
    }

    #[test]
    fn int_float_comparison_is_exact() {
        use Ordering::*;
        assert_eq!(cmp_int_float(1, 1.0), Some(Equal));
        assert_eq!(cmp_int_float(1, 1.5), Some(Less));
        assert_eq!(cmp_int_float(2, 1.5), Some(Greater));
        assert_eq!(cmp_int_float(-2, -1.5), Some(Less));
        assert_eq!(cmp_int_float(-1, -1.5), Some(Greater));
        assert_eq!(cmp_int_float(i128::MAX, 1e39), Some(Less));
        assert_eq!(cmp_int_float(i128::MIN, -1e39), Some(Greater));
        assert_eq!(cmp_int_float(i128::MIN, -(2f64.powi(127))), Some(Equal));
        assert_eq!(cmp_int_float(0, f64::INFINITY), Some(Less));
        assert_eq!(cmp_int_float(0, f64::NEG_INFINITY), Some(Greater));
        assert_eq!(cmp_int_float(0, f64::NAN), None);
        assert_eq!(Num::Float(f64::NAN).compare(Num::Int(0)), None);
        assert_eq!(Num::Float(0.5).compare(Num::Int(0)), Some(Greater));
    }

    #[test]
    fn missing_and_null_fields_compare_false_for_every_operator() {
        let r = json!({"a": {"b": 1}, "n": null, "s": "x"});
        for path in ["/missing", "/a/c", "/a/b/c", "/s/x", "/n", "/a/b/c/d"] {
            for op in ["=", "!=", "<>", "<", "<=", ">", ">="] {
                for lit in ["1", "'x'", "/a/b", "/missing"] {
                    let f = format!("{path} {op} {lit}");
                    assert!(!check(&f, &r), "{f}");
                    let f = format!("{lit} {op} {path}");
                    assert!(!check(&f, &r), "{f}");
                }
            }
        }
        // NOT of a false comparison is true.
        assert!(check("NOT /missing = 1", &r));
        // A record that is not an object resolves nothing.
        assert!(!check("/a != 1", &json!([1])));
        assert!(!check("/a != 1", &json!("a")));
    }

    #[test]
    fn nested_paths_and_path_against_path() {
        let r = json!({"a": {"b": {"c": 7}}, "x": 7, "y": "7", "s": "q", "t": "q",
                       "odd-name.v2$@": 1, "ünï": 2});
        assert!(check("/a/b/c = 7", &r));
        assert!(check("/a/b/c = /x", &r));
        assert!(check("/x = /a/b/c", &r));
        assert!(!check("/x = /y", &r));
        assert!(check("/x != /y", &r));
        assert!(check("/s = /t", &r));
        assert!(check("/s >= /t", &r));
        assert!(check("/odd-name.v2$@ = 1", &r));
        assert!(check("/ünï = 2", &r));
        assert!(check("7 = /x", &r));
        assert!(check("'a' < 'b'", &r));
        assert!(!check("'b' < 'a'", &r));
    }

    #[test]
    fn and_or_not_and_parentheses() {
        let r = json!({"a": 1, "b": 2});
        assert!(check("/a = 1 AND /b = 2", &r));
        assert!(!check("/a = 1 AND /b = 3", &r));
        assert!(check("/a = 9 OR /b = 2", &r));
        assert!(!check("/a = 9 OR /b = 9", &r));
        assert!(check("NOT /a = 2", &r));
        assert!(!check("NOT /a = 1", &r));
        assert!(check("NOT NOT /a = 1", &r));
        assert!(check("NOT (/a = 1 AND /b = 3)", &r));
        assert!(check("/a = 9 OR /a = 8 OR /a = 1", &r));
        assert!(check("/a = 1 AND /b = 2 AND 1=1", &r));
        assert!(check("((/a = 1))", &r));
        assert!(check("(/a = 1)AND(/b = 2)", &r));
        assert!(check("NOT(/a = 2)", &r));
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let r = json!({});
        // AND binds tighter than OR.
        assert!(check("1=1 OR 1=1 AND 1=2", &r));
        assert!(check("1=1 AND 1=2 OR 1=1", &r));
        assert!(!check("(1=1 OR 1=1) AND 1=2", &r));
        // NOT binds tighter than AND and OR.
        assert!(!check("NOT 1=1 AND 1=2", &r));
        assert!(check("NOT (1=1 AND 1=2)", &r));
        assert!(check("NOT 1=1 OR 1=1", &r));
        assert!(!check("NOT (1=1 OR 1=1)", &r));
        // A comparison binds tighter than NOT.
        assert!(check("NOT 1 = 2", &r));
    }

    #[test]
    fn keywords_are_case_insensitive() {
        let r = json!({"a": 1});
        assert!(check("/a = 1 and 1=1", &r));
        assert!(check("/a = 2 Or 1=1", &r));
        assert!(check("nOt /a = 2", &r));
        assert!(check("not /a = 2 AnD 1=1 oR 1=2", &r));
    }

    #[test]
    fn bad_filters_are_refused() {
        let cases = [
            "",
            "   ",
            "1",
            "/a",
            "'x'",
            "/a =",
            "= 1",
            "/a = 1 garbage",
            "/a = 1 1",
            "/a = 1 /b",
            "(1=1",
            "((1=1)",
            "1=1)",
            "(1=1))",
            ")",
            "()",
            "(",
            "/a LIKE 'x'",
            "/a IN (1, 2)",
            "UPPER(/a) = 'X'",
            "/a == 1",
            "/a = \"x\"",
            "/a = 'unterminated",
            "/a = 'it''s",
            "/a/ = 1",
            "// = 1",
            "/ = 1",
            "1. = 1",
            "- = 1",
            "/a = -",
            "/a = .5",
            "/a = 1.2.3",
            "/a = 1e5",
            "/a ! 1",
            "/a !",
            "AND",
            "1=1 AND",
            "1=1 OR",
            "AND 1=1",
            "NOT",
            "NOT NOT",
            "/a = 1 AND OR /b = 2",
            "/a = 1 NOT /b = 2",
            "/a = true",
            "/a = NULL",
            "/a IS NULL",
            "/a BETWEEN 1 AND 2",
            "#",
            "/a = 1;",
            "/a = 1,",
            "/a < > 1",
            "/a = = 1",
            "/a = (1)",
            "(/a) = 1",
            "1=1 1=1",
            "/a = 1 AND",
            "/a = ?",
            "/a = é",
        ];
        for text in cases {
            let e = err(text);
            assert_eq!(Reason::from(e), Reason::BadFilter, "{text}");
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        assert_eq!(err(""), FilterError::Empty);
        assert_eq!(err(" \t "), FilterError::Empty);
        assert_eq!(
            err("/a = 1 #"),
            FilterError::UnexpectedChar { pos: 7, ch: '#' }
        );
        assert_eq!(
            err("/a = \"x\""),
            FilterError::UnexpectedChar { pos: 5, ch: '"' }
        );
        assert_eq!(
            err("/a = é"),
            FilterError::UnexpectedChar { pos: 5, ch: 'é' }
        );
        assert_eq!(
            err("/a ! 1"),
            FilterError::UnexpectedChar { pos: 3, ch: '!' }
        );
        assert_eq!(
            err("/a = - 1"),
            FilterError::UnexpectedChar { pos: 5, ch: '-' }
        );
        assert_eq!(err("/a = 'abc"), FilterError::UnterminatedString { pos: 5 });
        assert_eq!(
            err("/a = 1."),
            FilterError::BadNumber {
                pos: 5,
                text: "1.".into()
            }
        );
        assert_eq!(err("/a/ = 1"), FilterError::BadPath { pos: 3 });
        assert_eq!(err("/ = 1"), FilterError::BadPath { pos: 1 });
        assert_eq!(
            err("/a like 'x'"),
            FilterError::UnsupportedWord {
                pos: 3,
                word: "like".into()
            }
        );
        assert_eq!(
            err("/a = 1e5"),
            FilterError::UnsupportedWord {
                pos: 6,
                word: "e5".into()
            }
        );
        assert_eq!(
            err("/a == 1"),
            FilterError::Unexpected {
                pos: 4,
                expected: "a field path or a literal",
                found: "'='".into()
            }
        );
        assert_eq!(
            err("/a 1"),
            FilterError::Unexpected {
                pos: 3,
                expected: "a comparison operator",
                found: "a number".into()
            }
        );
        assert_eq!(
            err("AND"),
            FilterError::Unexpected {
                pos: 0,
                expected: "a comparison, NOT or '('",
                found: "AND".into()
            }
        );
        assert_eq!(
            err("/a"),
            FilterError::UnexpectedEnd {
                expected: "a comparison operator"
            }
        );
        assert_eq!(
            err("/a ="),
            FilterError::UnexpectedEnd {
                expected: "a field path or a literal"
            }
        );
        assert_eq!(
            err("1=1 AND"),
            FilterError::UnexpectedEnd {
                expected: "a comparison, NOT or '('"
            }
        );
        assert_eq!(err("1=1 AND (1=1"), FilterError::UnclosedParen { pos: 8 });
        assert_eq!(
            err("(1=1 1"),
            FilterError::Unexpected {
                pos: 5,
                expected: "')', AND or OR",
                found: "a number".into()
            }
        );
        assert_eq!(
            err("1=1)"),
            FilterError::TrailingInput {
                pos: 3,
                found: "')'".into()
            }
        );
        assert_eq!(
            err("1=1 /a/b"),
            FilterError::TrailingInput {
                pos: 4,
                found: "field /a/b".into()
            }
        );
        let message = err("/a = 1 #").to_string();
        assert!(
            message.contains("'#'") && message.contains("byte 7"),
            "{message}"
        );
    }

    #[test]
    fn nesting_is_limited() {
        let nested = |n: usize| format!("{}1=1{}", "(".repeat(n), ")".repeat(n));
        assert!(check(&nested(MAX_DEPTH), &json!({})));
        assert_eq!(
            err(&nested(MAX_DEPTH + 1)),
            FilterError::TooDeep {
                pos: MAX_DEPTH,
                limit: MAX_DEPTH
            }
        );
        let nots = |n: usize| format!("{}1=1", "NOT ".repeat(n));
        assert!(check(&nots(MAX_DEPTH), &json!({}))); // an even number of NOTs
        assert!(matches!(
            err(&nots(MAX_DEPTH + 1)),
            FilterError::TooDeep { .. }
        ));
        let mixed = "NOT (".repeat(MAX_DEPTH / 2) + "1=1" + &")".repeat(MAX_DEPTH / 2);
        assert!(check(&mixed, &json!({})));
        let mixed = "NOT (".repeat(MAX_DEPTH / 2 + 1) + "1=1" + &")".repeat(MAX_DEPTH / 2 + 1);
        assert!(matches!(err(&mixed), FilterError::TooDeep { .. }));
        // Hostile depth: refused, not a stack overflow.
        assert!(matches!(err(&nested(200_000)), FilterError::TooDeep { .. }));
        assert!(matches!(err(&nots(200_000)), FilterError::TooDeep { .. }));
        assert!(matches!(
            err(&"(".repeat(200_000)),
            FilterError::TooDeep { .. }
        ));
    }

    #[test]
    fn long_flat_chains_are_fine() {
        let chain = vec!["/a = 1"; 20_000].join(" AND ");
        assert!(check(&chain, &json!({"a": 1})));
        let chain = vec!["/a = 2"; 20_000].join(" or ") + " or /a = 1";
        assert!(check(&chain, &json!({"a": 1})));
        assert!(!check(&chain, &json!({"a": 3})));
    }

    #[test]
    fn parses_via_from_str_and_clones() {
        let f: Filter = "/a = 1".parse().unwrap();
        assert_eq!(f.clone(), f);
        assert!(f.matches(&json!({"a": 1})));
        assert!("".parse::<Filter>().is_err());
    }

    /// Fragments that build mostly-valid filters, to reach deep into the parser.
    fn fragment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "(",
            ")",
            " ",
            "NOT ",
            " AND ",
            " OR ",
            "/a",
            "/a/b",
            "/",
            "=",
            "!=",
            "<>",
            "<",
            "<=",
            ">",
            ">=",
            "1",
            "-2.5",
            "'x'",
            "'",
            "''",
            "1.",
            "-",
            "!",
            "é",
            "like",
            "1e9",
            "99999999999999999999999999999999999999999",
        ])
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_strings(text in any::<String>()) {
            if let Ok(f) = Filter::parse(&text) {
                f.matches(&json!({"a": {"b": 1}}));
            }
        }

        #[test]
        fn parse_and_match_never_panic_on_token_soup(
            parts in prop::collection::vec(fragment(), 0..40),
            a in any::<i64>(),
            s in ".*",
        ) {
            let text: String = parts.concat();
            if let Ok(f) = Filter::parse(&text) {
                for record in [json!({"a": a}), json!({"a": {"b": s.clone()}}), json!(null),
                               json!({"a": 0.5}), json!({"a": [1]})] {
                    f.matches(&record);
                }
            }
        }
    }
}
