//! What the IPFS mirror reads and keeps in the store: the end of each root's arrival log, the
//! blocks of a stretch of it, and the mirror's own cursor per root (the first log position IPFS
//! has not confirmed yet). Nothing here is on the write path: the mirror follows the log
//! behind the commits, so a publish never waits for IPFS.
//!
//! The cursor only moves past entries IPFS answered for, so after a crash at any moment the
//! mirror resumes at or before where it was: some blocks go twice (IPFS takes a block it holds
//! as a no-op), none is skipped.

use std::collections::BTreeMap;

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use tidings_ipld_schema::{Block, Cid, Event};

use super::tables::{LOG, LOG_NEXT};
use super::{Store, StoreError, db, parse_cid};

/// Root segment → the next log position the IPFS mirror has to send.
const MIRROR: TableDefinition<&str, u64> = TableDefinition::new("ipfs_mirror");

/// One log entry and what the mirror sends for it.
#[derive(Debug, Clone)]
pub struct LoggedBlock {
    /// Its position in the root's log.
    pub pos: u64,
    /// The event's CID.
    pub cid: Cid,
    /// The event's block, unless retention removed it.
    pub data: Option<Vec<u8>>,
    /// Blocks the event's body links to that this store holds (they are in no log).
    pub linked: Vec<Block>,
}

impl Store {
    /// The next free position of every root's log (entries `0..end` have been written).
    pub fn log_ends(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let next = txn.open_table(LOG_NEXT).map_err(db)?;
        let mut out = Vec::new();
        for item in next.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// Log entries of `root` from `from` on, up to `limit` entries or `max_bytes` of blocks
    /// (at least one entry), each with its block and the blocks its body links to, read in
    /// one snapshot.
    pub fn mirror_batch(
        &self,
        root: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LoggedBlock>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let log = txn.open_table(LOG).map_err(db)?;
        let blocks = self.db.block_reader(&txn)?;
        let get = |cid: &Cid| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(blocks
                .get(cid.to_bytes().as_slice())?
                .map(|g| g.value().to_vec()))
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in log.range((root, from)..=(root, u64::MAX)).map_err(db)? {
            if out.len() >= limit || (!out.is_empty() && bytes >= max_bytes) {
                break;
            }
            let (k, v) = item.map_err(db)?;
            let cid = parse_cid(v.value())?;
            let data = get(&cid)?;
            let mut linked = Vec::new();
            if let Some(event) = data.as_deref().and_then(Event::decode_stored) {
                for link in event.body_links() {
                    if let Some(d) = get(&link)? {
                        bytes += d.len();
                        linked.push(Block { cid: link, data: d });
                    }
                }
            }
            bytes += data.as_ref().map_or(0, Vec::len);
            out.push(LoggedBlock {
                pos: k.value().1,
                cid,
                data,
                linked,
            });
        }
        Ok(out)
    }

    /// The mirror's cursor of every root it has sent blocks of.
    pub fn mirror_cursors(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = match txn.open_table(MIRROR) {
            Ok(t) => t,
            // Never written: a store that has not mirrored yet.
            Err(TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(db(e)),
        };
        let mut out = BTreeMap::new();
        for item in table.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.insert(k.value().to_string(), v.value());
        }
        Ok(out)
    }

    /// Saves the mirror's cursors. `durable: false` skips the fsync: the next durable commit
    /// (the store writer's checkpoint, seconds later at most while publishes flow) carries it
    /// to disk, and a crash before that only rewinds the cursor, so some blocks go to IPFS
    /// twice.
    pub fn set_mirror_cursors(
        &self,
        cursors: &BTreeMap<String, u64>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(db)?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::Commit(e.to_string()))?;
        }
        {
            let mut table = txn.open_table(MIRROR).map_err(db)?;
            for (root, pos) in cursors {
                table.insert(root.as_str(), *pos).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_ipld_schema::{Ipld, Keypair, RAW, cid_of};

    fn event(kp: &Keypair, topic: &str, seq: u64, body: Ipld, prev: Vec<Cid>) -> (Block, Event) {
        let (event, block) = Event::sign_block(kp, topic, body, seq, seq, prev).expect("sign");
        (block, event)
    }

    #[test]
    fn the_log_is_read_in_order_with_linked_blocks_and_cursors_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.redb");
        let kp = Keypair::ed25519_from_bytes([5; 32]).expect("key");
        let attachment = Block {
            cid: cid_of(RAW, b"attachment"),
            data: b"attachment".to_vec(),
        };
        {
            let store = Store::open(&path).expect("store");
            assert!(store.mirror_cursors().expect("cursors").is_empty());
            let a1 = event(&kp, "/a/x", 1, Ipld::Link(attachment.cid), vec![]);
            let b1 = event(&kp, "/b/x", 1, Ipld::Integer(1), vec![]);
            let a2 = event(&kp, "/a/x", 2, Ipld::Integer(2), vec![a1.0.cid]);
            store
                .insert_events(&[a1.clone(), b1.clone()], std::slice::from_ref(&attachment))
                .expect("insert");
            store
                .insert_events(std::slice::from_ref(&a2), &[])
                .expect("insert");
            assert_eq!(
                store.log_ends().expect("ends"),
                vec![("a".to_string(), 2), ("b".to_string(), 1)]
            );
            let got = store.mirror_batch("a", 0, 10, 1 << 20).expect("read");
            assert_eq!(
                got.iter().map(|l| (l.pos, l.cid)).collect::<Vec<_>>(),
                vec![(0, a1.0.cid), (1, a2.0.cid)]
            );
            assert_eq!(got[0].data.as_deref(), Some(a1.0.data.as_slice()));
            assert_eq!(got[0].linked, vec![attachment.clone()], "the body's link");
            assert!(got[1].linked.is_empty());
            // From a position, and limited.
            let got = store.mirror_batch("a", 1, 10, 1 << 20).expect("read");
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].pos, 1);
            assert_eq!(
                store.mirror_batch("a", 0, 1, 1 << 20).expect("read").len(),
                1
            );
            assert_eq!(store.mirror_batch("a", 0, 10, 1).expect("read").len(), 1);

            let mut cursors = BTreeMap::new();
            cursors.insert("a".to_string(), 1);
            store.set_mirror_cursors(&cursors, false).expect("save");
            cursors.insert("a".to_string(), 2);
            cursors.insert("b".to_string(), 1);
            store.set_mirror_cursors(&cursors, true).expect("save");
        }
        let store = Store::open(&path).expect("reopen");
        let cursors = store.mirror_cursors().expect("cursors");
        assert_eq!(cursors.get("a"), Some(&2));
        assert_eq!(cursors.get("b"), Some(&1));
    }
}
