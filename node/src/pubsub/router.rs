//! The router: publish, subscribe and deliver decisions (docs/protocols.md).
//!
//! * Publish: sign and store locally, then hand the block to the topic's primary (the member
//!   of the root's rendezvous set closest to `sha256(topic)`), failing over to the next member;
//!   503 when no majority of the set can be reached.
//! * Primary duty ([`Router::serve_publish`]): store, replicate to the set, acknowledge once a
//!   majority holds it, and queue deliveries to every node with a matching lease.
//! * Subscribe: register locally, then lease the filter on every member of the root's set.
//! * Receive: verify, drop duplicates, cache the block, hand it to local subscribers. Events this
//!   node routes to its own subscriptions (as the topic's primary) take the same way as those
//!   a remote primary delivers, through [`Router::deliver_here`]: a gap is repaired either way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tidings_ipld_schema::{Block, Cid, Event, Ipld, Signer, json as ipld_json, topic};
use tidings_matcher::Filter;
use tokio::sync::mpsc;

use crate::history::{self, Chain};
use crate::metrics::Metrics;
use crate::net::publish::PublishAnswer;
use crate::net::subscribe::{SubscribeRequest, SubscribeResponse};
use crate::net::{Network, rendezvous};
use crate::pubsub::lane::{Lane, Streams, Turn};
use crate::pubsub::local::{LocalSubs, SLOW_GRACE, Subscription};
use crate::pubsub::outbox::Outbox;
use crate::pubsub::publishes::Publishes;
use crate::pubsub::receive::{Arrival, Receiver, UNKNOWN_AFTER};
use crate::pubsub::remote::RemoteSubs;
use crate::pubsub::replicas::Replicas;
use crate::store::{Store, StoreError};

/// How long a subscription lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(30);

/// Acknowledged events queued for routing (and routed events queued for this node's own
/// subscribers) before publishing waits: about a second of a busy node's deliveries.
pub const ROUTE_QUEUE: usize = 8192;

/// The outcome of a publish, as the API reports it.
#[derive(Debug, Clone)]
pub struct Published {
    /// CID of the new event.
    pub cid: Cid,
    /// Its `seq` in the (author, topic) stream.
    pub seq: u64,
    /// How many brokers hold it durably.
    pub copies: u32,
    /// The topic's heads after the publish, as the primary sees them.
    pub heads: Vec<Cid>,
}

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

/// A stored event on its way to routing, shared with whoever else holds it.
type Shared = (Arc<Block>, Arc<Event>);

/// The answer of an event's group commit: the topic's heads right after it.
type CommitFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Cid>, StoreError>> + Send>>;

/// Why a publish or subscribe failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event or filter is unacceptable (bad topic, too large, bad filter): the client's fault.
    #[error(transparent)]
    Invalid(tidings_ipld_schema::Error),
    /// A filter that does not parse.
    #[error("bad filter: {0}")]
    BadFilter(String),
    /// The store failed: nothing was acknowledged.
    #[error(transparent)]
    Store(StoreError),
    /// The network cannot take it now (no majority of the rendezvous set reachable).
    #[error("{0}")]
    Unavailable(String),
    /// The blocking task running the write was lost (shutdown or panic).
    #[error("publish task failed: {0}")]
    Task(String),
    /// A durable subscription exists with another filter, or is in use.
    #[error("{0}")]
    Conflict(String),
    /// No such durable subscription.
    #[error("{0}")]
    NotFound(String),
}

/// Why a request from another node was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The peer sent a block that fails verification (CID mismatch, bad signature, not an
    /// event, too large): it misbehaved, since an honest node only sends what it verified.
    #[error("{0}")]
    BadBlock(String),
    /// This node could not take it (store failure): nobody's fault.
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for PublishError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Event(e) => PublishError::Invalid(e),
            other => PublishError::Store(other),
        }
    }
}

/// Routes events between the API, the store and the network.
pub struct Router {
    store: Arc<Store>,
    /// This node's key, prepared once for the events it signs.
    signer: Signer,
    metrics: Arc<Metrics>,
    net: Network,
    local: Arc<LocalSubs>,
    remote: RemoteSubs,
    outbox: Outbox,
    replicas: Replicas,
    publishes: Publishes,
    receiver: Receiver,
    /// This node's own publishing state per topic ([`Lane`]): its events of a topic are
    /// signed, stored and handed on in `seq` order.
    lanes: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Lane>>>>,
    /// As a primary, the order of the streams other nodes publish to this node.
    streams: Streams,
    /// Events routed to this node's own subscriptions, in routing order, for
    /// [`Router::deliver_here`].
    local_in: mpsc::Sender<Routed>,
    /// Its receiving end, taken by [`Router::deliver_here`].
    local_out: std::sync::Mutex<Option<mpsc::Receiver<Routed>>>,
    /// Events to match and deliver, in the order they became durable on a majority, for
    /// [`Router::route_queued`]: publishing waits on fan-out only when [`ROUTE_QUEUE`] events
    /// are queued, i.e. when subscribers take events more slowly than they are published.
    route_in: mpsc::Sender<Shared>,
    /// Its receiving end, taken by [`Router::route_queued`].
    route_out: std::sync::Mutex<Option<mpsc::Receiver<Shared>>>,
    /// Test-only fault: some deliveries are dropped on arrival, as if lost on the way.
    drop_deliveries: DropDeliveries,
    /// (subscriber node, author, topic) → (seq, CID) of the newest event queued for that node:
    /// a cache for [`Router::after_for`].
    delivered: std::sync::Mutex<HashMap<StreamAt, (u64, Cid)>>,
    /// One connection at a time per durable subscription.
    durable_locks: crate::pubsub::history::DurableLocks,
    /// Retention and durable expiry.
    history: history::HistoryConfig,
    /// Replica sync's roots and holes.
    sync: crate::pubsub::replica_sync::SyncState,
    /// Streams held behind a gap not repaired yet.
    held: crate::pubsub::held::Held,
    /// Taken from an event's classification by the [`Receiver`] until it is queued for the
    /// local subscribers: two tasks hand events here (this node's own routing and a remote
    /// primary's deliveries, e.g. one that wrongly thought itself primary during a partition),
    /// and without it seq 9 classified first could reach the subscribers after seq 10
    /// classified next (the chaos run's "delivered seq 9 after 13" on the primary's node).
    hand: tokio::sync::Mutex<()>,
}

/// (subscriber node, author key, topic).
type StreamAt = (PeerId, Vec<u8>, String);

/// An event this node routed to itself, with its `after` (see [`DeliverRequest::after`]).
///
/// [`DeliverRequest::after`]: crate::net::deliver::DeliverRequest::after
type Routed = (Block, Event, u64);

/// Env var of a test-only delivery fault: deliveries of events whose `seq` is a multiple of
/// this are dropped on arrival.
#[cfg(feature = "test-faults")]
pub const DROP_DELIVERIES_ENV: &str = "TIDINGS_TEST_DROP_DELIVERIES_SEQ_MOD";
/// Env var of a test-only delivery fault: deliveries of events whose `seq` is below this are
/// dropped on arrival (a stream's first deliveries lost).
#[cfg(feature = "test-faults")]
pub const DROP_DELIVERIES_BELOW_ENV: &str = "TIDINGS_TEST_DROP_DELIVERIES_SEQ_BELOW";
/// Env var of a test-only delivery fault: set to 1, the faults above drop only the first
/// delivery of each event, as a primary that died before delivering would; a later delivery
/// of the same event (from the primary that took over) gets through.
#[cfg(feature = "test-faults")]
pub const DROP_DELIVERIES_ONCE_ENV: &str = "TIDINGS_TEST_DROP_DELIVERIES_ONCE";

/// The test-only delivery faults, read from the environment once.
#[cfg(feature = "test-faults")]
#[derive(Debug, Default)]
struct DropDeliveries {
    seq_mod: Option<u64>,
    seq_below: Option<u64>,
    /// With [`DROP_DELIVERIES_ONCE_ENV`]: the events dropped once already.
    once: Option<std::sync::Mutex<std::collections::HashSet<Cid>>>,
}

#[cfg(feature = "test-faults")]
impl DropDeliveries {
    fn from_env() -> DropDeliveries {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|m| *m > 0)
        };
        DropDeliveries {
            seq_mod: read(DROP_DELIVERIES_ENV),
            seq_below: read(DROP_DELIVERIES_BELOW_ENV),
            once: (read(DROP_DELIVERIES_ONCE_ENV) == Some(1)).then(Default::default),
        }
    }

    fn drops(&self, cid: &Cid, seq: u64) -> bool {
        let chosen = self.seq_mod.is_some_and(|m| seq.is_multiple_of(m))
            || self.seq_below.is_some_and(|b| seq < b);
        match &self.once {
            Some(dropped) if chosen => dropped.lock().is_ok_and(|mut d| d.insert(*cid)),
            _ => chosen,
        }
    }
}

/// Without the `test-faults` feature no delivery is ever dropped, and the environment is not
/// read: release builds carry no fault switch.
#[cfg(not(feature = "test-faults"))]
#[derive(Debug, Default)]
struct DropDeliveries;

#[cfg(not(feature = "test-faults"))]
impl DropDeliveries {
    fn from_env() -> DropDeliveries {
        DropDeliveries
    }

    #[inline(always)]
    fn drops(&self, _cid: &Cid, _seq: u64) -> bool {
        false
    }
}

/// Runs store work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PublishError> + Send + 'static,
) -> Result<T, PublishError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PublishError::Task(e.to_string()))?
}

impl Router {
    /// A router publishing as `signer`'s author into `store`, over `net`.
    pub fn new(
        store: Arc<Store>,
        signer: Signer,
        metrics: Arc<Metrics>,
        net: Network,
        history: history::HistoryConfig,
    ) -> Router {
        let (local_in, local_out) = mpsc::channel(ROUTE_QUEUE);
        let (route_in, route_out) = mpsc::channel(ROUTE_QUEUE);
        Router {
            store,
            signer,
            outbox: Outbox::new(net.clone(), metrics.clone()),
            metrics,
            replicas: Replicas::new(net.clone()),
            publishes: Publishes::new(net.clone()),
            net,
            local: Arc::default(),
            remote: RemoteSubs::default(),
            receiver: Receiver::default(),
            lanes: std::sync::Mutex::default(),
            streams: Streams::default(),
            local_in,
            local_out: std::sync::Mutex::new(Some(local_out)),
            route_in,
            route_out: std::sync::Mutex::new(Some(route_out)),
            drop_deliveries: DropDeliveries::from_env(),
            delivered: std::sync::Mutex::default(),
            durable_locks: Default::default(),
            history,
            sync: Default::default(),
            held: Default::default(),
            hand: tokio::sync::Mutex::new(()),
        }
    }

    /// Streams held behind a gap not repaired yet.
    /// Held while an event goes from classification to the local subscribers' queues (see the
    /// field): never across a repair.
    pub(crate) async fn hand_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.hand.lock().await
    }

    pub(crate) fn held(&self) -> &crate::pubsub::held::Held {
        &self.held
    }

    /// Duplicate and order bookkeeping of arriving events.
    pub(crate) fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    /// Replica sync's pending work.
    pub(crate) fn sync_state(&self) -> &crate::pubsub::replica_sync::SyncState {
        &self.sync
    }

    /// The history settings.
    pub fn history_config(&self) -> history::HistoryConfig {
        self.history
    }

    /// The node's counters for `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store behind this router.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The network handle.
    pub fn net(&self) -> &Network {
        &self.net
    }

    /// This node's API subscriptions.
    pub fn local(&self) -> &Arc<LocalSubs> {
        &self.local
    }

    /// Per-durable connection locks.
    pub(crate) fn durable_locks(&self) -> &crate::pubsub::history::DurableLocks {
        &self.durable_locks
    }

    /// Subscriptions leased here as a rendezvous member.
    pub fn remote(&self) -> &RemoteSubs {
        &self.remote
    }

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
                b.turn.wait_sent().await;
                let answer = self.publishes.send(member, block);
                b.turn.sent();
                b.turn.routed();
                answer.await
            };
            match answer {
                Ok(PublishAnswer::Stored { copies, heads }) => {
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
    /// 10 µs with [`Signer`], less than a hand-off to another thread costs on a busy machine).
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

    /// Queues a stored event (acknowledged, or pulled by replica sync) to be matched against
    /// the leases held here and delivered to each node, after everything queued before it.
    /// Waits while [`ROUTE_QUEUE`] events are queued: that is how subscribers slower than the
    /// publishers slow the publishers down instead of losing events.
    pub(crate) async fn route(&self, block: &Block, event: &Event) {
        self.route_shared(Arc::new(block.clone()), Arc::new(event.clone()))
            .await;
    }

    /// [`Router::route`] for an event already shared: queued without a copy.
    async fn route_shared(&self, block: Arc<Block>, event: Arc<Event>) {
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

    /// A subscriber node leases (or cancels) a subscription here.
    pub fn serve_subscribe(&self, peer: PeerId, req: SubscribeRequest) -> SubscribeResponse {
        if self.net.role() != crate::net::Role::Broker {
            return SubscribeResponse::Refused(
                "this node is a peer: it holds no rendezvous duty".into(),
            );
        }
        match req {
            SubscribeRequest::Lease {
                id,
                filter,
                lease_secs,
            } => {
                let lease = Duration::from_secs(lease_secs.clamp(1, 3600));
                match self.remote.lease(peer, id, &filter, lease) {
                    Ok(()) => SubscribeResponse::Ok,
                    Err(e) => SubscribeResponse::Refused(e),
                }
            }
            SubscribeRequest::Cancel { id } => {
                self.remote.cancel(peer, id);
                SubscribeResponse::Ok
            }
        }
    }

    /// Registers a subscription for an API client: locally, then as a lease on every member of
    /// the root's rendezvous set. Returns once at least one member holds it.
    pub async fn subscribe(&self, src: &str) -> Result<Subscription, PublishError> {
        let filter = Filter::parse(src).map_err(|e| PublishError::BadFilter(e.to_string()))?;
        let sub = self.local.subscribe(&filter, src);
        let held = self.lease(sub.id(), src, filter.root()).await;
        if held == 0 {
            return Err(PublishError::Unavailable(format!(
                "no member of the rendezvous set of {:?} took the subscription",
                filter.root()
            )));
        }
        Ok(sub)
    }

    /// Leases subscription `id` on every member of `root`'s set; returns how many hold it.
    async fn lease(&self, id: u64, src: &str, root: &str) -> usize {
        let me = self.net.local_peer();
        let set = self.net.rendezvous_set(root);
        let req = SubscribeRequest::Lease {
            id,
            filter: src.to_string(),
            lease_secs: LEASE.as_secs(),
        };
        let calls = set.into_iter().map(|m| {
            let req = req.clone();
            async move {
                let r = if m == me {
                    Ok(self.serve_subscribe(me, req))
                } else {
                    self.net.subscribe(m, req).await
                };
                match r {
                    Ok(SubscribeResponse::Ok) => true,
                    Ok(SubscribeResponse::Refused(why)) => {
                        tracing::warn!(member = %m, reason = %why, "lease refused");
                        false
                    }
                    Err(e) => {
                        tracing::debug!(member = %m, error = %e, "lease not placed");
                        false
                    }
                }
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// Renews every live subscription's lease (re-resolving sets, so leases follow churn),
    /// cancels ended ones, and expires stale leases held here. Runs until the node stops.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(LEASE / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            for (id, root) in self.local.take_cancelled() {
                let me = self.net.local_peer();
                for m in self.net.rendezvous_set(&root) {
                    if m == me {
                        self.remote.cancel(me, id);
                    } else {
                        let _ = self.net.subscribe(m, SubscribeRequest::Cancel { id }).await;
                    }
                }
            }
            for (id, src, root) in self.local.leases() {
                self.lease(id, &src, &root).await;
            }
            let gone = self.remote.expire(std::time::Instant::now());
            if gone > 0 {
                tracing::info!(leases = gone, "expired subscription leases");
            }
        }
    }

    /// History maintenance every [`history::HistoryConfig::maintenance_interval`]: touches
    /// the durables a connection holds open here (on this node and their set, so none expires
    /// while in use), then expires unused durables and applies retention. Runs until the node
    /// stops.
    pub async fn maintain_history(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.history.maintenance_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.touch_open_durables().await;
            let (store, config, author) = (
                self.store.clone(),
                self.history,
                self.signer.author().to_vec(),
            );
            if let Err(e) =
                blocking(move || Ok(history::maintain(&store, &config, &author, now_ms())?)).await
            {
                tracing::warn!(error = %e, "history maintenance failed");
            }
        }
    }
}

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

/// Milliseconds since the Unix epoch by this machine's clock (advisory only).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
