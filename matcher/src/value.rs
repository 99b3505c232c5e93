//! Numeric and type rules (docs/filters.md).
//!
//! * A JSON integer (no fraction, no exponent) stays an integer ([`Num::I`] or [`Num::U`]);
//!   anything else is a float ([`Num::F`]). Integers and floats compare *exactly* (no rounding
//!   through `f64`), so `9007199254740993 > 9007199254740992.0` holds.
//! * A string matching JSON's number grammar (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`)
//!   compares as that number; `inf`, `NaN`, `+5`, `05`, `.5` are ordinary strings.
//! * Only numbers with numbers and strings with strings are ordered; `true`/`false`/`null` only
//!   support equality. Any other pairing is a type mismatch and makes the predicate false.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use serde_json::Value;

/// A number as the matcher sees it: integers stay integers, everything else is `f64`.
///
/// Equality, ordering and hashing are *numeric*: `Num::I(5) == Num::F(5.0)`. Values never hold
/// NaN (JSON has none and the number grammar cannot produce one).
#[derive(Debug, Clone, Copy)]
pub enum Num {
    /// A signed integer.
    I(i64),
    /// An unsigned integer above `i64::MAX`.
    U(u64),
    /// A float (fraction or exponent present, or an integer too large for 64 bits).
    F(f64),
}

const TWO_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

fn cmp_i_f(i: i64, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    // In range, so the conversion is exact.
    let ti = t as i64;
    match i.cmp(&ti) {
        Ordering::Equal => {
            if f > t {
                Ordering::Less
            } else if f < t {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        o => o,
    }
}

fn cmp_u_f(u: u64, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    if f >= TWO_64 {
        return Ordering::Less;
    }
    if f < 0.0 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    let tu = t as u64;
    match u.cmp(&tu) {
        Ordering::Equal => {
            if f > t {
                Ordering::Less
            } else {
                Ordering::Equal
            }
        }
        o => o,
    }
}

impl Num {
    /// Exact numeric comparison.
    pub fn total_cmp(&self, other: &Num) -> Ordering {
        use Num::*;
        match (*self, *other) {
            (I(a), I(b)) => a.cmp(&b),
            (U(a), U(b)) => a.cmp(&b),
            (I(a), U(b)) => {
                if a < 0 {
                    Ordering::Less
                } else {
                    (a as u64).cmp(&b)
                }
            }
            (U(a), I(b)) => {
                if b < 0 {
                    Ordering::Greater
                } else {
                    a.cmp(&(b as u64))
                }
            }
            (I(a), F(b)) => cmp_i_f(a, b),
            (F(a), I(b)) => cmp_i_f(b, a).reverse(),
            (U(a), F(b)) => cmp_u_f(a, b),
            (F(a), U(b)) => cmp_u_f(b, a).reverse(),
            (F(a), F(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        }
    }

    /// The canonical form used for hashing: integral floats that fit 64 bits become integers.
    fn canonical(&self) -> (u8, u64) {
        match *self {
            Num::I(i) => (0, i as u64),
            Num::U(u) => {
                if u <= i64::MAX as u64 {
                    (0, u)
                } else {
                    (1, u)
                }
            }
            Num::F(f) => {
                if f.fract() == 0.0 {
                    if (-TWO_63..TWO_63).contains(&f) {
                        return (0, (f as i64) as u64);
                    }
                    if (0.0..TWO_64).contains(&f) {
                        return (1, f as u64);
                    }
                }
                (2, f.to_bits())
            }
        }
    }

    /// Converts a `serde_json` number (which never holds NaN).
    pub fn from_json(n: &serde_json::Number) -> Num {
        if let Some(i) = n.as_i64() {
            Num::I(i)
        } else if let Some(u) = n.as_u64() {
            Num::U(u)
        } else {
            Num::F(n.as_f64().unwrap_or(0.0))
        }
    }
}

impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        self.total_cmp(other) == Ordering::Equal
    }
}
impl Eq for Num {}
impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
}
impl Hash for Num {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (tag, bits) = self.canonical();
        state.write_u8(tag);
        state.write_u64(bits);
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::I(i) => write!(f, "{i}"),
            Num::U(u) => write!(f, "{u}"),
            // A literal past f64's range (`1e400`) parses to an infinity; print one back in
            // number grammar (Rust's `inf` is not a number to the parsers).
            Num::F(x) if x.is_infinite() => f.write_str(if *x > 0.0 { "1e999" } else { "-1e999" }),
            Num::F(x) => write!(f, "{x:?}"),
        }
    }
}

/// Length of the longest prefix of `b` matching JSON's number grammar, or 0.
pub(crate) fn json_number_len(b: &[u8]) -> usize {
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
        }
        _ => return 0,
    }
    if b.get(i) == Some(&b'.') && matches!(b.get(i + 1), Some(b'0'..=b'9')) {
        i += 1;
        while matches!(b.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if matches!(b.get(j), Some(b'0'..=b'9')) {
            while matches!(b.get(j), Some(b'0'..=b'9')) {
                j += 1;
            }
            i = j;
        }
    }
    i
}

/// Parses `s` as a number if the *whole* string matches JSON's number grammar.
///
/// Integers become [`Num::I`] / [`Num::U`] when they fit 64 bits, otherwise [`Num::F`]
/// (as `serde_json` does); numbers with a fraction or exponent become [`Num::F`].
pub fn parse_number(s: &str) -> Option<Num> {
    let b = s.as_bytes();
    if b.is_empty() || json_number_len(b) != b.len() {
        return None;
    }
    let integral = !b.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
    if integral {
        if let Ok(i) = s.parse::<i64>() {
            return Some(Num::I(i));
        }
        if let Ok(u) = s.parse::<u64>() {
            return Some(Num::U(u));
        }
    }
    s.parse::<f64>().ok().map(Num::F)
}

/// A value read from an event (one attribute, already classified once per event).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    /// The attribute is not present.
    Absent,
    Null,
    Bool(bool),
    Num(Num),
    /// A string in JSON number grammar: compares as the number, `prefix` sees the text.
    NumStr(Num, &'a str),
    Str(&'a str),
    /// An array or object: only `exists` (and negations) can be true of it.
    Other,
}

impl<'a> Val<'a> {
    /// Classifies a JSON value.
    pub(crate) fn of(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(Num::from_json(n)),
            Value::String(s) => Val::of_str(s),
            Value::Array(_) | Value::Object(_) => Val::Other,
        }
    }

    /// Classifies a string (numeric strings compare as numbers).
    pub(crate) fn of_str(s: &'a str) -> Val<'a> {
        match parse_number(s) {
            Some(n) => Val::NumStr(n, s),
            None => Val::Str(s),
        }
    }

    pub(crate) fn num(&self) -> Option<Num> {
        match *self {
            Val::Num(n) | Val::NumStr(n, _) => Some(n),
            _ => None,
        }
    }

    /// The non-numeric string, if this is one.
    pub(crate) fn plain_str(&self) -> Option<&'a str> {
        match *self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The text of any string value (numeric or not), for `prefix`.
    pub(crate) fn text(&self) -> Option<&'a str> {
        match *self {
            Val::Str(s) | Val::NumStr(_, s) => Some(s),
            _ => None,
        }
    }
}

/// A literal in a filter, already classified: a string literal in number grammar is a
/// [`Scalar::Num`], so `number = "100"` and `number = 100` are the same test.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scalar {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number (or a string in number grammar).
    Num(Num),
    /// A string that is not in number grammar (or any string for topic segments).
    Str(Box<str>),
}

impl Scalar {
    /// Classifies a string literal.
    pub fn from_str_literal(s: &str) -> Scalar {
        match parse_number(s) {
            Some(n) => Scalar::Num(n),
            None => Scalar::Str(s.into()),
        }
    }

    /// `=` between an event value and this literal.
    pub(crate) fn eq_val(&self, v: &Val<'_>) -> bool {
        match (self, v) {
            (Scalar::Null, Val::Null) => true,
            (Scalar::Bool(a), Val::Bool(b)) => a == b,
            (Scalar::Num(a), Val::Num(b) | Val::NumStr(b, _)) => a == b,
            (Scalar::Str(a), Val::Str(b)) => &**a == *b,
            _ => false,
        }
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Null => f.write_str("null"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Num(n) => write!(f, "{n}"),
            // Rust's `{:?}` escapes (`\u{7f}`) are not the filter language's.
            Scalar::Str(s) => f.write_str(&crate::escape::quote(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in [
            "0", "-0", "5", "100", "5.55", "-1.5e3", "1E+2", "1e-2", "0.0",
        ] {
            assert!(parse_number(ok).is_some(), "{ok}");
        }
        for bad in [
            "", "+5", "05", ".5", "5.", "inf", "NaN", "-", "1e", "1e+", " 5", "5 ", "0x10", "1_0",
        ] {
            assert!(parse_number(bad).is_none(), "{bad}");
        }
        assert!(matches!(parse_number("100"), Some(Num::I(100))));
        assert!(matches!(
            parse_number("18446744073709551615"),
            Some(Num::U(_))
        ));
        assert!(matches!(parse_number("1e2"), Some(Num::F(_))));
    }

    #[test]
    fn exact_compare() {
        assert_eq!(Num::I(5), Num::F(5.0));
        assert!(Num::I(5) < Num::F(5.5));
        assert!(Num::I(-5) > Num::F(-5.5));
        assert!(Num::I(9007199254740993) > Num::F(9007199254740992.0));
        assert!(Num::U(u64::MAX) < Num::F(1e20));
        assert!(Num::U(u64::MAX) > Num::I(i64::MAX));
        assert_eq!(Num::F(-0.0), Num::I(0));
        let h = |n: Num| {
            let mut s = std::collections::hash_map::DefaultHasher::new();
            n.hash(&mut s);
            s.finish()
        };
        assert_eq!(h(Num::I(5)), h(Num::F(5.0)));
        assert_eq!(h(Num::F(-0.0)), h(Num::I(0)));
        assert_eq!(h(Num::U(10_000_000_000_000_000_000)), h(Num::F(1e19)));
    }
}
