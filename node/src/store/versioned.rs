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

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, WriteTransaction};

/// A [`Database`] whose write commits are counted.
pub(super) struct VersionedDb {
    db: Database,
    version: AtomicU64,
}

impl VersionedDb {
    /// Wraps an open database; its count starts at 0.
    pub(super) fn new(db: Database) -> VersionedDb {
        VersionedDb {
            db,
            version: AtomicU64::new(0),
        }
    }

    /// The commit count: odd while a commit is under way, two more per commit.
    pub(super) fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Begins a write transaction, which commits through [`Write::commit`].
    pub(super) fn begin_write(&self) -> Result<Write<'_>, redb::TransactionError> {
        Ok(Write {
            txn: self.db.begin_write()?,
            version: &self.version,
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
    version: &'a AtomicU64,
}

impl Write<'_> {
    /// Commits, counted (see the module's documentation).
    pub(super) fn commit(self) -> Result<(), redb::CommitError> {
        self.version.fetch_add(1, Ordering::SeqCst);
        let done = self.txn.commit();
        self.version.fetch_add(1, Ordering::SeqCst);
        done
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
