//! The parallel search tree (Gryphon: Aguilera, Strom, Sturman, Astley, Chandra, "Matching
//! events in a content-based subscription system", PODC 1999).
//!
//! Each subscription conjunction is a path from the root; each edge is one test on one
//! attribute; the subscription id sits in the node where its path ends. Topic segments are
//! attributes (`Seg(i)` and the segment count), so topic patterns and content conditions share
//! one tree. Matching an event walks every satisfied edge (hence "parallel" search).
//!
//! Optimisations used, and why:
//!
//! * **Collapsed `*` chains.** A classic PST has one level per attribute and a `*` (don't care)
//!   edge wherever a subscription skips an attribute, so most paths are long chains of `*`
//!   edges. Here a node keeps, instead of one attribute, one *bucket per attribute tested next*
//!   by the subscriptions below it; a subscription that does not test an attribute simply does
//!   not have an edge for it. That is exactly the tree with every `*` chain collapsed: nothing
//!   is stored or walked for "don't care", and `/stocks/**` costs one edge.
//! * **Factoring on high-selectivity equality attributes, attribute order by selectivity.**
//!   Each conjunction's tests are ordered: topic segments first (segment 0 is the rendezvous
//!   root, literal segments are highly selective), then equality tests by decreasing number of
//!   distinct values already indexed for that attribute (e.g. `symbol` with 500 values before
//!   `order` with 2), then range tests, then `prefix`, then residual tests. Equality tests
//!   are hash lookups that follow at most one edge, so putting them first factors the tree
//!   into small subtrees, and the range edges (which may each be satisfied) and residual
//!   tests (evaluated one by one) are only reached below matching equality edges.
//! * **Shared edges.** Identical tests at a node share one edge (`price < 10` from many
//!   subscriptions), so common prefixes of conjunctions are stored and walked once.
//! * **Indexed edges.** Equality edges are hash maps (small vectors up to 8 entries), range
//!   edges sorted vectors searched by binary search (the satisfied ones are a contiguous run),
//!   `prefix` edges a hash map probed with each prefix of the value.
//! * **Per-event work done once.** The topic is split once, each attribute's value is read
//!   from the body and classified (numeric strings parsed) at most once per event, and all
//!   buffers (value cache, DFS stack) are reused between events: matching allocates nothing
//!   except for JSONPath attributes.
//! * **Cheap insert and remove.** Insert walks one path; remove goes from the id straight to
//!   its leaf nodes (id -> (node, position)), removes in O(1) by swap, and prunes emptied nodes
//!   upwards via parent links, so no scan of the tree is needed.

use std::sync::Mutex;

use serde_json::Value;

use crate::ast::Test;
use crate::attrs::{AttrKey, AttrTable, Cond, Scratch, ScratchGuard, conds_of};
use crate::filter::Filter;
use crate::hash::FastMap;
use crate::index::{AttrIndex, Kind, kind};
use crate::{Matcher, SubId};

const ROOT: u32 = 0;

/// The edge that leads to a node (kept for pruning).
struct Label {
    attr: u32,
    test: Test,
    neg: bool,
}

struct Bucket {
    attr: u32,
    idx: AttrIndex<u32>,
}

#[derive(Default)]
struct Node {
    subs: Vec<SubId>,
    buckets: Vec<Bucket>,
    parent: u32,
    label: Option<Box<Label>>,
}

/// Where a subscription's conjunctions end: (node, position in its `subs`). 16 bytes.
enum Leaves {
    One(u32, u32),
    Many(Box<[(u32, u32)]>),
}

impl Leaves {
    fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        type Split<'a> = (Option<(u32, u32)>, &'a [(u32, u32)]);
        let (one, many): Split<'_> = match self {
            Leaves::One(n, p) => (Some((*n, *p)), &[]),
            Leaves::Many(v) => (None, v),
        };
        one.into_iter().chain(many.iter().copied())
    }

    fn set_pos(&mut self, node: u32, old: u32, new: u32) {
        match self {
            Leaves::One(n, p) => {
                if *n == node && *p == old {
                    *p = new;
                }
            }
            Leaves::Many(v) => {
                if let Some(e) = v.iter_mut().find(|e| **e == (node, old)) {
                    e.1 = new;
                }
            }
        }
    }
}

/// Gryphon-style parallel search tree. See the module docs for the optimisations used.
pub struct ParallelSearchTree {
    nodes: Vec<Node>,
    free: Vec<u32>,
    attrs: AttrTable,
    /// Per attribute id: equality edges in the tree (the selectivity estimate).
    eq_edges: Vec<u32>,
    subs: FastMap<SubId, Leaves>,
    /// Subscriptions with more than one conjunction (their ids may be found twice).
    multi: usize,
    scratch: Mutex<Scratch>,
}

impl Default for ParallelSearchTree {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ParallelSearchTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelSearchTree")
            .field("subscriptions", &self.subs.len())
            .field("nodes", &self.node_count())
            .finish()
    }
}

impl ParallelSearchTree {
    /// An empty tree.
    pub fn new() -> Self {
        ParallelSearchTree {
            nodes: vec![Node::default()],
            free: Vec::new(),
            attrs: AttrTable::default(),
            eq_edges: Vec::new(),
            subs: FastMap::default(),
            multi: 0,
            scratch: Mutex::new(Scratch::default()),
        }
    }

    /// Live tree nodes (root included).
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Approximate heap bytes owned by the tree (nodes, edges, id map).
    pub fn heap_bytes(&self) -> usize {
        let mut n = self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.subs.capacity() * (std::mem::size_of::<(SubId, Leaves)>() + 1)
            + self.attrs.heap_bytes();
        for node in &self.nodes {
            n += node.subs.capacity() * 8;
            n += node.buckets.capacity() * std::mem::size_of::<Bucket>();
            n += node
                .label
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Label>());
            for b in &node.buckets {
                n += b.idx.heap_bytes();
            }
        }
        n
    }

    fn eq_count(&self, attr: Option<u32>) -> u32 {
        attr.and_then(|a| self.eq_edges.get(a as usize).copied())
            .unwrap_or(0)
    }

    /// Ordering key of a condition (see the module docs).
    fn rank(&self, c: &Cond) -> (u8, u64) {
        let json = matches!(c.key, AttrKey::Json(_));
        let id = self.attrs.get(&c.key);
        let idk = u64::from(id.unwrap_or(u32::MAX));
        match (kind(&c.test, c.neg, json), &c.key) {
            (Kind::Eq, AttrKey::Seg(i)) => (0, u64::from(*i)),
            (Kind::Eq, _) => (1, (u64::from(u32::MAX - self.eq_count(id)) << 32) | idk),
            (Kind::Range, _) => (2, idk),
            (Kind::Prefix, _) => (3, idk),
            (Kind::Residual, _) => (4, idk),
        }
    }

    fn alloc(&mut self, node: Node) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn insert_clause(&mut self, mut conds: Vec<Cond>) -> u32 {
        let mut keyed: Vec<((u8, u64), Cond)> =
            conds.drain(..).map(|c| (self.rank(&c), c)).collect();
        keyed.sort_by_key(|(k, _)| *k);
        let mut cur = ROOT;
        for (_, c) in keyed {
            let json = matches!(c.key, AttrKey::Json(_));
            let id = self.attrs.get(&c.key);
            let node = &self.nodes[cur as usize];
            let bucket = id.and_then(|a| node.buckets.iter().position(|b| b.attr == a));
            if let Some(child) = bucket.and_then(|b| node.buckets[b].idx.find(&c.test, c.neg, json))
            {
                cur = child;
                continue;
            }
            let attr = self.attrs.acquire(&c.key);
            if kind(&c.test, c.neg, json) == Kind::Eq {
                if self.eq_edges.len() <= attr as usize {
                    self.eq_edges.resize(attr as usize + 1, 0);
                }
                self.eq_edges[attr as usize] += 1;
            }
            let child = self.alloc(Node {
                subs: Vec::new(),
                buckets: Vec::new(),
                parent: cur,
                label: Some(Box::new(Label {
                    attr,
                    test: c.test.clone(),
                    neg: c.neg,
                })),
            });
            let node = &mut self.nodes[cur as usize];
            let b = match node.buckets.iter().position(|b| b.attr == attr) {
                Some(b) => b,
                None => {
                    node.buckets.reserve_exact(1);
                    node.buckets.push(Bucket {
                        attr,
                        idx: AttrIndex::new(),
                    });
                    node.buckets.len() - 1
                }
            };
            node.buckets[b].idx.insert(&c.test, c.neg, json, child);
            cur = child;
        }
        cur
    }

    /// Removes empty nodes from `n` upwards.
    fn prune(&mut self, mut n: u32) {
        while n != ROOT {
            let node = &mut self.nodes[n as usize];
            if !node.subs.is_empty() || !node.buckets.is_empty() {
                return;
            }
            let parent = node.parent;
            let Some(label) = node.label.take() else {
                return;
            };
            *node = Node::default();
            self.free.push(n);
            let json = matches!(self.attrs.key(label.attr), Some(AttrKey::Json(_)));
            let p = &mut self.nodes[parent as usize];
            if let Some(b) = p.buckets.iter().position(|b| b.attr == label.attr) {
                p.buckets[b].idx.remove(&label.test, label.neg, json);
                if p.buckets[b].idx.is_empty() {
                    p.buckets.swap_remove(b);
                    if p.buckets.is_empty() {
                        p.buckets = Vec::new();
                    }
                }
            }
            if kind(&label.test, label.neg, json) == Kind::Eq
                && let Some(c) = self.eq_edges.get_mut(label.attr as usize)
            {
                *c = c.saturating_sub(1);
            }
            self.attrs.release(label.attr);
            n = parent;
        }
    }
}

impl Matcher for ParallelSearchTree {
    fn insert(&mut self, id: SubId, filter: &Filter) {
        self.remove(id);
        let clauses = conds_of(filter);
        let mut leaves = Vec::with_capacity(clauses.len());
        for c in clauses {
            let leaf = self.insert_clause(c);
            let node = &mut self.nodes[leaf as usize];
            leaves.push((leaf, node.subs.len() as u32));
            // Exact growth: most leaves hold one or a few ids.
            node.subs.reserve_exact(1);
            node.subs.push(id);
        }
        let entry = if leaves.len() == 1 {
            Leaves::One(leaves[0].0, leaves[0].1)
        } else {
            if leaves.len() > 1 {
                self.multi += 1;
            }
            Leaves::Many(leaves.into_boxed_slice())
        };
        self.subs.insert(id, entry);
    }

    fn remove(&mut self, id: SubId) -> bool {
        let Some(entry) = self.subs.remove(&id) else {
            return false;
        };
        if let Leaves::Many(v) = &entry
            && v.len() > 1
        {
            self.multi -= 1;
        }
        let leaves: Vec<(u32, u32)> = entry.iter().collect();
        for (node, pos) in leaves {
            let subs = &mut self.nodes[node as usize].subs;
            // The recorded position is always right; the search is only a safety net.
            let Some(pos) = (if subs.get(pos as usize) == Some(&id) {
                Some(pos)
            } else {
                subs.iter().position(|s| *s == id).map(|p| p as u32)
            }) else {
                continue;
            };
            let last = (subs.len() - 1) as u32;
            subs.swap_remove(pos as usize);
            if pos != last {
                let moved = subs[pos as usize];
                if let Some(e) = self.subs.get_mut(&moved) {
                    e.set_pos(node, last, pos);
                }
            }
            if subs.is_empty() {
                *subs = Vec::new();
            }
            self.prune(node);
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
        let stack = parts.stack;
        stack.clear();
        stack.push(ROOT);
        while let Some(n) = stack.pop() {
            let node = &self.nodes[n as usize];
            out.extend_from_slice(&node.subs);
            for b in &node.buckets {
                let r = ctx.get(&self.attrs, b.attr);
                b.idx.for_each(r, |c| stack.push(c));
            }
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
