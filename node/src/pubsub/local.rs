//! This node's live subscriptions, held in one matcher tree.
//!
//! Each subscriber has a bounded queue. When it is full the routing task waits for room (up to
//! [`SLOW_GRACE`]), so a subscriber that reads more slowly than events are published slows the
//! node's routing, and through its bounded queue the publishers, instead of losing events; one
//! that makes no room in that time (stalled, or gone without closing) is closed with a clear
//! reason instead of silently losing events, and stops holding the others up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings_matcher::{Filter, Matcher, ParallelSearchTree, SubId, TopicPattern};
use tokio::sync::mpsc;

/// Events a subscriber may have queued; when they are this many, delivery waits for it.
pub const SUBSCRIBER_QUEUE: usize = 8192;

/// How long delivery waits for a full subscriber queue to make room before the subscriber is
/// cut off as too slow.
pub const SLOW_GRACE: Duration = Duration::from_secs(2);

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

/// Subscribers whose queue was full when an event was delivered: [`LocalSubs::wait_for_room`]
/// gives it to them once they make room, or cuts them off.
#[must_use = "the subscribers with full queues have not been given the event"]
pub struct Pending {
    delivery: Option<Delivery>,
    full: Vec<(SubId, mpsc::Sender<Delivery>)>,
}

impl Pending {
    /// Nothing waits.
    pub fn none() -> Self {
        Pending {
            delivery: None,
            full: Vec::new(),
        }
    }
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
                    since_ms: crate::age::now_ms(),
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
    /// matching subscriber, each once. Subscribers whose queue is full are returned, to be given
    /// the event by [`LocalSubs::wait_for_room`] before the next one is delivered.
    pub fn deliver(
        &self,
        topic: &str,
        body: &serde_json::Value,
        cid: &str,
        event_json: &str,
        stream: Arc<(Vec<u8>, String, u64)>,
        time: u64,
    ) -> Pending {
        let Ok(mut guard) = self.inner.lock() else {
            return Pending::none();
        };
        let inner = &mut *guard;
        let mut hits = std::mem::take(&mut inner.scratch);
        inner.tree.match_event(topic, body, &mut hits);
        if hits.is_empty() {
            inner.scratch = hits;
            return Pending::none();
        }
        let delivery = Delivery::Event {
            cid: cid.into(),
            json: event_json.into(),
            stream,
            time,
            matched: Instant::now(),
        };
        let mut delivered = 0;
        let mut full = Vec::new();
        for id in &hits {
            let Some(sub) = inner.subs.get(id) else {
                continue;
            };
            match sub.tx.try_send(delivery.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => full.push((*id, sub.tx.clone())),
                // The receiver is gone; its guard is about to remove it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        self.delivered
            .fetch_add(delivered as u64, Ordering::Relaxed);
        inner.scratch = hits;
        Pending {
            delivery: Some(delivery),
            full,
        }
    }

    /// Gives the event of `pending` to each subscriber whose queue was full, waiting up to
    /// `grace` for each to make room; one that does not is cut off as too slow (its stream ends
    /// with a reason, rather than skip events it would never know about).
    pub async fn wait_for_room(&self, pending: Pending, grace: Duration) {
        let Some(delivery) = pending.delivery else {
            return;
        };
        // One grace for them all: n stalled subscribers must not hold the delivery n times it.
        let deadline = tokio::time::Instant::now() + grace;
        for (id, tx) in pending.full {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tx.send_timeout(delivery.clone(), left).await {
                Ok(()) => {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    let cut = self
                        .inner
                        .lock()
                        .ok()
                        .and_then(|mut inner| self.unregister(&mut inner, id));
                    if cut.is_some() {
                        self.too_slow.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            id,
                            queue = SUBSCRIBER_QUEUE,
                            waited_ms = grace.as_millis() as u64,
                            "subscriber too slow: its queue stayed full; closing it"
                        );
                    }
                }
                // The receiver is gone; its guard removes it.
                Err(mpsc::error::SendTimeoutError::Closed(_)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver_seq(subs: &LocalSubs, seq: u64) -> Pending {
        let body = serde_json::json!({ "n": seq });
        subs.deliver(
            "/t/a",
            &body,
            &format!("cid-{seq}"),
            &body.to_string(),
            Arc::new((vec![1], "/t/a".to_string(), seq)),
            0,
        )
    }

    fn seq_of(d: &Delivery) -> Option<u64> {
        match d {
            Delivery::Event { stream, .. } => Some(stream.2),
            Delivery::Closed(_) => None,
        }
    }

    /// A subscriber whose queue is full but which reads on gets every event, in order: the
    /// delivery waits for it instead of cutting it off (the fan-out benchmark lost 64,314
    /// events to cut-offs of subscribers that were reading as fast as they could).
    #[tokio::test]
    async fn a_full_queue_that_drains_within_the_grace_gets_every_event_in_order() {
        let subs = Arc::new(LocalSubs::default());
        let filter = Filter::parse("/t/**").expect("filter");
        let mut sub = subs.subscribe(&filter, "/t/**");
        let total = SUBSCRIBER_QUEUE as u64 + 100;
        let reader = tokio::spawn(async move {
            // Starts reading only once the queue has been full for a while.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut got = Vec::new();
            while let Some(d) = sub.rx.recv().await {
                got.extend(seq_of(&d));
                if got.len() as u64 == total {
                    break;
                }
            }
            got
        });
        for seq in 1..=total {
            let pending = deliver_seq(&subs, seq);
            subs.wait_for_room(pending, Duration::from_secs(30)).await;
        }
        let got = reader.await.expect("reader");
        assert_eq!(got, (1..=total).collect::<Vec<_>>());
        assert_eq!(subs.delivery_counts(), (total, 0));
        assert_eq!(subs.len(), 1, "still subscribed");
    }

    /// A subscriber that makes no room within the grace is cut off, once, and its stream ends
    /// after what it had queued; the others are not held up after that.
    #[tokio::test]
    async fn a_stalled_subscriber_is_cut_off_after_the_grace_and_stops_holding_others_up() {
        let subs = Arc::new(LocalSubs::default());
        let filter = Filter::parse("/t/**").expect("filter");
        let mut stalled = subs.subscribe(&filter, "/t/**");
        let mut live = subs.subscribe(&filter, "/t/**");
        let total = SUBSCRIBER_QUEUE as u64 + 3;
        let live_reader = tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(d) = live.rx.recv().await {
                if seq_of(&d).is_some() {
                    n += 1;
                }
                if n == total {
                    break;
                }
            }
            n
        });
        let grace = Duration::from_millis(100);
        let started = Instant::now();
        for seq in 1..=total {
            let pending = deliver_seq(&subs, seq);
            subs.wait_for_room(pending, grace).await;
        }
        // One wait for the stalled subscriber, then it is gone.
        let waited = started.elapsed();
        assert!(waited >= grace, "waited {waited:?}");
        assert_eq!(live_reader.await.expect("reader"), total);
        assert_eq!(subs.len(), 1, "the stalled subscriber is unregistered");
        assert_eq!(subs.delivery_counts().1, 1, "one cut-off");
        // Its queue holds what fitted, then ends.
        let mut queued = 0;
        while let Some(d) = stalled.rx.recv().await {
            assert_eq!(seq_of(&d), Some(queued + 1));
            queued += 1;
        }
        assert_eq!(queued, SUBSCRIBER_QUEUE as u64);
    }

    /// Several subscribers stalled at once are cut off within one grace, not one grace each
    /// (five stalled subscribers held every delivery 5 x 2 s before).
    #[tokio::test]
    async fn stalled_subscribers_are_cut_off_within_one_grace_together() {
        let subs = Arc::new(LocalSubs::default());
        let filter = Filter::parse("/t/**").expect("filter");
        let stalled: Vec<Subscription> = (0..5).map(|_| subs.subscribe(&filter, "/t/**")).collect();
        for seq in 1..=SUBSCRIBER_QUEUE as u64 {
            let pending = deliver_seq(&subs, seq);
            assert!(pending.full.is_empty());
        }
        let grace = Duration::from_millis(300);
        let started = Instant::now();
        let pending = deliver_seq(&subs, SUBSCRIBER_QUEUE as u64 + 1);
        assert_eq!(pending.full.len(), 5);
        subs.wait_for_room(pending, grace).await;
        let waited = started.elapsed();
        assert!(waited >= grace, "waited {waited:?}");
        // Five graces (1.5 s) before; a wide margin for a loaded machine.
        assert!(
            waited < grace * 4,
            "waited {waited:?} for 5 stalled subscribers"
        );
        assert_eq!(subs.delivery_counts().1, 5, "five cut-offs");
        assert_eq!(subs.len(), 0);
        drop(stalled);
    }
}
