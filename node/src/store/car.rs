//! CAR v1 import (all-or-nothing, every block verified) and export of a topic's stream.

use tidings_ipld_schema::{Block, DAG_CBOR, Event, car, verify};

use super::{Store, StoreError};

/// What an import stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Blocks in the file.
    pub blocks: u64,
    /// Of those, tidings events (each verified: hash, signature, topic, seq).
    pub events: u64,
    /// Blocks that were new to this store.
    pub new_blocks: u64,
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file or one of its blocks is bad; nothing was stored.
    #[error("{0}")]
    Invalid(String),
    /// The store failed; nothing was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Imports a CAR v1 file: every block's hash is checked against its CID, every block that
    /// decodes as a tidings event must verify, and then all of it is stored in one transaction.
    /// One bad block and nothing is stored.
    pub fn import_car(&self, bytes: &[u8]) -> Result<ImportSummary, ImportError> {
        let parsed = car::read_car(bytes).map_err(|e| ImportError::Invalid(e.to_string()))?;
        let mut events = Vec::new();
        let mut others = Vec::new();
        for (cid, data) in parsed.blocks {
            // Only dag-cbor blocks shaped like an event are events; anything else with a
            // matching hash is ordinary content (e.g. linked from a body) and is kept as is.
            if cid.codec() == DAG_CBOR && Event::decode(&data).is_ok() {
                let event = verify(&cid, &data)
                    .map_err(|e| ImportError::Invalid(format!("block {cid}: {e}")))?;
                events.push((Block { cid, data }, event));
            } else {
                Block::check(&cid, &data)
                    .map_err(|e| ImportError::Invalid(format!("block {cid}: {e}")))?;
                others.push(Block { cid, data });
            }
        }
        let blocks = (events.len() + others.len()) as u64;
        let n_events = events.len() as u64;
        let written = self.insert_events(&events, &others)?;
        Ok(ImportSummary {
            blocks,
            events: n_events,
            new_blocks: written.new_blocks,
        })
    }

    /// A CAR v1 file of `topic`'s stream as this node holds it: roots are the heads, blocks
    /// everything reachable from them through `prev` and body links.
    pub fn export_car(&self, topic_name: &str) -> Result<Vec<u8>, StoreError> {
        let (heads, blocks) = self.stream_blocks(topic_name)?;
        let mut out = Vec::new();
        car::write_car(
            &mut out,
            &heads,
            blocks.into_iter().map(|b| (b.cid, b.data)),
        )?;
        Ok(out)
    }
}
