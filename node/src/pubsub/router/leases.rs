//! Subscriptions: leasing a filter on the root's rendezvous set, serving other nodes' leases,
//! and renewing and expiring them.

use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use tidings_matcher::Filter;

use super::{LEASE, Router};
use crate::net::subscribe::{SubscribeRequest, SubscribeResponse};
use crate::pubsub::error::PublishError;
use crate::pubsub::local::Subscription;

impl Router {
    /// A subscriber node leases (or cancels) a subscription here.
    pub fn serve_subscribe(&self, peer: PeerId, req: SubscribeRequest) -> SubscribeResponse {
        if self.net.role() != crate::net::Role::Broker {
            return SubscribeResponse::Refused(
                "this node is a peer: it holds no rendezvous duty".into(),
            );
        }
        match req {
            SubscribeRequest::Lease {
                id,
                filter,
                lease_secs,
            } => {
                let lease = Duration::from_secs(lease_secs.clamp(1, 3600));
                match self.remote.lease(peer, id, &filter, lease) {
                    Ok(()) => SubscribeResponse::Ok,
                    Err(e) => SubscribeResponse::Refused(e),
                }
            }
            SubscribeRequest::Cancel { id } => {
                self.remote.cancel(peer, id);
                SubscribeResponse::Ok
            }
        }
    }

    /// Registers a subscription for an API client: locally, then as a lease on every member of
    /// the root's rendezvous set. Returns once at least one member holds it.
    pub async fn subscribe(&self, src: &str) -> Result<Subscription, PublishError> {
        let filter = Filter::parse(src).map_err(|e| PublishError::BadFilter(e.to_string()))?;
        let sub = self.local.subscribe(&filter, src);
        let held = self.lease(sub.id(), src, filter.root()).await;
        if held == 0 {
            return Err(PublishError::Unavailable(format!(
                "no member of the rendezvous set of {:?} took the subscription",
                filter.root()
            )));
        }
        Ok(sub)
    }

    /// Leases subscription `id` on every member of `root`'s set; returns how many hold it.
    async fn lease(&self, id: u64, src: &str, root: &str) -> usize {
        let me = self.net.local_peer();
        let set = self.net.rendezvous_set(root);
        let req = SubscribeRequest::Lease {
            id,
            filter: src.to_string(),
            lease_secs: LEASE.as_secs(),
        };
        let calls = set.into_iter().map(|m| {
            let req = req.clone();
            async move {
                let r = if m == me {
                    Ok(self.serve_subscribe(me, req))
                } else {
                    self.net.subscribe(m, req).await
                };
                match r {
                    Ok(SubscribeResponse::Ok) => true,
                    Ok(SubscribeResponse::Refused(why)) => {
                        tracing::warn!(member = %m, reason = %why, "lease refused");
                        false
                    }
                    Err(e) => {
                        tracing::debug!(member = %m, error = %e, "lease not placed");
                        false
                    }
                }
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// Renews every live subscription's lease (re-resolving sets, so leases follow churn),
    /// cancels ended ones, and expires stale leases held here. Runs until the node stops.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(LEASE / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            for (id, root) in self.local.take_cancelled() {
                let me = self.net.local_peer();
                for m in self.net.rendezvous_set(&root) {
                    if m == me {
                        self.remote.cancel(me, id);
                    } else {
                        let _ = self.net.subscribe(m, SubscribeRequest::Cancel { id }).await;
                    }
                }
            }
            for (id, src, root) in self.local.leases() {
                self.lease(id, &src, &root).await;
            }
            let gone = self.remote.expire(std::time::Instant::now());
            if gone > 0 {
                tracing::info!(leases = gone, "expired subscription leases");
            }
        }
    }
}
