//! Per-stream bookkeeping for replica sync: the tip of every (author, topic) stream of a root,
//! and the recorded holes in authors' chains.

use redb::{ReadableDatabase, ReadableTable};
use tidings_ipld_schema::{Cid, Event, topic};

use super::tables::{HOLES, PRUNED, SEQS};
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
    /// The stream's pruned past: no event at or below this seq is chased (0: none).
    pub pruned: u64,
}

/// A hole in an author's chain: `missing` (the author's previous event of `above`) is not
/// held, nor anything down to `below`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHole {
    /// The first block missing: `above`'s first `prev`.
    pub missing: Cid,
    /// Author key bytes.
    pub author: Vec<u8>,
    /// Topic.
    pub topic: String,
    /// The event above the hole.
    pub above: Cid,
    /// Its seq.
    pub seq: u64,
    /// Its time (ms since the epoch, by its author's clock): the missing events are older.
    pub time: u64,
    /// The newest event of the stream held below the hole (seq, CID), if any.
    pub below: Option<(u64, Cid)>,
    /// The stream's pruned past (see [`StreamTip::pruned`]): only what is above it is missing.
    pub pruned: u64,
}

impl Store {
    /// The tip of every stream whose topic is under `root`.
    pub fn stream_tips(&self, root: &str) -> Result<Vec<StreamTip>, StoreError> {
        let mut out = Vec::new();
        self.stream_tips_from(root, None, |t| {
            out.push(t);
            true
        })?;
        Ok(out)
    }

    /// The tips of the streams under `root` in (author, topic) order, from the stream `from`
    /// (inclusive) on, each handed to `each` until it returns false.
    pub fn stream_tips_from(
        &self,
        root: &str,
        from: Option<(&[u8], &str)>,
        mut each: impl FnMut(StreamTip) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let seqs = txn.open_table(SEQS).map_err(db)?;
        let pruned = txn.open_table(PRUNED).map_err(db)?;
        let items = match from {
            Some(at) => seqs.range(at..).map_err(db)?,
            None => seqs.range::<(&[u8], &str)>(..).map_err(db)?,
        };
        for item in items {
            let (k, v) = item.map_err(db)?;
            let (author, topic_name) = k.value();
            if topic::root_segment(topic_name) != root {
                continue;
            }
            let (seq, cid) = v.value();
            let tip = StreamTip {
                author: author.to_vec(),
                topic: topic_name.to_string(),
                seq,
                cid: parse_cid(cid)?,
                pruned: pruned
                    .get((author, topic_name))
                    .map_err(db)?
                    .map_or(0, |g| g.value()),
            };
            if !each(tip) {
                break;
            }
        }
        Ok(())
    }

    /// The pruned past of (`author`, `topic`): see [`StreamTip::pruned`].
    pub fn pruned(&self, author: &[u8], topic_name: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let pruned = txn.open_table(PRUNED).map_err(db)?;
        Ok(pruned
            .get((author, topic_name))
            .map_err(db)?
            .map_or(0, |g| g.value()))
    }

    /// Raises the pruned past of each (author, topic, seq) to `seq` where it is lower (what
    /// the other members of the set all pruned): one write, and none when nothing is new.
    pub fn note_pruned(&self, streams: &[(Vec<u8>, String, u64)]) -> Result<usize, StoreError> {
        let mut higher = Vec::new();
        for (author, topic_name, seq) in streams {
            if *seq > self.pruned(author, topic_name)? {
                higher.push((author, topic_name, *seq));
            }
        }
        if higher.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut pruned = txn.open_table(PRUNED).map_err(db)?;
            for (author, topic_name, seq) in &higher {
                let key = (author.as_slice(), topic_name.as_str());
                let cur = pruned.get(key).map_err(db)?.map_or(0, |g| g.value());
                if *seq > cur {
                    pruned.insert(key, *seq).map_err(db)?;
                }
            }
        }
        txn.commit().map_err(db)?;
        Ok(higher.len())
    }

    /// Forgets the recorded hole whose first missing block is `missing` (nothing to fetch any
    /// more: retention would remove what it lacks). Returns whether there was one.
    pub fn drop_hole(&self, missing: &Cid) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        let had = {
            let mut holes = txn.open_table(HOLES).map_err(db)?;
            holes
                .remove(missing.to_bytes().as_slice())
                .map_err(db)?
                .is_some()
        };
        txn.commit().map_err(db)?;
        Ok(had)
    }

    /// Recorded holes (see [`Store::insert_replicas`]) that `keep` accepts (given the root and
    /// the missing CID), at most `limit`, with the author and topic of the event above each. A
    /// hole whose upper event is gone (retention) is left out.
    pub fn holes(
        &self,
        limit: usize,
        keep: impl Fn(&str, &Cid) -> bool,
    ) -> Result<Vec<ChainHole>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let holes = txn.open_table(HOLES).map_err(db)?;
        let blocks = self.db.block_reader(&txn)?;
        let pruned = txn.open_table(PRUNED).map_err(db)?;
        let mut out = Vec::new();
        for item in holes.iter().map_err(db)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(db)?;
            let missing = parse_cid(k.value())?;
            let (below_seq, above, below_cid) = v.value();
            let Some(data) = blocks.get(above)? else {
                continue;
            };
            let Some(event) = Event::decode_stored(data.value()) else {
                continue;
            };
            if !keep(topic::root_segment(&event.topic), &missing) {
                continue;
            }
            let below = if below_cid.is_empty() {
                None
            } else {
                Some((below_seq, parse_cid(below_cid)?))
            };
            let floor = pruned
                .get((event.author.as_slice(), event.topic.as_str()))
                .map_err(db)?
                .map_or(0, |g| g.value());
            out.push(ChainHole {
                missing,
                pruned: floor,
                author: event.author,
                topic: event.topic,
                above: parse_cid(above)?,
                seq: event.seq,
                time: event.time,
                below,
            });
        }
        Ok(out)
    }
}
