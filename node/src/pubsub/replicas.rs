//! Replication at the primary: one queue per replica, drained by one task that sends what is
//! queued as one `/tidings/replicate/1` request (up to a message's byte budget), with a few
//! requests in flight per replica, and answers each event's waiter when its request is answered.
//!
//! One request per event per replica was the cost of a publish: a libp2p substream each, and
//! one redb commit each at the replica. Batched, a busy primary sends hundreds of events in one
//! request, which the replica verifies as one ed25519 batch and stores in one group commit;
//! a lone event still goes at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tidings_ipld_schema::Block;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::net::Network;
use crate::net::batch::{Batch, Budget, pair_size};
use crate::net::replicate::{ReplicateRequest, ReplicateResponse};

/// Most events in one replicate request.
const BATCH: Budget = Budget::items(1024);
/// Requests in flight per replica: enough to keep a replica's commits back to back.
const IN_FLIGHT: usize = 4;
/// How long the primary waits for a replica before counting it as missing.
pub const REPLICATE_TIMEOUT: Duration = Duration::from_secs(5);

/// One event waiting to be replicated: its CID and block bytes, and who waits for the answer.
struct Pending {
    cid: ByteBuf,
    block: ByteBuf,
    stored: oneshot::Sender<bool>,
}

/// Per-replica replication queues.
pub struct Replicas {
    net: Network,
    queues: Mutex<HashMap<PeerId, mpsc::UnboundedSender<Pending>>>,
}

impl Replicas {
    /// Queues for replication over `net`.
    pub fn new(net: Network) -> Replicas {
        Replicas {
            net,
            queues: Mutex::default(),
        }
    }

    /// Replicates `block` to `peer`: whether the replica stored it durably (false if it
    /// refused, could not be reached, or took longer than [`REPLICATE_TIMEOUT`]).
    pub fn store_on(
        &self,
        peer: PeerId,
        block: &Block,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let (stored, answer) = oneshot::channel();
        let item = Pending {
            cid: ByteBuf::from(block.cid.to_bytes()),
            block: ByteBuf::from(block.data.clone()),
            stored,
        };
        // Queued now, not when first polled: a caller's order of calls is the order sent.
        let queued = self.queue(peer, item);
        async move { queued && answer.await.unwrap_or(false) }
    }

    fn queue(&self, peer: PeerId, item: Pending) -> bool {
        let Ok(mut queues) = self.queues.lock() else {
            return false;
        };
        let item = match queues.get(&peer) {
            Some(tx) => match tx.send(item) {
                Ok(()) => return true,
                Err(e) => e.0, // the worker ended; start a new one below
            },
            None => item,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(item);
        queues.insert(peer, tx);
        tokio::spawn(worker(self.net.clone(), peer, rx));
        true
    }
}

async fn worker(net: Network, peer: PeerId, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // The event that did not fit in the last batch: the first of the next.
    let mut carry = None;
    loop {
        // A batch is formed only when a request may go: events queue up meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(e) => e,
            None => match rx.recv().await {
                Some(e) => e,
                None => return,
            },
        };
        let mut batch = Batch::new(BATCH);
        let mut first = Some(first);
        carry = batch.fill(
            || first.take().or_else(|| rx.try_recv().ok()),
            |p| pair_size(&p.cid, &p.block),
        );
        let mut blocks = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for p in batch.into_items() {
            blocks.push((p.cid, p.block));
            waiters.push(p.stored);
        }
        let net = net.clone();
        tokio::spawn(async move {
            let n = blocks.len();
            let stored = match tokio::time::timeout(
                REPLICATE_TIMEOUT,
                net.replicate(peer, ReplicateRequest { blocks }),
            )
            .await
            {
                Ok(Ok(ReplicateResponse::Stored)) => true,
                Ok(Ok(ReplicateResponse::Refused(why))) => {
                    tracing::warn!(%peer, events = n, reason = %why, "replica refused");
                    false
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, events = n, error = %e, "replica unreachable");
                    false
                }
                Err(_) => {
                    tracing::debug!(%peer, events = n, "replica timed out");
                    false
                }
            };
            for w in waiters {
                let _ = w.send(stored);
            }
            drop(slot);
        });
    }
}
