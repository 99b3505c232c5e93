//! The one AST all three filter syntaxes compile to, and its direct evaluation.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use crate::value::{Scalar, Val};

/// Comparison operators with an ordered operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    pub(crate) fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Lt => o == Less,
            CmpOp::Le => o != Greater,
            CmpOp::Gt => o == Greater,
            CmpOp::Ge => o != Less,
        }
    }

    pub(crate) fn symbol(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A positive test on one value. `!=` and `nin` are `not` of `=` and `in`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Test {
    /// `= v`
    Eq(Scalar),
    /// `< <= > >= v` with `v` a number or a string.
    Cmp(CmpOp, Scalar),
    /// `in [..]`: equal to any listed value.
    In(Box<[Scalar]>),
    /// `exists`: present (any type, `null` included).
    Exists,
    /// `prefix "s"`: a string (numeric strings included) starting with `s`.
    Prefix(Box<str>),
}

impl Test {
    /// Evaluates the test on one (possibly absent) value.
    pub(crate) fn eval(&self, v: &Val<'_>) -> bool {
        match self {
            Test::Eq(s) => s.eq_val(v),
            Test::Cmp(op, Scalar::Num(n)) => v.num().is_some_and(|x| op.holds(x.cmp(n))),
            Test::Cmp(op, Scalar::Str(s)) => v.plain_str().is_some_and(|x| op.holds(x.cmp(s))),
            Test::Cmp(..) => false,
            Test::In(list) => list.iter().any(|s| s.eq_val(v)),
            Test::Exists => !matches!(v, Val::Absent),
            Test::Prefix(p) => v.text().is_some_and(|t| t.starts_with(&**p)),
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Test::Eq(s) => write!(f, "= {s}"),
            Test::Cmp(op, s) => write!(f, "{} {s}", op.symbol()),
            Test::In(l) => {
                f.write_str("in [")?;
                for (i, s) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{s}")?;
                }
                f.write_str("]")
            }
            Test::Exists => f.write_str("exists"),
            Test::Prefix(p) => write!(f, "prefix {}", crate::escape::quote(p)),
        }
    }
}

/// A JSONPath compiled once per subscription.
pub struct JsonPathExpr {
    src: Box<str>,
    query: JpQuery,
}

impl JsonPathExpr {
    /// Compiles `src` (which starts with `$`). jsonpath-rust's error text is returned on failure.
    pub fn compile(src: &str) -> Result<JsonPathExpr, String> {
        match catch_unwind(|| parse_json_path(src)) {
            Ok(Ok(query)) => Ok(JsonPathExpr {
                src: src.into(),
                query,
            }),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("unsupported JSONPath".into()),
        }
    }

    /// The JSONPath text.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// Calls `f` on every selected value (nothing on error).
    pub(crate) fn select<'a>(&self, body: &'a Value, mut f: impl FnMut(&'a Value)) {
        let r = catch_unwind(AssertUnwindSafe(|| js_path_process(&self.query, body)));
        if let Ok(Ok(refs)) = r {
            for r in refs {
                f(r.val());
            }
        }
    }
}

impl fmt::Debug for JsonPathExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({})", self.src)
    }
}
impl PartialEq for JsonPathExpr {
    fn eq(&self, other: &Self) -> bool {
        self.src == other.src
    }
}
impl Eq for JsonPathExpr {}
impl Hash for JsonPathExpr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.src.hash(state)
    }
}

/// Where a predicate reads its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Path {
    /// `a.b.c`: object fields, one per segment.
    Field(Box<[Box<str>]>),
    /// A JSONPath: the predicate is true if *any* selected value passes.
    Json(Arc<JsonPathExpr>),
}

impl Path {
    /// Reads a dotted path from `body`.
    pub(crate) fn field<'a>(segs: &[Box<str>], body: &'a Value) -> Val<'a> {
        let mut v = body;
        for s in segs {
            match v {
                Value::Object(m) => match m.get(&**s) {
                    Some(x) => v = x,
                    None => return Val::Absent,
                },
                _ => return Val::Absent,
            }
        }
        Val::of(v)
    }

    /// A stable text key (`a.b.c` or the JSONPath text).
    pub fn key(&self) -> String {
        match self {
            Path::Field(s) => s.join("."),
            Path::Json(j) => j.as_str().to_owned(),
        }
    }
}

/// Whether a dotted path's segments can be written as they are in the text form: each a word
/// of name characters, and the first no keyword (the JSON form takes any key). The first
/// segment of a longer path counts too: `not.bb exists` reads as `not` applied to `.bb`.
fn plain_field(segs: &[Box<str>]) -> bool {
    let word = |s: &str| !s.is_empty() && s.chars().all(is_name_char);
    segs.iter().all(|s| word(s))
        && !segs.first().is_some_and(|first| {
            ["and", "or", "not", "where", "in", "exists", "prefix"]
                .iter()
                .any(|kw| first.eq_ignore_ascii_case(kw))
        })
}

impl fmt::Display for Path {
    /// In the text form: `a.b.c`, or the JSONPath; a field path whose segments the text form
    /// cannot write (spaces, operators, keywords) as the equivalent JSONPath `$["a b"]["c"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Field(segs) if !plain_field(segs) => {
                f.write_str("$")?;
                for s in segs.iter() {
                    write!(f, "[{}]", crate::escape::quote(s))?;
                }
                Ok(())
            }
            _ => f.write_str(&self.key()),
        }
    }
}

/// An atomic predicate: a path and a positive test.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pred {
    /// Where the value is read.
    pub path: Path,
    /// What it must satisfy.
    pub test: Test,
}

impl Pred {
    /// Evaluates on a body: for a JSONPath, true if any selected value passes.
    pub(crate) fn eval(&self, body: &Value) -> bool {
        match &self.path {
            Path::Field(segs) => self.test.eval(&Path::field(segs, body)),
            Path::Json(j) => {
                let mut any = false;
                j.select(body, |v| {
                    if !any && self.test.eval(&Val::of(v)) {
                        any = true;
                    }
                });
                any
            }
        }
    }
}

impl fmt::Display for Pred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path, self.test)
    }
}

/// A condition on the body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// Always true (a topic-only filter).
    True,
    /// All must hold.
    And(Vec<Expr>),
    /// Any must hold.
    Or(Vec<Expr>),
    /// Negation.
    Not(Box<Expr>),
    /// An atomic predicate.
    Pred(Pred),
}

impl Expr {
    /// Direct (tree-walking) evaluation: the reference semantics the matchers are tested against.
    pub fn eval(&self, body: &Value) -> bool {
        match self {
            Expr::True => true,
            Expr::And(v) => v.iter().all(|e| e.eval(body)),
            Expr::Or(v) => v.iter().any(|e| e.eval(body)),
            Expr::Not(e) => !e.eval(body),
            Expr::Pred(p) => p.eval(body),
        }
    }

    /// Number of atomic predicates.
    pub(crate) fn size(&self) -> usize {
        match self {
            Expr::True => 0,
            Expr::And(v) | Expr::Or(v) => v.iter().map(Expr::size).sum(),
            Expr::Not(e) => e.size(),
            Expr::Pred(_) => 1,
        }
    }

    /// Conjunction of `parts`, flattened.
    pub(crate) fn and(parts: Vec<Expr>) -> Expr {
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            match p {
                Expr::True => {}
                Expr::And(v) => out.extend(v),
                e => out.push(e),
            }
        }
        match out.len() {
            0 => Expr::True,
            1 => out.pop().unwrap_or(Expr::True),
            _ => Expr::And(out),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, v: &[Expr], sep: &str| -> fmt::Result {
            // A one-element group (the JSON form's `"$or": [{...}]`) is its element, as the
            // text parser would read it back.
            if let [only] = v {
                return write!(f, "{only}");
            }
            f.write_str("(")?;
            for (i, e) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{e}")?;
            }
            f.write_str(")")
        };
        match self {
            Expr::True => f.write_str("true"),
            Expr::And(v) => join(f, v, " and "),
            Expr::Or(v) => join(f, v, " or "),
            Expr::Not(e) => write!(f, "not {e}"),
            Expr::Pred(p) => write!(f, "{p}"),
        }
    }
}

/// Whether `c` may appear in a name written without quotes in a filter (the parser reads such
/// names; a path is printed with quotes where a segment holds anything else).
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}
