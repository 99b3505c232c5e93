//! Attributes: what the indexed matchers test. Topic segments are attributes (`Seg(i)`, plus
//! the segment count), so topics and content share one structure; body fields and JSONPaths
//! are attributes too. Each event resolves an attribute at most once (numbers parsed once).

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::ast::{CmpOp, JsonPathExpr, Path, Test};
use crate::filter::Filter;
use crate::hash::FastMap;
use crate::topic::Segment;
use crate::value::{Num, Scalar, Val};

/// What an attribute reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum AttrKey {
    /// Topic segment `i` (0-based), compared as a raw string.
    Seg(u8),
    /// Number of topic segments.
    TopicLen,
    /// A dotted body path.
    Field(Box<[Box<str>]>),
    /// A JSONPath (any-of semantics; always evaluated as a residual test).
    Json(Arc<JsonPathExpr>),
}

/// One condition of a conjunction, on one attribute.
#[derive(Debug, Clone)]
pub(crate) struct Cond {
    pub key: AttrKey,
    pub test: Test,
    pub neg: bool,
}

/// The conjunctions (topic conditions included) a filter is indexed as.
pub(crate) fn conds_of(f: &Filter) -> Vec<Vec<Cond>> {
    let tp = f.topic();
    let mut topic = Vec::new();
    for (i, s) in tp.segments().iter().enumerate() {
        if let Segment::Literal(l) = s {
            topic.push(Cond {
                key: AttrKey::Seg(i as u8),
                test: Test::Eq(Scalar::Str(l.clone())),
                neg: false,
            });
        }
    }
    let n = tp.segments().len() as i64;
    if tp.has_rest() {
        // `T0 = root` already implies at least one segment.
        if n > 1 {
            topic.push(Cond {
                key: AttrKey::TopicLen,
                test: Test::Cmp(CmpOp::Ge, Scalar::Num(Num::I(n))),
                neg: false,
            });
        }
    } else {
        topic.push(Cond {
            key: AttrKey::TopicLen,
            test: Test::Eq(Scalar::Num(Num::I(n))),
            neg: false,
        });
    }
    f.clauses()
        .iter()
        .map(|c| {
            let mut v = topic.clone();
            v.extend(c.iter().map(|l| Cond {
                key: match &l.pred.path {
                    Path::Field(s) => AttrKey::Field(s.clone()),
                    Path::Json(j) => AttrKey::Json(j.clone()),
                },
                test: l.pred.test.clone(),
                neg: l.neg,
            }));
            v
        })
        .collect()
}

/// Interned attributes with reference counts (ids are reused once free).
#[derive(Default)]
pub(crate) struct AttrTable {
    keys: Vec<Option<AttrKey>>,
    refs: Vec<u32>,
    ids: FastMap<AttrKey, u32>,
    free: Vec<u32>,
}

impl AttrTable {
    /// Id of `key`, adding one reference.
    pub fn acquire(&mut self, key: &AttrKey) -> u32 {
        if let Some(&id) = self.ids.get(key) {
            self.refs[id as usize] += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.keys[id as usize] = Some(key.clone());
                self.refs[id as usize] = 1;
                id
            }
            None => {
                self.keys.push(Some(key.clone()));
                self.refs.push(1);
                (self.keys.len() - 1) as u32
            }
        };
        self.ids.insert(key.clone(), id);
        id
    }

    /// Id of `key` if interned (no reference added).
    pub fn get(&self, key: &AttrKey) -> Option<u32> {
        self.ids.get(key).copied()
    }

    /// Drops one reference.
    pub fn release(&mut self, id: u32) {
        let i = id as usize;
        if i >= self.refs.len() || self.refs[i] == 0 {
            return;
        }
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            if let Some(k) = self.keys[i].take() {
                self.ids.remove(&k);
            }
            self.free.push(id);
        }
    }

    /// Number of id slots (live or free).
    pub fn slots(&self) -> usize {
        self.keys.len()
    }

    pub fn key(&self, id: u32) -> Option<&AttrKey> {
        self.keys.get(id as usize).and_then(Option::as_ref)
    }

    pub fn heap_bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<Option<AttrKey>>()
            + self.refs.capacity() * 4
            + self.ids.capacity() * (std::mem::size_of::<AttrKey>() + 5)
    }
}

/// An attribute's value in the current event.
#[derive(Debug)]
pub(crate) enum Resolved<'a> {
    One(Val<'a>),
    /// All values a JSONPath selected.
    Many(Vec<Val<'a>>),
}

/// Reusable per-event buffers (kept in the matcher behind a `Mutex`; a contended call uses a
/// fresh one).
#[derive(Default)]
pub(crate) struct Scratch {
    /// attr id -> (generation, index in `vals`)
    slot: Vec<(u32, u32)>,
    gen_: u32,
    vals: Vec<Resolved<'static>>,
    segs: Vec<&'static str>,
    pub stack: Vec<u32>,
    pub counts: Vec<u32>,
    pub touched: Vec<u32>,
}

/// Reuses an empty vector's allocation for another lifetime (in-place `collect`).
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!()).collect()
}

/// The current event: topic segments, body, and the attribute values resolved so far.
pub(crate) struct Ctx<'s, 'a> {
    pub body: &'a Value,
    pub segs: Vec<&'a str>,
    slot: &'s mut Vec<(u32, u32)>,
    gen_: u32,
    vals: Vec<Resolved<'a>>,
}

impl<'s, 'a> Ctx<'s, 'a> {
    /// Gives the buffers back.
    pub fn finish(self, sc_segs: &mut Vec<&'static str>, sc_vals: &mut Vec<Resolved<'static>>) {
        *sc_segs = recycle(self.segs);
        *sc_vals = recycle(self.vals);
    }

    /// The value of attribute `id` in this event (resolved once, then cached).
    pub fn get(&mut self, table: &AttrTable, id: u32) -> &Resolved<'a> {
        let i = id as usize;
        if i >= self.slot.len() {
            self.slot.resize(i + 1, (0, 0));
        }
        let (g, at) = self.slot[i];
        if g == self.gen_ {
            return &self.vals[at as usize];
        }
        let r = match table.key(id) {
            None => Resolved::One(Val::Absent),
            Some(AttrKey::Seg(s)) => Resolved::One(match self.segs.get(*s as usize) {
                Some(seg) => Val::Str(seg),
                None => Val::Absent,
            }),
            Some(AttrKey::TopicLen) => Resolved::One(Val::Num(Num::I(self.segs.len() as i64))),
            Some(AttrKey::Field(p)) => Resolved::One(Path::field(p, self.body)),
            Some(AttrKey::Json(j)) => {
                let mut v = Vec::new();
                j.select(self.body, |x| v.push(Val::of(x)));
                Resolved::Many(v)
            }
        };
        self.slot[i] = (self.gen_, self.vals.len() as u32);
        self.vals.push(r);
        let last = self.vals.len() - 1;
        &self.vals[last]
    }
}

/// Locks the shared scratch, or hands out a fresh one when another thread holds it.
pub(crate) enum ScratchGuard<'m> {
    Shared(MutexGuard<'m, Scratch>),
    Own(Box<Scratch>),
}

impl<'m> ScratchGuard<'m> {
    pub fn take(m: &'m Mutex<Scratch>) -> ScratchGuard<'m> {
        match m.try_lock() {
            Ok(g) => ScratchGuard::Shared(g),
            Err(std::sync::TryLockError::Poisoned(p)) => ScratchGuard::Shared(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => ScratchGuard::Own(Box::default()),
        }
    }

    pub fn get(&mut self) -> &mut Scratch {
        match self {
            ScratchGuard::Shared(g) => g,
            ScratchGuard::Own(b) => b,
        }
    }
}

/// Splits a scratch into the context buffers and the remaining work buffers.
pub(crate) struct Parts<'s> {
    pub stack: &'s mut Vec<u32>,
    pub counts: &'s mut Vec<u32>,
    pub touched: &'s mut Vec<u32>,
    pub segs: &'s mut Vec<&'static str>,
    pub vals: &'s mut Vec<Resolved<'static>>,
}

impl Scratch {
    /// Starts an event: the context plus the other buffers.
    pub fn begin<'s, 'a>(
        &'s mut self,
        n_attrs: usize,
        topic: &'a str,
        body: &'a Value,
    ) -> Option<(Ctx<'s, 'a>, Parts<'s>)> {
        let mut segs: Vec<&'a str> = recycle(std::mem::take(&mut self.segs));
        if !crate::topic::split_topic(topic, &mut segs) {
            self.segs = recycle(segs);
            return None;
        }
        self.gen_ = self.gen_.wrapping_add(1);
        if self.gen_ == 0 {
            self.slot.iter_mut().for_each(|s| *s = (0, 0));
            self.gen_ = 1;
        }
        if self.slot.len() < n_attrs {
            self.slot.resize(n_attrs, (0, 0));
        }
        let vals = recycle(std::mem::take(&mut self.vals));
        let ctx = Ctx {
            body,
            segs,
            slot: &mut self.slot,
            gen_: self.gen_,
            vals,
        };
        let parts = Parts {
            stack: &mut self.stack,
            counts: &mut self.counts,
            touched: &mut self.touched,
            segs: &mut self.segs,
            vals: &mut self.vals,
        };
        Some((ctx, parts))
    }
}
