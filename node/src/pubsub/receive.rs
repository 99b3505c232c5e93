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
/// Ranges of skipped seqs remembered per stream (the oldest are forgotten first).
const SKIPPED_RANGES: usize = 32;

/// (author key, topic).
type StreamKey = (Vec<u8>, String);

#[derive(Default)]
struct Inner {
    seen: HashSet<Cid>,
    order: VecDeque<Cid>,
    last_seq: HashMap<StreamKey, (u64, Cid)>,
    /// Seqs a stream moved past without having them (a repair that found only part of a gap),
    /// as inclusive ranges: only these may still arrive late and be delivered. Anything else
    /// at or below the stream's last seq was delivered already, even once its CID has left
    /// `seen` (a stream tip re-routed by a new primary, a sync replaying what a partition hid).
    skipped: HashMap<StreamKey, VecDeque<(u64, u64)>>,
}

impl Inner {
    /// Takes `seq` out of the stream's skipped ranges; whether it was in one.
    fn fill_skipped(&mut self, key: &StreamKey, seq: u64) -> bool {
        let Some(ranges) = self.skipped.get_mut(key) else {
            return false;
        };
        let Some(i) = ranges
            .iter()
            .position(|(lo, hi)| (*lo..=*hi).contains(&seq))
        else {
            return false;
        };
        let (lo, hi) = ranges[i];
        ranges.remove(i);
        if seq < hi {
            ranges.push_back((seq + 1, hi));
        }
        if lo < seq {
            ranges.push_back((lo, seq - 1));
        }
        if ranges.is_empty() {
            self.skipped.remove(key);
        }
        true
    }

    fn note_skipped(&mut self, key: &StreamKey, lo: u64, hi: u64) {
        let ranges = self.skipped.entry(key.clone()).or_default();
        ranges.push_back((lo, hi));
        while ranges.len() > SKIPPED_RANGES {
            ranges.pop_front();
        }
    }
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
    /// New, and one of the seqs its stream skipped because a repair could not find them: it
    /// fills that hole late, out of order.
    Late,
    /// Seen before, or at or below the stream's last seq without filling a skipped one: drop.
    Duplicate,
}

impl Receiver {
    /// The last seq of the (author, topic) stream handed to this node's subscribers, if any
    /// was since the node started.
    pub fn last_seq(&self, author: &[u8], topic: &str) -> Option<u64> {
        let inner = self.inner.lock().ok()?;
        inner
            .last_seq
            .get(&(author.to_vec(), topic.to_string()))
            .map(|(s, _)| *s)
    }

    /// Classifies `event` and remembers it. `after` is the sender's word on the previous event
    /// of the stream meant for this node (0: none since it subscribed): only a jump past it is
    /// a gap, since events that match no filter here are never delivered. [`UNKNOWN_AFTER`]
    /// means the sender cannot tell, so any jump is treated as a gap: a repair that finds only
    /// unmatched events costs one fetch, a missed one would lose an event. The first event seen
    /// of a stream is a gap unless the sender says nothing earlier was meant for us (`after` 0)
    /// or it is the stream's first: with [`UNKNOWN_AFTER`], `last` is the seq before it and the
    /// router decides how far back to look. With `accept_gap` false, an event after a gap is
    /// not remembered, so it can arrive again once the gap is repaired; with it true (after a
    /// repair), the seqs still missing are remembered as skipped.
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
        // Nothing of the stream seen yet, but the sender names an earlier event meant for us (or
        // cannot tell whether there was one): the first deliveries may have been lost.
        let first_lost = last.is_none() && after > 0 && event.seq > 1;
        let named = after.min(event.seq).saturating_sub(1);
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
                // router may reach further for this node's subscriptions (`first_repair_floor`).
                return Arrival::Gap {
                    last: named,
                    last_cid: None,
                };
            }
        }
        if let Some((l, _)) = last
            && event.seq <= l
            && !inner.fill_skipped(&key, event.seq)
        {
            return Arrival::Duplicate;
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
                inner.last_seq.insert(key.clone(), (event.seq, *cid));
                if gap(l) {
                    inner.note_skipped(&key, l + 1, event.seq - 1);
                    Arrival::Gap {
                        last: l,
                        last_cid: Some(last_cid),
                    }
                } else {
                    Arrival::InOrder
                }
            }
            None => {
                inner.last_seq.insert(key.clone(), (event.seq, *cid));
                if first_lost {
                    // How far back the stream is owed is not known here: anything older may
                    // still arrive and be delivered.
                    inner.note_skipped(&key, 1, event.seq - 1);
                    Arrival::Gap {
                        last: named,
                        last_cid: None,
                    }
                } else {
                    Arrival::InOrder
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_ipld_schema::{Ipld, Keypair};

    /// Events 1..=n of one author's stream on `/t/r`.
    fn stream(n: u64) -> Vec<(Cid, Event)> {
        let kp = Keypair::ed25519_from_bytes([3; 32]).expect("key");
        let mut prev = vec![];
        (1..=n)
            .map(|seq| {
                let e = Event::sign(
                    &kp,
                    "/t/r",
                    Ipld::Integer(seq.into()),
                    seq,
                    seq,
                    prev.clone(),
                )
                .expect("sign");
                let cid = e.to_block().expect("block").cid;
                prev = vec![cid];
                (cid, e)
            })
            .collect()
    }

    #[test]
    fn in_order_then_duplicates_by_cid() {
        let s = stream(3);
        let r = Receiver::default();
        for (i, (cid, e)) in s.iter().enumerate() {
            assert_eq!(r.arrive(cid, e, i as u64, false), Arrival::InOrder);
        }
        assert_eq!(r.arrive(&s[1].0, &s[1].1, 1, false), Arrival::Duplicate);
    }

    #[test]
    fn a_gap_is_reported_unremembered_then_accepted_after_repair() {
        let s = stream(5);
        let r = Receiver::default();
        assert_eq!(r.arrive(&s[0].0, &s[0].1, 0, false), Arrival::InOrder);
        let gap = Arrival::Gap {
            last: 1,
            last_cid: Some(s[0].0),
        };
        // Not remembered: it comes again once the repair ran.
        assert_eq!(r.arrive(&s[3].0, &s[3].1, 3, false), gap);
        assert_eq!(r.arrive(&s[3].0, &s[3].1, 3, false), gap);
        for (cid, e) in &s[1..4] {
            assert_eq!(r.arrive(cid, e, e.seq - 1, true), Arrival::InOrder);
        }
        // A jump past events the sender says were not meant for us is no gap.
        let s6 = stream(7);
        assert_eq!(r.arrive(&s6[6].0, &s6[6].1, 4, false), Arrival::InOrder);
    }

    #[test]
    fn a_stream_first_seen_mid_way_is_a_gap_unless_nothing_earlier_was_meant_for_us() {
        let s = stream(9);
        let r = Receiver::default();
        // The sender names seq 3 as the previous event meant for us: repair reaches back to it.
        assert_eq!(
            r.arrive(&s[5].0, &s[5].1, 3, false),
            Arrival::Gap {
                last: 2,
                last_cid: None
            }
        );
        // The sender cannot tell (a hole in its own copy): the router decides how far back.
        assert_eq!(
            r.arrive(&s[5].0, &s[5].1, UNKNOWN_AFTER, false),
            Arrival::Gap {
                last: 5,
                last_cid: None
            }
        );
        // Nothing earlier meant for us, or the stream's very first event: in order.
        assert_eq!(r.arrive(&s[5].0, &s[5].1, 0, false), Arrival::InOrder);
        let r = Receiver::default();
        assert_eq!(
            r.arrive(&s[0].0, &s[0].1, UNKNOWN_AFTER, false),
            Arrival::InOrder
        );
        // Accepted without a repair, the earlier seqs stay deliverable if they turn up.
        let r = Receiver::default();
        assert!(matches!(
            r.arrive(&s[5].0, &s[5].1, 3, true),
            Arrival::Gap { .. }
        ));
        assert_eq!(r.arrive(&s[2].0, &s[2].1, 2, false), Arrival::Late);
        assert_eq!(r.arrive(&s[6].0, &s[6].1, 6, false), Arrival::InOrder);
    }

    #[test]
    fn an_old_event_whose_cid_was_forgotten_is_a_duplicate_unless_it_fills_a_skipped_seq() {
        let s = stream(6);
        let r = Receiver::default();
        assert_eq!(r.arrive(&s[0].0, &s[0].1, 0, false), Arrival::InOrder);
        // A repair found only seq 4 of 2..=4: seqs 2 and 3 are skipped.
        assert!(matches!(
            r.arrive(&s[3].0, &s[3].1, 3, true),
            Arrival::Gap { .. }
        ));
        assert_eq!(r.arrive(&s[4].0, &s[4].1, 4, true), Arrival::InOrder);
        // Forget every CID seen, as a long run of other events would.
        if let Ok(mut i) = r.inner.lock() {
            i.seen.clear();
            i.order.clear();
        }
        // Seq 1 and 4 were delivered: dropped even though their CIDs were forgotten.
        assert_eq!(r.arrive(&s[0].0, &s[0].1, 0, true), Arrival::Duplicate);
        assert_eq!(r.arrive(&s[3].0, &s[3].1, 3, false), Arrival::Duplicate);
        // Seq 3 and 2 were skipped: each is delivered late, once.
        assert_eq!(r.arrive(&s[2].0, &s[2].1, 2, false), Arrival::Late);
        assert_eq!(r.arrive(&s[2].0, &s[2].1, 2, false), Arrival::Duplicate);
        assert_eq!(r.arrive(&s[1].0, &s[1].1, 1, true), Arrival::Late);
        if let Ok(i) = r.inner.lock() {
            assert!(i.skipped.is_empty(), "every skipped seq was filled");
        }
    }
}
