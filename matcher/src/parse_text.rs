//! The text form: `TOPIC [where CONDITION]`.
//!
//! ```text
//! filter    := topic ( 'where' expr )?
//! topic     := '/'-pattern up to whitespace | "quoted pattern" (for segments with spaces)
//! expr      := and ( 'or' and )*
//! and       := unary ( 'and' unary )*
//! unary     := 'not' unary | '(' expr ')' | predicate
//! predicate := path ( ('=' | '==' | '!=' | '<' | '<=' | '>' | '>=') value
//!                   | 'in' '[' value (',' value)* ']' | 'not' 'in' '[' .. ']'
//!                   | 'exists' | 'prefix' string )
//! path      := name ('.' name)* | JSONPath starting with '$'
//! value     := "string" | 'string' | number | true | false | null
//! ```
//! Keywords are case-insensitive.

use std::sync::Arc;

use crate::MAX_DEPTH;
use crate::ast::{CmpOp, Expr, JsonPathExpr, Path, Pred, Test, is_name_char};
use crate::error::ParseError;
use crate::escape;
use crate::topic::TopicPattern;
use crate::value::{Num, Scalar, json_number_len, parse_number};

/// Parses the text form.
pub(crate) fn parse(src: &str) -> Result<(TopicPattern, Expr), ParseError> {
    let mut p = P {
        s: src,
        b: src.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    let topic = p.topic()?;
    p.ws();
    if p.eof() {
        return Ok((topic, Expr::True));
    }
    let start = p.i;
    let w = p.word();
    if !w.eq_ignore_ascii_case("where") {
        return Err(ParseError::new(
            start,
            "'where' or end of input after the topic pattern",
        ));
    }
    p.ws();
    if p.eof() {
        return Err(ParseError::new(p.i, "condition").after("where"));
    }
    let e = p.expr()?;
    p.ws();
    if !p.eof() {
        return Err(ParseError::new(p.i, "'and', 'or' or end of input"));
    }
    Ok((topic, e))
}

struct P<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: usize,
}

/// Length of the JSONPath at the start of `s` in the text form: it runs to whitespace or an
/// operator character outside brackets and quotes. (The JSON form checks its JSONPath keys with
/// this too, so that every filter has a text form.)
pub(crate) fn jsonpath_len(s: &str) -> usize {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut esc = false;
    for (off, c) in s.char_indices() {
        if let Some(q) = quote {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' | '(' => depth += 1,
            ']' | ')' if depth > 0 => depth -= 1,
            _ if depth == 0
                && (c.is_whitespace() || matches!(c, '<' | '>' | '=' | '!' | ')' | ',')) =>
            {
                return off;
            }
            _ => {}
        }
    }
    s.len()
}

impl<'a> P<'a> {
    fn eof(&self) -> bool {
        self.i >= self.b.len()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(c) = self.s[self.i..].chars().next() {
            if c.is_whitespace() {
                self.i += c.len_utf8();
            } else {
                break;
            }
        }
    }

    /// A run of name characters (may be empty); does not consume it if empty.
    fn word(&mut self) -> &'a str {
        let start = self.i;
        for c in self.s[self.i..].chars() {
            if is_name_char(c) {
                self.i += c.len_utf8();
            } else {
                break;
            }
        }
        &self.s[start..self.i]
    }

    /// Looks at the next word without consuming it.
    fn peek_word(&self) -> &'a str {
        let rest = &self.s[self.i..];
        let end = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
        &rest[..end]
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if self.peek_word().eq_ignore_ascii_case(kw) {
            self.i += kw.len();
            true
        } else {
            false
        }
    }

    fn topic(&mut self) -> Result<TopicPattern, ParseError> {
        let start = self.i;
        match self.peek() {
            Some(b'"') | Some(b'\'') => {
                let s = self.string()?;
                TopicPattern::parse(&s, start + 1)
            }
            Some(b'/') => {
                let rest = &self.s[self.i..];
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                self.i += end;
                TopicPattern::parse(&rest[..end], start)
            }
            _ => Err(ParseError::new(
                start,
                "topic pattern starting with '/' (or a quoted pattern, or a JSON filter object)",
            )),
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::new(
                self.i,
                format!("at most {MAX_DEPTH} levels of nesting"),
            ));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let mut alts = vec![self.and()?];
        loop {
            self.ws();
            if self.keyword("or") {
                self.ws();
                alts.push(self.and()?);
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Expr::True)
        } else {
            Expr::Or(alts)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut parts = vec![self.unary()?];
        loop {
            self.ws();
            if self.keyword("and") {
                self.ws();
                parts.push(self.unary()?);
            } else {
                break;
            }
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or(Expr::True)
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.ws();
        if self.peek() == Some(b'(') {
            let open = self.i;
            self.i += 1;
            self.ws();
            let e = self.expr()?;
            self.ws();
            if self.peek() != Some(b')') {
                return Err(ParseError::new(
                    self.i,
                    format!("')' closing the '(' at {open}"),
                ));
            }
            self.i += 1;
            return Ok(e);
        }
        if self.keyword("not") {
            self.enter()?;
            self.ws();
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.predicate()
    }

    fn path(&mut self) -> Result<(Path, &'a str), ParseError> {
        let start = self.i;
        if self.peek() == Some(b'$') {
            let end = start + jsonpath_len(&self.s[start..]);
            self.i = end;
            let text = &self.s[start..end];
            let jp = JsonPathExpr::compile(text)
                .map_err(|e| ParseError::new(start, format!("valid JSONPath ({e})")))?;
            return Ok((Path::Json(Arc::new(jp)), text));
        }
        let mut segs: Vec<Box<str>> = Vec::new();
        loop {
            let seg_start = self.i;
            let w = self.word();
            if w.is_empty() {
                return Err(if segs.is_empty() {
                    ParseError::new(seg_start, "field name, JSONPath ('$...'), 'not' or '('")
                } else {
                    ParseError::new(seg_start, "field name").after(&self.s[start..seg_start])
                });
            }
            segs.push(w.into());
            if self.peek() == Some(b'.') {
                self.i += 1;
            } else {
                break;
            }
        }
        let text = &self.s[start..self.i];
        if segs.len() == 1 {
            for kw in ["and", "or", "where", "in", "exists", "prefix"] {
                if text.eq_ignore_ascii_case(kw) {
                    return Err(ParseError::new(
                        start,
                        "field name, JSONPath ('$...'), 'not' or '(' (not a keyword)",
                    ));
                }
            }
        }
        Ok((Path::Field(segs.into_boxed_slice()), text))
    }

    fn predicate(&mut self) -> Result<Expr, ParseError> {
        let (path, name) = self.path()?;
        self.ws();
        let op_pos = self.i;
        let two = self.b.get(self.i..self.i + 2);
        let (sym, len) = match (self.peek(), two) {
            (_, Some(b"==")) => ("=", 2),
            (_, Some(b"!=")) => ("!=", 2),
            (_, Some(b"<=")) => ("<=", 2),
            (_, Some(b">=")) => (">=", 2),
            (Some(b'='), _) => ("=", 1),
            (Some(b'<'), _) => ("<", 1),
            (Some(b'>'), _) => (">", 1),
            _ => ("", 0),
        };
        let pred = |test| {
            Expr::Pred(Pred {
                path: path.clone(),
                test,
            })
        };
        if len > 0 {
            self.i += len;
            self.ws();
            let v = self.value(sym)?;
            return Ok(match sym {
                "=" => pred(Test::Eq(v)),
                "!=" => Expr::Not(Box::new(pred(Test::Eq(v)))),
                _ => {
                    if matches!(v, Scalar::Null | Scalar::Bool(_)) {
                        return Err(ParseError::new(
                            self.i,
                            "number or string (true, false and null are not ordered)",
                        )
                        .after(sym));
                    }
                    let op = match sym {
                        "<" => CmpOp::Lt,
                        "<=" => CmpOp::Le,
                        ">" => CmpOp::Gt,
                        _ => CmpOp::Ge,
                    };
                    pred(Test::Cmp(op, v))
                }
            });
        }
        if self.keyword("in") {
            self.ws();
            return Ok(pred(Test::In(self.list()?)));
        }
        if self.keyword("not") {
            self.ws();
            if !self.keyword("in") {
                return Err(ParseError::new(self.i, "'in'").after("not"));
            }
            self.ws();
            return Ok(Expr::Not(Box::new(pred(Test::In(self.list()?)))));
        }
        if self.keyword("exists") {
            return Ok(pred(Test::Exists));
        }
        if self.keyword("prefix") {
            self.ws();
            let at = self.i;
            return match self.peek() {
                Some(b'"') | Some(b'\'') => {
                    let s = self.string()?;
                    Ok(pred(Test::Prefix(s.into())))
                }
                _ => Err(ParseError::new(at, "string").after("prefix")),
            };
        }
        Err(ParseError::new(op_pos, "operator (= != < <= > >= in exists prefix)").after(name))
    }

    fn list(&mut self) -> Result<Box<[Scalar]>, ParseError> {
        if self.peek() != Some(b'[') {
            return Err(ParseError::new(self.i, "'['").after("in"));
        }
        self.i += 1;
        let mut out = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(out.into_boxed_slice());
        }
        loop {
            self.ws();
            out.push(self.value(if out.is_empty() { "[" } else { "," })?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(out.into_boxed_slice());
                }
                _ => return Err(ParseError::new(self.i, "',' or ']'")),
            }
        }
    }

    fn value(&mut self, after: &str) -> Result<Scalar, ParseError> {
        let start = self.i;
        match self.peek() {
            Some(b'"') | Some(b'\'') => Ok(Scalar::from_str_literal(&self.string()?)),
            Some(b'-' | b'0'..=b'9') => {
                let n = json_number_len(&self.b[self.i..]);
                let end = self.i + n;
                let follows_name = self.s[end..].chars().next().is_some_and(is_name_char)
                    || self.b.get(end) == Some(&b'.');
                match (n, follows_name) {
                    (n, false) if n > 0 => {
                        self.i = end;
                        let num: Num = parse_number(&self.s[start..end])
                            .ok_or_else(|| ParseError::new(start, "number"))?;
                        Ok(Scalar::Num(num))
                    }
                    _ => Err(ParseError::new(start, "number in JSON syntax").after(after)),
                }
            }
            _ => {
                let w = self.peek_word();
                let v = if w == "true" {
                    Scalar::Bool(true)
                } else if w == "false" {
                    Scalar::Bool(false)
                } else if w == "null" {
                    Scalar::Null
                } else {
                    return Err(ParseError::new(
                        start,
                        "value (\"string\", number, true, false or null)",
                    )
                    .after(after));
                };
                self.i += w.len();
                Ok(v)
            }
        }
    }

    /// A quoted string with JSON escapes, in `"` or `'`.
    fn string(&mut self) -> Result<String, ParseError> {
        let open = self.i;
        let q = self.b[self.i];
        self.i += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.s[self.i..].chars().next() else {
                return Err(ParseError::new(
                    self.i,
                    format!("closing quote for the string opened at {open}"),
                ));
            };
            if c as u32 == q as u32 {
                self.i += 1;
                return Ok(out);
            }
            if c == '\\' {
                let esc_pos = self.i;
                self.i += 1;
                let Some(e) = self.s[self.i..].chars().next() else {
                    return Err(ParseError::new(self.i, "escape character"));
                };
                self.i += e.len_utf8();
                match e {
                    '"' | '\'' | '\\' | '/' => out.push(e),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => out.push(escape::unicode(self.s, &mut self.i, esc_pos)?),
                    _ => {
                        return Err(ParseError::new(
                            esc_pos,
                            "escape (\\\" \\' \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)",
                        ));
                    }
                }
                continue;
            }
            if c.is_control() {
                return Err(ParseError::new(
                    self.i,
                    "string character (no raw control characters)",
                ));
            }
            out.push(c);
            self.i += c.len_utf8();
        }
    }
}
