//! `/tidings/replicate/1`: the primary copies event blocks to the other members of the
//! rendezvous set; each answers once the blocks are durable in its store.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Protocol name (request-response: one request per substream).
pub const PROTOCOL: &str = "/tidings/replicate/1";
/// The same messages on one long-lived stream per peer ([`super::stream_rpc`]).
pub const STREAM_PROTOCOL: &str = "/tidings/replicate/2";

/// Event blocks to store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicateRequest {
    /// (CID bytes, block bytes) pairs.
    pub blocks: Vec<(ByteBuf, ByteBuf)>,
}

/// A member's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReplicateResponse {
    /// All blocks are durable.
    Stored,
    /// Refused, with the reason (bad block, store failure).
    Refused(String),
}
