//! Arrival: events delivered or replicated to this node (verified, stored, checked for gaps and
//! repaired), handed to its local subscribers in each stream's order.

use std::sync::Arc;

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tidings_ipld_schema::{Block, Cid, Event, json as ipld_json, topic};

use super::Router;
use crate::history;
use crate::history::Chain;
use crate::metrics::Metrics;
use crate::pubsub::error::{Refusal, blocking};
use crate::pubsub::local::SLOW_GRACE;
use crate::pubsub::receive::{Arrival, UNKNOWN_AFTER};

/// Verifies blocks received together over the network (batch verification on the crypto
/// pool): all of them, or the reason the first bad one fails (and nothing is kept).
async fn verify_all(blocks: Vec<(ByteBuf, ByteBuf)>) -> Result<Vec<(Block, Event)>, Refusal> {
    let wire = blocks
        .into_iter()
        .map(|(c, d)| (c.into_vec(), d.into_vec()))
        .collect();
    crate::crypto::verify_wire_batch(wire)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, String>>()
        .map_err(Refusal::BadBlock)
}

impl Router {
    /// Hands the events this node routes to itself (as a topic's primary) to its subscribers,
    /// one at a time in routing order, exactly as deliveries from a remote primary are: a gap
    /// (the previous primary acknowledged an event and died before delivering it here) is
    /// repaired from this node's store, which holds what the set acknowledged once replica sync
    /// ran, else from the network. Runs until the node stops.
    pub async fn deliver_here(self: Arc<Self>) {
        let Some(mut routed) = self.local_out.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let me = self.net.local_peer();
        while let Some((block, event, after)) = routed.recv().await {
            self.take_delivered(me, &block, &event, after).await;
        }
    }

    /// Gives an event that a repair has already run for to this node's API subscribers, once,
    /// whatever its place in its stream; what the repair could not find is only logged here
    /// (and remembered, so it is delivered if it turns up later).
    async fn hand_to_local(&self, cid: &Cid, event: &Event, after: u64) {
        let _hand = self.hand_lock().await;
        let arrival = self.receiver.arrive(cid, event, after, true);
        tracing::debug!(%cid, seq = event.seq, after, ?arrival, topic = %event.topic, "repaired event arrived");
        match arrival {
            Arrival::Duplicate => return,
            Arrival::Late => {
                tracing::info!(%cid, seq = event.seq, topic = %event.topic, "event a repair missed arrived late: delivered out of order")
            }
            Arrival::Gap { last, .. } => {
                tracing::warn!(%cid, last, seq = event.seq, topic = %event.topic, "gap in stream left unrepaired: no node asked holds the missing events")
            }
            Arrival::InOrder => {}
        }
        self.deliver_local(cid, event).await;
    }

    /// An event delivered by `from` (this node itself when it routed the event as primary): a
    /// gap in its stream is repaired from the DAG first (this node's store, then the network),
    /// and what was missed reaches local subscribers (through their filters) before it. While
    /// its stream is held behind a gap not repaired yet, it waits there (see [`held`]).
    ///
    /// [`held`]: crate::pubsub::held
    pub(crate) async fn take_delivered(
        &self,
        from: PeerId,
        block: &Block,
        event: &Event,
        after: u64,
    ) {
        if self.held.len() > 0
            && self
                .held
                .wait_if_held((from, block.clone(), event.clone(), after))
                .is_none()
        {
            return;
        }
        self.arrive_unheld(from, block, event, after, true).await;
    }

    /// [`Router::take_delivered`] for a stream that is not held. With `may_hold`, a gap the
    /// repair could not fill completely holds the stream; without it (the events that waited
    /// behind a gap), the stream moves past what is missing.
    pub(crate) async fn arrive_unheld(
        &self,
        from: PeerId,
        block: &Block,
        event: &Event,
        after: u64,
        may_hold: bool,
    ) {
        let hand = self.hand_lock().await;
        let arrival = self.receiver.arrive(&block.cid, event, after, false);
        tracing::debug!(cid = %block.cid, seq = event.seq, after, ?arrival, %from, topic = %event.topic, "event arrived");
        match arrival {
            Arrival::Duplicate => return,
            Arrival::Late => {
                tracing::info!(cid = %block.cid, seq = event.seq, topic = %event.topic, "event a repair missed arrived late: delivered out of order")
            }
            Arrival::Gap { last, last_cid } => {
                // Not across the repair: other streams go on meanwhile.
                drop(hand);
                // One repair of a stream at a time: another task's events of this stream wait
                // behind this one's (see `held`).
                if may_hold
                    && self
                        .held
                        .claim_or_wait((from, block.clone(), event.clone(), after))
                        .is_none()
                {
                    return;
                }
                let (found, complete) = self
                    .repair_gap(from, block, event, after, last, last_cid)
                    .await;
                if !complete && may_hold {
                    self.held
                        .hold_claimed((from, block.clone(), event.clone(), after));
                    return;
                }
                self.hand_repaired(found, complete, last_cid, block, event, after)
                    .await;
                if may_hold {
                    self.hand_waiting(&(event.author.clone(), event.topic.clone()))
                        .await;
                }
                return;
            }
            Arrival::InOrder => {}
        }
        self.deliver_local(&block.cid, event).await;
    }

    /// Repairs the gap `event` revealed above `last`: returns what was found, oldest first, and
    /// whether that is all of it.
    pub(crate) async fn repair_gap(
        &self,
        from: PeerId,
        block: &Block,
        event: &Event,
        after: u64,
        last: u64,
        last_cid: Option<Cid>,
    ) -> (Vec<(Cid, Event)>, bool) {
        // A stream first seen here: the sender's word reaches back only to the event it names
        // (or nowhere, if it cannot tell); this node's subscriptions know how far back they
        // still need it.
        let (floor, since_ms) = match last_cid {
            Some(_) => (last, 0),
            None => {
                self.first_repair_floor(event, last, after == UNKNOWN_AFTER)
                    .await
            }
        };
        if floor + 1 < event.seq {
            self.repair(from, block, event, floor, last_cid, since_ms)
                .await
        } else {
            (Vec::new(), true)
        }
    }

    /// Hands a repair's finds, then `event`, to local subscribers in order.
    pub(crate) async fn hand_repaired(
        &self,
        found: Vec<(Cid, Event)>,
        complete: bool,
        last_cid: Option<Cid>,
        block: &Block,
        event: &Event,
        after: u64,
    ) {
        // A first-seen stream repaired down to its floor starts where the repair began;
        // anything the repair missed is logged (and remembered) as a gap.
        let starts_clean = last_cid.is_none() && complete;
        let mut prev = starts_clean.then_some(0);
        for (cid, missed) in found {
            let a = prev.unwrap_or(missed.seq.saturating_sub(1));
            self.hand_to_local(&cid, &missed, a).await;
            prev = Some(missed.seq);
        }
        self.hand_to_local(&block.cid, event, prev.unwrap_or(after))
            .await;
    }

    /// Fetches the events between `last` and `event` of its (author, topic) stream (none older
    /// than `since_ms`): from this node's store, else from `from` first, then the usual
    /// sources. Returns them oldest first (as many as could be found), and whether that is all
    /// of them.
    async fn repair(
        &self,
        from: PeerId,
        block: &Block,
        event: &Event,
        last: u64,
        last_cid: Option<Cid>,
        since_ms: u64,
    ) -> (Vec<(Cid, Event)>, bool) {
        let missing = event.seq - last - 1;
        let author = event
            .author_peer_id()
            .map(|p| p.to_string())
            .unwrap_or_default();
        tracing::info!(topic = %event.topic, %author, from_seq = last + 1, to_seq = event.seq - 1, since_ms, source = %from, "gap in stream: repairing from the DAG");
        let chain = Chain {
            author: event.author.clone(),
            topic: event.topic.clone(),
            after_seq: last,
            since_ms,
            whole: self.keeps_whole(&event.topic),
        };
        let fetched = history::fetch_chain(
            &self.net,
            &self.store,
            block.cid,
            last_cid,
            vec![from],
            chain.clone(),
            missing,
        )
        .await;
        let complete = match fetched {
            Ok(s) if !s.complete => {
                tracing::warn!(topic = %event.topic, missing = s.missing.len(), "gap only partly repaired: no peer asked has the rest");
                false
            }
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "gap repair failed");
                false
            }
        };
        let store = self.store.clone();
        let head = event.clone();
        let found: Vec<(Cid, Event)> =
            blocking(move || Ok(history::chain_back(&store, &head, &chain)?))
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(b, e)| (b.cid, e))
                .collect();
        Metrics::inc(&self.metrics.gaps_repaired);
        self.metrics
            .events_repaired
            .fetch_add(found.len() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(topic = %event.topic, repaired = found.len(), of = missing, "gap repaired");
        (found, complete)
    }

    /// Whether this node keeps `topic`'s streams whole: it is a broker of its root's rendezvous
    /// set, so the holes in them are recorded and replica sync fills them.
    fn keeps_whole(&self, topic_name: &str) -> bool {
        self.net.role() == crate::net::Role::Broker
            && self
                .net
                .rendezvous_set(topic::root_segment(topic_name))
                .contains(&self.net.local_peer())
    }

    /// Matches an event against this node's API subscriptions and queues it for each, waiting
    /// (up to [`SLOW_GRACE`]) for any whose queue is full, so the next event is delivered only
    /// once every subscriber has this one or was cut off.
    pub(crate) async fn deliver_local(&self, cid: &Cid, event: &Event) {
        if self.local.is_empty() {
            return;
        }
        let json = ipld_json::event_to_json(cid, event);
        let text = json.to_string();
        let stream = Arc::new((event.author.clone(), event.topic.clone(), event.seq));
        let pending = self.local.deliver(
            &event.topic,
            &json["body"],
            &cid.to_string(),
            &text,
            stream,
            event.time,
        );
        self.local.wait_for_room(pending, SLOW_GRACE).await;
    }

    /// Stores replicas (one transaction) once every one of them verifies: one bad block and
    /// none is stored.
    pub async fn serve_replicate(&self, blocks: Vec<(ByteBuf, ByteBuf)>) -> Result<(), Refusal> {
        let events = verify_all(blocks).await?;
        self.store
            .insert_grouped(events, Vec::new(), |_| true)
            .await
            .map(|_| ())
            .map_err(|e| Refusal::Failed(e.to_string()))
    }

    /// Verifies delivered events, caches them, and hands new ones to local subscribers in order.
    /// One bad block and none is stored or handed on.
    pub async fn serve_deliver(
        &self,
        from: PeerId,
        events: Vec<(ByteBuf, ByteBuf)>,
        after: Vec<u64>,
    ) -> Result<(), Refusal> {
        let mut verified = Vec::with_capacity(events.len());
        let mut afters = Vec::with_capacity(events.len());
        for (i, (block, event)) in verify_all(events).await?.into_iter().enumerate() {
            if self.drop_deliveries.drops(&block.cid, event.seq) {
                tracing::warn!(cid = %block.cid, seq = event.seq, "test fault: delivery dropped on arrival");
                continue;
            }
            verified.push((block, event));
            afters.push(after.get(i).copied().unwrap_or(UNKNOWN_AFTER));
        }
        // A member of the topic's set usually holds a delivered event already (as the replica
        // it stored moments before): what it holds is durable, and needs no write.
        let held = self
            .store
            .holds_all(verified.iter().map(|(b, _)| &b.cid))
            .unwrap_or(false);
        if held {
            Metrics::add(&self.metrics.deliveries_held, verified.len() as u64);
        } else {
            let keep: std::collections::HashSet<String> = verified
                .iter()
                .map(|(_, e)| e.topic.clone())
                .filter(|t| self.keeps_whole(t))
                .collect();
            self.store
                .insert_grouped(verified.clone(), Vec::new(), move |e| {
                    keep.contains(&e.topic)
                })
                .await
                .map_err(|e| Refusal::Failed(e.to_string()))?;
        }
        for ((block, event), after) in verified.iter().zip(afters) {
            self.take_delivered(from, block, event, after).await;
        }
        Ok(())
    }
}
