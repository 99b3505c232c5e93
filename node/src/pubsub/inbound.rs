//! Dispatches requests from remote peers to the router, each in its own task.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use crate::net::Inbound;
use crate::net::deliver::{DeliverRequest, DeliverResponse};
use crate::net::publish::PublishResponse;
use crate::pubsub::Router;

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
                    let resp = match tidings_ipld_schema::Cid::try_from(req.cid.as_slice())
                        .map_err(|e| e.to_string())
                        .and_then(|cid| {
                            tidings_ipld_schema::verify(&cid, &req.block)
                                .map(|ev| (cid, ev))
                                .map_err(|e| e.to_string())
                        }) {
                        Ok((cid, event)) => {
                            let block = tidings_ipld_schema::Block {
                                cid,
                                data: req.block.into_vec(),
                            };
                            router.serve_publish(&block, &event).await
                        }
                        Err(why) => {
                            tracing::warn!(%peer, reason = %why, "refused a bad published block");
                            PublishResponse::Refused {
                                status: 400,
                                message: why,
                            }
                        }
                    };
                    let _ = reply.send(resp);
                });
            }
            Inbound::Replicate { req, reply, .. } => {
                tokio::spawn(async move {
                    let _ = reply.send(router.serve_replicate(req.blocks).await);
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
        let resp = match router.serve_deliver(peer, req.events, req.after).await {
            Ok(()) => DeliverResponse::Ok,
            Err(why) => {
                tracing::warn!(%peer, reason = %why, "refused a bad delivery");
                DeliverResponse::Refused(why)
            }
        };
        let _ = reply.send(resp);
    }
}
