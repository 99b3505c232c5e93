//! Filling a message with items (events, blocks, stream tips) up to a byte budget and a count.
//!
//! Every message a node builds that carries a variable number of items goes through a
//! [`Batch`], so no message can grow past what peers accept ([`MAX_MESSAGE`], refused as
//! hostile by the receiver) however large its events are: a deliver request of 256 events of
//! 200 KB each was 51 MB, and cut the sender off from its subscriber for ten minutes.
//!
//! The byte budget, [`MESSAGE_BUDGET`] (4 MiB), is a quarter of the limit: the estimate of an
//! item's encoded size ([`pair_size`]) is an upper bound, but the envelope (variant and field
//! names, a page's acknowledgements, a cursor) rides on top, and the slack keeps a future
//! field from pushing a full batch over. It is large enough to amortise a request's round trip
//! (hundreds of small events, or four of the largest), and small enough to cross a 10 Mbit/s
//! link in about 3 s, well inside the 10 s request timeout, so a slow link times out no batch.
//! Any single item up to the 1 MiB block limit fits in a batch by itself: the first item of a
//! batch is always taken.
//!
//! [`check_encoded`](super::codec::check_encoded) is the last line of defence, where the bytes
//! are written: a message over the limit is a bug here, never sent (the peer would penalise us),
//! and logged as one.

use tidings_ipld_schema::MAX_BLOCK_SIZE;

use super::codec::MAX_MESSAGE;

/// Bytes of items in one message (see the module documentation for why 4 MiB).
pub const MESSAGE_BUDGET: usize = 4 << 20;

/// Upper bound of the CBOR framing of one (CID bytes, block bytes) pair: an array header and
/// two byte-string headers (1 + 9 + 9), rounded up, plus a `u64` riding beside it (a deliver
/// request's `after`, 9 bytes).
pub const PAIR_OVERHEAD: usize = 32;

/// Bytes the envelope of a message may take beyond its items' estimates: a quarter of the limit
/// is left for it (and [`MESSAGE_BUDGET`] plus the largest single item is far below the rest).
pub const ENVELOPE_SLACK: usize = MAX_MESSAGE as usize / 4;

// A full batch, or the largest single item alone, plus the envelope, is under the limit.
const _: () = assert!(MESSAGE_BUDGET + ENVELOPE_SLACK <= MAX_MESSAGE as usize);
const _: () = assert!(MAX_BLOCK_SIZE + PAIR_OVERHEAD <= MESSAGE_BUDGET);

/// Largest estimated size of a message's items: what every batch must stay under.
pub const MAX_ITEMS_BYTES: usize = MAX_MESSAGE as usize - ENVELOPE_SLACK;

/// How much one message may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Estimated bytes of items at most (a single larger item still goes alone).
    pub bytes: usize,
    /// Items at most.
    pub count: usize,
}

impl Budget {
    /// [`MESSAGE_BUDGET`] bytes and at most `count` items.
    pub const fn items(count: usize) -> Budget {
        Budget {
            bytes: MESSAGE_BUDGET,
            count,
        }
    }

    /// The same count with `used` bytes of the budget taken by something else in the message
    /// (a page's acknowledgements).
    pub fn less(self, used: usize) -> Budget {
        Budget {
            bytes: self.bytes.saturating_sub(used),
            ..self
        }
    }
}

/// Estimated encoded size of a (CID bytes, block bytes) pair in a message.
pub fn pair_size(cid: &[u8], block: &[u8]) -> usize {
    cid.len() + block.len() + PAIR_OVERHEAD
}

/// Items for one message, filled up to a [`Budget`].
#[derive(Debug)]
pub struct Batch<T> {
    budget: Budget,
    items: Vec<T>,
    bytes: usize,
}

impl<T> Batch<T> {
    /// An empty batch.
    pub fn new(budget: Budget) -> Batch<T> {
        Batch {
            budget,
            items: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds `item` of estimated encoded size `size` if it fits; gives it back if not, for the
    /// next batch. The first item always fits, whatever its size.
    pub fn push(&mut self, item: T, size: usize) -> Result<(), T> {
        let fits = self.items.is_empty()
            || (self.items.len() < self.budget.count
                && self.bytes.saturating_add(size) <= self.budget.bytes);
        if !fits {
            return Err(item);
        }
        self.bytes = self.bytes.saturating_add(size);
        self.items.push(item);
        debug_assert!(
            self.bytes <= MAX_ITEMS_BYTES,
            "a batch of {} bytes would not fit in a message",
            self.bytes
        );
        Ok(())
    }

    /// Adds items from `next` (`None`: no more for now) until one does not fit, which is
    /// returned for the next batch.
    pub fn fill(
        &mut self,
        mut next: impl FnMut() -> Option<T>,
        size: impl Fn(&T) -> usize,
    ) -> Option<T> {
        while !self.is_full() {
            let item = next()?;
            let n = size(&item);
            if let Err(item) = self.push(item, n) {
                return Some(item);
            }
        }
        None
    }

    /// Whether no further item can fit (the count is reached, or the bytes are).
    pub fn is_full(&self) -> bool {
        !self.items.is_empty()
            && (self.items.len() >= self.budget.count || self.bytes >= self.budget.bytes)
    }

    /// Items so far.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Estimated encoded bytes of the items so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The items, in the order they were added.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }
}

/// Splits `items` into batches of `budget`, in order.
pub fn split<T>(
    budget: Budget,
    items: impl IntoIterator<Item = T>,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut items = items.into_iter();
    let mut out = Vec::new();
    let mut carry = None;
    loop {
        let mut batch = Batch::new(budget);
        carry = batch.fill(|| carry.take().or_else(|| items.next()), &size);
        if batch.is_empty() {
            return out;
        }
        out.push(batch.into_items());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::codec::check_encoded;
    use crate::net::deliver::DeliverRequest;
    use crate::net::wire::{self, Message};
    use serde_bytes::ByteBuf;

    /// A seeded mix of event sizes like the bursts: tiny, 200 KB, 900 KB and the
    /// largest a block may be.
    fn sizes(n: usize) -> Vec<usize> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x % 8 {
                    0 => MAX_BLOCK_SIZE,
                    1 | 2 => 900_000,
                    3 | 4 => 200_000,
                    _ => 100 + (x % 400) as usize,
                }
            })
            .collect()
    }

    #[test]
    fn the_first_item_always_fits_then_bytes_or_count_end_the_batch() {
        let mut b = Batch::new(Budget {
            bytes: 10,
            count: 3,
        });
        assert!(!b.is_full());
        assert_eq!(b.push("huge", 1_000), Ok(()));
        assert!(b.is_full());
        assert_eq!(b.push("tiny", 1), Err("tiny"));

        let mut b = Batch::new(Budget {
            bytes: 10,
            count: 3,
        });
        assert_eq!(b.push(1, 4), Ok(()));
        assert_eq!(b.push(2, 6), Ok(()));
        assert_eq!(b.push(3, 1), Err(3), "bytes reached");
        assert_eq!((b.len(), b.bytes()), (2, 10));

        let mut b = Batch::new(Budget {
            bytes: 100,
            count: 2,
        });
        let mut src = vec![1, 2, 3].into_iter();
        assert_eq!(b.fill(|| src.next(), |_| 1), None);
        assert_eq!(b.into_items(), vec![1, 2], "count reached; 3 not taken");
        assert_eq!(src.next(), Some(3));

        let mut b = Batch::new(Budget {
            bytes: 5,
            count: 10,
        });
        let mut src = vec![3, 3, 3].into_iter();
        assert_eq!(
            b.fill(|| src.next(), |s| *s),
            Some(3),
            "the one over comes back"
        );
        assert_eq!(b.into_items(), vec![3]);
    }

    #[test]
    fn split_keeps_every_item_once_in_order_within_the_budget() {
        let sizes = sizes(2_000);
        let budget = Budget::items(256);
        let batches = split(budget, sizes.iter().copied().enumerate(), |(_, s)| *s);
        let flat: Vec<usize> = batches.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(flat, (0..sizes.len()).collect::<Vec<_>>());
        for b in &batches {
            let bytes: usize = b.iter().map(|(_, s)| s).sum();
            assert!(b.len() <= 256);
            assert!(bytes <= budget.bytes || b.len() == 1, "{bytes}");
        }
        // Small items fill to the count.
        let small = split(budget, vec![10usize; 1_000], |s| *s);
        assert_eq!(
            small.iter().map(Vec::len).collect::<Vec<_>>()[..3],
            [256; 3]
        );
        assert!(split(budget, Vec::<usize>::new(), |s| *s).is_empty());
    }

    /// The estimate is an upper bound of the real encoding: a deliver request filled to the
    /// budget encodes (with the swarm's own codec) within the budget and far below the limit,
    /// and the largest block alone fits.
    #[test]
    fn a_full_deliver_request_encodes_under_the_limit() {
        let cid = vec![1u8; 36];
        for sizes in [sizes(600), vec![MAX_BLOCK_SIZE], vec![50; 1_000]] {
            let items = sizes
                .iter()
                .map(|s| (cid.clone(), vec![0x41u8; *s], u64::MAX));
            for batch in split(Budget::items(256), items, |(c, b, _)| pair_size(c, b)) {
                let estimate: usize = batch.iter().map(|(c, b, _)| pair_size(c, b)).sum();
                let (events, after) = batch
                    .into_iter()
                    .map(|(c, b, a)| ((ByteBuf::from(c), ByteBuf::from(b)), a))
                    .unzip();
                let bytes = wire::encode(Message::DeliverRequest(DeliverRequest { events, after }))
                    .expect("encode");
                assert!(bytes.len() <= estimate + 64, "{} > {estimate}", bytes.len());
                assert!(estimate <= MESSAGE_BUDGET);
                assert!(check_encoded("deliver", bytes.len(), MAX_MESSAGE as usize).is_ok());
            }
        }
    }
}
