//! History (docs/protocols.md): fetching missing blocks in one request per peer, gap repair, replay and
//! durable subscriptions, and retention.

pub mod durable;
pub mod fetch;
pub mod serve;

pub use fetch::{Chain, FetchOptions, FetchSummary, Progress, fetch, fetch_chain};

/// History settings of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Log entries older than this leave each root's log (`None`: kept).
    pub retain_age: Option<std::time::Duration>,
    /// The oldest log entries leave a root's log while it holds more bytes than this.
    pub retain_bytes: Option<u64>,
    /// A durable subscription unused for this long is deleted.
    pub durable_expiry: std::time::Duration,
    /// How often a rendezvous member compares its streams with the other members of its sets
    /// and pulls what it lacks (replica sync).
    pub sync_interval: std::time::Duration,
}

/// Durable subscriptions last 7 days unused (docs/operations.md).
pub const DEFAULT_DURABLE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Replica sync runs every 5 s by default: a member that was away catches up within seconds,
/// at the cost of one small request per root and member.
pub const DEFAULT_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// History maintenance (durable expiry, then retention) runs at least this often...
const MAINTENANCE_MAX: std::time::Duration = std::time::Duration::from_secs(10);
/// ...and no more often than this, however small the limits.
const MAINTENANCE_MIN: std::time::Duration = std::time::Duration::from_millis(500);

impl HistoryConfig {
    /// How often history maintenance runs: every 10 s, or a third of `--retain-age` or
    /// `--durable-expiry` when that is shorter (at least 0.5 s), so a short limit is applied
    /// about on time; an open durable is touched as often (see
    /// [`crate::pubsub::router::Router::maintain_history`]), well within its expiry.
    pub fn maintenance_interval(&self) -> std::time::Duration {
        [Some(self.durable_expiry), self.retain_age]
            .into_iter()
            .flatten()
            .map(|d| d / 3)
            .fold(MAINTENANCE_MAX, std::cmp::min)
            .max(MAINTENANCE_MIN)
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retain_age: None,
            retain_bytes: None,
            durable_expiry: DEFAULT_DURABLE_EXPIRY,
            sync_interval: DEFAULT_SYNC_INTERVAL,
        }
    }
}

use tidings_ipld_schema::{Block, Event};

use crate::store::{Store, StoreError};

/// The events of `chain` held in `store` behind `head` (through each event's first `prev`), down
/// to `chain.after_seq` (and not older than `chain.since_ms`), oldest first, with their blocks.
/// Stops at the first one not held.
pub fn chain_back(
    store: &Store,
    head: &Event,
    chain: &Chain,
) -> Result<Vec<(Block, Event)>, StoreError> {
    let mut out = Vec::new();
    let mut cur = fetch::chain_link(chain, head);
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
            || event.time < chain.since_ms
        {
            break;
        }
        cur = fetch::chain_link(chain, &event);
        out.push((Block { cid, data }, event));
    }
    out.reverse();
    Ok(out)
}

/// One maintenance pass: expires unused durables, then applies retention to every root (never
/// below the start of a durable subscription's backlog).
pub fn maintain(
    store: &Store,
    config: &HistoryConfig,
    own_author: &[u8],
    now_ms: u64,
) -> Result<crate::store::Retained, StoreError> {
    durable::expire(store, now_ms, config.durable_expiry.as_millis() as u64)?;
    let mut total = crate::store::Retained::default();
    if config.retain_age.is_none() && config.retain_bytes.is_none() {
        return Ok(total);
    }
    let durables = store.durables()?;
    for root in store.roots()? {
        let pin_from = durables
            .iter()
            .filter(|(_, r)| r.root == root)
            .map(|(_, r)| r.start)
            .min();
        let r = store.retain(
            &root,
            crate::store::Limits {
                max_age_ms: config.retain_age.map(|d| d.as_millis() as u64),
                max_bytes: config.retain_bytes,
                now_ms,
                pin_from,
                own_author,
            },
        )?;
        if r.entries > 0 {
            tracing::info!(%root, entries = r.entries, blocks = r.blocks, bytes = r.bytes, "retention: old events left the log");
        }
        total.entries += r.entries;
        total.blocks += r.blocks;
        total.bytes += r.bytes;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn maintenance_follows_the_shortest_limit_between_half_a_second_and_ten_seconds() {
        let c = |retain_age, durable_expiry| HistoryConfig {
            retain_age,
            durable_expiry,
            ..HistoryConfig::default()
        };
        let s = Duration::from_secs;
        assert_eq!(
            c(None, DEFAULT_DURABLE_EXPIRY).maintenance_interval(),
            s(10)
        );
        assert_eq!(c(Some(s(3)), s(600)).maintenance_interval(), s(1));
        assert_eq!(c(None, s(3)).maintenance_interval(), s(1));
        assert_eq!(
            c(Some(s(1)), s(1)).maintenance_interval(),
            Duration::from_millis(500)
        );
    }
}
