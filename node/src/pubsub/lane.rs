//! This node's own publishes on one topic, pipelined. Event `n + 1` is signed and queued to the
//! store's writer as soon as `n` is queued, not once `n` is durable, so one topic goes at the
//! writer's group-commit rate instead of one commit per publish. What keeps this safe:
//!
//! * The writer applies queued events in order and refuses one whose predecessor is not stored
//!   ([`crate::store::Store::queue_signed`]): if `n` fails, `n + 1` fails too, and the chain
//!   stays gap-free.
//! * Nothing leaves the node before its own copy is durable, and a durable `n + 1` means a
//!   durable `n`: a crash loses only events nobody else has seen, so the restarted node's new
//!   `n` equivocates with nothing.
//! * Each publish hands its event on (to the replicas, or to a remote primary) and queues its
//!   deliveries only after the publish before it did ([`Turn`]): the set and the subscribers
//!   see the stream in `seq` order.

use tidings_ipld_schema::Cid;
use tokio::sync::oneshot;

/// One topic's publishing state, behind the topic's lock (held only while an event is signed
/// and queued).
#[derive(Debug, Default)]
pub(crate) struct Lane {
    /// `seq` and CID of the last event signed here on the topic, which may not be durable yet.
    pub(crate) last: Option<(u64, Cid)>,
    sent: Option<oneshot::Receiver<()>>,
    routed: Option<oneshot::Receiver<()>>,
}

impl Lane {
    /// The next publish's place, behind every publish that took one before it.
    pub(crate) fn take_turn(&mut self) -> Turn {
        let (sent, sent_rx) = oneshot::channel();
        let (routed, routed_rx) = oneshot::channel();
        Turn {
            after_sent: self.sent.replace(sent_rx),
            sent: Some(sent),
            after_routed: self.routed.replace(routed_rx),
            routed: Some(routed),
        }
    }

    /// Forgets `cid` as the last event signed if it is (its commit failed): the next publish
    /// reads its links from the store.
    pub(crate) fn forget(&mut self, cid: &Cid) {
        if self.last.is_some_and(|(_, c)| c == *cid) {
            self.last = None;
        }
    }
}

/// A publish's place in its topic's lane. Each step waits for the publish before it to have
/// done the same step, or to have given up (dropping its turn releases whoever waits on it).
#[derive(Debug, Default)]
pub(crate) struct Turn {
    after_sent: Option<oneshot::Receiver<()>>,
    sent: Option<oneshot::Sender<()>>,
    after_routed: Option<oneshot::Receiver<()>>,
    routed: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Not in a lane (an event published by another node): nothing to wait for.
    pub(crate) fn none() -> Turn {
        Turn::default()
    }

    /// Waits until the publish before this one has handed its event on.
    pub(crate) async fn wait_sent(&mut self) {
        if let Some(before) = self.after_sent.take() {
            let _ = before.await;
        }
    }

    /// This publish has handed its event on: the next may hand on its own.
    pub(crate) fn sent(&mut self) {
        self.sent = None;
    }

    /// Waits until the publish before this one has queued its deliveries.
    pub(crate) async fn wait_routed(&mut self) {
        if let Some(before) = self.after_routed.take() {
            let _ = before.await;
        }
    }

    /// This publish has queued its deliveries.
    pub(crate) fn routed(&mut self) {
        self.routed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_release_in_the_order_they_were_taken() {
        let mut lane = Lane::default();
        let mut first = lane.take_turn();
        let mut second = lane.take_turn();
        let mut third = lane.take_turn();
        // The first waits for nobody.
        assert!(futures::poll!(std::pin::pin!(first.wait_sent())).is_ready());
        {
            let mut waiting = std::pin::pin!(second.wait_sent());
            assert!(futures::poll!(&mut waiting).is_pending());
            first.sent();
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("released once the first was sent");
        }
        {
            // Routing waits separately: the first has not routed yet.
            let mut routing = std::pin::pin!(second.wait_routed());
            assert!(futures::poll!(&mut routing).is_pending());
            // A publish that gives up (its turn dropped) releases the one behind it.
            drop(first);
            tokio::time::timeout(Duration::from_secs(5), routing)
                .await
                .expect("released by the drop");
        }
        let mut behind = std::pin::pin!(third.wait_sent());
        assert!(futures::poll!(&mut behind).is_pending());
        second.sent();
        tokio::time::timeout(Duration::from_secs(5), behind)
            .await
            .expect("released once the second was sent");
    }
}
