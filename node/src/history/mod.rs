//! History (DESIGN §5): fetching missing blocks in one request per peer, gap repair, replay and
//! durable subscriptions, and retention.

pub mod durable;
pub mod fetch;
pub mod serve;

pub use fetch::{Chain, FetchOptions, FetchSummary, Progress, fetch};

use tidings_ipld_schema::{Cid, Event};

use crate::store::{Store, StoreError};

/// The events of `chain` held in `store` behind `head` (through each event's first `prev`), down
/// to `chain.after_seq`, oldest first. Stops at the first one not held.
pub fn chain_back(
    store: &Store,
    head: &Event,
    chain: &Chain,
) -> Result<Vec<(Cid, Event)>, StoreError> {
    let mut out = Vec::new();
    let mut cur = head
        .prev
        .first()
        .copied()
        .filter(|_| head.seq > chain.after_seq + 1);
    while let Some(cid) = cur.take() {
        let Some(data) = store.get_block(&cid)? else {
            break;
        };
        let Ok(event) = Event::decode(&data) else {
            break;
        };
        if event.author != chain.author
            || event.topic != chain.topic
            || event.seq <= chain.after_seq
        {
            break;
        }
        cur = event
            .prev
            .first()
            .copied()
            .filter(|_| event.seq > chain.after_seq + 1);
        out.push((cid, event));
    }
    out.reverse();
    Ok(out)
}
