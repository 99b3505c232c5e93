//! `tidings pin TOPIC`: the topic's stream, as this node holds it, imported into IPFS as a CAR
//! (`dag/import`, roots pinned) so it stays there and any IPFS tool can walk it from a head
//! through `prev`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tidings_ipld_schema::{Cid, car};

use super::{Ipfs, RpcError};
use crate::store::{CidSet, Store, StoreError};

/// Longest a `dag/import` of a whole stream may take.
const IMPORT_WAIT: Duration = Duration::from_secs(300);
/// Longest a head's recursive pin may take when the import did not pin it.
const PIN_WAIT: Duration = Duration::from_secs(60);

/// What was pinned.
#[derive(Debug, Clone, Serialize)]
pub struct Pinned {
    /// The topic.
    pub topic: String,
    /// Its heads, each pinned recursively in IPFS.
    pub heads: Vec<String>,
    /// Blocks of the stream imported.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blocks of the stream this node does not hold (IPFS had them, or the pin would have
    /// failed): 0 when the node holds the whole stream.
    pub missing_here: u64,
}

/// Why a pin failed.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The node holds no event of the topic.
    #[error("no events of topic {0} here: nothing to pin")]
    NoEvents(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A CAR could not be written (a stored block fails its CID: the store is damaged).
    #[error("cannot write the stream as a CAR: {0}")]
    Car(String),
    /// IPFS failed.
    #[error("{0}")]
    Ipfs(String),
}

/// Imports `topic`'s stream into IPFS and pins its heads.
pub async fn pin_topic(ipfs: &Ipfs, store: &Arc<Store>, topic: &str) -> Result<Pinned, PinError> {
    let (s, t) = (store.clone(), topic.to_string());
    let (heads, car_bytes, blocks, bytes, missing) = tokio::task::spawn_blocking(move || {
        let (heads, blocks) = s.stream_blocks(&t)?;
        if heads.is_empty() {
            return Err(PinError::NoEvents(t));
        }
        let missing = s
            .walk(&heads, &CidSet::default(), u64::MAX, u64::MAX, |_, _| true)?
            .missing;
        let n = blocks.len() as u64;
        let size = blocks.iter().map(|b| b.data.len() as u64).sum();
        let mut out = Vec::new();
        car::write_car(
            &mut out,
            &heads,
            blocks.into_iter().map(|b| (b.cid, b.data)),
        )
        .map_err(|e| PinError::Car(e.to_string()))?;
        Ok((heads, out, n, size, missing))
    })
    .await
    .map_err(|e| PinError::Ipfs(format!("task failed: {e}")))??;
    let fail = |e: RpcError, missing: &[Cid]| {
        ipfs.note_error(&e);
        let hint = match missing.first() {
            Some(first) => format!(
                "; this node lacks {} block(s) of the stream (first {first}), which IPFS would \
                 need too: fetch them first with `tidings fetch {}`",
                missing.len(),
                heads.first().map(Cid::to_string).unwrap_or_default()
            ),
            None => String::new(),
        };
        PinError::Ipfs(format!("IPFS at {}: {e}{hint}", ipfs.rpc().base()))
    };
    let roots = ipfs
        .rpc()
        .dag_import(car_bytes, IMPORT_WAIT)
        .await
        .map_err(|e| fail(e, &missing))?;
    ipfs.note_ok();
    for head in &heads {
        let pinned = roots
            .iter()
            .any(|r| r.cid == *head && r.pin_error.is_none());
        if !pinned {
            // Not reported as a pinned root (older or other implementations): pin it by name.
            ipfs.rpc()
                .pin_add(head, PIN_WAIT)
                .await
                .map_err(|e| fail(e, &missing))?;
        }
    }
    tracing::info!(%topic, heads = heads.len(), blocks, "stream pinned in IPFS");
    Ok(Pinned {
        topic: topic.to_string(),
        heads: heads.iter().map(Cid::to_string).collect(),
        blocks,
        bytes,
        missing_here: missing.len() as u64,
    })
}
