//! Retention per root (docs/operations.md): the oldest log entries of a root go once they are older than
//! the age limit or the root's logged bytes exceed the byte limit. Their blocks go too, except
//! the heads and this node's own events, so the author always holds its stream: what ages out
//! here can still be fetched by CID from a holder.

use redb::{ReadableMultimapTable, ReadableTable};
use tidings_ipld_schema::Event;

use super::block_index::{BLOCK_CIDS, BLOCK_DATA, IndexChanges, find};
use super::tables::{
    HEADS, LOG, PRUNED, REFERENCED, STAT_BLOCKS, STAT_BYTES, STATS, root_bytes_key,
};
use super::{Store, StoreError, db};

/// Most log entries removed per transaction, so a large backlog of expired entries never holds
/// the single writer for long.
const PER_PASS: usize = 10_000;

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    /// Log entries removed (no longer replayed).
    pub entries: u64,
    /// Blocks deleted.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Limits of one root.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits<'a> {
    /// Entries older than this (ms before `now_ms`) go.
    pub max_age_ms: Option<u64>,
    /// The oldest entries go while the root holds more than this.
    pub max_bytes: Option<u64>,
    /// Now, ms since epoch.
    pub now_ms: u64,
    /// Entries at or after this position stay (a durable subscription still needs them).
    pub pin_from: Option<u64>,
    /// This node's author key: its own events' blocks are never deleted.
    pub own_author: &'a [u8],
}

impl Store {
    /// Applies `limits` to `root`'s log, oldest entries first, in one transaction of at most
    /// [`PER_PASS`] entries.
    pub fn retain(&self, root: &str, limits: Limits<'_>) -> Result<Retained, StoreError> {
        if limits.max_age_ms.is_none() && limits.max_bytes.is_none() {
            return Ok(Retained::default());
        }
        let txn = self.db.begin_write().map_err(db)?;
        let mut out = Retained::default();
        {
            let mut log = txn.open_table(LOG).map_err(db)?;
            let mut data = txn.open_table(BLOCK_DATA).map_err(db)?;
            let mut cids = txn.open_table(BLOCK_CIDS).map_err(db)?;
            let mut removed = Vec::new();
            let mut referenced = txn.open_table(REFERENCED).map_err(db)?;
            let heads = txn.open_multimap_table(HEADS).map_err(db)?;
            let mut pruned = txn.open_table(PRUNED).map_err(db)?;
            let mut stats = txn.open_table(STATS).map_err(db)?;
            let key = root_bytes_key(root);
            let mut root_bytes = stats
                .get(key.as_str())
                .map_err(db)?
                .map_or(0, |g| g.value());
            let mut doomed = Vec::new();
            for item in log.range((root, 0)..=(root, u64::MAX)).map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let pos = k.value().1;
                if doomed.len() >= PER_PASS || limits.pin_from.is_some_and(|p| pos >= p) {
                    break;
                }
                let cid = v.value().to_vec();
                let Some((id, g)) = find(&data, txn.blocks(), &cid)? else {
                    doomed.push((pos, cid, None));
                    continue;
                };
                let data = g.value();
                let event = Event::decode_stored(data);
                let time = event.as_ref().map_or(0, |e| e.time);
                let too_old = limits
                    .max_age_ms
                    .is_some_and(|a| limits.now_ms.saturating_sub(time) > a);
                let too_big = limits.max_bytes.is_some_and(|b| root_bytes > b);
                if !too_old && !too_big {
                    break;
                }
                let len = data.len() as u64;
                root_bytes = root_bytes.saturating_sub(len);
                // Heads (nothing links them yet), own events and blocks that are not events
                // stay as blocks.
                let keep = match &event {
                    None => true,
                    Some(e) => e.author == limits.own_author || is_head(&heads, &e.topic, &cid)?,
                };
                let stream = event.map(|e| (e.author, e.topic, e.seq));
                doomed.push((pos, cid, (!keep).then_some((id, len, stream))));
            }
            for (pos, cid, delete) in doomed {
                log.remove((root, pos)).map_err(db)?;
                out.entries += 1;
                let Some((id, len, stream)) = delete else {
                    continue;
                };
                if data.remove(id).map_err(db)?.is_some() {
                    cids.remove(id).map_err(db)?;
                    out.blocks += 1;
                    out.bytes += len;
                    removed.push((Box::from(cid.as_slice()), id));
                }
                // Not a head, so a stored event links it: should it arrive again (a fetch, a
                // replica), it must not become a head (see REFERENCED).
                referenced.insert(cid.as_slice(), ()).map_err(db)?;
                // The stream's past up to here is gone: replica sync must not chase it as a
                // hole, here or on a member that syncs from here.
                if let Some((author, topic, seq)) = stream {
                    let key = (author.as_slice(), topic.as_str());
                    let cur = pruned.get(key).map_err(db)?.map_or(0, |g| g.value());
                    if seq > cur {
                        pruned.insert(key, seq).map_err(db)?;
                    }
                }
            }
            txn.note(IndexChanges {
                added: Default::default(),
                removed,
            });
            stats.insert(key.as_str(), root_bytes).map_err(db)?;
            for (k, by) in [(STAT_BLOCKS, out.blocks), (STAT_BYTES, out.bytes)] {
                let cur = stats.get(k).map_err(db)?.map_or(0, |g| g.value());
                stats.insert(k, cur.saturating_sub(by)).map_err(db)?;
            }
        }
        txn.commit().map_err(db)?;
        Ok(out)
    }
}

/// Whether `cid` is one of `topic`'s heads.
fn is_head(
    heads: &redb::MultimapTable<'_, &str, &[u8]>,
    topic: &str,
    cid: &[u8],
) -> Result<bool, StoreError> {
    for h in heads.get(topic).map_err(db)? {
        if h.map_err(db)?.value() == cid {
            return Ok(true);
        }
    }
    Ok(false)
}
