//! The mirror: sends every block the node stores to IPFS (`block/put`), off the publish path.
//!
//! It follows each root's arrival log in the store from a cursor kept in the store itself, a
//! bounded batch at a time (a few hundred blocks, some MiB), several puts in flight, each
//! retried with backoff until IPFS takes it with the right CID. The backlog is the log itself,
//! on disk: however long IPFS is away, nothing queues in memory and nothing is dropped. The
//! cursor moves past a batch only once IPFS took all of it, so a node killed at any moment
//! resumes at or before where it was: a block may go twice (IPFS takes it again as a no-op),
//! none is skipped.
//!
//! Kill -9 at each step: after a commit, before the mirror read it (the cursor is behind it:
//! sent after the restart); during a put (not confirmed: sent again); after IPFS answered, before
//! the cursor was saved (sent again); after a non-durable cursor save (rewinds to the last
//! durable one: sent again).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tidings_ipld_schema::Cid;

use super::{Ipfs, RpcError};
use crate::store::{Store, StoreError};

/// Most log entries read and sent as one batch.
const BATCH: usize = 256;
/// Most block bytes read as one batch (the bound on what the mirror holds in memory).
const BATCH_BYTES: usize = 8 << 20;
/// Puts in flight at once.
const IN_FLIGHT: usize = 8;
/// How often an idle mirror looks for new log entries.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// First wait before a failed put is tried again; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest wait between tries of a put while IPFS is failing: how soon the mirror notices it
/// is back.
const MAX_RETRY: Duration = Duration::from_secs(2);
/// Cursors are saved this often while the mirror works (without an fsync).
const SAVE_EVERY: Duration = Duration::from_millis(200);
/// ... and with one this often, and whenever the backlog is drained.
const SAVE_DURABLY_EVERY: Duration = Duration::from_secs(2);

/// Runs the mirror until the node stops (the task is aborted then).
pub async fn run(ipfs: Arc<Ipfs>, store: Arc<Store>) {
    match ipfs.rpc().version().await {
        Ok(version) => {
            tracing::info!(ipfs = %ipfs.rpc().base(), %version, "IPFS backend answers");
            ipfs.note_ok();
        }
        Err(e) => ipfs.note_error(&e),
    }
    let mut cursors = loop {
        let s = store.clone();
        match blocking(move || s.mirror_cursors()).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, "IPFS mirror cannot read its cursors; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut saver = Saver::new(cursors.clone());
    loop {
        let s = store.clone();
        let ends = match blocking(move || s.log_ends()).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "IPFS mirror cannot read the log; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut backlog = 0;
        for (root, end) in &ends {
            let cur = cursors.entry(root.clone()).or_insert(0);
            if *cur > *end {
                // Positions only grow: the log was replaced under us. Send all of it again.
                tracing::warn!(%root, cursor = *cur, end, "IPFS mirror cursor past the end of the log; sending the root again");
                *cur = 0;
            }
            backlog += end - *cur;
        }
        ipfs.counters.queued.store(backlog, Ordering::Relaxed);
        if backlog == 0 {
            saver.save(&store, &cursors, true).await;
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        }
        // One batch per root per pass: a busy root does not hold up the others.
        for (root, end) in ends {
            let from = cursors.get(&root).copied().unwrap_or(0);
            if from >= end {
                continue;
            }
            let confirmed = cursors.values().sum();
            let next = send_batch(&ipfs, &store, &root, from, end, confirmed).await;
            let Some(next) = next else { continue };
            let _ = ipfs
                .counters
                .queued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                    Some(q.saturating_sub(next - from))
                });
            cursors.insert(root, next);
            saver.save(&store, &cursors, false).await;
        }
    }
}

/// Sends the batch of `root`'s log that starts at `from`; the position after it once IPFS took
/// all of it (`None`: the store could not be read; the pass is tried again). `confirmed` is
/// the sum of the cursors: how many log entries IPFS took.
async fn send_batch(
    ipfs: &Arc<Ipfs>,
    store: &Arc<Store>,
    root: &str,
    from: u64,
    end: u64,
    confirmed: u64,
) -> Option<u64> {
    let (s, r) = (store.clone(), root.to_string());
    let batch = match blocking(move || s.mirror_batch(&r, from, BATCH, BATCH_BYTES)).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, %root, "IPFS mirror cannot read the log; trying again");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return None;
        }
    };
    // Entries missing from the stretch read (or a block without its entry's data) left the
    // store through retention before IPFS took them.
    let next = batch.last().map_or(end, |l| l.pos + 1);
    let mut skipped = (next - from) - batch.len() as u64;
    let mut blocks: Vec<(Cid, Vec<u8>)> = Vec::with_capacity(batch.len());
    for entry in batch {
        match entry.data {
            Some(data) => blocks.push((entry.cid, data)),
            None => skipped += 1,
        }
        blocks.extend(entry.linked.into_iter().map(|b| (b.cid, b.data)));
    }
    if skipped > 0 {
        ipfs.counters.skipped.fetch_add(skipped, Ordering::Relaxed);
        tracing::warn!(%root, skipped, "IPFS mirror: log entries left the store (retention) before IPFS took them");
    }
    // Blocks that came from IPFS (history it gave) are there already.
    let before = blocks.len();
    blocks.retain(|(cid, _)| !ipfs.take_held(cid));
    let already = (before - blocks.len()) as u64;
    let taken = futures::stream::iter(blocks)
        .map(|(cid, data)| put_until_taken(ipfs, store, confirmed, cid, data))
        .buffer_unordered(IN_FLIGHT)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    ipfs.counters
        .mirrored
        .fetch_add(taken as u64 + already, Ordering::Relaxed);
    Some(next)
}

/// Puts one block, trying again with backoff until IPFS takes it with the right CID. False only
/// for a block IPFS cannot be told the codec of (it is skipped, with a warning). While it
/// waits, the backlog shown in status and metrics keeps counting what the node stores.
async fn put_until_taken(
    ipfs: &Ipfs,
    store: &Arc<Store>,
    confirmed: u64,
    cid: Cid,
    data: Vec<u8>,
) -> bool {
    let mut wait = FIRST_RETRY;
    loop {
        match ipfs.rpc().block_put(&cid, &data).await {
            Ok(()) => {
                ipfs.note_ok();
                return true;
            }
            Err(e @ RpcError::Unsupported(_)) => {
                ipfs.note_error(&e);
                tracing::warn!(error = %e, "IPFS mirror: block skipped");
                return false;
            }
            Err(e) => {
                ipfs.note_error(&e);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
                let s = store.clone();
                if let Ok(ends) = blocking(move || s.log_ends()).await {
                    let total: u64 = ends.iter().map(|(_, end)| end).sum();
                    ipfs.counters
                        .queued
                        .store(total.saturating_sub(confirmed), Ordering::Relaxed);
                }
            }
        }
    }
}

/// Saves cursors when they moved: often without an fsync, regularly with one.
struct Saver {
    saved: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    last: Instant,
    last_durable: Instant,
}

impl Saver {
    fn new(loaded: BTreeMap<String, u64>) -> Saver {
        let now = Instant::now();
        Saver {
            saved: loaded.clone(),
            durable: loaded,
            last: now,
            last_durable: now,
        }
    }

    async fn save(&mut self, store: &Arc<Store>, cursors: &BTreeMap<String, u64>, idle: bool) {
        let durable =
            *cursors != self.durable && (idle || self.last_durable.elapsed() >= SAVE_DURABLY_EVERY);
        let due = *cursors != self.saved && self.last.elapsed() >= SAVE_EVERY;
        if !durable && !due {
            return;
        }
        let (s, c) = (store.clone(), cursors.clone());
        match blocking(move || s.set_mirror_cursors(&c, durable)).await {
            Ok(()) => {
                self.saved = cursors.clone();
                self.last = Instant::now();
                if durable {
                    self.durable = cursors.clone();
                    self.last_durable = self.last;
                }
            }
            // Not fatal: the cursor stays behind, so blocks go again after a restart.
            Err(e) => tracing::warn!(error = %e, "IPFS mirror cannot save its cursors"),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Commit(format!("task failed: {e}")))?
}
