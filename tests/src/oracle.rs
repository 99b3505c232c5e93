//! An evaluator of filters written from `docs/filters.md` alone, sharing no code with
//! `tidings-matcher`: the tests' oracle for which events a subscription must receive. A test that
//! took its expectations from the node's own `Filter::matches` could not see a matcher bug; this
//! one can, and `tests/tests/oracle.rs` checks the two agree on seeded workloads.
//!
//! It is meant to be read against the document, not to be fast. Not modelled: the size limits
//! (64 KiB, 256 predicates, 64 levels), which only decide what is refused, and the JSONPath
//! selectors the document does not show (unions, slices, filter expressions), which it refuses.
//! It reads JSON itself, so that it sees duplicate keys and numbers beyond a float's range.

use std::cmp::Ordering;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// A parsed filter: a topic pattern and a condition on the body.
#[derive(Debug, Clone)]
pub struct Filter {
    pattern: Vec<Seg>,
    cond: Cond,
}

/// One segment of a topic pattern.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: any number of segments, zero included (last only).
    Rest,
}

#[derive(Debug, Clone)]
enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Test(Path, Test),
}

/// What a predicate asks of the selected values; true if any selected value passes.
#[derive(Debug, Clone)]
enum Test {
    Eq(Lit),
    Cmp(Op, Lit),
    In(Vec<Lit>),
    Exists,
    Prefix(String),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

/// A value written in a filter.
#[derive(Debug, Clone)]
enum Lit {
    Num(Num),
    Str(String),
    Bool(bool),
    Null,
}

/// A number: integers stay integers, everything else is a float; the two compare exactly.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

/// A path into the body: a dotted path (never into arrays) or a JSONPath.
#[derive(Debug, Clone)]
enum Path {
    Dotted(Vec<String>),
    Json(Vec<Step>),
}

/// A JSONPath segment.
#[derive(Debug, Clone)]
enum Step {
    Name(String),
    /// From the end when negative.
    Index(i64),
    /// `*`: every element of an array, every member value of an object.
    Wild,
    /// `..`: the step applied to the value and to everything below it.
    Desc(Box<Step>),
}

impl Filter {
    /// Parses a filter in any of the three syntaxes: JSON if it starts with `{` after spaces,
    /// else text.
    pub fn parse(s: &str) -> Result<Filter> {
        let mut t = Text { s, i: 0 };
        if s.trim_start().starts_with('{') {
            let j = t.json()?;
            t.ws();
            ensure!(t.rest().is_empty(), "text after the JSON object");
            json_filter(j)
        } else {
            t.filter()
        }
    }

    /// Whether an event on `topic` with `body` matches.
    pub fn matches(&self, topic: &str, body: &Value) -> bool {
        topic_matches(&self.pattern, topic) && self.cond.eval(body)
    }
}

// ---- topics -------------------------------------------------------------------------------

fn parse_pattern(p: &str) -> Result<Vec<Seg>> {
    ensure!(p.len() <= 256, "pattern over 256 bytes");
    let rest = p.strip_prefix('/').context("a pattern starts with /")?;
    let segs: Vec<&str> = rest.split('/').collect();
    ensure!(segs.len() <= 16, "more than 16 segments");
    let mut out = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let seg = match *s {
            "*" => Seg::One,
            "**" => Seg::Rest,
            _ => {
                ensure!(!s.is_empty(), "empty segment in {p}");
                ensure!(
                    !s.chars().any(|c| c == '*' || c.is_control()),
                    "bad segment {s:?}"
                );
                Seg::Lit(s.to_string())
            }
        };
        ensure!(
            i > 0 || matches!(seg, Seg::Lit(_)),
            "the root must be literal"
        );
        ensure!(seg != Seg::Rest || i + 1 == segs.len(), "** only last");
        out.push(seg);
    }
    Ok(out)
}

fn topic_matches(pattern: &[Seg], topic: &str) -> bool {
    let Some(rest) = topic.strip_prefix('/') else {
        return false;
    };
    let topic: Vec<&str> = rest.split('/').collect();
    let (fixed, open) = match pattern.split_last() {
        Some((Seg::Rest, fixed)) => (fixed, true),
        _ => (pattern, false),
    };
    let len_ok = if open {
        topic.len() >= fixed.len()
    } else {
        topic.len() == fixed.len()
    };
    len_ok
        && fixed.iter().zip(&topic).all(|(p, t)| match p {
            Seg::Lit(l) => l == t,
            _ => true,
        })
}

// ---- evaluation ---------------------------------------------------------------------------

impl Cond {
    fn eval(&self, body: &Value) -> bool {
        match self {
            Cond::All(cs) => cs.iter().all(|c| c.eval(body)),
            Cond::Any(cs) => cs.iter().any(|c| c.eval(body)),
            Cond::Not(c) => !c.eval(body),
            Cond::Test(path, test) => {
                let vals = path.select(body);
                match test {
                    Test::Exists => !vals.is_empty(),
                    Test::Eq(l) => vals.iter().any(|v| equal(v, l)),
                    Test::In(ls) => vals.iter().any(|v| ls.iter().any(|l| equal(v, l))),
                    Test::Cmp(op, l) => vals.iter().any(|v| {
                        order(v, l).is_some_and(|o| match op {
                            Op::Lt => o == Ordering::Less,
                            Op::Le => o != Ordering::Greater,
                            Op::Gt => o == Ordering::Greater,
                            Op::Ge => o != Ordering::Less,
                        })
                    }),
                    Test::Prefix(p) => vals
                        .iter()
                        .any(|v| v.as_str().is_some_and(|s| s.starts_with(p.as_str()))),
                }
            }
        }
    }
}

impl Path {
    /// The values the path selects in `body` (none if absent).
    fn select<'a>(&self, body: &'a Value) -> Vec<&'a Value> {
        match self {
            Path::Dotted(names) => {
                let mut v = body;
                for n in names {
                    match v.as_object().and_then(|o| o.get(n)) {
                        Some(x) => v = x,
                        None => return vec![],
                    }
                }
                vec![v]
            }
            Path::Json(steps) => steps.iter().fold(vec![body], |vals, step| {
                vals.into_iter().flat_map(|v| step.apply(v)).collect()
            }),
        }
    }
}

impl Step {
    fn apply<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        match (self, v) {
            (Step::Name(n), Value::Object(o)) => o.get(n).into_iter().collect(),
            (Step::Index(i), Value::Array(a)) => {
                let i = if *i < 0 { a.len() as i64 + i } else { *i };
                usize::try_from(i)
                    .ok()
                    .and_then(|i| a.get(i))
                    .into_iter()
                    .collect()
            }
            (Step::Wild, Value::Array(a)) => a.iter().collect(),
            (Step::Wild, Value::Object(o)) => o.values().collect(),
            (Step::Desc(s), v) => {
                let mut all = vec![v];
                let mut k = 0;
                while k < all.len() {
                    all.extend(Step::Wild.apply(all[k]));
                    k += 1;
                }
                all.into_iter().flat_map(|d| s.apply(d)).collect()
            }
            _ => vec![],
        }
    }
}

fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
        (Num::Int(i), Num::Float(f)) => int_float(i, f),
        (Num::Float(f), Num::Int(i)) => int_float(i, f).map(Ordering::reverse),
    }
}

/// `i` against `f`, exactly (no rounding of `i` to a float).
fn int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // Every i64 and u64 lies well inside ±1e30.
    if f >= 1e30 {
        return Some(Ordering::Less);
    }
    if f <= -1e30 {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    let frac = f - whole;
    Some(i.cmp(&(whole as i128)).then(if frac > 0.0 {
        Ordering::Less
    } else if frac < 0.0 {
        Ordering::Greater
    } else {
        Ordering::Equal
    }))
}

/// Whether `s` is a decimal number by JSON's grammar
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_decimal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// The number a decimal string holds: an integer if it has no fraction or exponent (and fits
/// 64 bits), else a float (out of range: infinite).
fn decimal(s: &str) -> Option<Num> {
    if !is_decimal(s) {
        return None;
    }
    if !s.contains(['.', 'e', 'E']) {
        if let Ok(i) = s.parse::<i64>() {
            return Some(Num::Int(i128::from(i)));
        }
        if let Ok(u) = s.parse::<u64>() {
            return Some(Num::Int(i128::from(u)));
        }
    }
    s.parse().ok().map(Num::Float)
}

/// A scalar as the comparison rules see it: a string holding a decimal number is that number.
enum Scalar<'a> {
    Num(Num),
    Str(&'a str),
    Bool(bool),
    Null,
}

fn str_scalar(s: &str) -> Scalar<'_> {
    decimal(s).map_or(Scalar::Str(s), Scalar::Num)
}

/// An event's value; arrays and objects are no scalar: they equal nothing, order with nothing.
fn body_scalar(v: &Value) -> Option<Scalar<'_>> {
    Some(match v {
        Value::Number(n) => Scalar::Num(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Num::Int(i128::from(i)),
            (_, Some(u)) => Num::Int(i128::from(u)),
            _ => Num::Float(n.as_f64()?),
        }),
        Value::String(s) => str_scalar(s),
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Null => Scalar::Null,
        Value::Array(_) | Value::Object(_) => return None,
    })
}

fn lit_scalar(l: &Lit) -> Scalar<'_> {
    match l {
        Lit::Num(n) => Scalar::Num(*n),
        Lit::Str(s) => str_scalar(s),
        Lit::Bool(b) => Scalar::Bool(*b),
        Lit::Null => Scalar::Null,
    }
}

fn equal(v: &Value, l: &Lit) -> bool {
    match (body_scalar(v), lit_scalar(l)) {
        (Some(Scalar::Bool(a)), Scalar::Bool(b)) => a == b,
        (Some(Scalar::Null), Scalar::Null) => true,
        (Some(a), b) => ordered(&a, &b) == Some(Ordering::Equal),
        (None, _) => false,
    }
}

fn order(v: &Value, l: &Lit) -> Option<Ordering> {
    ordered(&body_scalar(v)?, &lit_scalar(l))
}

/// Numbers with numbers, strings with strings (byte order); nothing else is ordered.
fn ordered(a: &Scalar<'_>, b: &Scalar<'_>) -> Option<Ordering> {
    match (a, b) {
        (Scalar::Num(x), Scalar::Num(y)) => num_cmp(*x, *y),
        (Scalar::Str(x), Scalar::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    }
}

// ---- the text form ------------------------------------------------------------------------

/// A field name: letters, digits, `_` and `-`.
fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// A name in a JSONPath's `.name`: a letter, `_` or non-ASCII first, then digits too.
fn is_jsonpath_name(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphabetic() || c == '_' || !c.is_ascii();
    s.chars().next().is_some_and(ok) && s.chars().all(|c| ok(c) || c.is_ascii_digit())
}

/// A cursor over a filter's text (the text form, JSON, or a JSON key holding a JSONPath).
struct Text<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Text<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.i..]
    }

    fn ws(&mut self) {
        let r = self.rest();
        self.i += r.len() - r.trim_start().len();
    }

    /// Skips spaces, then `t` if it comes next.
    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        let ok = self.rest().starts_with(t);
        if ok {
            self.i += t.len();
        }
        ok
    }

    /// A keyword, in any case, that is not the start of a longer name.
    fn keyword(&mut self, kw: &str) -> bool {
        self.ws();
        let r = self.rest();
        let ok = r
            .get(..kw.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(kw))
            && !r[kw.len()..].starts_with(is_name_char);
        if ok {
            self.i += kw.len();
        }
        ok
    }

    fn expected<T>(&self, what: &str) -> Result<T> {
        bail!("expected {what} at {} in {:?}", self.i, self.s)
    }

    fn filter(mut self) -> Result<Filter> {
        self.ws();
        let pattern = if self.rest().starts_with('"') {
            self.string()?
        } else {
            let r = self.rest();
            let end = r.find(char::is_whitespace).unwrap_or(r.len());
            self.i += end;
            r[..end].to_string()
        };
        let pattern = parse_pattern(&pattern)?;
        let cond = if self.keyword("where") {
            self.or()?
        } else {
            Cond::All(vec![])
        };
        self.ws();
        if !self.rest().is_empty() {
            return self.expected("the end");
        }
        Ok(Filter { pattern, cond })
    }

    /// `and` binds tighter than `or`.
    fn or(&mut self) -> Result<Cond> {
        let mut v = vec![self.and()?];
        while self.keyword("or") {
            v.push(self.and()?);
        }
        Ok(Cond::Any(v))
    }

    fn and(&mut self) -> Result<Cond> {
        let mut v = vec![self.unary()?];
        while self.keyword("and") {
            v.push(self.unary()?);
        }
        Ok(Cond::All(v))
    }

    fn unary(&mut self) -> Result<Cond> {
        if self.keyword("not") {
            return Ok(Cond::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let c = self.or()?;
            return if self.eat(")") {
                Ok(c)
            } else {
                self.expected("')'")
            };
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Cond> {
        let path = self.path()?;
        let t = |test| Cond::Test(path.clone(), test);
        let not = |c| Cond::Not(Box::new(c));
        for (sym, op) in [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)] {
            if self.eat(sym) {
                return Ok(t(Test::Cmp(op, orderable(self.value()?)?)));
            }
        }
        if self.eat("!=") {
            return Ok(not(t(Test::Eq(self.value()?))));
        }
        if self.eat("==") || self.eat("=") {
            return Ok(t(Test::Eq(self.value()?)));
        }
        if self.keyword("in") {
            return Ok(t(Test::In(self.list()?)));
        }
        if self.keyword("not") {
            if !self.keyword("in") {
                return self.expected("'in' after 'not'");
            }
            return Ok(not(t(Test::In(self.list()?))));
        }
        if self.keyword("exists") {
            return Ok(t(Test::Exists));
        }
        if self.keyword("prefix") {
            return match self.value()? {
                Lit::Str(s) => Ok(t(Test::Prefix(s))),
                _ => self.expected("a string after 'prefix'"),
            };
        }
        self.expected("an operator")
    }

    fn path(&mut self) -> Result<Path> {
        if self.eat("$") {
            return Ok(Path::Json(self.json_path()?));
        }
        let mut names = vec![self.name()?];
        while self.rest().starts_with('.') {
            self.i += 1;
            names.push(self.name()?);
        }
        Ok(Path::Dotted(names))
    }

    fn name(&mut self) -> Result<String> {
        let r = self.rest();
        let end = r.find(|c| !is_name_char(c)).unwrap_or(r.len());
        if end == 0 {
            return self.expected("a field name");
        }
        self.i += end;
        Ok(r[..end].to_string())
    }

    /// The segments after `$`: `.name`, `.*`, `[*]`, `[3]`, `[-1]`, `["name"]`, and each of
    /// those after `..`.
    fn json_path(&mut self) -> Result<Vec<Step>> {
        let mut steps = vec![];
        loop {
            let r = self.rest();
            if let Some(after) = r.strip_prefix("..") {
                self.i += 2;
                let step = if after.starts_with('[') {
                    self.bracket()?
                } else {
                    self.shorthand()?
                };
                steps.push(Step::Desc(Box::new(step)));
            } else if r.starts_with('.') {
                self.i += 1;
                steps.push(self.shorthand()?);
            } else if r.starts_with('[') {
                steps.push(self.bracket()?);
            } else {
                return Ok(steps);
            }
        }
    }

    /// `*` or a name, after a dot.
    fn shorthand(&mut self) -> Result<Step> {
        let r = self.rest();
        if r.starts_with('*') {
            self.i += 1;
            return Ok(Step::Wild);
        }
        let end = r
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || !c.is_ascii()))
            .unwrap_or(r.len());
        if !is_jsonpath_name(&r[..end]) {
            return self.expected("a JSONPath name or '*'");
        }
        self.i += end;
        Ok(Step::Name(r[..end].to_string()))
    }

    /// `[*]`, `[3]`, `[-1]` or `["name"]`, spaces allowed inside.
    fn bracket(&mut self) -> Result<Step> {
        self.i += 1;
        self.ws();
        let r = self.rest();
        let step = if r.starts_with('*') {
            self.i += 1;
            Step::Wild
        } else if r.starts_with(['"', '\'']) {
            Step::Name(self.string()?)
        } else {
            let end = r
                .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                .unwrap_or(r.len());
            let Ok(n) = r[..end].parse() else {
                return self.expected("an index, '*' or a quoted name");
            };
            self.i += end;
            Step::Index(n)
        };
        if !self.eat("]") {
            return self.expected("']'");
        }
        Ok(step)
    }

    fn list(&mut self) -> Result<Vec<Lit>> {
        if !self.eat("[") {
            return self.expected("'['");
        }
        let mut v = vec![];
        if self.eat("]") {
            return Ok(v);
        }
        loop {
            v.push(self.value()?);
            if self.eat("]") {
                return Ok(v);
            }
            if !self.eat(",") {
                return self.expected("',' or ']'");
            }
        }
    }

    /// A quoted string, a JSON number, `true`, `false` or `null`.
    fn value(&mut self) -> Result<Lit> {
        self.ws();
        let r = self.rest();
        if r.starts_with(['"', '\'']) {
            return Ok(Lit::Str(self.string()?));
        }
        if r.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            // A number runs to the end of the word: `1and` is no number.
            let end = r
                .find(|c: char| !(is_name_char(c) || c == '.' || c == '+'))
                .unwrap_or(r.len());
            let Some(n) = decimal(&r[..end]) else {
                return self.expected("a number");
            };
            self.i += end;
            return Ok(Lit::Num(n));
        }
        for (word, v) in [
            ("true", Lit::Bool(true)),
            ("false", Lit::Bool(false)),
            ("null", Lit::Null),
        ] {
            if r.starts_with(word) && !r[word.len()..].starts_with(is_name_char) {
                self.i += word.len();
                return Ok(v);
            }
        }
        self.expected("a value")
    }

    /// A `"double"` or `'single'` quoted string with JSON's escapes.
    fn string(&mut self) -> Result<String> {
        let r = self.rest();
        let quote = r.chars().next().context("a string")?;
        // Re-quote the contents as a JSON string and let a JSON parser read the escapes.
        let mut json = String::from('"');
        let mut chars = r.char_indices().skip(1);
        while let Some((j, c)) = chars.next() {
            match c {
                '\\' => {
                    let (_, e) = chars.next().context("unterminated string")?;
                    if e == '\'' {
                        json.push('\'');
                    } else {
                        json.push('\\');
                        json.push(e);
                    }
                }
                c if c == quote => {
                    json.push('"');
                    self.i += j + 1;
                    return serde_json::from_str(&json).context("bad string");
                }
                '"' => json.push_str("\\\""),
                c => json.push(c),
            }
        }
        self.expected("a closing quote")
    }

    /// A JSON value, numbers kept as written, keys in order and each once.
    fn json(&mut self) -> Result<J> {
        self.ws();
        let r = self.rest();
        if self.eat("{") {
            let mut members: Vec<(String, J)> = vec![];
            if self.eat("}") {
                return Ok(J::Obj(members));
            }
            loop {
                self.ws();
                if !self.rest().starts_with('"') {
                    return self.expected("a key");
                }
                let k = self.string()?;
                ensure!(members.iter().all(|(m, _)| *m != k), "duplicate key {k:?}");
                if !self.eat(":") {
                    return self.expected("':'");
                }
                members.push((k, self.json()?));
                if self.eat("}") {
                    return Ok(J::Obj(members));
                }
                if !self.eat(",") {
                    return self.expected("',' or '}'");
                }
            }
        }
        if self.eat("[") {
            let mut items = vec![];
            if self.eat("]") {
                return Ok(J::Arr(items));
            }
            loop {
                items.push(self.json()?);
                if self.eat("]") {
                    return Ok(J::Arr(items));
                }
                if !self.eat(",") {
                    return self.expected("',' or ']'");
                }
            }
        }
        if r.starts_with('\'') {
            return self.expected("a JSON value");
        }
        Ok(match self.value()? {
            Lit::Str(s) => J::Str(s),
            l => J::Lit(l),
        })
    }
}

/// `<` and friends order numbers and strings only; against anything else they are refused.
fn orderable(l: Lit) -> Result<Lit> {
    ensure!(
        matches!(l, Lit::Num(_) | Lit::Str(_)),
        "true, false and null are not ordered"
    );
    Ok(l)
}

// ---- the JSON forms -----------------------------------------------------------------------

/// JSON as a filter holds it.
#[derive(Debug)]
enum J {
    Obj(Vec<(String, J)>),
    Arr(Vec<J>),
    Str(String),
    /// A number, `true`, `false` or `null`.
    Lit(Lit),
}

impl J {
    fn scalar(self) -> Result<Lit> {
        match self {
            J::Str(s) => Ok(Lit::Str(s)),
            J::Lit(l) => Ok(l),
            _ => bail!("a string, number, boolean or null was expected"),
        }
    }
}

fn json_filter(j: J) -> Result<Filter> {
    let J::Obj(mut members) = j else {
        bail!("a JSON filter is an object");
    };
    let at = members
        .iter()
        .position(|(k, _)| k == "topic")
        .context("\"topic\" is required")?;
    let J::Str(topic) = members.remove(at).1 else {
        bail!("\"topic\" is a string");
    };
    Ok(Filter {
        pattern: parse_pattern(&topic)?,
        cond: conditions(members)?,
    })
}

/// The members of a condition object, all of which must hold.
fn conditions(members: Vec<(String, J)>) -> Result<Cond> {
    let mut all = vec![];
    for (k, v) in members {
        all.push(match k.as_str() {
            "$and" | "$or" => {
                let J::Arr(items) = v else {
                    bail!("{k} takes an array");
                };
                ensure!(!items.is_empty(), "{k} takes a non-empty array");
                let list = items
                    .into_iter()
                    .map(condition_object)
                    .collect::<Result<Vec<_>>>()?;
                if k == "$and" {
                    Cond::All(list)
                } else {
                    Cond::Any(list)
                }
            }
            "$not" => Cond::Not(Box::new(condition_object(v)?)),
            _ if k.starts_with('$') && !k.starts_with("$.") && !k.starts_with("$[") => {
                bail!("unknown operator {k}")
            }
            _ => value_cond(&key_path(&k)?, v)?,
        });
    }
    Ok(Cond::All(all))
}

/// A non-empty condition object (inside `$and`, `$or`, `$not`).
fn condition_object(j: J) -> Result<Cond> {
    match j {
        J::Obj(m) if !m.is_empty() => conditions(m),
        _ => bail!("a non-empty condition object was expected"),
    }
}

/// A key: a dotted path or a JSONPath.
fn key_path(k: &str) -> Result<Path> {
    if k.starts_with('$') {
        let mut t = Text { s: k, i: 1 };
        let steps = t.json_path()?;
        ensure!(t.rest().is_empty(), "bad JSONPath {k:?}");
        return Ok(Path::Json(steps));
    }
    let names: Vec<String> = k.split('.').map(str::to_string).collect();
    ensure!(names.iter().all(|n| !n.is_empty()), "bad path {k:?}");
    Ok(Path::Dotted(names))
}

/// The condition a key's value puts on `path`.
fn value_cond(path: &Path, v: J) -> Result<Cond> {
    let t = |test| Cond::Test(path.clone(), test);
    match v {
        J::Obj(o) if o.is_empty() => bail!("an empty object is no condition"),
        J::Obj(o) if o.iter().all(|(k, _)| k.starts_with('$')) => operators(path, o),
        J::Obj(o) => {
            // A nested object of names: the names continue a dotted path.
            let Path::Dotted(names) = path else {
                bail!("a JSONPath key takes an operator object, not nested names");
            };
            let mut all = vec![];
            for (k, v) in o {
                ensure!(
                    !k.starts_with('$'),
                    "operators and names mixed in one object"
                );
                let Path::Dotted(more) = key_path(&k)? else {
                    bail!("a nested key is a name: {k:?}");
                };
                all.push(value_cond(
                    &Path::Dotted([names.clone(), more].concat()),
                    v,
                )?);
            }
            Ok(Cond::All(all))
        }
        J::Arr(_) => bail!("an array is no condition (use $in)"),
        J::Str(s) => comparison_string(path, &s),
        J::Lit(l) => Ok(t(Test::Eq(l))),
    }
}

/// A plain string, or one starting with an operator: `"<10"`, `"!=x"`. What follows the
/// operator, spaces trimmed, is a string (which compares as a number if it holds one).
fn comparison_string(path: &Path, s: &str) -> Result<Cond> {
    let t = |test| Cond::Test(path.clone(), test);
    let ops = [
        ("<=", Some(Op::Le)),
        (">=", Some(Op::Ge)),
        ("!=", None),
        ("==", None),
        ("<", Some(Op::Lt)),
        (">", Some(Op::Gt)),
        ("=", None),
    ];
    let Some((sym, op, rest)) = ops
        .iter()
        .find_map(|(sym, op)| s.strip_prefix(sym).map(|rest| (*sym, *op, rest)))
    else {
        ensure!(
            !s.starts_with('!'),
            "a string starting with '!' but not '!='"
        );
        return Ok(t(Test::Eq(Lit::Str(s.to_string()))));
    };
    let operand = rest.trim();
    ensure!(!operand.is_empty(), "nothing after {sym}");
    let operand = Lit::Str(operand.to_string());
    Ok(match op {
        Some(op) => t(Test::Cmp(op, operand)),
        None if sym == "!=" => Cond::Not(Box::new(t(Test::Eq(operand)))),
        None => t(Test::Eq(operand)),
    })
}

/// An object of Mongo-style operators on `path`, all of which must hold.
fn operators(path: &Path, o: Vec<(String, J)>) -> Result<Cond> {
    let t = |test| Cond::Test(path.clone(), test);
    let not = |c| Cond::Not(Box::new(c));
    let list = |v: J| -> Result<Vec<Lit>> {
        let J::Arr(items) = v else {
            bail!("$in and $nin take an array");
        };
        items.into_iter().map(J::scalar).collect()
    };
    let mut all = vec![];
    for (k, v) in o {
        let cmp = |op, v: J| -> Result<Cond> { Ok(t(Test::Cmp(op, orderable(v.scalar()?)?))) };
        all.push(match (k.as_str(), v) {
            ("$eq", v) => t(Test::Eq(v.scalar()?)),
            ("$ne", v) => not(t(Test::Eq(v.scalar()?))),
            ("$lt", v) => cmp(Op::Lt, v)?,
            ("$lte", v) => cmp(Op::Le, v)?,
            ("$gt", v) => cmp(Op::Gt, v)?,
            ("$gte", v) => cmp(Op::Ge, v)?,
            ("$in", v) => t(Test::In(list(v)?)),
            ("$nin", v) => not(t(Test::In(list(v)?))),
            ("$exists", J::Lit(Lit::Bool(true))) => t(Test::Exists),
            ("$exists", J::Lit(Lit::Bool(false))) => not(t(Test::Exists)),
            ("$prefix", J::Str(s)) => t(Test::Prefix(s)),
            ("$not", J::Obj(o)) if !o.is_empty() => not(operators(path, o)?),
            (k, v) => bail!("bad operator {k}: {v:?}"),
        });
    }
    Ok(Cond::All(all))
}
