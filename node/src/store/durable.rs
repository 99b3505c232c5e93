//! Durable subscription records and log scans for replay (docs/protocols.md).

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tidings_ipld_schema::Cid;

use super::redo::Redo;
use super::tables::{DURABLES, LOG, LOG_NEXT};
use super::{Store, StoreError, db, parse_cid};

/// What a rendezvous member keeps of one durable subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableRecord {
    /// Filter source.
    pub filter: String,
    /// Root segment of the filter (its rendezvous set).
    pub root: String,
    /// First log position of the root that belongs to the backlog.
    pub start: u64,
    /// Backlog events must also have `time >= since` (a durable opened with history).
    pub since: Option<u64>,
    /// (author key, topic, seq): every matching event of the stream up to seq is acknowledged.
    pub acked: Vec<(ByteBuf, String, u64)>,
    /// Last open, ack or renewal, ms since epoch: unused durables expire.
    pub last_used_ms: u64,
    /// When it was created, ms since epoch (0: unknown, a record from before this field). A
    /// member that learns the record from another one has no log position for its start, so
    /// its copy's backlog starts at this time instead.
    #[serde(default)]
    pub created_ms: u64,
}

impl DurableRecord {
    /// The acknowledged seq of a stream (0: none).
    pub fn acked_seq(&self, author: &[u8], topic: &str) -> u64 {
        self.acked
            .iter()
            .find(|(a, t, _)| a.as_slice() == author && t == topic)
            .map_or(0, |(_, _, s)| *s)
    }

    /// Raises a stream's acknowledged seq (never lowers it).
    pub fn ack(&mut self, author: &[u8], topic: &str, seq: u64) {
        match self
            .acked
            .iter_mut()
            .find(|(a, t, _)| a.as_slice() == author && t == topic)
        {
            Some(entry) => entry.2 = entry.2.max(seq),
            None => self
                .acked
                .push((ByteBuf::from(author.to_vec()), topic.to_string(), seq)),
        }
    }
}

fn decode(bytes: &[u8]) -> Result<DurableRecord, StoreError> {
    serde_ipld_dagcbor::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("bad durable record: {e}")))
}

impl Store {
    /// Reads, changes and writes one durable record in one durable transaction (the next
    /// group commit: acknowledgements share the fsync of the events around them). `f` gets the
    /// current record (if any) and returns the new one (`None` deletes) and a result. Blocks
    /// the calling thread until committed: call it off the async runtime.
    pub fn update_durable<R: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce(Option<DurableRecord>) -> (Option<DurableRecord>, R) + Send + 'static,
    ) -> Result<R, StoreError> {
        let key = key.to_string();
        self.writer.run_blocking(0, move |txn, tables| {
            let mut t = txn.open_table(DURABLES).map_err(db)?;
            let cur = match t.get(key.as_str()).map_err(db)? {
                Some(g) => Some(decode(g.value())?),
                None => None,
            };
            let had = cur.is_some();
            let (new, out) = f(cur);
            match new {
                Some(rec) => {
                    let bytes = serde_ipld_dagcbor::to_vec(&rec)
                        .map_err(|e| StoreError::Corrupt(format!("durable record: {e}")))?;
                    t.insert(key.as_str(), bytes.as_slice()).map_err(db)?;
                    tables.note_redo(Redo::Durable {
                        key,
                        value: Some(bytes),
                    });
                }
                None if had => {
                    t.remove(key.as_str()).map_err(db)?;
                    tables.note_redo(Redo::Durable { key, value: None });
                }
                None => {}
            }
            Ok(out)
        })
    }

    /// One durable record.
    pub fn durable(&self, key: &str) -> Result<Option<DurableRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(DURABLES).map_err(db)?;
        match t.get(key).map_err(db)? {
            Some(g) => Ok(Some(decode(g.value())?)),
            None => Ok(None),
        }
    }

    /// Every durable record, by key.
    pub fn durables(&self) -> Result<Vec<(String, DurableRecord)>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(DURABLES).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.push((k.value().to_string(), decode(v.value())?));
        }
        Ok(out)
    }

    /// The durable records in key order from `from` (inclusive) on, each handed to `each` until
    /// it returns false.
    pub fn durables_from(
        &self,
        from: Option<&str>,
        mut each: impl FnMut(String, DurableRecord) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(DURABLES).map_err(db)?;
        for item in t.range(from.unwrap_or("")..).map_err(db)? {
            let (k, v) = item.map_err(db)?;
            if !each(k.value().to_string(), decode(v.value())?) {
                break;
            }
        }
        Ok(())
    }

    /// The durable records whose key starts with `prefix` (`"<peer id>/"`: one subscriber's).
    pub fn durables_of(&self, prefix: &str) -> Result<Vec<(String, DurableRecord)>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(DURABLES).map_err(db)?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(db)? {
            let (k, v) = item.map_err(db)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), decode(v.value())?));
        }
        Ok(out)
    }

    /// The next log position of `root` (where an event arriving now would go).
    pub fn log_next(&self, root: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(LOG_NEXT).map_err(db)?;
        Ok(t.get(root).map_err(db)?.map_or(0, |g| g.value()))
    }

    /// Up to `limit` log entries of `root` from position `from`, with their blocks (entries whose
    /// block is gone are skipped). Returns them and the position after the last one read, or
    /// `None` when the log ended.
    #[allow(clippy::type_complexity)]
    pub fn log_blocks(
        &self,
        root: &str,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, Cid, Vec<u8>)>, Option<u64>), StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let log = txn.open_table(LOG).map_err(db)?;
        let blocks = self.db.block_reader(&txn)?;
        let mut out = Vec::new();
        for (read, item) in log
            .range((root, from)..=(root, u64::MAX))
            .map_err(db)?
            .enumerate()
        {
            let (k, v) = item.map_err(db)?;
            let pos = k.value().1;
            if read == limit {
                return Ok((out, Some(pos)));
            }
            let cid = parse_cid(v.value())?;
            if let Some(b) = blocks.get(v.value())? {
                out.push((pos, cid, b.value().to_vec()));
            }
        }
        Ok((out, None))
    }
}
