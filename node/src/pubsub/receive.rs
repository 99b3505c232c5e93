//! The subscriber side of delivery: drops duplicates (by CID) and tracks `seq` per
//! (author, topic) so old or repeated events never reach a local subscriber twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use tidings_ipld_schema::{Cid, Event};

/// CIDs remembered for duplicate detection.
const REMEMBER: usize = 1 << 16;

#[derive(Default)]
struct Inner {
    seen: HashSet<Cid>,
    order: VecDeque<Cid>,
    last_seq: HashMap<(Vec<u8>, String), u64>,
}

/// Duplicate and order bookkeeping for events arriving at this node.
#[derive(Default)]
pub struct Receiver {
    inner: Mutex<Inner>,
}

/// What to do with an arriving event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// New and next in its stream (or the first seen of it).
    InOrder,
    /// New, but `seq` skipped ahead: events in between are missing.
    Gap {
        /// The last seq seen before this one.
        last: u64,
    },
    /// New, but older than what was already delivered (a late copy after failover).
    Late,
    /// Seen before: drop.
    Duplicate,
}

impl Receiver {
    /// Classifies `event` and remembers it.
    pub fn arrive(&self, cid: &Cid, event: &Event) -> Arrival {
        let Ok(mut inner) = self.inner.lock() else {
            return Arrival::InOrder;
        };
        if !inner.seen.insert(*cid) {
            return Arrival::Duplicate;
        }
        inner.order.push_back(*cid);
        if inner.order.len() > REMEMBER
            && let Some(old) = inner.order.pop_front()
        {
            inner.seen.remove(&old);
        }
        let key = (event.author.clone(), event.topic.clone());
        let last = inner.last_seq.get(&key).copied();
        match last {
            Some(l) if event.seq <= l => Arrival::Late,
            Some(l) => {
                inner.last_seq.insert(key, event.seq);
                if event.seq == l + 1 {
                    Arrival::InOrder
                } else {
                    Arrival::Gap { last: l }
                }
            }
            None => {
                inner.last_seq.insert(key, event.seq);
                Arrival::InOrder
            }
        }
    }
}
