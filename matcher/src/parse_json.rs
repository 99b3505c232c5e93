//! The JSON forms: the seeds' form (`{"topic": "/stocks/**", "number": ">50", "price": "<10"}`,
//! a string value starting with an operator character `< > = !` is a comparison) and
//! Mongo-style operators (`$eq $ne $lt $lte $gt $gte $in $nin $exists $prefix $and $or $not`).
//!
//! * `topic` is required (a string pattern).
//! * A key is a dotted path (`"a.b"`), or a JSONPath when it starts with `$.`, `$[` or is `$`.
//! * A nested object without operator keys is a nested path: `{"a": {"b": 1}}` is `a.b = 1`.
//! * An operator object holds one or more operators, all of which must hold:
//!   `{"$gt": 5, "$lt": 10}`. `$not` negates an operator object.
//! * A literal string that starts with an operator character is written `{"$eq": "<x"}`.
//!
//! A small JSON reader with byte positions is used (rather than `serde_json`) so every error
//! names its position.

use std::sync::Arc;

use crate::MAX_DEPTH;
use crate::ast::{CmpOp, Expr, JsonPathExpr, Path, Pred, Test};
use crate::error::ParseError;
use crate::escape;
use crate::topic::TopicPattern;
use crate::value::{Num, Scalar, json_number_len, parse_number};

/// A JSON value with the byte position where it starts.
#[derive(Debug)]
struct J {
    pos: usize,
    v: JV,
}

#[derive(Debug)]
enum JV {
    Null,
    Bool(bool),
    Num(Num),
    Str(String),
    Arr(Vec<J>),
    /// (key position, key, value)
    Obj(Vec<(usize, String, J)>),
}

impl JV {
    fn kind(&self) -> &'static str {
        match self {
            JV::Null => "null",
            JV::Bool(_) => "a boolean",
            JV::Num(_) => "a number",
            JV::Str(_) => "a string",
            JV::Arr(_) => "an array",
            JV::Obj(_) => "an object",
        }
    }
}

struct R<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl R<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<J, ParseError> {
        if depth > MAX_DEPTH {
            return Err(ParseError::new(
                self.i,
                format!("at most {MAX_DEPTH} levels of nesting"),
            ));
        }
        self.ws();
        let pos = self.i;
        let v = match self.b.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut items: Vec<(usize, String, J)> = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        let kpos = self.i;
                        if self.b.get(self.i) != Some(&b'"') {
                            return Err(ParseError::new(kpos, "'\"' starting an object key"));
                        }
                        let k = self.string()?;
                        if items.iter().any(|(_, k2, _)| *k2 == k) {
                            return Err(ParseError::new(kpos, "no duplicate key").after(&k));
                        }
                        self.ws();
                        if self.b.get(self.i) != Some(&b':') {
                            return Err(ParseError::new(self.i, "':'").after(&k));
                        }
                        self.i += 1;
                        let v = self.value(depth + 1)?;
                        items.push((kpos, k, v));
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(ParseError::new(self.i, "',' or '}'")),
                        }
                    }
                }
                JV::Obj(items)
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(ParseError::new(self.i, "',' or ']'")),
                        }
                    }
                }
                JV::Arr(items)
            }
            Some(b'"') => JV::Str(self.string()?),
            Some(b'-' | b'0'..=b'9') => {
                let n = json_number_len(&self.b[self.i..]);
                let num = if n > 0 {
                    parse_number(&self.s[self.i..self.i + n])
                } else {
                    None
                };
                match num {
                    Some(num) => {
                        self.i += n;
                        JV::Num(num)
                    }
                    None => return Err(ParseError::new(pos, "JSON number")),
                }
            }
            _ => {
                let rest = &self.b[self.i..];
                if rest.starts_with(b"true") {
                    self.i += 4;
                    JV::Bool(true)
                } else if rest.starts_with(b"false") {
                    self.i += 5;
                    JV::Bool(false)
                } else if rest.starts_with(b"null") {
                    self.i += 4;
                    JV::Null
                } else {
                    return Err(ParseError::new(pos, "JSON value"));
                }
            }
        };
        Ok(J { pos, v })
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let open = self.i;
        self.i += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.s[self.i..].chars().next() else {
                return Err(ParseError::new(
                    self.i,
                    format!("closing '\"' for the string opened at {open}"),
                ));
            };
            match c {
                '"' => {
                    self.i += 1;
                    return Ok(out);
                }
                '\\' => {
                    let esc = self.i;
                    self.i += 1;
                    let e = self.b.get(self.i).copied();
                    self.i += 1;
                    match e {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => out.push(escape::unicode(self.s, &mut self.i, esc)?),
                        _ => {
                            return Err(ParseError::new(
                                esc,
                                "JSON escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)",
                            ));
                        }
                    }
                }
                c if (c as u32) < 0x20 => {
                    return Err(ParseError::new(
                        self.i,
                        "string character (escape control characters)",
                    ));
                }
                c => {
                    out.push(c);
                    self.i += c.len_utf8();
                }
            }
        }
    }
}

/// Parses a JSON-form filter.
pub(crate) fn parse(src: &str) -> Result<(TopicPattern, Expr), ParseError> {
    let mut r = R {
        s: src,
        b: src.as_bytes(),
        i: 0,
    };
    let root = r.value(0)?;
    r.ws();
    if r.i < src.len() {
        return Err(ParseError::new(r.i, "end of input after the filter object"));
    }
    let JV::Obj(items) = root.v else {
        return Err(ParseError::new(root.pos, "filter object"));
    };
    let mut topic = None;
    let mut parts = Vec::new();
    for (kpos, k, v) in items {
        if k == "topic" {
            let JV::Str(s) = &v.v else {
                return Err(ParseError::new(v.pos, "topic pattern string").after("topic"));
            };
            topic = Some(TopicPattern::parse(s, v.pos + 1)?);
        } else {
            parts.push(entry(kpos, &k, v, &[], 0)?);
        }
    }
    let Some(topic) = topic else {
        return Err(ParseError::new(
            root.pos,
            "\"topic\" key in the filter object",
        ));
    };
    Ok((topic, Expr::and(parts)))
}

/// A condition object (inside `$and` / `$or` / `$not`): fields and logical operators, no topic.
fn cond_object(j: J, prefix: &[Box<str>], depth: usize) -> Result<Expr, ParseError> {
    let JV::Obj(items) = j.v else {
        return Err(ParseError::new(j.pos, "condition object"));
    };
    if items.is_empty() {
        return Err(ParseError::new(j.pos, "non-empty condition object"));
    }
    let mut parts = Vec::new();
    for (kpos, k, v) in items {
        if k == "topic" && prefix.is_empty() {
            return Err(ParseError::new(
                kpos,
                "field or operator (\"topic\" belongs at the top level)",
            ));
        }
        parts.push(entry(kpos, &k, v, prefix, depth + 1)?);
    }
    Ok(Expr::and(parts))
}

fn is_jsonpath_key(k: &str) -> bool {
    k == "$" || k.starts_with("$.") || k.starts_with("$[")
}

/// One `key: value` entry of a condition object.
fn entry(
    kpos: usize,
    k: &str,
    v: J,
    prefix: &[Box<str>],
    depth: usize,
) -> Result<Expr, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError::new(
            kpos,
            format!("at most {MAX_DEPTH} levels of nesting"),
        ));
    }
    if k.starts_with('$') && !is_jsonpath_key(k) {
        if !prefix.is_empty() {
            return Err(ParseError::new(
                kpos,
                "field name (logical operators apply to conditions, not inside a field)",
            )
            .after(k));
        }
        return match k {
            "$and" | "$or" => {
                let JV::Arr(list) = v.v else {
                    return Err(ParseError::new(v.pos, "array of condition objects").after(k));
                };
                if list.is_empty() {
                    return Err(
                        ParseError::new(v.pos, "non-empty array of condition objects").after(k),
                    );
                }
                let mut es = Vec::new();
                for j in list {
                    es.push(cond_object(j, prefix, depth)?);
                }
                Ok(if k == "$and" {
                    Expr::and(es)
                } else {
                    Expr::Or(es)
                })
            }
            "$not" => Ok(Expr::Not(Box::new(cond_object(v, prefix, depth)?))),
            _ => Err(ParseError::new(kpos, "field name or one of $and $or $not").after(k)),
        };
    }
    let path = if is_jsonpath_key(k) {
        if !prefix.is_empty() {
            return Err(ParseError::new(
                kpos,
                "field name (a JSONPath key must be at the top level)",
            ));
        }
        // The text form ends a JSONPath at a space or operator outside brackets and quotes;
        // one that runs past that could not be written there, so the syntaxes would differ.
        if crate::parse_text::jsonpath_len(k) != k.len() {
            return Err(ParseError::new(
                kpos + 1,
                "JSONPath with no space or operator character outside brackets and quotes",
            )
            .after(k));
        }
        let jp = JsonPathExpr::compile(k)
            .map_err(|e| ParseError::new(kpos + 1, format!("valid JSONPath ({e})")))?;
        Path::Json(Arc::new(jp))
    } else {
        let mut segs: Vec<Box<str>> = prefix.to_vec();
        for s in k.split('.') {
            if s.is_empty() {
                return Err(ParseError::new(
                    kpos + 1,
                    "field name (no empty segment in a dotted path)",
                )
                .after(k));
            }
            segs.push(s.into());
        }
        Path::Field(segs.into_boxed_slice())
    };
    let pred = |test| {
        Expr::Pred(Pred {
            path: path.clone(),
            test,
        })
    };
    match v.v {
        JV::Null => Ok(pred(Test::Eq(Scalar::Null))),
        JV::Bool(b) => Ok(pred(Test::Eq(Scalar::Bool(b)))),
        JV::Num(n) => Ok(pred(Test::Eq(Scalar::Num(n)))),
        JV::Str(s) => seeds_string(&s, v.pos + 1, &path),
        JV::Arr(_) => Err(ParseError::new(
            v.pos,
            "value, operator string or operator object (use {\"$in\": [..]} for a list)",
        )
        .after(k)),
        JV::Obj(items) => {
            if items.is_empty() {
                return Err(ParseError::new(v.pos, "non-empty object").after(k));
            }
            let ops = items[0].1.starts_with('$') && !is_jsonpath_key(&items[0].1);
            if ops {
                operators(items, &path, depth)
            } else {
                let Path::Field(segs) = &path else {
                    return Err(ParseError::new(
                        v.pos,
                        "operator object after a JSONPath key",
                    ));
                };
                let mut parts = Vec::new();
                for (kp, k2, v2) in items {
                    if k2.starts_with('$') {
                        return Err(ParseError::new(
                            kp,
                            "field name (do not mix operators and fields)",
                        )
                        .after(&k2));
                    }
                    parts.push(entry(kp, &k2, v2, segs, depth + 1)?);
                }
                Ok(Expr::and(parts))
            }
        }
    }
}

/// The seeds' string value: `"<10"`, `">=5"`, `"!=x"`, `"=x"` or a plain value.
fn seeds_string(s: &str, pos: usize, path: &Path) -> Result<Expr, ParseError> {
    let pred = |test| {
        Expr::Pred(Pred {
            path: path.clone(),
            test,
        })
    };
    let b = s.as_bytes();
    let (op, len) = match b {
        [b'<', b'=', ..] => ("<=", 2),
        [b'>', b'=', ..] => (">=", 2),
        [b'!', b'=', ..] => ("!=", 2),
        [b'=', b'=', ..] => ("=", 2),
        [b'<', ..] => ("<", 1),
        [b'>', ..] => (">", 1),
        [b'=', ..] => ("=", 1),
        [b'!', ..] => {
            return Err(ParseError::new(
                pos,
                "'!=' (write {\"$eq\": \"!..\"} for a literal string starting with '!')",
            ));
        }
        _ => return Ok(pred(Test::Eq(Scalar::from_str_literal(s)))),
    };
    let operand = s[len..].trim();
    if operand.is_empty() {
        return Err(ParseError::new(pos + len, "value after the operator").after(op));
    }
    let v = Scalar::from_str_literal(operand);
    Ok(match op {
        "=" => pred(Test::Eq(v)),
        "!=" => Expr::Not(Box::new(pred(Test::Eq(v)))),
        _ => {
            let op = match op {
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                _ => CmpOp::Ge,
            };
            pred(Test::Cmp(op, v))
        }
    })
}

fn scalar(j: &J, op: &str) -> Result<Scalar, ParseError> {
    match &j.v {
        JV::Null => Ok(Scalar::Null),
        JV::Bool(b) => Ok(Scalar::Bool(*b)),
        JV::Num(n) => Ok(Scalar::Num(*n)),
        JV::Str(s) => Ok(Scalar::from_str_literal(s)),
        other => Err(ParseError::new(
            j.pos,
            format!("string, number, boolean or null, not {}", other.kind()),
        )
        .after(op)),
    }
}

/// An operator object: `{"$gt": 5, "$lt": 10}` (all must hold).
fn operators(
    items: Vec<(usize, String, J)>,
    path: &Path,
    depth: usize,
) -> Result<Expr, ParseError> {
    let pred = |test| {
        Expr::Pred(Pred {
            path: path.clone(),
            test,
        })
    };
    let mut parts = Vec::new();
    for (kpos, k, v) in items {
        let e = match k.as_str() {
            "$eq" => pred(Test::Eq(scalar(&v, &k)?)),
            "$ne" => Expr::Not(Box::new(pred(Test::Eq(scalar(&v, &k)?)))),
            "$lt" | "$lte" | "$gt" | "$gte" => {
                let s = scalar(&v, &k)?;
                if matches!(s, Scalar::Null | Scalar::Bool(_)) {
                    return Err(ParseError::new(
                        v.pos,
                        "number or string (true, false and null are not ordered)",
                    )
                    .after(&k));
                }
                let op = match k.as_str() {
                    "$lt" => CmpOp::Lt,
                    "$lte" => CmpOp::Le,
                    "$gt" => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                pred(Test::Cmp(op, s))
            }
            "$in" | "$nin" => {
                let JV::Arr(list) = &v.v else {
                    return Err(ParseError::new(v.pos, "array of values").after(&k));
                };
                let mut vals = Vec::with_capacity(list.len());
                for j in list {
                    vals.push(scalar(j, &k)?);
                }
                let e = pred(Test::In(vals.into_boxed_slice()));
                if k == "$in" {
                    e
                } else {
                    Expr::Not(Box::new(e))
                }
            }
            "$exists" => match v.v {
                JV::Bool(true) => pred(Test::Exists),
                JV::Bool(false) => Expr::Not(Box::new(pred(Test::Exists))),
                _ => return Err(ParseError::new(v.pos, "true or false").after(&k)),
            },
            "$prefix" => match &v.v {
                JV::Str(s) => pred(Test::Prefix(s.as_str().into())),
                _ => return Err(ParseError::new(v.pos, "string").after(&k)),
            },
            "$not" => {
                let JV::Obj(inner) = v.v else {
                    return Err(ParseError::new(v.pos, "operator object").after(&k));
                };
                if inner.is_empty() || !inner.iter().all(|(_, k2, _)| k2.starts_with('$')) {
                    return Err(ParseError::new(v.pos, "non-empty operator object").after(&k));
                }
                if depth > MAX_DEPTH {
                    return Err(ParseError::new(
                        v.pos,
                        format!("at most {MAX_DEPTH} levels of nesting"),
                    ));
                }
                Expr::Not(Box::new(operators(inner, path, depth + 1)?))
            }
            _ => {
                return Err(ParseError::new(
                    kpos,
                    "operator ($eq $ne $lt $lte $gt $gte $in $nin $exists $prefix $not)",
                )
                .after(&k));
            }
        };
        parts.push(e);
    }
    Ok(Expr::and(parts))
}
