//! Streams held behind a gap no source could fill yet.
//!
//! Events of one (author, topic) reach local subscribers in `seq` order. When an event reveals a
//! gap and the repair cannot find every missing event (each node that holds them is killed, cut
//! off or still restarting), delivering past the gap would break that order the moment the
//! missing events turn up. So the stream is held instead: the event, and every later one of its
//! stream, waits here while the repair is retried with backoff. Once the repair completes, what it
//! found and what waited reach the subscribers in order. Only after [`HOLD_FOR`] (or
//! [`HOLD_MAX`] waiting events) does the stream move past what is still missing, as before: then
//! the gap is logged, and a missing event that turns up later is still delivered (late).
//!
//! Other streams are not held up: only the held stream's events wait. The same queue serialises
//! repairs: while one task repairs a gap in a stream and hands out what it found, the stream's
//! other arrivals (another primary's delivery, this node's own routing) wait behind it, so two
//! repairs of one stream never interleave their events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tidings_ipld_schema::{Block, Event};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::pubsub::receive::Arrival;
use crate::pubsub::router::Router;

/// How long a stream is held behind a gap before it moves past what is still missing: long
/// enough for a killed node to restart or a partition to heal, short enough that a gap whose
/// only copies are gone for good does not stop the stream for long.
pub const HOLD_FOR: Duration = Duration::from_secs(60);
/// Events waiting behind one gap at most; beyond this the stream moves on at once.
pub const HOLD_MAX: usize = 4096;
/// First wait before the repair is tried again (doubling per try up to [`RETRY_MAX`]).
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(4);

/// (author key, topic).
pub(crate) type StreamKey = (Vec<u8>, String);

/// An event waiting behind a gap: who delivered it, the event, and its `after`.
pub(crate) type Waiting = (PeerId, Block, Event, u64);

/// The held streams and their waiting events, in arrival order.
pub(crate) struct Held {
    streams: Mutex<HashMap<StreamKey, Vec<Waiting>>>,
    /// Streams newly held, for [`Router::retry_held`].
    start_tx: mpsc::UnboundedSender<StreamKey>,
    start_rx: Mutex<Option<mpsc::UnboundedReceiver<StreamKey>>>,
}

impl Default for Held {
    fn default() -> Self {
        let (start_tx, start_rx) = mpsc::unbounded_channel();
        Held {
            streams: Mutex::default(),
            start_tx,
            start_rx: Mutex::new(Some(start_rx)),
        }
    }
}

impl Held {
    /// Queues `w` behind its stream's gap if the stream is held; gives it back if not.
    pub(crate) fn wait_if_held(&self, w: Waiting) -> Option<Waiting> {
        let Ok(mut s) = self.streams.lock() else {
            return Some(w);
        };
        match s.get_mut(&key_of(&w.2)) {
            Some(q) => {
                q.push(w);
                None
            }
            None => Some(w),
        }
    }

    /// Claims `w`'s stream for the caller, which is about to repair a gap in it: until the
    /// claim is let go ([`Held::drain_or_release`]), later arrivals of the stream wait here, so
    /// two deliveries of one stream (from two primaries, or a remote one and this node's own
    /// routing) never hand their repairs out interleaved. Gives `w` back if the caller has the
    /// claim; queues it (`None`) if another task holds the stream.
    pub(crate) fn claim_or_wait(&self, w: Waiting) -> Option<Waiting> {
        let key = key_of(&w.2);
        let Ok(mut s) = self.streams.lock() else {
            return Some(w);
        };
        match s.get_mut(&key) {
            Some(q) => {
                q.push(w);
                None
            }
            None => {
                s.insert(key, Vec::new());
                Some(w)
            }
        }
    }

    /// Turns the caller's claim on `w`'s stream into a hold behind a gap not repaired yet
    /// (queuing `w`), and has the repair retried.
    pub(crate) fn hold_claimed(&self, w: Waiting) {
        let key = key_of(&w.2);
        let Ok(mut s) = self.streams.lock() else {
            return;
        };
        s.entry(key.clone()).or_default().push(w);
        let _ = self.start_tx.send(key);
    }

    /// The newest waiting event of a held stream (the repair's starting point) and how many wait.
    fn newest(&self, key: &StreamKey) -> Option<(Waiting, usize)> {
        let s = self.streams.lock().ok()?;
        let q = s.get(key)?;
        let w = q.iter().max_by_key(|w| w.2.seq)?;
        Some((w.clone(), q.len()))
    }

    /// Takes the events waiting now, oldest seq first; with none left, lets the stream go (later
    /// arrivals take the usual path).
    pub(crate) fn drain_or_release(&self, key: &StreamKey) -> Vec<Waiting> {
        let Ok(mut s) = self.streams.lock() else {
            return Vec::new();
        };
        let Some(q) = s.get_mut(key) else {
            return Vec::new();
        };
        if q.is_empty() {
            s.remove(key);
            return Vec::new();
        }
        let mut out = std::mem::take(q);
        out.sort_by_key(|w| w.2.seq);
        out
    }

    /// How many streams are held now.
    pub(crate) fn len(&self) -> usize {
        self.streams.lock().map(|s| s.len()).unwrap_or(0)
    }
}

fn key_of(e: &Event) -> StreamKey {
    (e.author.clone(), e.topic.clone())
}

impl Router {
    /// Retries the repair of every held stream until it completes or the hold runs out, then
    /// hands what was found and what waited to local subscribers, in order. Runs until the node
    /// stops.
    pub async fn retry_held(self: Arc<Self>) {
        let Some(mut starts) = self.held().start_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        while let Some(key) = starts.recv().await {
            tokio::spawn(self.clone().retry_one(key));
        }
    }

    async fn retry_one(self: Arc<Self>, key: StreamKey) {
        let began = Instant::now();
        let mut wait = RETRY_FIRST;
        Metrics::inc(&self.metrics().streams_held);
        tracing::info!(topic = %key.1, "gap not repaired yet: holding the stream's later events and retrying");
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
            let Some(((from, block, event, after), waiting)) = self.held().newest(&key) else {
                return;
            };
            let give_up = began.elapsed() >= HOLD_FOR || waiting >= HOLD_MAX;
            let hand = self.hand_lock().await;
            let arrival = self.receiver().arrive(&block.cid, &event, after, false);
            let (last, last_cid) = match arrival {
                Arrival::Gap { last, last_cid } => {
                    drop(hand);
                    (last, last_cid)
                }
                // Nothing missing below it any more: it is next (now recorded as handed on).
                Arrival::InOrder | Arrival::Late => {
                    self.deliver_local(&block.cid, &event).await;
                    break;
                }
                Arrival::Duplicate => break,
            };
            let (found, complete) = self
                .repair_gap(from, &block, &event, after, last, last_cid)
                .await;
            if complete || give_up {
                if !complete {
                    Metrics::inc(&self.metrics().streams_held_given_up);
                    tracing::warn!(topic = %key.1, held_for = ?began.elapsed(), waiting, "gap still not repaired: the stream moves past it");
                } else {
                    tracing::info!(topic = %key.1, held_for = ?began.elapsed(), waiting, "held gap repaired: delivering in order");
                }
                self.hand_repaired(found, complete, last_cid, &block, &event, after)
                    .await;
                break;
            }
        }
        self.hand_waiting(&key).await;
    }

    /// Hands on what waited behind a claimed or held stream (and whatever arrives meanwhile),
    /// oldest first, then lets the stream go: only once nothing waits, so nothing overtakes it.
    pub(crate) async fn hand_waiting(&self, key: &StreamKey) {
        loop {
            let batch = self.held().drain_or_release(key);
            if batch.is_empty() {
                return;
            }
            for (from, block, event, after) in batch {
                // Boxed: `arrive_unheld` comes back here (never with `may_hold` false, but the
                // compiler cannot know).
                Box::pin(self.arrive_unheld(from, &block, &event, after, false)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_ipld_schema::{Ipld, Keypair};

    fn waiting(seq: u64) -> Waiting {
        let kp = Keypair::ed25519_from_bytes([9; 32]).expect("key");
        let (e, b) = Event::sign_block(&kp, "/h/x", Ipld::Integer(seq as i128), seq, seq, vec![])
            .expect("sign");
        (PeerId::random(), b, e, seq - 1)
    }

    #[test]
    fn a_claimed_stream_queues_other_arrivals_and_lets_go_only_when_nothing_waits() {
        let held = Held::default();
        let key = key_of(&waiting(1).2);
        // The first gap claims the stream; the others' events of it wait, whoever sent them.
        assert!(held.claim_or_wait(waiting(9)).is_some());
        assert!(held.claim_or_wait(waiting(7)).is_none());
        assert!(held.wait_if_held(waiting(8)).is_none());
        assert_eq!(held.len(), 1);
        // Handed on oldest first; the claim stays until a drain finds nothing.
        let seqs: Vec<u64> = held
            .drain_or_release(&key)
            .iter()
            .map(|w| w.2.seq)
            .collect();
        assert_eq!(seqs, [7, 8]);
        assert!(
            held.wait_if_held(waiting(10)).is_none(),
            "still claimed while handing on"
        );
        assert_eq!(held.drain_or_release(&key).len(), 1);
        assert!(held.drain_or_release(&key).is_empty());
        assert_eq!(held.len(), 0);
        // Let go: arrivals take the usual path again.
        assert!(held.wait_if_held(waiting(11)).is_some());
    }

    #[test]
    fn holding_a_claimed_stream_queues_the_event_and_asks_for_retries_once() {
        let held = Held::default();
        let mut starts = held.start_rx.lock().expect("lock").take().expect("rx");
        assert!(held.claim_or_wait(waiting(5)).is_some());
        held.hold_claimed(waiting(5));
        let key = starts.try_recv().expect("a retry was asked for");
        assert_eq!(key, key_of(&waiting(5).2));
        assert!(starts.try_recv().is_err());
        let newest = held.newest(&key).expect("held");
        assert_eq!((newest.0.2.seq, newest.1), (5, 1));
    }
}
