//! Dispatches requests from remote peers to the router, each in its own task.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use crate::crypto::verify_wire_one;
use crate::metrics::Metrics;
use crate::net::Inbound;
use crate::net::deliver::{self, DeliverRequest, DeliverResponse};
use crate::net::publish::{self, PublishResponse};
use crate::net::replicate::{self, ReplicateResponse};
use crate::pubsub::Router;
use crate::pubsub::router::Refusal;

/// Serves inbound requests until the network stops.
pub async fn serve(router: Arc<Router>, mut inbound: mpsc::Receiver<Inbound>) {
    // Deliveries from one primary are handled strictly in order, by one worker per peer, so
    // they neither reorder nor hold up requests from anyone else.
    let mut deliverers: HashMap<PeerId, mpsc::UnboundedSender<Delivery>> = HashMap::new();
    while let Some(msg) = inbound.recv().await {
        let router = router.clone();
        match msg {
            Inbound::Publish { peer, req, reply } => {
                tokio::spawn(async move {
                    // One block: verified here (see crate::crypto for why).
                    let resp = match verify_wire_one(&req.cid, req.block.into_vec()) {
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
