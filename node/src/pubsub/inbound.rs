//! Dispatches requests from remote peers to the router, each in its own task.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::PeerId;
use tidings_ipld_schema::{Block, Event};
use tokio::sync::{mpsc, oneshot};

use crate::crypto::verify_wire_batch;
use crate::metrics::Metrics;
use crate::net::Inbound;
use crate::net::deliver::{self, DeliverRequest, DeliverResponse};
use crate::net::publish::{self, PublishRequest, PublishResponse};
use crate::net::replicate::{self, ReplicateResponse};
use crate::pubsub::Router;
use crate::pubsub::router::Refusal;

/// Serves inbound requests until the network stops.
pub async fn serve(router: Arc<Router>, mut inbound: mpsc::Receiver<Inbound>) {
    // Deliveries from one primary are handled strictly in order, by one worker per peer, so
    // they neither reorder nor hold up requests from anyone else.
    let mut deliverers: HashMap<PeerId, mpsc::UnboundedSender<Delivery>> = HashMap::new();
    let (publishes, queued) = mpsc::unbounded_channel();
    tokio::spawn(verify_publishes(router.clone(), queued));
    while let Some(msg) = inbound.recv().await {
        let router = router.clone();
        match msg {
            Inbound::Publish { peer, req, reply } => {
                // The verifier ends only with this loop, which holds its sender.
                let _ = publishes.send((peer, req, reply));
            }
            Inbound::Replicate { peer, req, reply } => {
                tokio::spawn(async move {
                    let n = req.blocks.len() as u64;
                    let resp = match router.serve_replicate(req.blocks).await {
                        Ok(()) => {
                            Metrics::add(&router.metrics().replicas_stored, n);
                            ReplicateResponse::Stored
                        }
                        Err(why) => {
                            refused(&router, peer, replicate::PROTOCOL, &why).await;
                            ReplicateResponse::Refused(why.to_string())
                        }
                    };
                    let _ = reply.send(resp);
                });
            }
            Inbound::History { peer, req, reply } => {
                tokio::spawn(async move {
                    let _ = reply.send(router.serve_history(peer, req).await);
                });
            }
            Inbound::Subscribe { peer, req, reply } => {
                let _ = reply.send(router.serve_subscribe(peer, req));
            }
            Inbound::Deliver { peer, req, reply } => {
                let mut item = (req, reply);
                if let Some(tx) = deliverers.get(&peer) {
                    match tx.send(item) {
                        Ok(()) => continue,
                        Err(e) => item = e.0,
                    }
                }
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(item);
                deliverers.insert(peer, tx);
                tokio::spawn(deliver_worker(router, peer, rx));
            }
        }
    }
}

type Delivery = (DeliverRequest, oneshot::Sender<DeliverResponse>);

/// A batch of publishes verified together: each sender and reply with its own block's verdict.
async fn verified(
    batch: Vec<Publish>,
) -> Vec<(
    PeerId,
    oneshot::Sender<PublishResponse>,
    Result<(Block, Event), String>,
)> {
    let mut senders = Vec::with_capacity(batch.len());
    let mut wire = Vec::with_capacity(batch.len());
    for (peer, req, reply) in batch {
        senders.push((peer, reply));
        wire.push((req.cid.into_vec(), req.block.into_vec()));
    }
    let verdicts = verify_wire_batch(wire).await;
    senders
        .into_iter()
        .zip(verdicts)
        .map(|((peer, reply), verdict)| (peer, reply, verdict))
        .collect()
}

/// A publish from another node, for this node as the topic's primary.
type Publish = (PeerId, PublishRequest, oneshot::Sender<PublishResponse>);

/// Most publishes verified as one batch.
const PUBLISH_BATCH: usize = 256;

/// Verifies inbound publishes as they come, each time all of those queued together as one
/// batch ([`verify_wire_batch`]: ed25519 batch verification, a bad signature still found and
/// refused alone), then serves each in its own task. Requests arrive one event each, and
/// verifying them one at a time was a quarter of a primary's reactor time; batches form by
/// themselves while the previous batch is verified, so a lone publish waits for nothing.
async fn verify_publishes(router: Arc<Router>, mut queued: mpsc::UnboundedReceiver<Publish>) {
    while let Some(first) = queued.recv().await {
        let mut batch = vec![first];
        while batch.len() < PUBLISH_BATCH {
            match queued.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        for (peer, reply, verdict) in verified(batch).await {
            let router = router.clone();
            tokio::spawn(async move {
                let resp = match verdict {
                    Ok((block, event)) => {
                        let resp = router.serve_publish(peer, &block, &event).await;
                        let m = router.metrics();
                        match &resp {
                            PublishResponse::Stored { .. } => Metrics::inc(&m.primary_stored),
                            PublishResponse::Refused { .. } => Metrics::inc(&m.primary_refused),
                        }
                        resp
                    }
                    Err(why) => {
                        Metrics::inc(&router.metrics().primary_refused);
                        misbehaved(&router, peer, publish::PROTOCOL, &why).await;
                        PublishResponse::Refused {
                            status: 400,
                            message: why,
                        }
                    }
                };
                let _ = reply.send(resp);
            });
        }
    }
}

async fn deliver_worker(
    router: Arc<Router>,
    peer: PeerId,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
) {
    while let Some((req, reply)) = rx.recv().await {
        // Deliveries queue here: a peer penalised since this one was admitted gets no more in.
        if router.net().is_penalised(&peer) {
            let why = "refused: this peer is penalised for misbehaving";
            let _ = reply.send(DeliverResponse::Refused(why.into()));
            continue;
        }
        let resp = match router.serve_deliver(peer, req.events, req.after).await {
            Ok(()) => DeliverResponse::Ok,
            Err(why) => {
                refused(&router, peer, deliver::PROTOCOL, &why).await;
                DeliverResponse::Refused(why.to_string())
            }
        };
        let _ = reply.send(resp);
    }
}

/// Logs a refused request; a bad block penalises its sender.
async fn refused(router: &Router, peer: PeerId, protocol: &str, why: &Refusal) {
    match why {
        Refusal::BadBlock(why) => misbehaved(router, peer, protocol, why).await,
        Refusal::Failed(why) => {
            tracing::warn!(%peer, protocol, reason = %why, "could not serve a request")
        }
    }
}

/// `peer` sent a block that fails verification: nothing of it was stored; it is penalised (and
/// the reason logged).
async fn misbehaved(router: &Router, peer: PeerId, protocol: &str, why: &str) {
    router
        .net()
        .penalise(peer, &format!("{protocol} request: {why}"))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;
    use tidings_ipld_schema::{DAG_CBOR, Ipld, Keypair, cid_of};

    /// Publishes from several peers verified as one batch: the one forged block is refused and
    /// only its sender is told so; every other publish keeps its own sender and its own event.
    #[tokio::test]
    async fn a_forged_publish_in_a_batch_is_refused_alone_and_the_others_stay_with_their_senders() {
        let kp = Keypair::ed25519_from_bytes([3; 32]).expect("key");
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let forged = 17;
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        for seq in 1..=40u64 {
            let e = Event::sign(&kp, "/b/t", Ipld::Integer(seq.into()), seq, seq, vec![])
                .expect("sign");
            let mut b = e.to_block().expect("block");
            if seq == forged {
                // Another signature under the block's own CID: only the signature is wrong.
                let last = b.data.len() - 1;
                b.data[last] ^= 1;
                b.cid = cid_of(DAG_CBOR, &b.data);
            }
            let (tx, rx) = oneshot::channel();
            let req = PublishRequest {
                cid: ByteBuf::from(b.cid.to_bytes()),
                block: ByteBuf::from(b.data),
            };
            batch.push((peers[seq as usize % 4], req, tx));
            answers.push((seq, rx));
        }
        let out = verified(batch).await;
        assert_eq!(out.len(), 40);
        for (i, (peer, reply, verdict)) in out.into_iter().enumerate() {
            let seq = i as u64 + 1;
            assert_eq!(peer, peers[seq as usize % 4], "publish {seq}: sender");
            assert_eq!(
                verdict.is_err(),
                seq == forged,
                "publish {seq}: {verdict:?}"
            );
            if let Ok((_, event)) = &verdict {
                assert_eq!(event.seq, seq);
            }
            let message = format!("{seq}");
            let _ = reply.send(PublishResponse::Refused { status: 0, message });
        }
        // Each reply reached the request it belongs to.
        for (seq, rx) in answers {
            match rx.await {
                Ok(PublishResponse::Refused { message, .. }) => {
                    assert_eq!(message, seq.to_string())
                }
                other => panic!("publish {seq}: {other:?}"),
            }
        }
    }
}
