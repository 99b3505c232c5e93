//! Routing: matching each acknowledged event against the leases held here and queueing it to
//! every subscriber node, this one included, in the order events became durable.

use std::sync::Arc;

use libp2p::PeerId;
use tidings_ipld_schema::{Block, Event, json as ipld_json};

use super::Router;
use crate::history;
use crate::history::Chain;
use crate::pubsub::receive::UNKNOWN_AFTER;

impl Router {
    /// Queues a stored event (acknowledged, or pulled by replica sync) to be matched against
    /// the leases held here and delivered to each node, after everything queued before it.
    /// Waits while [`ROUTE_QUEUE`](super::ROUTE_QUEUE) events are queued: that is how subscribers slower than the
    /// publishers slow the publishers down instead of losing events.
    pub(crate) async fn route(&self, block: &Block, event: &Event) {
        self.route_shared(Arc::new(block.clone()), Arc::new(event.clone()))
            .await;
    }

    /// [`Router::route`] for an event already shared: queued without a copy.
    pub(super) async fn route_shared(&self, block: Arc<Block>, event: Arc<Event>) {
        // The send fails only once the node is stopping.
        let _ = self.route_in.send((block, event)).await;
    }

    /// Matches and delivers the events [`Router::route`] queued, one at a time in order (so
    /// each subscriber's node gets a stream in `seq` order), off the publish path. Runs until
    /// the node stops.
    pub async fn route_queued(self: Arc<Self>) {
        let Some(mut queued) = self.route_out.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        while let Some((block, event)) = queued.recv().await {
            self.route_now(&block, &event).await;
        }
    }

    /// Matches a stored event against the leases held here and queues it for each node.
    async fn route_now(&self, block: &Block, event: &Event) {
        let body = ipld_json::ipld_to_json(&event.body);
        let me = self.net.local_peer();
        for peer in self.remote.matching_peers(&event.topic, &body) {
            let after = self.after_for(peer, block, event);
            if peer == me {
                // Through the same receiving path as a remote primary's delivery (gap repair
                // included), in routing order; the send fails only once the node is stopping.
                let _ = self
                    .local_in
                    .send((block.clone(), event.clone(), after))
                    .await;
            } else {
                self.outbox
                    .push(peer, block.cid.to_bytes(), block.data.clone(), after);
            }
        }
    }

    /// The `after` of a delivery of `event` to `peer`: the seq of the newest earlier event of its
    /// (author, topic) stream that `peer` subscribes to, so a jump past it at the receiver is a
    /// lost delivery and any other jump is only events it does not want. Read from the stream
    /// itself, not from what this node happened to route, so it holds whichever member was
    /// primary for the earlier events (failover, partitions, restarts); 0 when none since the
    /// peer subscribed. [`UNKNOWN_AFTER`] when it cannot be told (a hole in this node's copy,
    /// or a long run of unmatched events): the receiver then checks any jump by fetching.
    fn after_for(&self, peer: PeerId, block: &Block, event: &Event) -> u64 {
        let key = (peer, event.author.clone(), event.topic.clone());
        let cached = self
            .delivered
            .lock()
            .ok()
            .and_then(|d| d.get(&key).copied());
        let after = match (cached, event.prev.first()) {
            // The common case: the previous event of the stream was routed to `peer` here.
            (Some((seq, cid)), Some(prev)) if cid == *prev && seq + 1 == event.seq => seq,
            _ => self.previous_match(peer, event),
        };
        if let Ok(mut d) = self.delivered.lock() {
            let e = d.entry(key).or_insert((0, block.cid));
            if event.seq >= e.0 {
                *e = (event.seq, block.cid);
            }
        }
        after
    }

    /// Walks `event`'s chain back through this node's store to the newest earlier event `peer`
    /// subscribes to (see [`Router::after_for`]).
    fn previous_match(&self, peer: PeerId, event: &Event) -> u64 {
        /// Events looked at before giving up (the receiver then checks the jump itself).
        const WALK: usize = 256;
        // Events from before the subscription were never meant for it. A minute of slack
        // for publishers' clocks: an older event named here is at worst repaired needlessly.
        let since = self
            .remote
            .since_ms(peer)
            .map_or(0, |s| s.saturating_sub(60_000));
        let chain = Chain {
            author: event.author.clone(),
            topic: event.topic.clone(),
            after_seq: 0,
            since_ms: 0,
            whole: false,
        };
        let mut cur = history::fetch::chain_link(&chain, event);
        for _ in 0..WALK {
            let Some(cid) = cur else {
                return 0;
            };
            let Ok(Some(data)) = self.store.get_block(&cid) else {
                return UNKNOWN_AFTER;
            };
            let Some(prev) = Event::decode_stored(&data) else {
                return UNKNOWN_AFTER;
            };
            if prev.author != event.author || prev.topic != event.topic {
                return UNKNOWN_AFTER;
            }
            if prev.time < since {
                return 0;
            }
            let body = ipld_json::ipld_to_json(&prev.body);
            if self
                .remote
                .matching_peers(&prev.topic, &body)
                .contains(&peer)
            {
                return prev.seq;
            }
            cur = history::fetch::chain_link(&chain, &prev);
        }
        UNKNOWN_AFTER
    }
}
