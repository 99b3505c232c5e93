//! Publishing: this node's own events (sign, commit, hand to the topic's primary) and the
//! primary's duty for events handed to it (store, replicate, count copies, queue routing).

use std::sync::Arc;

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tidings_ipld_schema::{Block, Cid, Event, Ipld, topic};

use super::{Published, Router};
use crate::age::now_ms;
use crate::metrics::Metrics;
use crate::net::publish::PublishAnswer;
use crate::net::rendezvous;
use crate::pubsub::error::PublishError;
use crate::pubsub::lane::{Lane, Turn};
use crate::store::StoreError;

/// A publish signed and queued to the store ([`Router::begin_publish`]), for
/// [`Router::finish_publish`].
pub struct Begun {
    topic: String,
    root: String,
    set: Vec<PeerId>,
    lane: Arc<tokio::sync::Mutex<Lane>>,
    appended: Signed,
    commit: CommitFuture,
    turn: Turn,
    tries: u32,
    /// When it was first signed (for [`Metrics::publish_commit`]).
    signed: std::time::Instant,
}

/// This node's own event, signed and queued to the store. Shared, not copied, between the
/// store's writer, the publish that waits for it and the routing queue: a copy of an event is
/// a copy of its whole body.
struct Signed {
    event: Arc<Event>,
    block: Arc<Block>,
}

/// The answer of an event's group commit: the topic's heads right after it.
type CommitFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Cid>, StoreError>> + Send>>;

impl Router {
    fn lane(&self, topic_name: &str) -> Arc<tokio::sync::Mutex<Lane>> {
        match self.lanes.lock() {
            Ok(mut m) => m.entry(topic_name.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Signs `body` as this node's next event on `topic`, stores it, and publishes it through
    /// the topic's rendezvous set.
    pub async fn publish(&self, topic_name: String, body: Ipld) -> Result<Published, PublishError> {
        let begun = self.begin_publish(topic_name, body).await;
        self.finish_publish(begun).await
    }

    /// The first half of [`Router::publish`]: checks the topic, signs the event and queues it
    /// to the store. Once it returns, the next publish of the topic may begin: its event comes
    /// after this one in the stream, and it is stored and handed on after this one, while this
    /// one's commit and acknowledgement are still under way (see [`crate::pubsub::lane`]).
    pub async fn begin_publish(
        &self,
        topic_name: String,
        body: Ipld,
    ) -> Result<Begun, PublishError> {
        topic::validate(&topic_name).map_err(PublishError::Invalid)?;
        let root = topic::root_segment(&topic_name).to_string();
        let set = self.net.rendezvous_set(&root);
        if set.is_empty() {
            return Err(PublishError::Unavailable(format!(
                "no broker known for root {root:?}: a peer-role node needs --bootstrap to a broker"
            )));
        }
        let lane = self.lane(&topic_name);
        let signed = std::time::Instant::now();
        let (appended, commit, turn) = self.sign_and_queue(&lane, &topic_name, body, false).await?;
        Ok(Begun {
            topic: topic_name,
            root,
            set,
            lane,
            appended,
            commit,
            turn,
            tries: 1,
            signed,
        })
    }

    /// The second half of [`Router::publish`]: waits for the event's own commit, then hands it
    /// to the topic's primary (failing over to the next member) and returns its answer.
    pub async fn finish_publish(
        &self,
        begun: Result<Begun, PublishError>,
    ) -> Result<Published, PublishError> {
        let result = match begun {
            Ok(b) => self.finish_inner(b).await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(p) => {
                Metrics::inc(&self.metrics.published);
                tracing::debug!(cid = %p.cid, seq = p.seq, copies = p.copies, "published");
            }
            Err(e) => {
                Metrics::inc(&self.metrics.publish_failed);
                tracing::debug!(error = %e, "publish failed");
            }
        }
        result
    }

    async fn finish_inner(&self, mut b: Begun) -> Result<Published, PublishError> {
        let heads = loop {
            match (&mut b.commit).await {
                Ok(heads) => break heads,
                Err(e) => {
                    b.lane.lock().await.forget(&b.appended.block.cid);
                    match e {
                        // The stream moved on (a CAR import or a sync of this node's own
                        // events), or the event this one was linked to failed: sign again.
                        StoreError::Conflict(why) if b.tries < 3 => {
                            tracing::debug!(%why, "append raced another writer of this stream; signing again");
                            b.tries += 1;
                            // The body signed again is the one the refused event carried.
                            let body = b.appended.event.body.clone();
                            // Those behind this publish go on; it takes a new place at the end.
                            b.turn = Turn::none();
                            let (appended, commit, turn) =
                                self.sign_and_queue(&b.lane, &b.topic, body, true).await?;
                            (b.appended, b.commit, b.turn) = (appended, commit, turn);
                        }
                        e => return Err(e.into()),
                    }
                }
            }
        };
        self.metrics.publish_commit.observe(b.signed.elapsed());
        let block = &b.appended.block;
        // Its bytes are this node's own: a copy delivered back needs no check.
        crate::crypto::remember_verified([block.cid]);
        let me = self.net.local_peer();
        let mut last_error = String::new();
        for member in rendezvous::publish_order(&b.set, &b.topic) {
            let answer = if member == me {
                // Already stored: straight to the primary's duties.
                Ok(self
                    .replicate_and_route(
                        block,
                        &b.appended.event,
                        || std::future::ready(Ok(heads.clone())),
                        &mut b.turn,
                        None,
                    )
                    .await)
            } else {
                // Handed to the network after the publish before it, so the primary gets
                // the stream in order (and puts it in order if requests overtake each other).
                // The turn to route is kept until the answer: should this member fail and the
                // publish fall over to this node, its deliveries still come after the earlier
                // publishes' (which may be falling over too), never before them. Only a publish
                // that falls over waits on it, so the pipeline is not held back.
                b.turn.wait_sent().await;
                let answer = self.publishes.send(member, block);
                b.turn.sent();
                answer.await
            };
            match answer {
                Ok(PublishAnswer::Stored { copies, heads }) => {
                    // Released (on return) only after the publish before it: a later one that
                    // falls over to this node then routes after every earlier one, whichever
                    // member took each.
                    b.turn.wait_routed().await;
                    return Ok(Published {
                        cid: block.cid,
                        seq: b.appended.event.seq,
                        copies,
                        heads: heads
                            .iter()
                            .filter_map(|h| Cid::try_from(h.as_slice()).ok())
                            .collect(),
                    });
                }
                Ok(PublishAnswer::Refused { status, message }) if status < 500 => {
                    return Err(PublishError::Unavailable(format!(
                        "primary {member} refused the event: {message}"
                    )));
                }
                Ok(PublishAnswer::Refused { message, .. }) => {
                    tracing::debug!(%member, %message, "member could not take the publish, trying the next");
                    last_error = message;
                }
                Err(e) => {
                    tracing::debug!(%member, error = %e, "member unreachable, trying the next");
                    last_error = e.to_string();
                }
            }
        }
        Err(PublishError::Unavailable(format!(
            "no majority of the rendezvous set of {:?} could store the event ({} members tried; last: {last_error}); \
             it is kept on this node and will reach subscribers by repair",
            b.root,
            b.set.len()
        )))
    }

    /// Signs `body` as this node's next event on `topic` and queues it to the next group
    /// commit, under the topic's lane lock: links from the last event signed here if that one
    /// is not stored yet, else from the store. After a conflict (`retry`) the store is settled
    /// first, so the links read are exact. Signing runs on the request's own task (about
    /// 10 µs with [`Signer`](tidings_ipld_schema::Signer), less than a hand-off to another thread costs on a busy machine).
    async fn sign_and_queue(
        &self,
        lane: &tokio::sync::Mutex<Lane>,
        topic_name: &str,
        body: Ipld,
        retry: bool,
    ) -> Result<(Signed, CommitFuture, Turn), PublishError> {
        let mut lane = lane.lock().await;
        if retry {
            self.store.settle().await?;
            lane.last = None;
        }
        let (stored_seq, mut prev) = self.store.next_links(self.signer.author(), topic_name)?;
        let seq = match lane.last {
            // The last one signed here is still on its way to the store: link to it instead
            // of to the stored one before it (`prev[0]`, when there is one).
            Some((seq, cid)) if seq >= stored_seq => {
                if stored_seq > 1 && !prev.is_empty() {
                    prev.remove(0);
                }
                prev.retain(|c| *c != cid);
                prev.insert(0, cid);
                seq + 1
            }
            _ => stored_seq,
        };
        let (event, block) =
            Event::sign_block_with(&self.signer, topic_name, body, seq, now_ms(), prev)
                .map_err(PublishError::Invalid)?;
        let (event, block) = (Arc::new(event), Arc::new(block));
        let commit = Box::pin(
            self.store
                .queue_signed(Arc::clone(&block), Arc::clone(&event))?,
        );
        lane.last = Some((seq, block.cid));
        let turn = lane.take_turn();
        let appended = Signed { event, block };
        Ok((appended, commit, turn))
    }

    /// Primary duty for a verified event from another node, in its stream's order: store it
    /// and replicate it at once
    /// ([`Router::replicate_and_route`]): the replicas' fsyncs overlap this node's own, one
    /// fsync fewer between the publish and its acknowledgement.
    ///
    /// `from` sent it. A node hands an event on only once its own group commit made it durable
    /// ([`Router::finish_publish`]), so when `from` is a member of the set its copy counts
    /// toward the majority and the event is not sent back to it.
    pub async fn serve_publish(&self, from: PeerId, block: Block, event: Event) -> PublishAnswer {
        let (block, event) = (Arc::new(block), Arc::new(event));
        // In the stream's order: a publish pipelined behind this stream's previous event
        // waits (briefly) for it.
        let mut turn = self
            .streams
            .turn(&event.author, &event.topic, event.seq, || {
                match self.store.last_seq(&event.author, &event.topic) {
                    Ok(last) => last.map_or(0, |(s, _)| s),
                    // Unknown: wait for nothing.
                    Err(_) => u64::MAX,
                }
            });
        self.replicate_and_route(
            &block,
            &event,
            || {
                self.store
                    .insert_publish(Arc::clone(&block), Arc::clone(&event))
            },
            &mut turn,
            Some(from),
        )
        .await
    }

    /// Primary duty: replicate to the set while `store` stores the event here (or gives the
    /// heads right after the event this node already stored), count copies, and once this node and a
    /// majority in all hold it queue its deliveries. Until this node's own copy is durable the
    /// event is neither acknowledged nor routed, so a subscriber never learns of an event its
    /// primary cannot serve; a crash before that leaves an unacknowledged event on the replicas,
    /// which replica sync spreads as it does any other. `turn` keeps the stream's order: `store`
    /// and the copies to the replicas start after the previous event's did, and the deliveries
    /// are queued after the previous event's. `holder` is a node that already holds the event
    /// durably (the member that handed it here): if it is in the set its copy is counted, not
    /// sent again.
    async fn replicate_and_route<S>(
        &self,
        block: &Arc<Block>,
        event: &Arc<Event>,
        store: impl FnOnce() -> S,
        turn: &mut Turn,
        holder: Option<PeerId>,
    ) -> PublishAnswer
    where
        S: std::future::Future<Output = Result<Vec<Cid>, StoreError>>,
    {
        let took = std::time::Instant::now();
        let root = topic::root_segment(&event.topic);
        let me = self.net.local_peer();
        let set = self.net.rendezvous_set(root);
        let need = rendezvous::majority(set.len().max(1));
        let holder = holder.filter(|h| *h != me && set.contains(h));
        // Answered as soon as a majority holds it: the slowest replica still gets it, but the
        // publisher does not wait for it.
        turn.wait_sent().await;
        let stored = store();
        let mut replicas: futures::stream::FuturesUnordered<_> = set
            .iter()
            .filter(|p| **p != me && Some(**p) != holder)
            .map(|p| self.replicas.store_on(*p, block))
            .collect();
        turn.sent();
        let mut stored = std::pin::pin!(stored);
        let mut copies = 0;
        // The members' answers are counted while this node's own copy is being stored.
        let heads = loop {
            tokio::select! {
                here = &mut stored => match here {
                    Ok(heads) => break heads,
                    Err(err) => {
                        return PublishAnswer::Refused {
                            status: 503,
                            message: format!("primary could not store the event: {err}"),
                        };
                    }
                },
                Some(held) = futures::StreamExt::next(&mut replicas) => copies += usize::from(held),
            }
        };
        copies += 1 + usize::from(holder.is_some());
        while copies < need {
            match futures::StreamExt::next(&mut replicas).await {
                Some(true) => copies += 1,
                Some(false) => {}
                None => break,
            }
        }
        if copies < need {
            return PublishAnswer::Refused {
                status: 503,
                message: format!(
                    "only {copies} of {} rendezvous members hold the event; {need} needed",
                    set.len()
                ),
            };
        }
        self.metrics.primary_store.observe(took.elapsed());
        self.take_leases(root, &set).await;
        turn.wait_routed().await;
        self.route_shared(Arc::clone(block), Arc::clone(event))
            .await;
        turn.routed();
        PublishAnswer::Stored {
            copies: copies as u32,
            heads: heads.iter().map(|c| ByteBuf::from(c.to_bytes())).collect(),
        }
    }
}
