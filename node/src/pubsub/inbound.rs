//! Dispatches requests from remote peers to the router, each in its own task.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::net::Inbound;
use crate::net::deliver::DeliverResponse;
use crate::net::publish::PublishResponse;
use crate::pubsub::Router;

/// Serves inbound requests until the network stops.
pub async fn serve(router: Arc<Router>, mut inbound: mpsc::Receiver<Inbound>) {
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
            Inbound::Subscribe { peer, req, reply } => {
                let _ = reply.send(router.serve_subscribe(peer, req));
            }
            Inbound::Deliver { peer, req, reply } => {
                // In line, not spawned: a node's deliveries are handled in the order they came.
                let resp = match router.serve_deliver(req.events).await {
                    Ok(()) => DeliverResponse::Ok,
                    Err(why) => {
                        tracing::warn!(%peer, reason = %why, "refused a bad delivery");
                        DeliverResponse::Refused(why)
                    }
                };
                let _ = reply.send(resp);
            }
        }
    }
}
