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
//!
//! This file holds the router's state; each of those duties has a file of its own: `publish`,
//! `route` (matching and queueing deliveries), `arrive` (events reaching this node) and
//! `leases` (subscriptions).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use tidings_ipld_schema::{Block, Cid, Event, Signer};
use tokio::sync::mpsc;

use crate::age::now_ms;
use crate::history;
use crate::metrics::Metrics;
use crate::net::Network;
use crate::pubsub::error::blocking;
use crate::pubsub::lane::{Lane, Streams};
use crate::pubsub::local::LocalSubs;
use crate::pubsub::outbox::Outbox;
use crate::pubsub::publishes::Publishes;
use crate::pubsub::receive::Receiver;
use crate::pubsub::remote::RemoteSubs;
use crate::pubsub::replicas::Replicas;
use crate::store::Store;

mod arrive;
mod leases;
mod publish;
mod route;

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

/// A stored event on its way to routing, shared with whoever else holds it.
type Shared = (Arc<Block>, Arc<Event>);

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
