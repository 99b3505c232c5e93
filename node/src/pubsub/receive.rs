//! The subscriber side of delivery: drops duplicates (by CID) and tracks `seq` per
//! (author, topic) so old or repeated events never reach a local subscriber twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use tidings_ipld_schema::{Cid, Event};

/// The `after` of a delivery whose sender cannot tell which earlier event was meant for the
/// receiver (a hole in its copy of the stream, or a long run of unmatched events).
pub const UNKNOWN_AFTER: u64 = u64::MAX;

/// CIDs remembered for duplicate detection.
const REMEMBER: usize = 1 << 16;

#[derive(Default)]
struct Inner {
    seen: HashSet<Cid>,
    order: VecDeque<Cid>,
    last_seq: HashMap<(Vec<u8>, String), (u64, Cid)>,
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
        /// The last seq seen before this one; with no `last_cid`, where repair stops.
        last: u64,
        /// That event's CID (where repair stops), if one was seen.
        last_cid: Option<Cid>,
    },
    /// New, but older than what was already delivered (a late copy after failover).
    Late,
    /// Seen before: drop.
    Duplicate,
}

impl Receiver {
    /// Classifies `event` and remembers it. `after` is the sender's word on the previous event
    /// of the stream meant for this node (0: none since it subscribed): only a jump past it is
    /// a gap, since events that match no filter here are never delivered. [`UNKNOWN_AFTER`]
    /// means the sender cannot tell, so any jump is treated as a gap: a repair that finds only
    /// unmatched events costs one fetch, a missed one would lose an event. With `accept_gap`
    /// false, an event after a gap is not remembered, so it can arrive again once the gap is
    /// repaired.
    pub fn arrive(&self, cid: &Cid, event: &Event, after: u64, accept_gap: bool) -> Arrival {
        let Ok(mut inner) = self.inner.lock() else {
            return Arrival::InOrder;
        };
        if inner.seen.contains(cid) {
            return Arrival::Duplicate;
        }
        let key = (event.author.clone(), event.topic.clone());
        let last = inner.last_seq.get(&key).copied();
        let gap = |l: u64| (after == UNKNOWN_AFTER || after > l) && event.seq > l + 1;
        // Nothing of the stream seen yet, but the sender names an earlier event meant for us:
        // the first deliveries were lost.
        let first_lost = last.is_none() && after != UNKNOWN_AFTER && after > 0;
        if !accept_gap {
            if let Some((l, last_cid)) = last
                && gap(l)
            {
                return Arrival::Gap {
                    last: l,
                    last_cid: Some(last_cid),
                };
            }
            if first_lost {
                // The sender's word reaches back to the event it named; with no `last_cid`, the
                // router may reach further for this node's durables (`first_repair_floor`).
                return Arrival::Gap {
                    last: after - 1,
                    last_cid: None,
                };
            }
        }
        inner.seen.insert(*cid);
        inner.order.push_back(*cid);
        if inner.order.len() > REMEMBER
            && let Some(old) = inner.order.pop_front()
        {
            inner.seen.remove(&old);
        }
        match last {
            Some((l, _)) if event.seq <= l => Arrival::Late,
            Some((l, last_cid)) => {
                inner.last_seq.insert(key, (event.seq, *cid));
                if gap(l) {
                    Arrival::Gap {
                        last: l,
                        last_cid: Some(last_cid),
                    }
                } else {
                    Arrival::InOrder
                }
            }
            None => {
                inner.last_seq.insert(key, (event.seq, *cid));
                if first_lost {
                    Arrival::Gap {
                        last: after - 1,
                        last_cid: None,
                    }
                } else {
                    Arrival::InOrder
                }
            }
        }
    }
}
