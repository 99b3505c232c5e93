//! Dispatches requests from remote peers to the router, each in its own task.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::PeerId;
use tidings_ipld_schema::{Block, Event};
use tokio::sync::{mpsc, oneshot};

use crate::crypto::verify_wire_batch;
use crate::metrics::Metrics;
use crate::net::Inbound;
use crate::net::batch::Budget;
use crate::net::deliver::{DeliverRequest, DeliverResponse};
use crate::net::publish::{PublishAnswer, PublishRequest, PublishResponse};
use crate::net::replicate::ReplicateResponse;
use crate::pubsub::Refusal;
use crate::pubsub::Router;
use crate::pubsub::peer_queue::Drain;

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
            Inbound::Publish {
                peer,
                req,
                reply,
                protocol,
            } => {
                // The verifier ends only with this loop, which holds its sender.
                let _ = publishes.send(((peer, protocol, reply), req));
            }
            Inbound::Replicate {
                peer,
                req,
                reply,
                protocol,
            } => {
                tokio::spawn(async move {
                    let n = req.blocks.len() as u64;
                    let resp = match router.serve_replicate(req.blocks).await {
                        Ok(()) => {
                            Metrics::add(&router.metrics().replicas_stored, n);
                            ReplicateResponse::Stored
                        }
                        Err(why) => {
                            refused(&router, peer, protocol, &why).await;
                            ReplicateResponse::Refused(why.to_string())
                        }
                    };
                    let _ = reply.send(resp);
                });
            }
            Inbound::History {
                peer, req, reply, ..
            } => {
                tokio::spawn(async move {
                    let _ = reply.send(router.serve_history(peer, req).await);
                });
            }
            Inbound::Subscribe {
                peer, req, reply, ..
            } => {
                let _ = reply.send(router.serve_subscribe(peer, req));
            }
            Inbound::Deliver {
                peer,
                req,
                reply,
                protocol,
            } => {
                let mut item = (req, reply, protocol);
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

/// A delivery request, where its answer goes, and the protocol it came on.
type Delivery = (
    DeliverRequest,
    oneshot::Sender<DeliverResponse>,
    &'static str,
);

/// Publish requests verified together: each request's sender and reply, and a verdict per
/// event, in order. The blocks move to the verifier, uncopied.
async fn verified(batch: Vec<Publish>) -> Vec<(Requester, Vec<Result<(Block, Event), String>>)> {
    let mut requesters = Vec::with_capacity(batch.len());
    let mut wire = Vec::new();
    for (requester, req) in batch {
        requesters.push((requester, req.blocks.len()));
        wire.extend(
            req.blocks
                .into_iter()
                .map(|(cid, block)| (cid.into_vec(), block.into_vec())),
        );
    }
    let mut verdicts = verify_wire_batch(wire).await.into_iter();
    requesters
        .into_iter()
        .map(|(requester, n)| (requester, verdicts.by_ref().take(n).collect()))
        .collect()
}

/// Who sent a publish request, on which protocol, and where its response goes.
type Requester = (PeerId, &'static str, oneshot::Sender<PublishResponse>);

/// A publish request from another node, for this node as the topics' primary.
type Publish = (Requester, PublishRequest);

/// Most events verified as one batch (a request larger than this is verified alone).
const PUBLISH_BATCH: usize = 256;

/// Verifies inbound publish requests as they come, each time all of those queued together as
/// one batch ([`verify_wire_batch`]: ed25519 batch verification, a bad signature still found),
/// then serves each request's events in a task of its own. A request holding a block that fails
/// verification is refused whole, nothing of it stored, and its sender penalised: an author's
/// node sends only events it signed, so one forged block makes the whole request hostile.
/// Batches form by themselves while the previous batch is verified, so a lone publish waits for
/// nothing.
async fn verify_publishes(router: Arc<Router>, queued: mpsc::UnboundedReceiver<Publish>) {
    // Measured in events, not bytes: the bound is what one batch verification takes.
    let budget = Budget {
        bytes: PUBLISH_BATCH,
        count: usize::MAX,
    };
    let mut queued = Drain::new(queued, budget, |p: &Publish| p.1.blocks.len());
    while let Some(batch) = queued.next().await {
        for ((peer, protocol, reply), verdicts) in verified(batch).await {
            let router = router.clone();
            tokio::spawn(async move {
                let _ = reply.send(serve_request(&router, peer, protocol, verdicts).await);
            });
        }
    }
}

/// Serves one verified publish request: every event in it, concurrently (the primary's turns
/// keep each stream's order), answered each in its place.
async fn serve_request(
    router: &Router,
    peer: PeerId,
    protocol: &str,
    verdicts: Vec<Result<(Block, Event), String>>,
) -> PublishResponse {
    let m = router.metrics();
    let n = verdicts.len() as u64;
    let events = match verdicts.into_iter().collect::<Result<Vec<_>, String>>() {
        Ok(events) => events,
        Err(why) => {
            Metrics::add(&m.primary_refused, n);
            misbehaved(router, peer, protocol, &why).await;
            return PublishResponse::Refused {
                status: 400,
                message: why,
            };
        }
    };
    let answers = futures::future::join_all(
        events
            .into_iter()
            .map(|(block, event)| router.serve_publish(peer, block, event)),
    )
    .await;
    for a in &answers {
        match a {
            PublishAnswer::Stored { .. } => Metrics::inc(&m.primary_stored),
            PublishAnswer::Refused { .. } => Metrics::inc(&m.primary_refused),
        }
    }
    PublishResponse::Each(answers)
}

async fn deliver_worker(
    router: Arc<Router>,
    peer: PeerId,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
) {
    while let Some((req, reply, protocol)) = rx.recv().await {
        // Deliveries queue here: a peer penalised since this one was admitted gets no more in.
        if router.net().is_penalised(&peer) {
            let why = "refused: this peer is penalised for misbehaving";
            let _ = reply.send(DeliverResponse::Refused(why.into()));
            continue;
        }
        let resp = match router.serve_deliver(peer, req.events, req.after).await {
            Ok(()) => DeliverResponse::Ok,
            Err(why) => {
                refused(&router, peer, protocol, &why).await;
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

    /// Publish requests from several peers verified as one batch: each request keeps its own
    /// sender, reply and events, in order, and only the request holding the forged block has a
    /// failed verdict (which refuses it whole, [`serve_request`]).
    #[tokio::test]
    async fn a_forged_publish_fails_only_its_own_request_and_every_request_keeps_its_events() {
        let kp = Keypair::ed25519_from_bytes([3; 32]).expect("key");
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let forged = 17;
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        for (r, peer) in peers.iter().enumerate() {
            let mut blocks = Vec::new();
            for seq in (r as u64 * 10 + 1)..=(r as u64 * 10 + 10) {
                let e = Event::sign(&kp, "/b/t", Ipld::Integer(seq.into()), seq, seq, vec![])
                    .expect("sign");
                let mut b = e.to_block().expect("block");
                if seq == forged {
                    // Another signature under the block's own CID: only the signature is wrong.
                    let last = b.data.len() - 1;
                    b.data[last] ^= 1;
                    b.cid = cid_of(DAG_CBOR, &b.data);
                }
                blocks.push((ByteBuf::from(b.cid.to_bytes()), ByteBuf::from(b.data)));
            }
            let (tx, rx) = oneshot::channel();
            batch.push((
                (*peer, crate::net::publish::PROTOCOL, tx),
                PublishRequest { blocks },
            ));
            answers.push(rx);
        }
        let out = verified(batch).await;
        assert_eq!(out.len(), 4);
        for (r, ((peer, _, reply), verdicts)) in out.into_iter().enumerate() {
            assert_eq!(peer, peers[r], "request {r}: sender");
            assert_eq!(verdicts.len(), 10, "request {r}: one verdict per event");
            for (i, verdict) in verdicts.iter().enumerate() {
                let seq = r as u64 * 10 + 1 + i as u64;
                assert_eq!(verdict.is_err(), seq == forged, "event {seq}: {verdict:?}");
                if let Ok((_, event)) = verdict {
                    assert_eq!(event.seq, seq);
                }
            }
            let message = format!("{r}");
            let _ = reply.send(PublishResponse::Refused { status: 0, message });
        }
        // Each reply reached the request it belongs to.
        for (r, rx) in answers.into_iter().enumerate() {
            match rx.await {
                Ok(PublishResponse::Refused { message, .. }) => assert_eq!(message, r.to_string()),
                other => panic!("request {r}: {other:?}"),
            }
        }
    }
}
