//! This node's own publishes on one topic, pipelined. Event `n + 1` is signed and queued to the
//! store's writer as soon as `n` is queued, not once `n` is durable, so one topic goes at the
//! writer's group-commit rate instead of one commit per publish. What keeps this safe:
//!
//! * The writer applies queued events in order and refuses one whose predecessor is not stored
//!   ([`crate::store::Store::queue_signed`]): if `n` fails, `n + 1` fails too, and the chain
//!   stays gap-free.
//! * Nothing leaves the node before its own copy is durable, and a durable `n + 1` means a
//!   durable `n`: a crash loses only events nobody else has seen, so the restarted node's new
//!   `n` equivocates with nothing.
//! * Each publish hands its event on (to the replicas, or to a remote primary) and queues its
//!   deliveries only after the publish before it did ([`Turn`]): the set and the subscribers
//!   see the stream in `seq` order.
//!
//! A primary keeps the same order for publishes that other nodes pipeline to it ([`Streams`]):
//! event `n + 1` of an (author, topic) stream is stored, replicated and routed after `n`,
//! whatever order the requests arrived in, waiting at most [`WAIT_FOR_PREDECESSOR`] for `n`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_ipld_schema::Cid;
use tokio::sync::{oneshot, watch};

/// One topic's publishing state, behind the topic's lock (held only while an event is signed
/// and queued).
#[derive(Debug, Default)]
pub(crate) struct Lane {
    /// `seq` and CID of the last event signed here on the topic, which may not be durable yet.
    pub(crate) last: Option<(u64, Cid)>,
    sent: Option<oneshot::Receiver<()>>,
    routed: Option<oneshot::Receiver<()>>,
}

impl Lane {
    /// The next publish's place, behind every publish that took one before it.
    pub(crate) fn take_turn(&mut self) -> Turn {
        let (sent, sent_rx) = oneshot::channel();
        let (routed, routed_rx) = oneshot::channel();
        Turn {
            after_sent: self.sent.replace(sent_rx),
            sent: Some(sent),
            after_routed: self.routed.replace(routed_rx),
            routed: Some(routed),
            stream: None,
        }
    }

    /// Forgets `cid` as the last event signed if it is (its commit failed): the next publish
    /// reads its links from the store.
    pub(crate) fn forget(&mut self, cid: &Cid) {
        if self.last.is_some_and(|(_, c)| c == *cid) {
            self.last = None;
        }
    }
}

/// A publish's place in its topic's lane, or in a stream a primary keeps in order. Each step
/// waits for the publish before it to have done the same step, or to have given up (dropping
/// a turn releases whoever waits on it).
#[derive(Debug, Default)]
pub(crate) struct Turn {
    /// This node's own publish: released by the one before it.
    after_sent: Option<oneshot::Receiver<()>>,
    sent: Option<oneshot::Sender<()>>,
    after_routed: Option<oneshot::Receiver<()>>,
    routed: Option<oneshot::Sender<()>>,
    /// Another node's publish, event `seq` of a stream this primary orders.
    stream: Option<(Arc<watch::Sender<Progress>>, u64)>,
}

impl Turn {
    /// Nothing to wait for.
    pub(crate) fn none() -> Turn {
        Turn::default()
    }

    /// Waits until the publish before this one has handed its event on.
    pub(crate) async fn wait_sent(&mut self) {
        if let Some(before) = self.after_sent.take() {
            let _ = before.await;
        }
        if let Some((progress, seq)) = &self.stream {
            wait_for(progress, |p| p.sent, *seq).await;
        }
    }

    /// This publish has handed its event on: the next may hand on its own.
    pub(crate) fn sent(&mut self) {
        self.sent = None;
        if let Some((progress, seq)) = &self.stream {
            progress.send_modify(|p| p.sent = p.sent.max(*seq));
        }
    }

    /// Waits until the publish before this one has queued its deliveries.
    pub(crate) async fn wait_routed(&mut self) {
        if let Some(before) = self.after_routed.take() {
            let _ = before.await;
        }
        if let Some((progress, seq)) = &self.stream {
            wait_for(progress, |p| p.routed, *seq).await;
        }
    }

    /// This publish has queued its deliveries.
    pub(crate) fn routed(&mut self) {
        self.routed = None;
        if let Some((progress, seq)) = &self.stream {
            progress.send_modify(|p| p.routed = p.routed.max(*seq));
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // A publish that gave up (refused, or no majority) lets the next go on at once.
        if let Some((progress, seq)) = &self.stream {
            progress.send_modify(|p| {
                p.sent = p.sent.max(*seq);
                p.routed = p.routed.max(*seq);
                p.in_flight = p.in_flight.saturating_sub(1);
            });
        }
    }
}

/// How far a primary has got with a stream from another node: the highest `seq` handed on
/// (stored and sent to the replicas) and routed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Progress {
    sent: u64,
    routed: u64,
    /// Publishes of the stream under way here.
    in_flight: u64,
}

/// How long a primary holds a stream's event `n + 1` for `n`: long enough for a request sent
/// just before it, short enough that an `n` that never comes (its publish failed over to
/// another member, or was lost with a connection) delays the stream by little. `n + 1` then
/// goes on with a hole before it, which replica sync fills.
pub(crate) const WAIT_FOR_PREDECESSOR: Duration = Duration::from_secs(1);

/// Streams with more entries than this are pruned of the idle ones.
const MAX_STREAMS: usize = 65_536;

async fn wait_for(progress: &watch::Sender<Progress>, step: fn(&Progress) -> u64, seq: u64) {
    let before = seq.saturating_sub(1);
    let mut rx = progress.subscribe();
    if tokio::time::timeout(WAIT_FOR_PREDECESSOR, rx.wait_for(|p| step(p) >= before))
        .await
        .is_err()
    {
        tracing::debug!(
            seq,
            "a stream's previous event did not come in time; going on without it"
        );
    }
}

/// An (author, topic) stream.
type StreamKey = (Vec<u8>, String);

/// The order a primary keeps per (author, topic) for the publishes other nodes send it.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    streams: Mutex<HashMap<StreamKey, Arc<watch::Sender<Progress>>>>,
}

impl Streams {
    /// Event `seq` of (`author`, `topic`)'s place. `stored` gives the stream's last stored
    /// `seq`, read when the stream's progress is behind `seq - 1` and none of its publishes is
    /// under way here (a restarted primary, or one that held the stream as a replica, waits
    /// for nothing it already holds).
    pub(crate) fn turn(
        &self,
        author: &[u8],
        topic: &str,
        seq: u64,
        stored: impl FnOnce() -> u64,
    ) -> Turn {
        let Ok(mut streams) = self.streams.lock() else {
            return Turn::none();
        };
        if streams.len() > MAX_STREAMS {
            streams.retain(|_, p| Arc::strong_count(p) > 1);
        }
        let progress = streams
            .entry((author.to_vec(), topic.to_string()))
            .or_default()
            .clone();
        // Not seen yet, or behind with nothing of the stream under way here: what the store
        // holds came another way (replicated while another member was primary, say, or before
        // a restart) and needs no waiting for. While publishes are under way here the store is
        // no guide: it holds events stored here and not routed yet.
        let stored = {
            let p = progress.borrow();
            (p.in_flight == 0 && p.sent < seq.saturating_sub(1)).then(stored)
        };
        progress.send_modify(|p| {
            p.in_flight += 1;
            if let Some(last) = stored
                && p.in_flight == 1
            {
                p.sent = p.sent.max(last);
                p.routed = p.routed.max(last);
            }
        });
        Turn {
            after_sent: None,
            sent: None,
            after_routed: None,
            routed: None,
            stream: Some((progress, seq)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_release_in_the_order_they_were_taken() {
        let mut lane = Lane::default();
        let mut first = lane.take_turn();
        let mut second = lane.take_turn();
        let mut third = lane.take_turn();
        // The first waits for nobody.
        assert!(futures::poll!(std::pin::pin!(first.wait_sent())).is_ready());
        {
            let mut waiting = std::pin::pin!(second.wait_sent());
            assert!(futures::poll!(&mut waiting).is_pending());
            first.sent();
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("released once the first was sent");
        }
        {
            // Routing waits separately: the first has not routed yet.
            let mut routing = std::pin::pin!(second.wait_routed());
            assert!(futures::poll!(&mut routing).is_pending());
            // A publish that gives up (its turn dropped) releases the one behind it.
            drop(first);
            tokio::time::timeout(Duration::from_secs(5), routing)
                .await
                .expect("released by the drop");
        }
        let mut behind = std::pin::pin!(third.wait_sent());
        assert!(futures::poll!(&mut behind).is_pending());
        second.sent();
        tokio::time::timeout(Duration::from_secs(5), behind)
            .await
            .expect("released once the second was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_primary_takes_a_stream_in_seq_order_whatever_order_it_arrives_in() {
        let streams = Streams::default();
        // Stored up to 4: event 5 waits for nothing.
        let mut five = streams.turn(b"a", "/t", 5, || 4);
        let mut seven = streams.turn(b"a", "/t", 7, || 4);
        let mut six = streams.turn(b"a", "/t", 6, || 4);
        // Another stream is independent.
        let mut other = streams.turn(b"b", "/t", 1, || 0);
        assert!(futures::poll!(std::pin::pin!(other.wait_sent())).is_ready());
        assert!(futures::poll!(std::pin::pin!(five.wait_sent())).is_ready());
        {
            let mut seventh = std::pin::pin!(seven.wait_sent());
            let mut sixth = std::pin::pin!(six.wait_sent());
            assert!(futures::poll!(&mut seventh).is_pending());
            assert!(futures::poll!(&mut sixth).is_pending());
            five.sent();
            assert!(futures::poll!(&mut sixth).is_ready());
            assert!(futures::poll!(&mut seventh).is_pending());
        }
        // 6 gives up: 7 goes on at once, both steps.
        drop(six);
        assert!(futures::poll!(std::pin::pin!(seven.wait_sent())).is_ready());
        drop(five);
        assert!(futures::poll!(std::pin::pin!(seven.wait_routed())).is_ready());
        drop(seven);
        // What the store holds is not waited for once nothing is under way here: 9 and 10
        // were replicated here meanwhile.
        let mut eleven = streams.turn(b"a", "/t", 11, || 10);
        assert!(futures::poll!(std::pin::pin!(eleven.wait_sent())).is_ready());
        // While 11 is under way, what the store holds is no guide (12 may be stored and not
        // routed): 13 waits for 12.
        let mut thirteen = streams.turn(b"a", "/t", 13, || 12);
        assert!(futures::poll!(std::pin::pin!(thirteen.wait_sent())).is_pending());
        drop((eleven, thirteen));
        // An event whose predecessor never comes waits WAIT_FOR_PREDECESSOR, then goes on.
        let mut ten = streams.turn(b"a", "/t", 20, || 10);
        let started = tokio::time::Instant::now();
        ten.wait_sent().await;
        assert_eq!(started.elapsed(), WAIT_FOR_PREDECESSOR);
    }
}
