//! `/tidings/deliver/1`: the primary pushes matched events to each subscriber's node, in order,
//! several per request when they queue up.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Protocol name.
pub const PROTOCOL: &str = "/tidings/deliver/1";

/// Matched events, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverRequest {
    /// (CID bytes, block bytes) pairs.
    pub events: Vec<(ByteBuf, ByteBuf)>,
}

/// The subscriber node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DeliverResponse {
    /// Taken (verified, deduplicated, handed to local subscribers).
    Ok,
    /// Refused, with the reason.
    Refused(String),
}
