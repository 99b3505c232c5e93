//! Delivery queues at the primary: one per subscriber node, drained by one task that sends
//! batches in order and waits for each answer, so a node receives events in the order the
//! primary matched them. A batch that cannot be delivered is retried (see [`GIVE_UP_AFTER`]).

use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::net::Network;
use crate::net::batch::{Budget, pair_size};
use crate::net::deliver::{DeliverRequest, DeliverResponse};
use crate::net::peer_queues::PeerQueues;
use crate::pubsub::peer_queue::Drain;

/// Most events in one deliver request, within [`crate::net::batch::MESSAGE_BUDGET`] bytes.
const BATCH: Budget = Budget::items(256);
/// How long a batch is retried before it is given up. A subscriber's node repairs a gap only
/// when a later event of the stream reaches it, so a batch given up while its node is briefly
/// unreachable (a partition, a restart) is lost to that node's live subscribers if it held the
/// last events of their streams: it is retried for as long as a partition or restart
/// plausibly lasts.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// How long a batch is tried for a node whose last batch was given up.
const GONE_TRY: Duration = Duration::from_millis(750);
/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// A batch failing this long is logged at warn, once.
const WARN_AFTER: Duration = Duration::from_secs(1);
/// A destination with this many events queued behind a failing batch is given up at once: the
/// queue must not grow without bound for a node that is gone.
const MAX_WAITING: usize = 65_536;

/// (CID bytes, block bytes, `after`) of one queued event; see [`DeliverRequest::after`].
type Item = (ByteBuf, ByteBuf, u64);

/// Per-destination ordered delivery queues.
pub struct Outbox {
    net: Network,
    metrics: Arc<Metrics>,
    queues: PeerQueues<Item>,
}

impl Outbox {
    /// Queues for delivery over `net`, counting outcomes in `metrics`.
    pub fn new(net: Network, metrics: Arc<Metrics>) -> Outbox {
        Outbox {
            net,
            metrics,
            queues: PeerQueues::default(),
        }
    }

    /// Queues one event (CID bytes, block bytes) for `peer`; `after` as in
    /// [`DeliverRequest::after`].
    pub fn push(&self, peer: PeerId, cid: Vec<u8>, block: Vec<u8>, after: u64) {
        let item = (ByteBuf::from(cid), ByteBuf::from(block), after);
        let (net, metrics) = (self.net.clone(), self.metrics.clone());
        // False only on a poisoned lock (a bug elsewhere): the event is then not delivered
        // here, and the subscriber's node repairs the gap from the stream.
        if !self
            .queues
            .push(peer, item, |rx| worker(net, metrics, peer, rx))
        {
            tracing::error!(%peer, "bug: delivery queue unavailable; the subscriber must repair the gap");
        }
    }
}

async fn worker(
    net: Network,
    metrics: Arc<Metrics>,
    peer: PeerId,
    rx: mpsc::UnboundedReceiver<Item>,
) {
    let mut queue = Drain::new(rx, BATCH, |(c, b, _)| pair_size(c, b));
    // The last batch was given up: the next ones get a short try until one goes through, so a
    // node that is gone does not hold every later batch for the whole retry time.
    let mut gone = false;
    while let Some(batch) = queue.next().await {
        let n = batch.len();
        let (events, after) = batch.into_iter().map(|(c, b, a)| ((c, b), a)).unzip();
        let req = DeliverRequest { events, after };
        let began = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut warned = false;
        for attempt in 1u32.. {
            match net.deliver(peer, req.clone()).await {
                Ok(DeliverResponse::Ok) => {
                    gone = false;
                    Metrics::add(&metrics.delivered_to_nodes, n as u64);
                    if warned {
                        tracing::info!(%peer, events = n, attempt, "delivery through after retrying");
                    }
                    break;
                }
                Ok(DeliverResponse::Refused(why)) => {
                    Metrics::add(&metrics.deliveries_refused, n as u64);
                    tracing::warn!(%peer, events = n, reason = %why, "delivery refused");
                    break;
                }
                Err(e)
                    if began.elapsed() >= if gone { GONE_TRY } else { GIVE_UP_AFTER }
                        || queue.waiting() >= MAX_WAITING =>
                {
                    gone = true;
                    Metrics::add(&metrics.deliveries_given_up, n as u64);
                    tracing::warn!(%peer, events = n, attempt, waiting = queue.waiting(), error = %e, "delivery given up; the subscriber must repair the gap");
                    break;
                }
                Err(e) => {
                    if !warned && began.elapsed() >= WARN_AFTER {
                        warned = true;
                        tracing::warn!(%peer, events = n, attempt, error = %e, "delivery failing; still retrying");
                    } else {
                        tracing::debug!(%peer, attempt, error = %e, "delivery failed, retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
        }
    }
}
