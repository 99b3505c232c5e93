//! The database with a count of its write commits, so a reader can tell that nothing was
//! committed since it last looked without opening a read transaction ([`super::Store::next_links`]
//! keeps its answer until then: a publish reads its links under its topic's lock, and the read
//! transaction was 5% of a node's CPU at full rate).
//!
//! Every write transaction of the store begins here and can only commit through
//! [`Write::commit`], which advances the count to an odd value before the commit can become
//! visible and to the next even one after: a reader that sees the same even count before and
//! after a read knows no commit happened during it, and while the count stays there, the
//! state it read is still the state.
//!
//! It also holds the index of where each block is ([`BlockIndex`]), which changes as a commit
//! does, in [`Write::commit`], while the count is odd.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use redb::{Database, WriteTransaction};

use super::block_index::{BLOCK_CIDS, BLOCK_DATA, BlockIndex, BlockReader, IndexChanges};
use super::{StoreError, db, migrate};

/// A [`Database`] whose write commits are counted, with the index of its blocks.
pub(super) struct VersionedDb {
    db: Database,
    version: AtomicU64,
    blocks: BlockIndex,
}

impl VersionedDb {
    /// Wraps an open database (moving its blocks to the layout keyed by arrival first, if it
    /// is older) and loads its block index; its count starts at 0.
    pub(super) fn open(database: Database) -> Result<VersionedDb, StoreError> {
        migrate::blocks_by_number(&database)?;
        let txn = database.begin_write().map_err(db)?;
        // Created here so readers never meet a missing table.
        txn.open_table(BLOCK_DATA).map_err(db)?;
        let blocks = BlockIndex::load(&txn.open_table(BLOCK_CIDS).map_err(db)?)?;
        txn.commit().map_err(db)?;
        Ok(VersionedDb {
            db: database,
            version: AtomicU64::new(0),
            blocks,
        })
    }

    /// Reads blocks by CID in the snapshot of `txn`.
    pub(super) fn block_reader(
        &self,
        txn: &redb::ReadTransaction,
    ) -> Result<BlockReader<'_, redb::ReadOnlyTable<u64, &'static [u8]>>, StoreError> {
        Ok(BlockReader::new(
            txn.open_table(BLOCK_DATA).map_err(db)?,
            &self.blocks,
        ))
    }

    /// The commit count: odd while a commit is under way, two more per commit.
    pub(super) fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Begins a write transaction, which commits through [`Write::commit`].
    pub(super) fn begin_write(&self) -> Result<Write<'_>, redb::TransactionError> {
        Ok(Write {
            txn: self.db.begin_write()?,
            db: self,
            changes: Mutex::default(),
        })
    }
}

impl Deref for VersionedDb {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

/// A write transaction of a [`VersionedDb`]. Dropped without [`Write::commit`], it aborts.
pub(super) struct Write<'a> {
    txn: WriteTransaction,
    db: &'a VersionedDb,
    /// What this transaction did to the block index, applied when it commits.
    changes: Mutex<IndexChanges>,
}

impl Write<'_> {
    /// Commits, counted (see the module's documentation), and applies the transaction's
    /// changes to the block index.
    pub(super) fn commit(self) -> Result<(), redb::CommitError> {
        let version = &self.db.version;
        let changes = self
            .changes
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        version.fetch_add(1, Ordering::SeqCst);
        // Before redb's commit: the next write transaction can begin as soon as it returns.
        self.db.blocks.add(&changes.added);
        let done = self.txn.commit();
        match &done {
            Ok(()) => self.db.blocks.retire(changes.removed, Instant::now()),
            Err(_) => self.db.blocks.abandon(&changes.added),
        }
        version.fetch_add(1, Ordering::SeqCst);
        done
    }

    /// Where each block is, as of the last commit.
    pub(super) fn blocks(&self) -> &BlockIndex {
        &self.db.blocks
    }

    /// Takes the changes to the block index noted so far (to note them again with more).
    pub(super) fn take_changes(&self) -> IndexChanges {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Notes changes to the block index, made when this transaction commits.
    pub(super) fn note(&self, changes: IndexChanges) {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .merge(changes);
    }
}

impl Deref for Write<'_> {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

impl DerefMut for Write<'_> {
    fn deref_mut(&mut self) -> &mut WriteTransaction {
        &mut self.txn
    }
}
