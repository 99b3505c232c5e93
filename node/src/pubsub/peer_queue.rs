//! Per-peer send queues drained in batches: the shape shared by publishes to a primary
//! ([`super::publishes`]), replicas ([`super::replicas`]) and deliveries ([`super::outbox`]).
//! Each peer gets one unbounded queue and one task ([`PeerQueues`](crate::net::peer_queues::PeerQueues)); the task takes what is
//! queued as one batch
//! (up to a message's [`Budget`]) whenever it may send, so a lone item goes at once and a busy
//! peer gets large requests.

use std::future::Future;
use std::sync::Arc;

use serde_bytes::ByteBuf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::net::batch::{Batch, Budget, pair_size};

/// A peer's queue as its task reads it: one batch at a time.
pub struct Drain<T> {
    rx: mpsc::UnboundedReceiver<T>,
    /// The item that did not fit in the last batch: the first of the next.
    carry: Option<T>,
    budget: Budget,
    size: fn(&T) -> usize,
}

impl<T> Drain<T> {
    /// Batches of at most `budget`, items measured by `size` (their estimated encoded bytes).
    pub fn new(rx: mpsc::UnboundedReceiver<T>, budget: Budget, size: fn(&T) -> usize) -> Self {
        Drain {
            rx,
            carry: None,
            budget,
            size,
        }
    }

    /// Waits for an item, then takes it and whatever else is queued and fits; `None` once the
    /// queue is closed and empty.
    pub async fn next(&mut self) -> Option<Vec<T>> {
        let first = match self.carry.take() {
            Some(item) => item,
            None => self.rx.recv().await?,
        };
        let mut batch = Batch::new(self.budget);
        let mut first = Some(first);
        let rx = &mut self.rx;
        self.carry = batch.fill(|| first.take().or_else(|| rx.try_recv().ok()), self.size);
        Some(batch.into_items())
    }

    /// Items queued behind the current batch.
    pub fn waiting(&self) -> usize {
        self.rx.len()
    }
}

/// An event block queued to be sent, and who waits for what became of it.
pub struct Waiting<A> {
    /// CID bytes.
    pub cid: ByteBuf,
    /// Block bytes.
    pub block: ByteBuf,
    /// Where its answer goes.
    pub answer: oneshot::Sender<A>,
}

impl<A> Waiting<A> {
    /// `block` queued, its answer to go to `answer`.
    pub fn new(block: &tidings_ipld_schema::Block, answer: oneshot::Sender<A>) -> Self {
        Waiting {
            cid: ByteBuf::from(block.cid.to_bytes()),
            block: ByteBuf::from(block.data.clone()),
            answer,
        }
    }
}

/// Drains a queue of event blocks in batches with up to `in_flight` requests out at once. A
/// batch is formed only when a request may go, so events queue up while the requests are out.
/// `send` gets each batch's (CID, block) pairs, their waiters and the request's slot: the future
/// it returns hands the request to the network (awaited here, so requests leave in queue
/// order), and whatever waits for the answer must hold the slot until then.
pub async fn in_batches<A, Fut>(
    rx: mpsc::UnboundedReceiver<Waiting<A>>,
    budget: Budget,
    in_flight: usize,
    mut send: impl FnMut(Vec<(ByteBuf, ByteBuf)>, Vec<oneshot::Sender<A>>, OwnedSemaphorePermit) -> Fut,
) where
    Fut: Future<Output = ()>,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut queue = Drain::new(rx, budget, |w| pair_size(&w.cid, &w.block));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(batch) = queue.next().await else {
            return;
        };
        let (blocks, waiters) = batch
            .into_iter()
            .map(|w| ((w.cid, w.block), w.answer))
            .unzip();
        send(blocks, waiters, slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(_: &u32) -> usize {
        1
    }

    #[tokio::test]
    async fn batches_take_what_is_queued_in_order_up_to_the_budget() {
        let (tx, rx) = mpsc::unbounded_channel();
        for i in 0..5u32 {
            tx.send(i).expect("send");
        }
        let budget = Budget {
            bytes: usize::MAX,
            count: 2,
        };
        let mut d = Drain::new(rx, budget, one);
        assert_eq!(d.next().await, Some(vec![0, 1]));
        assert_eq!(
            d.waiting(),
            3,
            "a full batch takes nothing more from the queue"
        );
        assert_eq!(d.next().await, Some(vec![2, 3]));
        assert_eq!(d.next().await, Some(vec![4]));
        drop(tx);
        assert_eq!(d.next().await, None);
    }
}
