//! `/tidings/publish/1`: an author's node hands a signed event block to the rendezvous primary,
//! which stores it, replicates it to a majority of the set, and answers.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Protocol name.
pub const PROTOCOL: &str = "/tidings/publish/1";

/// A signed event to store, replicate, match and deliver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    /// CID bytes of the block.
    pub cid: ByteBuf,
    /// The DAG-CBOR event block.
    pub block: ByteBuf,
}

/// The primary's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PublishResponse {
    /// Durable on `copies` members of the set (a majority); the topic's heads after it.
    Stored {
        /// Members holding the event durably, the primary included.
        copies: u32,
        /// CID bytes of the topic's heads.
        heads: Vec<ByteBuf>,
    },
    /// Refused: `status` is the HTTP status the publisher should report (400 bad event, 503 no
    /// majority reachable).
    Refused {
        /// HTTP status to report.
        status: u16,
        /// Why.
        message: String,
    },
}
