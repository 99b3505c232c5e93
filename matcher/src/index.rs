//! Per-attribute test index, shared by the parallel search tree (edges to child nodes) and the
//! counting matcher (predicate ids).
//!
//! * equality: hash maps (strings and numbers apart, so a lookup borrows the event's `&str`
//!   without allocating); up to [`SMALL`] entries a plain vector (cheaper in memory and time);
//! * ranges `< <= > >=`: one sorted vector per operator and operand type, the satisfied run
//!   found by binary search;
//! * `prefix`: a hash map probed with each prefix of the event string up to the longest
//!   indexed prefix;
//! * everything else (negations, `in`, `exists`, JSONPath attributes) is a residual test
//!   evaluated on the value.
//!
//! Identical tests share one entry.

use std::borrow::Borrow;
use std::hash::Hash;

use crate::ast::{CmpOp, Test};
use crate::attrs::Resolved;
use crate::hash::FastMap;
use crate::value::{Num, Scalar, Val};

/// Vector-to-map switch point for equality edges.
const SMALL: usize = 8;

enum Edges<K, T> {
    Small(Vec<(K, T)>),
    Map(FastMap<K, T>),
}

impl<K: Hash + Eq, T: Copy> Edges<K, T> {
    fn new() -> Self {
        Edges::Small(Vec::new())
    }

    #[inline]
    fn get<Q: Hash + Eq + ?Sized>(&self, q: &Q) -> Option<T>
    where
        K: Borrow<Q>,
    {
        match self {
            Edges::Small(v) => v.iter().find(|(k, _)| k.borrow() == q).map(|e| e.1),
            Edges::Map(m) => m.get(q).copied(),
        }
    }

    fn insert(&mut self, k: K, t: T) {
        match self {
            Edges::Small(v) => {
                if v.len() < SMALL {
                    // Exact growth: most edge sets hold one or two entries.
                    v.reserve_exact(1);
                    v.push((k, t));
                } else {
                    let mut m: FastMap<K, T> = v.drain(..).collect();
                    m.insert(k, t);
                    *self = Edges::Map(m);
                }
            }
            Edges::Map(m) => {
                m.insert(k, t);
            }
        }
    }

    fn remove<Q: Hash + Eq + ?Sized>(&mut self, q: &Q) -> Option<T>
    where
        K: Borrow<Q>,
    {
        match self {
            Edges::Small(v) => {
                let i = v.iter().position(|(k, _)| k.borrow() == q)?;
                let t = v.swap_remove(i).1;
                if v.is_empty() {
                    *v = Vec::new();
                }
                Some(t)
            }
            Edges::Map(m) => {
                let t = m.remove(q);
                if m.is_empty() {
                    *self = Edges::Small(Vec::new());
                }
                t
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Edges::Small(v) => v.is_empty(),
            Edges::Map(m) => m.is_empty(),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Edges::Small(v) => v.capacity() * std::mem::size_of::<(K, T)>(),
            Edges::Map(m) => m.capacity() * (std::mem::size_of::<(K, T)>() + 1),
        }
    }
}

/// The less common parts, boxed so an index holding only equality edges stays small.
struct More<T> {
    misc: Vec<(Scalar, T)>,
    /// Numeric range bounds, sorted by (operator, bound).
    num_rng: Vec<(u8, Num, T)>,
    /// String range bounds, sorted by (operator, bound).
    str_rng: Vec<(u8, Box<str>, T)>,
    prefix: Option<Box<Prefixes<T>>>,
    residual: Vec<(Test, bool, T)>,
}

struct Prefixes<T> {
    map: FastMap<Box<str>, T>,
    max: usize,
}

impl<T> Default for More<T> {
    fn default() -> Self {
        More {
            misc: Vec::new(),
            num_rng: Vec::new(),
            str_rng: Vec::new(),
            prefix: None,
            residual: Vec::new(),
        }
    }
}

impl<T> More<T> {
    fn is_empty(&self) -> bool {
        self.misc.is_empty()
            && self.num_rng.is_empty()
            && self.str_rng.is_empty()
            && self.prefix.is_none()
            && self.residual.is_empty()
    }
}

/// Where a test lives in an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// Hash-indexed equality.
    Eq,
    /// Sorted range bound.
    Range,
    /// Prefix map.
    Prefix,
    /// Evaluated one by one.
    Residual,
}

/// Classifies a test (`json`: the attribute is a JSONPath, always residual).
pub(crate) fn kind(test: &Test, neg: bool, json: bool) -> Kind {
    if neg || json {
        return Kind::Residual;
    }
    match test {
        Test::Eq(_) => Kind::Eq,
        Test::Cmp(_, Scalar::Num(_) | Scalar::Str(_)) => Kind::Range,
        Test::Prefix(_) => Kind::Prefix,
        _ => Kind::Residual,
    }
}

fn op_ix(op: CmpOp) -> u8 {
    match op {
        CmpOp::Lt => 0,
        CmpOp::Le => 1,
        CmpOp::Gt => 2,
        CmpOp::Ge => 3,
    }
}

/// The run of entries with operator `op` in a vector sorted by (operator, bound).
#[inline]
fn op_run<B, T>(v: &[(u8, B, T)], op: u8) -> std::ops::Range<usize> {
    v.partition_point(|e| e.0 < op)..v.partition_point(|e| e.0 <= op)
}

/// Satisfied entries (`x op bound`) within one operator's run, by binary search.
#[inline]
fn satisfied<B: Borrow<Q>, Q: Ord + ?Sized, T>(
    v: &[(u8, B, T)],
    op: u8,
    x: &Q,
) -> std::ops::Range<usize> {
    let run = op_run(v, op);
    let s = &v[run.clone()];
    let (a, b) = match op {
        // x < b  <=>  b > x
        0 => (s.partition_point(|e| e.1.borrow() <= x), s.len()),
        // x <= b <=>  b >= x
        1 => (s.partition_point(|e| e.1.borrow() < x), s.len()),
        // x > b  <=>  b < x
        2 => (0, s.partition_point(|e| e.1.borrow() < x)),
        // x >= b <=>  b <= x
        _ => (0, s.partition_point(|e| e.1.borrow() <= x)),
    };
    run.start + a..run.start + b
}

fn range_find<B: Borrow<Q>, Q: Ord + ?Sized, T>(v: &[(u8, B, T)], op: u8, b: &Q) -> Option<usize> {
    let run = op_run(v, op);
    let s = &v[run.clone()];
    let i = s.partition_point(|e| e.1.borrow() < b);
    (i < s.len() && s[i].1.borrow() == b).then_some(run.start + i)
}

fn range_insert<B: Ord, T>(v: &mut Vec<(u8, B, T)>, op: u8, b: B, t: T) {
    let i = v.partition_point(|e| (e.0, &e.1) < (op, &b));
    v.reserve_exact(1);
    v.insert(i, (op, b, t));
}

/// Index of all tests on one attribute, each leading to a `T`.
pub(crate) struct AttrIndex<T> {
    eq_str: Edges<Box<str>, T>,
    eq_num: Edges<Num, T>,
    more: Option<Box<More<T>>>,
}

impl<T: Copy> AttrIndex<T> {
    pub fn new() -> Self {
        AttrIndex {
            eq_str: Edges::new(),
            eq_num: Edges::new(),
            more: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.eq_str.is_empty() && self.eq_num.is_empty() && self.more.is_none()
    }

    fn more(&mut self) -> &mut More<T> {
        self.more.get_or_insert_with(Box::default)
    }

    fn tidy(&mut self) {
        if self.more.as_ref().is_some_and(|m| m.is_empty()) {
            self.more = None;
        }
    }

    /// The entry of an identical test, if any.
    pub fn find(&self, test: &Test, neg: bool, json: bool) -> Option<T> {
        match (kind(test, neg, json), test) {
            (Kind::Eq, Test::Eq(Scalar::Str(s))) => self.eq_str.get(&**s),
            (Kind::Eq, Test::Eq(Scalar::Num(n))) => self.eq_num.get(n),
            (Kind::Eq, Test::Eq(s)) => {
                let m = self.more.as_ref()?;
                m.misc.iter().find(|(k, _)| k == s).map(|e| e.1)
            }
            (Kind::Range, Test::Cmp(op, Scalar::Num(n))) => {
                let v = &self.more.as_ref()?.num_rng;
                range_find(v, op_ix(*op), n).map(|i| v[i].2)
            }
            (Kind::Range, Test::Cmp(op, Scalar::Str(s))) => {
                let v = &self.more.as_ref()?.str_rng;
                range_find::<Box<str>, str, T>(v, op_ix(*op), s).map(|i| v[i].2)
            }
            (Kind::Prefix, Test::Prefix(p)) => {
                self.more.as_ref()?.prefix.as_ref()?.map.get(&**p).copied()
            }
            _ => {
                let m = self.more.as_ref()?;
                m.residual
                    .iter()
                    .find(|(t, n, _)| *n == neg && t == test)
                    .map(|e| e.2)
            }
        }
    }

    /// Adds a test (the caller checked with [`AttrIndex::find`] that it is not present).
    pub fn insert(&mut self, test: &Test, neg: bool, json: bool, t: T) {
        match (kind(test, neg, json), test) {
            (Kind::Eq, Test::Eq(Scalar::Str(s))) => self.eq_str.insert(s.clone(), t),
            (Kind::Eq, Test::Eq(Scalar::Num(n))) => self.eq_num.insert(*n, t),
            (Kind::Eq, Test::Eq(s)) => self.more().misc.push((s.clone(), t)),
            (Kind::Range, Test::Cmp(op, Scalar::Num(n))) => {
                range_insert(&mut self.more().num_rng, op_ix(*op), *n, t)
            }
            (Kind::Range, Test::Cmp(op, Scalar::Str(s))) => {
                range_insert(&mut self.more().str_rng, op_ix(*op), s.clone(), t)
            }
            (Kind::Prefix, Test::Prefix(p)) => {
                let px = self.more().prefix.get_or_insert_with(|| {
                    Box::new(Prefixes {
                        map: FastMap::default(),
                        max: 0,
                    })
                });
                px.max = px.max.max(p.len());
                px.map.insert(p.clone(), t);
            }
            _ => self.more().residual.push((test.clone(), neg, t)),
        }
    }

    /// Removes a test's entry.
    pub fn remove(&mut self, test: &Test, neg: bool, json: bool) -> Option<T> {
        let r = match (kind(test, neg, json), test) {
            (Kind::Eq, Test::Eq(Scalar::Str(s))) => return self.eq_str.remove(&**s),
            (Kind::Eq, Test::Eq(Scalar::Num(n))) => return self.eq_num.remove(n),
            (Kind::Eq, Test::Eq(s)) => {
                let m = self.more.as_mut()?;
                let i = m.misc.iter().position(|(k, _)| k == s)?;
                Some(m.misc.swap_remove(i).1)
            }
            (Kind::Range, Test::Cmp(op, Scalar::Num(n))) => {
                let v = &mut self.more.as_mut()?.num_rng;
                let i = range_find(v, op_ix(*op), n)?;
                let t = v.remove(i).2;
                if v.is_empty() {
                    *v = Vec::new();
                }
                Some(t)
            }
            (Kind::Range, Test::Cmp(op, Scalar::Str(s))) => {
                let v = &mut self.more.as_mut()?.str_rng;
                let i = range_find::<Box<str>, str, T>(v, op_ix(*op), s)?;
                let t = v.remove(i).2;
                if v.is_empty() {
                    *v = Vec::new();
                }
                Some(t)
            }
            (Kind::Prefix, Test::Prefix(p)) => {
                let m = self.more.as_mut()?;
                let px = m.prefix.as_mut()?;
                let t = px.map.remove(&**p);
                if px.map.is_empty() {
                    m.prefix = None;
                }
                t
            }
            _ => {
                let m = self.more.as_mut()?;
                let i = m
                    .residual
                    .iter()
                    .position(|(t, n, _)| *n == neg && t == test)?;
                Some(m.residual.remove(i).2)
            }
        };
        self.tidy();
        r
    }

    /// Calls `f` with the entry of every test the value satisfies.
    #[inline]
    pub fn for_each(&self, r: &Resolved<'_>, mut f: impl FnMut(T)) {
        match r {
            Resolved::One(v) => self.for_val(v, &mut f),
            Resolved::Many(vs) => {
                if let Some(m) = &self.more {
                    for (t, neg, x) in &m.residual {
                        if vs.iter().any(|v| t.eval(v)) != *neg {
                            f(*x);
                        }
                    }
                }
            }
        }
    }

    #[inline]
    fn for_val(&self, v: &Val<'_>, f: &mut impl FnMut(T)) {
        match *v {
            Val::Str(s) => {
                if let Some(t) = self.eq_str.get(s) {
                    f(t);
                }
            }
            Val::Num(n) | Val::NumStr(n, _) => {
                if let Some(t) = self.eq_num.get(&n) {
                    f(t);
                }
            }
            _ => {}
        }
        let Some(m) = &self.more else { return };
        match *v {
            Val::Null | Val::Bool(_) => {
                for (k, t) in &m.misc {
                    if k.eq_val(v) {
                        f(*t);
                    }
                }
            }
            Val::Num(n) | Val::NumStr(n, _) => {
                let rv = &m.num_rng;
                if !rv.is_empty() {
                    for op in 0..4 {
                        for e in &rv[satisfied(rv, op, &n)] {
                            f(e.2);
                        }
                    }
                }
            }
            Val::Str(s) => {
                let rv = &m.str_rng;
                if !rv.is_empty() {
                    for op in 0..4 {
                        for e in &rv[satisfied::<Box<str>, str, T>(rv, op, s)] {
                            f(e.2);
                        }
                    }
                }
            }
            _ => {}
        }
        if let (Some(p), Some(s)) = (&m.prefix, v.text()) {
            let lim = s.len().min(p.max);
            for i in 0..=lim {
                if s.is_char_boundary(i)
                    && let Some(t) = p.map.get(&s[..i])
                {
                    f(*t);
                }
            }
        }
        for (t, neg, x) in &m.residual {
            if t.eval(v) != *neg {
                f(*x);
            }
        }
    }

    /// Approximate heap bytes owned (for reports).
    pub fn heap_bytes(&self) -> usize {
        let mut n = self.eq_str.heap_bytes() + self.eq_num.heap_bytes();
        if let Edges::Small(v) = &self.eq_str {
            n += v.iter().map(|(k, _)| k.len()).sum::<usize>();
        }
        if let Some(m) = &self.more {
            n += std::mem::size_of::<More<T>>();
            n += m.misc.capacity() * std::mem::size_of::<(Scalar, T)>();
            n += m.num_rng.capacity() * std::mem::size_of::<(u8, Num, T)>();
            n += m.str_rng.capacity() * std::mem::size_of::<(u8, Box<str>, T)>();
            n += m.residual.capacity() * std::mem::size_of::<(Test, bool, T)>();
        }
        n
    }
}
