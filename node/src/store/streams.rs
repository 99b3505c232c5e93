//! Per-stream bookkeeping for replica sync: the tip of every (author, topic) stream of a root,
//! and the holes an arriving event would leave in its author's chain.

use std::collections::HashSet;

use redb::{ReadableDatabase, ReadableTable};
use tidings_ipld_schema::{Block, Cid, Event, topic};

use super::tables::{BLOCKS, SEQS};
use super::{Store, StoreError, db, parse_cid};

/// The newest stored event of one (author, topic) stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTip {
    /// Author key bytes.
    pub author: Vec<u8>,
    /// Topic.
    pub topic: String,
    /// Highest seq stored.
    pub seq: u64,
    /// Its CID.
    pub cid: Cid,
}

/// An event whose author's previous event (its first `prev`) is not held: the chain has a
/// hole below it, down to `below` (the stream's tip before the event arrived), if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHole {
    /// Author key bytes.
    pub author: Vec<u8>,
    /// Topic.
    pub topic: String,
    /// The event above the hole.
    pub above: Cid,
    /// Its seq.
    pub seq: u64,
    /// The newest event of the stream held below it (seq, CID), if any.
    pub below: Option<(u64, Cid)>,
}

impl Store {
    /// The tip of every stream whose topic is under `root`.
    pub fn stream_tips(&self, root: &str) -> Result<Vec<StreamTip>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let seqs = txn.open_table(SEQS).map_err(db)?;
        let mut out = Vec::new();
        for item in seqs.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            let (author, topic_name) = k.value();
            if topic::root_segment(topic_name) != root {
                continue;
            }
            let (seq, cid) = v.value();
            out.push(StreamTip {
                author: author.to_vec(),
                topic: topic_name.to_string(),
                seq,
                cid: parse_cid(cid)?,
            });
        }
        Ok(out)
    }

    /// The holes storing `events` would leave: events (not yet held) after the first of their
    /// stream whose author's previous event is neither held nor among `events`. Call before
    /// [`Store::insert_events`].
    pub fn chain_holes(&self, events: &[(Block, Event)]) -> Result<Vec<ChainHole>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let blocks = txn.open_table(BLOCKS).map_err(db)?;
        let seqs = txn.open_table(SEQS).map_err(db)?;
        let batch: HashSet<Cid> = events.iter().map(|(b, _)| b.cid).collect();
        let held = |c: &Cid| -> Result<bool, StoreError> {
            Ok(batch.contains(c) || blocks.get(c.to_bytes().as_slice()).map_err(db)?.is_some())
        };
        let mut out = Vec::new();
        for (block, event) in events {
            if event.seq <= 1
                || blocks
                    .get(block.cid.to_bytes().as_slice())
                    .map_err(db)?
                    .is_some()
            {
                continue;
            }
            let Some(prev) = event.prev.first() else {
                continue;
            };
            if held(prev)? {
                continue;
            }
            let below = match seqs
                .get((event.author.as_slice(), event.topic.as_str()))
                .map_err(db)?
            {
                Some(g) if g.value().0 < event.seq => {
                    let (s, c) = g.value();
                    Some((s, parse_cid(c)?))
                }
                _ => None,
            };
            out.push(ChainHole {
                author: event.author.clone(),
                topic: event.topic.clone(),
                above: block.cid,
                seq: event.seq,
                below,
            });
        }
        Ok(out)
    }
}
