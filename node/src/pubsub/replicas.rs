//! Replication at the primary: one queue per replica, drained by one task that sends what is
//! queued as one `/tidings/replicate/1` request (up to a message's byte budget), with a few
//! requests in flight per replica, and answers each event's waiter when its request is answered.
//!
//! One request per event per replica was the cost of a publish: a libp2p substream each, and
//! one redb commit each at the replica. Batched, a busy primary sends hundreds of events in one
//! request, which the replica verifies as one ed25519 batch and stores in one group commit;
//! a lone event still goes at once.

use std::time::Duration;

use libp2p::PeerId;
use tidings_ipld_schema::Block;
use tokio::sync::{mpsc, oneshot};

use crate::net::Network;
use crate::net::batch::Budget;
use crate::net::peer_queues::PeerQueues;
use crate::net::replicate::{ReplicateRequest, ReplicateResponse};
use crate::pubsub::peer_queue::{Waiting, in_batches};

/// Most events in one replicate request.
const BATCH: Budget = Budget::items(1024);
/// Requests in flight per replica: enough to keep a replica's commits back to back.
const IN_FLIGHT: usize = 4;
/// How long the primary waits for a replica before counting it as missing.
pub const REPLICATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-replica replication queues.
pub struct Replicas {
    net: Network,
    queues: PeerQueues<Waiting<bool>>,
}

impl Replicas {
    /// Queues for replication over `net`.
    pub fn new(net: Network) -> Replicas {
        Replicas {
            net,
            queues: PeerQueues::default(),
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
        let item = Waiting::new(block, stored);
        // Queued now, not when first polled: a caller's order of calls is the order sent.
        let net = self.net.clone();
        let queued = self.queues.push(peer, item, |rx| worker(net, peer, rx));
        async move { queued && answer.await.unwrap_or(false) }
    }
}

async fn worker(net: Network, peer: PeerId, rx: mpsc::UnboundedReceiver<Waiting<bool>>) {
    in_batches(rx, BATCH, IN_FLIGHT, |blocks, waiters, slot| {
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
        std::future::ready(())
    })
    .await
}
