//! This node's live subscriptions, held in one matcher tree.
//!
//! Delivery never blocks the publish path: each subscriber has a bounded queue, and one that
//! falls that far behind is closed with a clear reason instead of silently losing events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tidings_matcher::{Filter, Matcher, ParallelSearchTree, SubId, TopicPattern};
use tokio::sync::mpsc;

/// Events a subscriber may have queued before it is cut off as too slow.
pub const SUBSCRIBER_QUEUE: usize = 8192;

/// One delivery to a subscriber.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An event: its CID and its JSON form (docs/api.md), shared by every matching subscriber.
    Event {
        /// The event's CID as a string.
        cid: Arc<str>,
        /// The event JSON, serialised once.
        json: Arc<str>,
        /// Its stream and place in it (author key, topic, seq), for acknowledgements.
        stream: Arc<(Vec<u8>, String, u64)>,
        /// The event's `time` (ms since the epoch, the author's clock).
        time: u64,
        /// When it was matched here (for the match→deliver latency).
        matched: Instant,
    },
    /// The subscription ends; the text says why.
    Closed(String),
}

struct Sub {
    tx: mpsc::Sender<Delivery>,
    /// Filter source, re-sent with every lease renewal.
    src: Arc<str>,
    /// Root segment: selects the rendezvous set.
    root: String,
    /// The filter's topic pattern and when the subscription began (ms since epoch): how far
    /// back a stream first seen here may need repair (see [`LocalSubs::earliest_start`]).
    topic: TopicPattern,
    since_ms: u64,
}

#[derive(Default)]
struct Inner {
    tree: ParallelSearchTree,
    subs: HashMap<SubId, Sub>,
    /// Reused per event so matching allocates nothing in the steady state.
    scratch: Vec<SubId>,
    /// Set by [`LocalSubs::close_all`]: why subscriptions opened from then on end at once.
    closed: Option<String>,
}

/// The registry of local subscriptions.
#[derive(Default)]
pub struct LocalSubs {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    /// (id, root) of subscriptions that ended, for the lease task to cancel remotely.
    cancelled: Mutex<Vec<(SubId, String)>>,
    /// Events queued for subscribers, one per subscriber per event (for `/metrics`).
    delivered: AtomicU64,
    /// Subscribers cut off as too slow (for `/metrics`).
    too_slow: AtomicU64,
}

/// A live subscription: receives deliveries; dropping it unsubscribes.
pub struct Subscription {
    /// Deliveries in publish order.
    pub rx: mpsc::Receiver<Delivery>,
    guard: SubscriptionGuard,
}

impl Subscription {
    /// The subscription's id.
    pub fn id(&self) -> SubId {
        self.guard.id
    }
}

/// Removes the subscription from the tree when dropped (client gone, stream ended).
struct SubscriptionGuard {
    id: SubId,
    registry: Arc<LocalSubs>,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

impl LocalSubs {
    /// Registers `filter` (parsed from `src`) locally; events handed to [`LocalSubs::deliver`]
    /// from now on that match it reach the returned subscription.
    pub fn subscribe(self: &Arc<Self>, filter: &Filter, src: &str) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(reason) = &inner.closed {
                // Opened while the node stops: ends at once rather than hold the API open.
                let _ = tx.try_send(Delivery::Closed(reason.clone()));
                return Subscription {
                    rx,
                    guard: SubscriptionGuard {
                        id,
                        registry: self.clone(),
                    },
                };
            }
            inner.tree.insert(id, filter);
            inner.subs.insert(
                id,
                Sub {
                    tx,
                    src: src.into(),
                    root: filter.root().to_string(),
                    topic: filter.topic().clone(),
                    since_ms: crate::pubsub::router::now_ms(),
                },
            );
        }
        tracing::debug!(id, "subscribed");
        Subscription {
            rx,
            guard: SubscriptionGuard {
                id,
                registry: self.clone(),
            },
        }
    }

    fn remove(&self, id: SubId) {
        if let Ok(mut inner) = self.inner.lock() {
            self.unregister(&mut inner, id);
        }
        tracing::debug!(id, "unsubscribed");
    }

    /// Takes `id` out of the tree and the table and queues its lease for cancelling; its
    /// sender, returned, closes the subscriber's queue when dropped.
    fn unregister(&self, inner: &mut Inner, id: SubId) -> Option<mpsc::Sender<Delivery>> {
        inner.tree.remove(id);
        let sub = inner.subs.remove(&id)?;
        if let Ok(mut c) = self.cancelled.lock() {
            c.push((id, sub.root));
        }
        Some(sub.tx)
    }

    /// (id, filter source, root) of every live subscription, for lease renewal.
    pub fn leases(&self) -> Vec<(SubId, Arc<str>, String)> {
        self.inner
            .lock()
            .map(|i| {
                i.subs
                    .iter()
                    .map(|(id, s)| (*id, s.src.clone(), s.root.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When the earliest live subscription whose topic pattern covers `topic` began (ms since
    /// epoch), if any.
    pub fn earliest_start(&self, topic: &str) -> Option<u64> {
        let inner = self.inner.lock().ok()?;
        inner
            .subs
            .values()
            .filter(|s| s.topic.matches(topic))
            .map(|s| s.since_ms)
            .min()
    }

    /// Subscriptions that ended since the last call: (id, root).
    pub fn take_cancelled(&self) -> Vec<(SubId, String)> {
        self.cancelled
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.subs.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (events queued for subscribers, subscribers cut off as too slow) since start.
    pub fn delivery_counts(&self) -> (u64, u64) {
        (
            self.delivered.load(Ordering::Relaxed),
            self.too_slow.load(Ordering::Relaxed),
        )
    }

    /// Ends every live subscription with `reason` (the node is stopping): each gets
    /// [`Delivery::Closed`] after what it has queued, and its queue closes, so every
    /// WebSocket and SSE stream ends and the API's graceful shutdown can finish. Subscriptions
    /// opened afterwards end at once with the same reason.
    pub fn close_all(&self, reason: &str) {
        let Ok(mut guard) = self.inner.lock() else {
            return;
        };
        let inner = &mut *guard;
        inner.closed = Some(reason.to_string());
        let ids: Vec<SubId> = inner.subs.keys().copied().collect();
        for id in ids {
            if let Some(tx) = self.unregister(inner, id) {
                // A full queue gets no Closed: it ends when drained, which reads as closed too.
                let _ = tx.try_send(Delivery::Closed(reason.to_string()));
            }
        }
        tracing::info!(reason, "closed every subscription");
    }

    /// Matches one event (its `time` as the author stamped it) and queues it for every
    /// matching subscriber, each once. Returns how many subscribers it was queued for.
    pub fn deliver(
        &self,
        topic: &str,
        body: &serde_json::Value,
        cid: &str,
        event_json: &str,
        stream: Arc<(Vec<u8>, String, u64)>,
        time: u64,
    ) -> usize {
        let Ok(mut guard) = self.inner.lock() else {
            return 0;
        };
        let inner = &mut *guard;
        let mut hits = std::mem::take(&mut inner.scratch);
        inner.tree.match_event(topic, body, &mut hits);
        if hits.is_empty() {
            inner.scratch = hits;
            return 0;
        }
        let delivery = Delivery::Event {
            cid: cid.into(),
            json: event_json.into(),
            stream,
            time,
            matched: Instant::now(),
        };
        let mut delivered = 0;
        let mut too_slow = Vec::new();
        for id in &hits {
            let Some(sub) = inner.subs.get(id) else {
                continue;
            };
            match sub.tx.try_send(delivery.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => too_slow.push(*id),
                // The receiver is gone; its guard is about to remove it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        self.delivered
            .fetch_add(delivered as u64, Ordering::Relaxed);
        for id in too_slow {
            // Cut the subscriber off explicitly rather than skip events it would never know about.
            if self.unregister(inner, id).is_some() {
                self.too_slow.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    id,
                    queue = SUBSCRIBER_QUEUE,
                    "subscriber too slow: closing it"
                );
            }
        }
        inner.scratch = hits;
        delivered
    }
}
