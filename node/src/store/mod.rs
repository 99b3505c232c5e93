//! The block store: an embedded ACID database (redb) holding blocks (by arrival number, found
//! by CID through an index in memory: [`block_index`]), the heads of each topic, the last `seq`
//! per (author, topic), and an arrival-order log per root segment.
//!
//! Every mutation is one write transaction, durable before its method returns `Ok`, so before
//! the API acknowledges it. The hot paths (publish, replicas, deliveries, fetched blocks,
//! durable acks) go through the group committer ([`writer`]), which applies whatever is queued
//! in one transaction and makes it durable with one fsync of a write-ahead log ([`wal`]); the
//! other mutations are rare and let redb fsync their commit.

mod block_index;
mod car;
mod durable;
mod migrate;
mod mirror;
mod redo;
mod retention;
mod streams;
mod tables;
mod topics;
mod versioned;
mod wal;
mod writer;

pub use car::{ImportError, ImportSummary};
pub use durable::DurableRecord;
pub use mirror::LoggedBlock;
pub use retention::{Limits, Retained};
pub use streams::{ChainHole, StreamTip};
pub use topics::TopicSummary;
pub use writer::{CommitStats, CommitTimes};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tidings_ipld_schema::{Block, Cid, Event, topic};

use tables::{HEADS, LOG, LOG_NEXT, SEQS, STATS, Tables};
use versioned::VersionedDb;

/// Errors from the block store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another `Store` in this one) holds the database.
    #[error("the store at {0} is already in use by another tidings process")]
    InUse(PathBuf),
    /// The embedded database failed (I/O, corruption detected by redb, ...).
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    /// Something read back from the store does not decode; the file was changed behind our back.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// Building or checking an event failed (bad topic, too large, ...).
    #[error(transparent)]
    Event(#[from] tidings_ipld_schema::Error),
    /// A group commit failed (or the writer stopped): nothing of its batch was stored.
    #[error("store: commit failed: {0}")]
    Commit(String),
    /// A prepared append lost a race: the stream moved on since its links were read.
    #[error("store: {0}")]
    Conflict(String),
}

/// Converts any of redb's specific error types into a [`StoreError`].
fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// Block and byte counts of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Number of blocks held.
    pub blocks: u64,
    /// Total size of the blocks held, in bytes.
    pub bytes: u64,
}

/// What [`Store::append_local`] wrote.
#[derive(Debug, Clone)]
pub struct Appended {
    /// CID of the new event.
    pub cid: Cid,
    /// The event as stored.
    pub event: Event,
    /// Its block, as stored.
    pub block: Block,
}

/// What [`Store::insert_events`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertSummary {
    /// Blocks that were new to the store.
    pub new_blocks: u64,
    /// Blocks that were already present.
    pub already_had: u64,
}

/// The node's persistent block store.
pub struct Store {
    db: Arc<VersionedDb>,
    path: PathBuf,
    writer: writer::Writer,
    /// [`Store::next_links`]'s last answer per topic, with the commit count it holds for.
    links: Mutex<HashMap<String, CachedLinks>>,
}

/// A [`Store::next_links`] answer, exact while the database's commit count is `version`.
struct CachedLinks {
    version: u64,
    author: Vec<u8>,
    links: (u64, Vec<Cid>),
}

/// Topics whose links [`Store::next_links`] keeps at most (a node publishes on few at once).
const CACHED_LINKS: usize = 1024;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store file at `path` and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let database = match Database::create(path) {
            Ok(d) => Arc::new(VersionedDb::open(d)?),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse(path.to_path_buf()));
            }
            Err(e) => return Err(db(e)),
        };
        let wal_path = wal::path_for(path);
        let (mut log, batches) = wal::Wal::open(&wal_path).map_err(|e| {
            StoreError::Commit(format!(
                "cannot open the write-ahead log {}: {e}",
                wal_path.display()
            ))
        })?;
        // What the log holds was acknowledged but may be missing from redb (a crash rolled it
        // back to its last durable commit): apply it again, durably, before anything else.
        let txn = database.begin_write().map_err(db)?;
        Tables::within(&txn, |t| {
            for r in batches.iter().flatten() {
                wal::apply(&txn, t, r)?;
            }
            Ok(())
        })?;
        txn.commit().map_err(db)?;
        if !batches.is_empty() {
            tracing::info!(
                batches = batches.len(),
                records = batches.iter().map(Vec::len).sum::<usize>(),
                "store: replayed the write-ahead log after an unclean stop"
            );
        }
        log.reset().map_err(|e| {
            StoreError::Commit(format!(
                "cannot empty the write-ahead log {}: {e}",
                wal_path.display()
            ))
        })?;
        Ok(Store {
            writer: writer::Writer::start(database.clone(), path, log)?,
            db: database,
            path: path.to_path_buf(),
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Group commits since the store opened.
    pub fn commit_stats(&self) -> CommitStats {
        self.writer.stats()
    }

    /// How long the group commits (and among them the checkpoints) take.
    pub fn commit_times(&self) -> Arc<CommitTimes> {
        self.writer.times()
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a new event by `author` on `topic` in one durable transaction.
    ///
    /// `build` receives the next `seq` and the `prev` links (the author's previous event on the
    /// topic first, then the topic's other heads) and returns the signed event and its block. Doing
    /// this inside the write transaction serialises publishers, so seqs never collide.
    pub fn append_local<F>(
        &self,
        author: &[u8],
        topic_name: &str,
        build: F,
    ) -> Result<Appended, StoreError>
    where
        F: FnOnce(u64, Vec<Cid>) -> Result<(Event, Block), tidings_ipld_schema::Error>,
    {
        topic::validate(topic_name)?;
        let txn = self.db.begin_write().map_err(db)?;
        let appended = Tables::within(&txn, |t| {
            let last = t.last_of(author, topic_name)?;
            let (seq, prev) = links(last, t.heads_of(topic_name)?);
            let (event, block) = build(seq, prev)?;
            t.apply_event(&block, &event)?;
            Ok(Appended {
                cid: block.cid,
                event,
                block,
            })
        })?;
        txn.commit().map_err(db)?;
        Ok(appended)
    }

    /// The `seq` and `prev` of `author`'s next event on `topic`, as [`Store::append_local`]
    /// would give them, as of the last commit: for an event signed outside the writer and
    /// stored with [`Store::append_signed`]. The answer is kept per topic until the next write
    /// commit (the store counts its commits), so publishes between two commits read no
    /// transaction.
    pub fn next_links(
        &self,
        author: &[u8],
        topic_name: &str,
    ) -> Result<(u64, Vec<Cid>), StoreError> {
        topic::validate(topic_name)?;
        let version = self.db.version();
        if let Some(links) = self.cached_links(version, author, topic_name) {
            return Ok(links);
        }
        // One read transaction: the last event and the heads as of the same commit (read
        // apart, a commit in between would make the new last event a head "of another").
        let txn = self.db.begin_read().map_err(db)?;
        let links = links(
            last_in(&txn, author, topic_name)?,
            heads_in(&txn, topic_name)?,
        );
        drop(txn);
        // Kept only if no commit began or ended during the read: then it is the state as of
        // `version`, and stays exact until the count moves.
        if version.is_multiple_of(2)
            && self.db.version() == version
            && let Ok(mut cache) = self.links.lock()
        {
            if cache.len() >= CACHED_LINKS && !cache.contains_key(topic_name) {
                cache.clear();
            }
            cache.insert(
                topic_name.to_owned(),
                CachedLinks {
                    version,
                    author: author.to_vec(),
                    links: links.clone(),
                },
            );
        }
        Ok(links)
    }

    /// [`Store::next_links`]'s kept answer for (`author`, `topic_name`), if nothing was
    /// committed since it was read (the count is still `version`, even).
    fn cached_links(
        &self,
        version: u64,
        author: &[u8],
        topic_name: &str,
    ) -> Option<(u64, Vec<Cid>)> {
        if !version.is_multiple_of(2) {
            return None;
        }
        let cache = self.links.lock().ok()?;
        cache
            .get(topic_name)
            .filter(|c| c.version == version && c.author == author)
            .map(|c| c.links.clone())
    }

    /// Stores this node's own new event, signed with the links [`Store::next_links`] gave, in
    /// the next group commit, and returns the topic's heads right after it; fails with
    /// [`StoreError::Conflict`] (nothing stored) if the author's stream moved on meanwhile.
    pub async fn append_signed(&self, block: Block, event: Event) -> Result<Vec<Cid>, StoreError> {
        self.queue_signed(Arc::new(block), Arc::new(event))?.await
    }

    /// [`Store::append_signed`] split in two: the event is queued to the writer now, before
    /// this returns, and the future answers once its group commit did. Queued events are
    /// applied in the order they were queued, so a caller may queue its event `n + 1` (linked to
    /// `n`) before `n` is durable: `n + 1` then commits with `n` or after it, and fails with
    /// [`StoreError::Conflict`] if `n` did not commit. Callers queue one stream's events in
    /// `seq` order.
    pub fn queue_signed(
        &self,
        block: Arc<Block>,
        event: Arc<Event>,
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<Cid>, StoreError>> + Send + 'static,
        StoreError,
    > {
        let bytes = block.data.len();
        let answer = self.writer.queue(bytes, move |_, t| {
            // The event must follow the stored last one exactly: the `seq` after it, and it
            // (not another event of that `seq`) first in `prev`.
            let want = event.seq.checked_sub(1).filter(|s| *s > 0);
            let last = t.last_of(&event.author, &event.topic)?;
            let follows = match last {
                Some((seq, cid)) => want == Some(seq) && event.prev.first() == Some(&cid),
                None => want.is_none(),
            };
            if !follows {
                return Err(StoreError::Conflict(format!(
                    "stream {} moved on: seq {} was prepared after {want:?}, the store holds {:?}",
                    event.topic,
                    event.seq,
                    last.map(|(s, _)| s)
                )));
            }
            apply_with_heads(t, &block, &event)
        })?;
        Ok(writer::answered(answer))
    }

    /// Waits until everything queued to the writer before this call has been committed (or
    /// has failed): what a reader sees afterwards includes it.
    pub async fn settle(&self) -> Result<(), StoreError> {
        self.writer.run(0, |_, _| Ok(())).await
    }

    /// Stores already-verified events (and any other verified blocks) in one transaction:
    /// all or nothing. Heads, seqs and the log are updated whatever the order of `events`.
    pub fn insert_events(
        &self,
        events: &[(Block, Event)],
        other_blocks: &[Block],
    ) -> Result<InsertSummary, StoreError> {
        self.insert_keeping(events, other_blocks, |_| false)
    }

    /// [`Store::insert_events`] for a rendezvous member, which keeps whole streams: the holes
    /// the events leave in their authors' chains are recorded in the same transaction, for
    /// replica sync to fill ([`Store::holes`]).
    pub fn insert_replicas(
        &self,
        events: &[(Block, Event)],
        other_blocks: &[Block],
    ) -> Result<InsertSummary, StoreError> {
        self.insert_keeping(events, other_blocks, |_| true)
    }

    /// [`Store::insert_events`] recording the holes of the events whose streams this node keeps
    /// whole (`keeps_whole`): a broker of the set that is also a subscriber's node stores what
    /// is delivered to it, and a hole under a delivered event must be filled like any other.
    pub fn insert_keeping(
        &self,
        events: &[(Block, Event)],
        other_blocks: &[Block],
        keeps_whole: impl Fn(&Event) -> bool,
    ) -> Result<InsertSummary, StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        let summary = Tables::within(&txn, |t| insert_in(t, events, other_blocks, keeps_whole))?;
        txn.commit().map_err(db)?;
        Ok(summary)
    }

    /// A publish taken as the topic's primary: stored (holes recorded: the set keeps whole
    /// streams) in the next group commit; the topic's heads right after. Queued when called,
    /// not when first polled: a caller's order of calls is the order applied.
    pub fn insert_publish(
        &self,
        block: Arc<Block>,
        event: Arc<Event>,
    ) -> impl std::future::Future<Output = Result<Vec<Cid>, StoreError>> + Send + 'static {
        let bytes = block.data.len();
        let queued = self.writer.queue(bytes, move |_, t| {
            t.set_note_holes(true);
            apply_with_heads(t, &block, &event)
        });
        async move { writer::answered(queued?).await }
    }

    /// [`Store::insert_keeping`] in the next group commit: the hot paths' way in (replicas,
    /// deliveries, fetched history).
    pub async fn insert_grouped(
        &self,
        events: Vec<(Block, Event)>,
        other_blocks: Vec<Block>,
        keeps_whole: impl Fn(&Event) -> bool + Send + 'static,
    ) -> Result<InsertSummary, StoreError> {
        let bytes = events.iter().map(|(b, _)| b.data.len()).sum::<usize>()
            + other_blocks.iter().map(|b| b.data.len()).sum::<usize>();
        self.writer
            .run(bytes, move |_, t| {
                insert_in(t, &events, &other_blocks, keeps_whole)
            })
            .await
    }

    /// The raw block stored under `cid`, if any.
    pub fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let blocks = self.db.block_reader(&txn)?;
        Ok(blocks
            .get(cid.to_bytes().as_slice())?
            .map(|g| g.value().to_vec()))
    }

    /// Whether a block is stored under `cid`.
    pub fn has_block(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.holds_all([cid])
    }

    /// Current heads of `topic` (events no stored event links to), sorted.
    pub fn heads(&self, topic_name: &str) -> Result<Vec<Cid>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let mut out = heads_in(&txn, topic_name)?;
        out.sort();
        Ok(out)
    }

    /// The last `seq` stored for (`author`, `topic`) and that event's CID.
    pub fn last_seq(
        &self,
        author: &[u8],
        topic_name: &str,
    ) -> Result<Option<(u64, Cid)>, StoreError> {
        last_in(&self.db.begin_read().map_err(db)?, author, topic_name)
    }

    /// Whether every one of `cids` is stored. A reader sees only what is durable (the writer
    /// answers, and commits visibly, only once the log holds it), so `true` means each is on disk.
    pub fn holds_all<'a>(
        &self,
        cids: impl IntoIterator<Item = &'a Cid>,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let blocks = self.db.block_reader(&txn)?;
        for cid in cids {
            if blocks.get(cid.to_bytes().as_slice())?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Block count and total bytes.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let stats = txn.open_table(STATS).map_err(db)?;
        let get = |k: &str| -> Result<u64, StoreError> {
            Ok(stats.get(k).map_err(db)?.map_or(0, |g| g.value()))
        };
        Ok(StoreStats {
            blocks: get(tables::STAT_BLOCKS)?,
            bytes: get(tables::STAT_BYTES)?,
        })
    }

    /// Root segments that have events in the log, sorted.
    pub fn roots(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let next = txn.open_table(LOG_NEXT).map_err(db)?;
        let mut out = Vec::new();
        for item in next.iter().map_err(db)? {
            let (k, _) = item.map_err(db)?;
            out.push(k.value().to_string());
        }
        Ok(out)
    }

    /// Up to `limit` log entries of `root` from position `from` on, in arrival order.
    pub fn log_range(
        &self,
        root: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Cid)>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let log = txn.open_table(LOG).map_err(db)?;
        let mut out = Vec::new();
        for item in log.range((root, from)..=(root, u64::MAX)).map_err(db)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(db)?;
            out.push((k.value().1, parse_cid(v.value())?));
        }
        Ok(out)
    }

    /// Number of entries in the per-root logs and distinct (author, topic) streams, for status.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let log = txn.open_table(LOG).map_err(db)?;
        let seqs = txn.open_table(SEQS).map_err(db)?;
        Ok((log.len().map_err(db)?, seqs.len().map_err(db)?))
    }

    /// Walks the stream DAG of `topic` from its heads through `prev` links and returns every
    /// reachable block that the store holds (heads first, then breadth-first), with the heads.
    pub fn stream_blocks(&self, topic_name: &str) -> Result<(Vec<Cid>, Vec<Block>), StoreError> {
        let heads = self.heads(topic_name)?;
        let txn = self.db.begin_read().map_err(db)?;
        let blocks = self.db.block_reader(&txn)?;
        let mut seen = std::collections::HashSet::new();
        let mut queue: std::collections::VecDeque<Cid> = heads.iter().copied().collect();
        let mut out = Vec::new();
        while let Some(cid) = queue.pop_front() {
            if !seen.insert(cid) {
                continue;
            }
            let Some(g) = blocks.get(cid.to_bytes().as_slice())? else {
                continue; // history this node never held: the CAR is partial, not wrong
            };
            let data = g.value().to_vec();
            queue.extend(Event::links_stored(&data).unwrap_or_default());
            out.push(Block { cid, data });
        }
        Ok((heads, out))
    }
}

/// What [`Store::walk`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walked {
    /// Blocks handed to the callback.
    pub sent: u64,
    /// Where a limit stopped the walk: CIDs reached but not sent.
    pub more: Vec<Cid>,
    /// CIDs reached that this store does not hold.
    pub missing: Vec<Cid>,
}

/// A set of CIDs, hashed with foldhash: a walk or a fetch keeps sets that grow to one entry per
/// block, and SipHash over them was about 4% of a backfill's CPU. foldhash is seeded per
/// process, so a sender cannot aim CIDs at one bucket.
pub type CidSet = std::collections::HashSet<Cid, foldhash::fast::RandomState>;

impl Store {
    /// Walks the DAG from `want` through `prev` and body links, breadth-first (so each chain
    /// comes newest first), never entering a CID in `have`, and hands each held block to `emit`
    /// until `max_blocks` or `max_bytes` is reached or `emit` returns `false`.
    ///
    /// One read transaction: the walk sees one consistent snapshot however long it runs.
    pub fn walk(
        &self,
        want: &[Cid],
        have: &CidSet,
        max_blocks: u64,
        max_bytes: u64,
        mut emit: impl FnMut(&Cid, &[u8]) -> bool,
    ) -> Result<Walked, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let blocks = self.db.block_reader(&txn)?;
        let mut seen = have.clone();
        let mut queue: std::collections::VecDeque<Cid> = std::collections::VecDeque::new();
        for c in want {
            if seen.insert(*c) {
                queue.push_back(*c);
            }
        }
        let mut out = Walked::default();
        let mut bytes = 0u64;
        while let Some(cid) = queue.pop_front() {
            let Some(g) = blocks.get(cid.to_bytes().as_slice())? else {
                out.missing.push(cid);
                continue;
            };
            let data = g.value();
            // At least one block always goes, so a limit below one block still makes progress.
            let full =
                out.sent >= max_blocks || (out.sent > 0 && bytes + data.len() as u64 > max_bytes);
            if full {
                out.more.push(cid);
                out.more.extend(queue.drain(..));
                break;
            }
            out.sent += 1;
            bytes += data.len() as u64;
            if !emit(&cid, data) {
                out.more.extend(queue.drain(..));
                break;
            }
            // The store checked these blocks on the way in: read the links without building
            // the event (a body without links is skipped over, not decoded).
            for link in Event::links_stored(data).unwrap_or_default() {
                if seen.insert(link) {
                    queue.push_back(link);
                }
            }
        }
        Ok(out)
    }
}

/// At most this many other writers' heads are merged into one new event's `prev`.
const MAX_MERGED_HEADS: usize = 16;

/// The last `seq` stored for (`author`, `topic`) and its CID, as `txn` sees them.
fn last_in(
    txn: &redb::ReadTransaction,
    author: &[u8],
    topic_name: &str,
) -> Result<Option<(u64, Cid)>, StoreError> {
    let seqs = txn.open_table(SEQS).map_err(db)?;
    match seqs.get((author, topic_name)).map_err(db)? {
        Some(g) => {
            let (seq, cid) = g.value();
            Ok(Some((seq, parse_cid(cid)?)))
        }
        None => Ok(None),
    }
}

/// A topic's heads as `txn` sees them, unsorted.
fn heads_in(txn: &redb::ReadTransaction, topic_name: &str) -> Result<Vec<Cid>, StoreError> {
    let heads = txn.open_multimap_table(HEADS).map_err(db)?;
    let mut out = Vec::new();
    for v in heads.get(topic_name).map_err(db)? {
        out.push(parse_cid(v.map_err(db)?.value())?);
    }
    Ok(out)
}

/// Applies a publish (this node's own or taken as primary) and gives the topic's heads right
/// after it, sorted.
fn apply_with_heads(
    t: &mut Tables<'_>,
    block: &Block,
    event: &Event,
) -> Result<Vec<Cid>, StoreError> {
    t.apply_event(block, event)?;
    let mut heads = t.heads_of(&event.topic)?;
    heads.sort();
    Ok(heads)
}

/// The `seq` and `prev` of an author's next event on a topic, given its last one there and
/// the topic's heads: its previous event first, then other writers' heads (sorted, at most
/// [`MAX_MERGED_HEADS`]), so the stream DAG stays connected.
fn links(last: Option<(u64, Cid)>, heads: Vec<Cid>) -> (u64, Vec<Cid>) {
    let mut prev: Vec<Cid> = Vec::new();
    if let Some((_, cid)) = &last {
        prev.push(*cid);
    }
    let mut others = heads;
    others.retain(|c| !prev.contains(c));
    others.sort();
    others.truncate(MAX_MERGED_HEADS);
    prev.extend(others);
    (last.map_or(1, |(s, _)| s + 1), prev)
}

/// Applies `events` (holes recorded where `keeps_whole`) and `other_blocks`.
fn insert_in(
    t: &mut Tables<'_>,
    events: &[(Block, Event)],
    other_blocks: &[Block],
    keeps_whole: impl Fn(&Event) -> bool,
) -> Result<InsertSummary, StoreError> {
    let mut summary = InsertSummary::default();
    for (block, event) in events {
        t.set_note_holes(keeps_whole(event));
        if t.apply_event(block, event)? {
            summary.new_blocks += 1;
        } else {
            summary.already_had += 1;
        }
    }
    for block in other_blocks {
        if t.put_block(block)? {
            summary.new_blocks += 1;
        } else {
            summary.already_had += 1;
        }
    }
    Ok(summary)
}

/// Parses CID bytes read back from the store.
fn parse_cid(bytes: &[u8]) -> Result<Cid, StoreError> {
    Cid::try_from(bytes).map_err(|e| StoreError::Corrupt(format!("bad CID in store: {e}")))
}

#[cfg(test)]
mod tests;
