//! Publishes to a remote primary: one queue per primary, drained by one task that sends what is
//! queued as one `/tidings/publish/2` request (up to a message's budget), with a few requests
//! in flight, and hands each event its own answer.
//!
//! One request per event cost a substream, a timer and a task on both sides for every publish,
//! and a node publishing faster than the primary's per-peer request limit (5,000/s by default)
//! was refused. Batched, a busy author sends what queued up while its requests were in flight;
//! a lone publish still goes at once.
//!
//! Order: events are queued in their stream's order (the caller's turn), and requests leave in
//! queue order; requests in flight together may still overtake each other on the wire, which
//! the primary puts right ([`crate::pubsub::lane::Streams`]), as it did for single events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tidings_ipld_schema::Block;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::net::batch::{Batch, Budget, pair_size};
use crate::net::publish::{PublishAnswer, PublishRequest};
use crate::net::{NetError, Network};

/// Most events in one publish request: what the primary verifies as one batch.
const BATCH: Budget = Budget::items(256);
/// Requests in flight to one primary: enough to keep its commits back to back, few enough
/// that events queue up into batches while they are out.
const IN_FLIGHT: usize = 8;

type Answer = Result<PublishAnswer, NetError>;

/// One event waiting to be published, and who waits for its answer.
struct Pending {
    cid: ByteBuf,
    block: ByteBuf,
    answer: oneshot::Sender<Answer>,
}

/// Per-primary publish queues.
pub struct Publishes {
    net: Network,
    queues: Mutex<HashMap<PeerId, mpsc::UnboundedSender<Pending>>>,
}

impl Publishes {
    /// Queues for publishing over `net`.
    pub fn new(net: Network) -> Publishes {
        Publishes {
            net,
            queues: Mutex::default(),
        }
    }

    /// Queues `block` for `peer` now (a caller's order of calls is the order sent) and returns
    /// the primary's answer for it.
    pub fn send(
        &self,
        peer: PeerId,
        block: &Block,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static {
        let (answer, rx) = oneshot::channel();
        let item = Pending {
            cid: ByteBuf::from(block.cid.to_bytes()),
            block: ByteBuf::from(block.data.clone()),
            answer,
        };
        let queued = self.queue(peer, item);
        async move {
            if !queued {
                return Err(NetError::Stopped);
            }
            rx.await.unwrap_or(Err(NetError::Stopped))
        }
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
            waiters.push(p.answer);
        }
        // Handed to the swarm here, in queue order; answered in its own task.
        let sent = net.send_publish(peer, PublishRequest { blocks }).await;
        tokio::spawn(async move {
            let n = waiters.len();
            let answered = match sent {
                Ok(answer) => answer.await,
                Err(e) => Err(e),
            };
            match answered {
                Ok(response) => {
                    for (w, a) in waiters.into_iter().zip(response.into_answers(n)) {
                        let _ = w.send(Ok(a));
                    }
                }
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}
