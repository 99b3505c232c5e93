//! Table definitions and the write-side bookkeeping shared by every mutation.

use std::collections::HashMap;

use redb::{
    MultimapTable, MultimapTableDefinition, ReadableMultimapTable, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};
use tidings_ipld_schema::{Block, Cid, Event, topic};

use super::block_index::{BLOCK_CIDS, BLOCK_DATA, BlockIndex, IndexChanges, find};
use super::redo::Redo;
use super::versioned::Write;
use super::{StoreError, db, parse_cid};

/// Topic → CIDs of its heads.
pub(super) const HEADS: MultimapTableDefinition<&str, &[u8]> =
    MultimapTableDefinition::new("heads");
/// CIDs some stored event names in `prev` while their own block is not stored: such an event,
/// when it arrives, is not a head, whatever order blocks arrive in. A parent already stored
/// needs no entry, since a stored block is never applied again (which saves a write to a
/// random page of this table per event, about a tenth of a node's throughput); retention adds
/// the entry when it deletes a parent, so that a parent fetched again stays out of the heads.
/// (Entries written before this rule, for parents stored at the time, are harmless.)
pub(super) const REFERENCED: TableDefinition<&[u8], ()> = TableDefinition::new("referenced");
/// Key of SEQS: (author key bytes, topic).
type SeqKey = (&'static [u8], &'static str);
/// Value of SEQS: (highest seq stored, its CID).
type SeqValue = (u64, &'static [u8]);
/// (author key bytes, topic) → (highest seq stored, its CID).
pub(super) const SEQS: TableDefinition<SeqKey, SeqValue> = TableDefinition::new("seqs");
/// (root segment, arrival position) → CID: the order events reached this node, for replay.
pub(super) const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("log");
/// Root segment → next log position.
pub(super) const LOG_NEXT: TableDefinition<&str, u64> = TableDefinition::new("log_next");
/// Counters kept in step with the blocks held, so status needs no scan.
pub(super) const STATS: TableDefinition<&str, u64> = TableDefinition::new("stats");
/// Value of HOLES: (seq of the newest event held below the hole, or 0; CID of the event
/// above it; CID of that event below, or empty).
type HoleValue = (u64, &'static [u8], &'static [u8]);
/// CID of an author's previous event that is missing → the hole it opens in the chain.
/// Kept in the same transaction as the events, so a hole survives a crash or an interrupted
/// fetch until the block arrives (by whatever path).
pub(super) const HOLES: TableDefinition<&[u8], HoleValue> = TableDefinition::new("holes");
/// (author key bytes, topic) → the stream's pruned past: the highest seq whose block retention
/// deleted here, or that the other members of the set all report deleted (replica sync). A
/// missing event at or below it is gone by design, not a hole to chase.
pub(super) const PRUNED: TableDefinition<SeqKey, u64> = TableDefinition::new("pruned");

/// Durable key (`<subscriber peer id>/<name>`) → DAG-CBOR
/// [`DurableRecord`](super::durable::DurableRecord).
pub(super) const DURABLES: TableDefinition<&str, &[u8]> = TableDefinition::new("durables");

/// STATS key of a root's logged bytes (what retention's byte limit counts).
pub(super) fn root_bytes_key(root: &str) -> String {
    format!("root_bytes/{root}")
}

pub(super) const STAT_BLOCKS: &str = "blocks";
pub(super) const STAT_BYTES: &str = "bytes";

/// Every table, open inside one write transaction.
pub(super) struct Tables<'txn> {
    block_data: Table<'txn, u64, &'static [u8]>,
    block_cids: Table<'txn, u64, &'static [u8]>,
    /// Where each block is, as of the last commit ...
    index: &'txn BlockIndex,
    /// ... and what this transaction stored since.
    changes: IndexChanges,
    heads: MultimapTable<'txn, &'static str, &'static [u8]>,
    referenced: Table<'txn, &'static [u8], ()>,
    pub(super) seqs: Table<'txn, SeqKey, SeqValue>,
    log: Table<'txn, (&'static str, u64), &'static [u8]>,
    log_next: Table<'txn, &'static str, u64>,
    stats: Table<'txn, &'static str, u64>,
    holes: Table<'txn, &'static [u8], HoleValue>,
    pruned: Table<'txn, SeqKey, u64>,
    /// Whether new holes are recorded (see [`Tables::set_note_holes`]).
    note_holes: bool,
    /// What was changed, for the write-ahead log (see [`Tables::record_redo`]).
    redo: Option<Vec<Redo>>,
    /// STATS values as this transaction has them: every event bumps three counters and its
    /// root's log position, and doing so in redb cost eight B-tree operations per event (about
    /// 3% of a node's CPU at full rate) for keys a group commit touches over and over.
    stats_now: Counters,
    /// LOG_NEXT values as this transaction has them.
    log_next_now: Counters,
}

/// Values of a `&str → u64` table read once per transaction, changed in memory and written
/// back when the transaction's tables close ([`Tables::within`]).
#[derive(Default)]
struct Counters(HashMap<String, u64>);

impl Counters {
    /// Adds `by` to `key` (0 when the table has none) and returns the value before.
    fn add(
        &mut self,
        table: &Table<'_, &'static str, u64>,
        key: &str,
        by: u64,
    ) -> Result<u64, StoreError> {
        if let Some(v) = self.0.get_mut(key) {
            let before = *v;
            *v += by;
            return Ok(before);
        }
        let before = table.get(key).map_err(db)?.map_or(0, |g| g.value());
        self.0.insert(key.to_owned(), before + by);
        Ok(before)
    }

    /// Writes every value changed back to `table`.
    fn write_back(self, table: &mut Table<'_, &'static str, u64>) -> Result<(), StoreError> {
        for (k, v) in self.0 {
            table.insert(k.as_str(), v).map_err(db)?;
        }
        Ok(())
    }
}

impl<'txn> Tables<'txn> {
    /// Opens every table in `txn`, runs `f` on them, then writes back the counters and log
    /// positions they kept in memory: the only way to use them, so no caller can lose those.
    /// The blocks stored go into the block index when `txn` commits.
    pub(super) fn within<R>(
        txn: &'txn Write<'_>,
        f: impl FnOnce(&mut Tables<'txn>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut t = Tables::open(txn, txn.blocks(), txn.take_changes())?;
        let r = f(&mut t)?;
        txn.note(t.close()?);
        Ok(r)
    }

    /// Opens (creating where needed) every table in `txn`; `changes` is what the transaction
    /// did to the block index before.
    fn open(
        txn: &'txn WriteTransaction,
        index: &'txn BlockIndex,
        changes: IndexChanges,
    ) -> Result<Self, StoreError> {
        // Created here so readers never meet a missing table.
        txn.open_table(DURABLES).map_err(db)?;
        Ok(Tables {
            block_data: txn.open_table(BLOCK_DATA).map_err(db)?,
            block_cids: txn.open_table(BLOCK_CIDS).map_err(db)?,
            index,
            changes,
            heads: txn.open_multimap_table(HEADS).map_err(db)?,
            referenced: txn.open_table(REFERENCED).map_err(db)?,
            seqs: txn.open_table(SEQS).map_err(db)?,
            log: txn.open_table(LOG).map_err(db)?,
            log_next: txn.open_table(LOG_NEXT).map_err(db)?,
            stats: txn.open_table(STATS).map_err(db)?,
            holes: txn.open_table(HOLES).map_err(db)?,
            pruned: txn.open_table(PRUNED).map_err(db)?,
            note_holes: false,
            redo: None,
            stats_now: Counters::default(),
            log_next_now: Counters::default(),
        })
    }

    /// Writes the counters and log positions kept in memory back to their tables, and returns
    /// what was done to the block index.
    fn close(mut self) -> Result<IndexChanges, StoreError> {
        std::mem::take(&mut self.stats_now).write_back(&mut self.stats)?;
        std::mem::take(&mut self.log_next_now).write_back(&mut self.log_next)?;
        Ok(self.changes)
    }

    /// Whether the block `cid` (CID bytes) is held, this transaction's writes included.
    pub(super) fn holds(&self, cid: &[u8]) -> Result<bool, StoreError> {
        Ok(self.changes.added.contains_key(cid)
            || find(&self.block_data, self.index, cid)?.is_some())
    }

    /// Keeps a [`Redo`] record of every change made through these tables from now on, for the
    /// group committer's write-ahead log ([`Tables::take_redo`]).
    pub(super) fn record_redo(&mut self) {
        self.redo.get_or_insert_with(Vec::new);
    }

    /// The records kept since [`Tables::record_redo`].
    pub(super) fn take_redo(&mut self) -> Vec<Redo> {
        self.redo.take().unwrap_or_default()
    }

    /// Notes a change made to a table outside these methods (a durable record), for the log.
    pub(super) fn note_redo(&mut self, r: Redo) {
        if let Some(redo) = &mut self.redo {
            redo.push(r);
        }
    }

    /// Whether to record the holes that events applied from now on leave in their authors'
    /// chains: a rendezvous member keeps whole streams and fills them. Without it, only a hole
    /// that was already recorded is carried down as its upper part arrives.
    pub(super) fn set_note_holes(&mut self, on: bool) {
        self.note_holes = on;
    }

    /// The last seq of (`author`, `topic`) and that event's CID.
    pub(super) fn last_of(
        &self,
        author: &[u8],
        topic_name: &str,
    ) -> Result<Option<(u64, Cid)>, StoreError> {
        match self.seqs.get((author, topic_name)).map_err(db)? {
            Some(g) => {
                let (seq, cid) = g.value();
                Ok(Some((seq, parse_cid(cid)?)))
            }
            None => Ok(None),
        }
    }

    /// Current heads of a topic, unsorted.
    pub(super) fn heads_of(&self, topic_name: &str) -> Result<Vec<Cid>, StoreError> {
        let mut out = Vec::new();
        for v in self.heads.get(topic_name).map_err(db)? {
            out.push(parse_cid(v.map_err(db)?.value())?);
        }
        Ok(out)
    }

    /// Stores a block if absent and keeps the counters in step. Returns whether it was new.
    pub(super) fn put_block(&mut self, block: &Block) -> Result<bool, StoreError> {
        let new = self.put_raw(block)?;
        if new && let Some(redo) = &mut self.redo {
            redo.push(Redo::Block {
                cid: block.cid.to_bytes(),
                data: block.data.clone(),
            });
        }
        Ok(new)
    }

    fn put_raw(&mut self, block: &Block) -> Result<bool, StoreError> {
        let key = block.cid.to_bytes();
        if self.holds(&key)? {
            return Ok(false);
        }
        let id = self.index.next_id();
        self.block_data
            .insert(id, block.data.as_slice())
            .map_err(db)?;
        self.block_cids.insert(id, key.as_slice()).map_err(db)?;
        self.changes.added.insert(key.into_boxed_slice(), id);
        self.bump(STAT_BLOCKS, 1)?;
        self.bump(STAT_BYTES, block.data.len() as u64)?;
        Ok(true)
    }

    /// Stores an event block and updates heads, seqs and the root's log. An event already held
    /// changes nothing. Returns whether it was new.
    pub(super) fn apply_event(&mut self, block: &Block, event: &Event) -> Result<bool, StoreError> {
        if !self.put_raw(block)? {
            return Ok(false);
        }
        let cid_bytes = block.cid.to_bytes();
        if let Some(redo) = &mut self.redo {
            redo.push(Redo::Event {
                cid: cid_bytes.clone(),
                data: block.data.clone(),
                holes: self.note_holes,
            });
        }
        self.track_hole(&cid_bytes, event)?;
        for p in &event.prev {
            let pb = p.to_bytes();
            // A stored parent is never applied again: only a missing one needs remembering.
            if !self.holds(&pb)? {
                self.referenced.insert(pb.as_slice(), ()).map_err(db)?;
            }
            self.heads
                .remove(event.topic.as_str(), pb.as_slice())
                .map_err(db)?;
        }
        if self
            .referenced
            .get(cid_bytes.as_slice())
            .map_err(db)?
            .is_none()
        {
            self.heads
                .insert(event.topic.as_str(), cid_bytes.as_slice())
                .map_err(db)?;
        }
        let key = (event.author.as_slice(), event.topic.as_str());
        let newer = match self.seqs.get(key).map_err(db)? {
            Some(g) => g.value().0 < event.seq,
            None => true,
        };
        if newer {
            self.seqs
                .insert(key, (event.seq, cid_bytes.as_slice()))
                .map_err(db)?;
        }
        let root = topic::root_segment(&event.topic);
        let at = self.log_next_now.add(&self.log_next, root, 1)?;
        self.log
            .insert((root, at), cid_bytes.as_slice())
            .map_err(db)?;
        self.bump(&root_bytes_key(root), block.data.len() as u64)?;
        Ok(true)
    }

    /// Closes the hole the event `cid_bytes` was missing from, and records the one below it if
    /// its author's previous event is not held. Call before SEQS is updated for `event`.
    fn track_hole(&mut self, cid_bytes: &[u8], event: &Event) -> Result<(), StoreError> {
        let closed = self.holes.remove(cid_bytes).map_err(db)?.map(|g| {
            let (seq, _, cid) = g.value();
            (seq, cid.to_vec())
        });
        // A plain insert that closes nothing records nothing: skip the lookups below.
        if closed.is_none() && !self.note_holes {
            return Ok(());
        }
        let Some(prev) = event.prev.first().filter(|_| event.seq > 1) else {
            return Ok(());
        };
        let prev_bytes = prev.to_bytes();
        if self.holds(&prev_bytes)? {
            return Ok(());
        }
        // The stream's past below here was pruned (here, or on every member): nothing to fetch.
        let pruned = self
            .pruned
            .get((event.author.as_slice(), event.topic.as_str()))
            .map_err(db)?
            .map_or(0, |g| g.value());
        if event.seq - 1 <= pruned {
            return Ok(());
        }
        // The hole goes down to what was held below: the part of a closed hole still open, or
        // the stream's tip before this event (none: (0, empty)).
        let (below_seq, below_cid) = match closed {
            Some(c) => c,
            None => match self
                .seqs
                .get((event.author.as_slice(), event.topic.as_str()))
                .map_err(db)?
            {
                Some(g) if g.value().0 < event.seq => {
                    let (seq, cid) = g.value();
                    (seq, cid.to_vec())
                }
                _ => (0, Vec::new()),
            },
        };
        self.holes
            .insert(
                prev_bytes.as_slice(),
                (below_seq, cid_bytes, below_cid.as_slice()),
            )
            .map_err(db)?;
        Ok(())
    }

    fn bump(&mut self, key: &str, by: u64) -> Result<(), StoreError> {
        self.stats_now.add(&self.stats, key, by)?;
        Ok(())
    }
}
