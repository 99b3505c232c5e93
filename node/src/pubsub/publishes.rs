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

use libp2p::PeerId;
use tidings_ipld_schema::Block;
use tokio::sync::{mpsc, oneshot};

use crate::net::batch::Budget;
use crate::net::peer_queues::PeerQueues;
use crate::net::publish::{PublishAnswer, PublishRequest};
use crate::net::{NetError, Network};
use crate::pubsub::peer_queue::{Waiting, in_batches};

/// Most events in one publish request: what the primary verifies as one batch.
const BATCH: Budget = Budget::items(256);
/// Requests in flight to one primary: enough to keep its commits back to back, few enough
/// that events queue up into batches while they are out.
const IN_FLIGHT: usize = 8;

type Answer = Result<PublishAnswer, NetError>;

/// Per-primary publish queues.
pub struct Publishes {
    net: Network,
    queues: PeerQueues<Waiting<Answer>>,
}

impl Publishes {
    /// Queues for publishing over `net`.
    pub fn new(net: Network) -> Publishes {
        Publishes {
            net,
            queues: PeerQueues::default(),
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
        let item = Waiting::new(block, answer);
        let net = self.net.clone();
        let queued = self.queues.push(peer, item, |rx| worker(net, peer, rx));
        async move {
            if !queued {
                return Err(NetError::Stopped);
            }
            rx.await.unwrap_or(Err(NetError::Stopped))
        }
    }
}

async fn worker(net: Network, peer: PeerId, rx: mpsc::UnboundedReceiver<Waiting<Answer>>) {
    in_batches(rx, BATCH, IN_FLIGHT, |blocks, waiters, slot| {
        let net = net.clone();
        async move {
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
    })
    .await
}
