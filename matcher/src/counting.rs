//! The counting algorithm baseline (Fabret, Jacobsen, Llirbat, Pereira, Ross, Shasha,
//! "Filtering algorithms and implementation for very fast publish/subscribe systems",
//! SIGMOD 2001, in its basic form): every distinct predicate is indexed once; an event
//! finds its satisfied predicates through the per-attribute indexes and increments a counter
//! per conjunction containing each; a conjunction matches when its counter reaches its size.

use std::sync::Mutex;

use serde_json::Value;

use crate::ast::Test;
use crate::attrs::{AttrKey, AttrTable, Scratch, ScratchGuard, conds_of};
use crate::filter::Filter;
use crate::hash::FastMap;
use crate::index::AttrIndex;
use crate::{Matcher, SubId};

struct Pred {
    attr: u32,
    test: Test,
    neg: bool,
    clauses: Vec<u32>,
}

struct Clause {
    sub: SubId,
    /// Number of predicates; 0 marks a free slot.
    size: u32,
    preds: Box<[u32]>,
}

/// Counting-algorithm matcher (baseline).
pub struct CountingMatcher {
    attrs: AttrTable,
    idx: Vec<Option<AttrIndex<u32>>>,
    preds: Vec<Pred>,
    pred_free: Vec<u32>,
    clauses: Vec<Clause>,
    clause_free: Vec<u32>,
    subs: FastMap<SubId, Vec<u32>>,
    multi: usize,
    scratch: Mutex<Scratch>,
}

impl Default for CountingMatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CountingMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingMatcher")
            .field("subscriptions", &self.subs.len())
            .finish()
    }
}

impl CountingMatcher {
    /// An empty matcher.
    pub fn new() -> Self {
        CountingMatcher {
            attrs: AttrTable::default(),
            idx: Vec::new(),
            preds: Vec::new(),
            pred_free: Vec::new(),
            clauses: Vec::new(),
            clause_free: Vec::new(),
            subs: FastMap::default(),
            multi: 0,
            scratch: Mutex::new(Scratch::default()),
        }
    }

    fn is_json(&self, attr: u32) -> bool {
        matches!(self.attrs.key(attr), Some(AttrKey::Json(_)))
    }
}

impl Matcher for CountingMatcher {
    fn insert(&mut self, id: SubId, filter: &Filter) {
        self.remove(id);
        let mut ids = Vec::new();
        for conds in conds_of(filter) {
            let cid = match self.clause_free.pop() {
                Some(c) => c,
                None => {
                    self.clauses.push(Clause {
                        sub: 0,
                        size: 0,
                        preds: Box::new([]),
                    });
                    (self.clauses.len() - 1) as u32
                }
            };
            let mut preds = Vec::with_capacity(conds.len());
            for c in conds {
                let json = matches!(c.key, AttrKey::Json(_));
                let existing = self.attrs.get(&c.key).and_then(|a| {
                    self.idx
                        .get(a as usize)
                        .and_then(Option::as_ref)
                        .and_then(|ix| ix.find(&c.test, c.neg, json))
                });
                let pid = match existing {
                    Some(p) => p,
                    None => {
                        let attr = self.attrs.acquire(&c.key);
                        let p = Pred {
                            attr,
                            test: c.test.clone(),
                            neg: c.neg,
                            clauses: Vec::new(),
                        };
                        let pid = match self.pred_free.pop() {
                            Some(i) => {
                                self.preds[i as usize] = p;
                                i
                            }
                            None => {
                                self.preds.push(p);
                                (self.preds.len() - 1) as u32
                            }
                        };
                        if self.idx.len() <= attr as usize {
                            self.idx.resize_with(attr as usize + 1, || None);
                        }
                        self.idx[attr as usize]
                            .get_or_insert_with(AttrIndex::new)
                            .insert(&c.test, c.neg, json, pid);
                        pid
                    }
                };
                self.preds[pid as usize].clauses.push(cid);
                preds.push(pid);
            }
            self.clauses[cid as usize] = Clause {
                sub: id,
                size: preds.len() as u32,
                preds: preds.into_boxed_slice(),
            };
            ids.push(cid);
        }
        if ids.len() > 1 {
            self.multi += 1;
        }
        self.subs.insert(id, ids);
    }

    fn remove(&mut self, id: SubId) -> bool {
        let Some(ids) = self.subs.remove(&id) else {
            return false;
        };
        if ids.len() > 1 {
            self.multi -= 1;
        }
        for cid in ids {
            let preds = std::mem::take(&mut self.clauses[cid as usize].preds);
            self.clauses[cid as usize].size = 0;
            self.clause_free.push(cid);
            for pid in preds.iter().copied() {
                let p = &mut self.preds[pid as usize];
                if let Some(i) = p.clauses.iter().position(|c| *c == cid) {
                    p.clauses.swap_remove(i);
                }
                if p.clauses.is_empty() {
                    let attr = p.attr;
                    let test = std::mem::replace(&mut p.test, Test::Exists);
                    let neg = p.neg;
                    p.clauses = Vec::new();
                    let json = self.is_json(attr);
                    if let Some(slot) = self.idx.get_mut(attr as usize)
                        && let Some(ix) = slot
                    {
                        ix.remove(&test, neg, json);
                        if ix.is_empty() {
                            *slot = None;
                        }
                    }
                    self.pred_free.push(pid);
                    self.attrs.release(attr);
                }
            }
        }
        true
    }

    fn match_event(&self, topic: &str, body: &Value, out: &mut Vec<SubId>) {
        out.clear();
        let mut guard = ScratchGuard::take(&self.scratch);
        let sc = guard.get();
        let Some((mut ctx, parts)) = sc.begin(self.attrs.slots(), topic, body) else {
            return;
        };
        let counts = parts.counts;
        let touched = parts.touched;
        if counts.len() < self.clauses.len() {
            counts.resize(self.clauses.len(), 0);
        }
        touched.clear();
        for (a, ix) in self.idx.iter().enumerate() {
            let Some(ix) = ix else { continue };
            let r = ctx.get(&self.attrs, a as u32);
            ix.for_each(r, |p| {
                for &c in &self.preds[p as usize].clauses {
                    let k = &mut counts[c as usize];
                    if *k == 0 {
                        touched.push(c);
                    }
                    *k += 1;
                    let cl = &self.clauses[c as usize];
                    if *k == cl.size {
                        out.push(cl.sub);
                    }
                }
            });
        }
        for &c in touched.iter() {
            counts[c as usize] = 0;
        }
        ctx.finish(parts.segs, parts.vals);
        out.sort_unstable();
        if self.multi > 0 {
            out.dedup();
        }
    }

    fn len(&self) -> usize {
        self.subs.len()
    }
}
