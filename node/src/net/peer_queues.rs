//! One send queue per peer, each drained by a task of its own: the shape shared by the
//! pubsub queues ([`crate::pubsub::publishes`], [`crate::pubsub::replicas`],
//! [`crate::pubsub::outbox`]) and the stream protocols' requesters ([`super::stream_rpc`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use libp2p::PeerId;
use tokio::sync::mpsc;

/// One queue per peer, each drained by a task of its own.
pub struct PeerQueues<T> {
    queues: Mutex<HashMap<PeerId, mpsc::UnboundedSender<T>>>,
}

impl<T> Default for PeerQueues<T> {
    fn default() -> Self {
        PeerQueues {
            queues: Mutex::default(),
        }
    }
}

impl<T: Send + 'static> PeerQueues<T> {
    /// Queues `item` for `peer`, in call order. When the peer has no queue yet, or its task
    /// ended, a new queue is made and `start` spawns the task that drains it. False if the
    /// item could not be queued (a poisoned lock: a bug elsewhere).
    pub fn push<F>(
        &self,
        peer: PeerId,
        item: T,
        start: impl FnOnce(mpsc::UnboundedReceiver<T>) -> F,
    ) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ok(mut queues) = self.queues.lock() else {
            return false;
        };
        let item = match queues.get(&peer) {
            Some(tx) => match tx.send(item) {
                Ok(()) => return true,
                Err(e) => e.0, // the task ended; start a new one below
            },
            None => item,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(item);
        queues.insert(peer, tx);
        tokio::spawn(start(rx));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_peer_gets_one_task_that_sees_its_items_in_order() {
        let queues = PeerQueues::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for (peer, i) in [(a, 1u32), (b, 10), (a, 2), (b, 20), (a, 3)] {
            let seen_tx = seen_tx.clone();
            let started = started.clone();
            assert!(queues.push(peer, i, move |mut rx| {
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    while let Some(i) = rx.recv().await {
                        let _ = seen_tx.send((peer, i));
                    }
                }
            }));
        }
        let mut got: HashMap<PeerId, Vec<u32>> = HashMap::new();
        for _ in 0..5 {
            let (peer, i) = seen.recv().await.expect("an item");
            got.entry(peer).or_default().push(i);
        }
        assert_eq!(got[&a], vec![1, 2, 3]);
        assert_eq!(got[&b], vec![10, 20]);
        assert_eq!(
            started.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one task per peer"
        );
    }
}
