//! Moves the blocks of a store written before blocks were kept by arrival number
//! ([`super::block_index`]) out of the CID-keyed table they were in: once, at open, in
//! transactions of [`CHUNK`] blocks, so a stop part-way loses nothing and the next open goes on.

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::block_index::{BLOCK_CIDS, BLOCK_DATA};
use super::{StoreError, db};

/// Where blocks were kept before: CID bytes → block bytes.
pub(super) const LEGACY_BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");

/// Blocks moved per transaction.
const CHUNK: usize = 10_000;

/// Moves every block of the legacy table to [`BLOCK_DATA`] and [`BLOCK_CIDS`], then deletes it.
/// Does nothing to a store that has no legacy table.
pub(super) fn blocks_by_number(database: &Database) -> Result<(), StoreError> {
    let total = {
        let txn = database.begin_read().map_err(db)?;
        match txn.open_table(LEGACY_BLOCKS) {
            Ok(t) => t.len().map_err(db)?,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(db(e)),
        }
    };
    tracing::info!(
        blocks = total,
        "store: moving blocks to the layout kept by arrival (once, for a store from an earlier version)"
    );
    let mut moved = 0;
    loop {
        let (n, emptied) = move_chunk(database, CHUNK)?;
        moved += n;
        tracing::info!(moved, of = total, "store: blocks moved");
        if emptied {
            return Ok(());
        }
    }
}

/// Moves up to `chunk` blocks in one transaction, and deletes the legacy table once it is
/// empty. Returns how many moved and whether the table is gone.
pub(super) fn move_chunk(database: &Database, chunk: usize) -> Result<(u64, bool), StoreError> {
    let txn = database.begin_write().map_err(db)?;
    let (moved, emptied) = {
        let mut legacy = txn.open_table(LEGACY_BLOCKS).map_err(db)?;
        let mut data = txn.open_table(BLOCK_DATA).map_err(db)?;
        let mut cids = txn.open_table(BLOCK_CIDS).map_err(db)?;
        let mut next = data.last().map_err(db)?.map_or(1, |(k, _)| k.value() + 1);
        let mut n = 0;
        while n < chunk {
            let Some((cid, bytes)) = legacy.pop_first().map_err(db)? else {
                break;
            };
            data.insert(next, bytes.value()).map_err(db)?;
            cids.insert(next, cid.value()).map_err(db)?;
            next += 1;
            n += 1;
        }
        (n as u64, legacy.is_empty().map_err(db)?)
    };
    if emptied {
        txn.delete_table(LEGACY_BLOCKS).map_err(db)?;
    }
    txn.commit().map_err(db)?;
    Ok((moved, emptied))
}
