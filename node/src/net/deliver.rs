//! `/tidings/deliver/1`: the primary pushes matched events to each subscriber's node, in order,
//! several per request when they queue up.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Protocol name (request-response: one request per substream).
pub const PROTOCOL: &str = "/tidings/deliver/1";
/// The same messages on one long-lived stream per peer ([`super::stream_rpc`]).
pub const STREAM_PROTOCOL: &str = "/tidings/deliver/2";

/// Matched events, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverRequest {
    /// (CID bytes, block bytes) pairs.
    pub events: Vec<(ByteBuf, ByteBuf)>,
    /// Per event: the `seq` of the previous event of its (author, topic) stream that matches
    /// the receiving node's subscriptions (read from the stream, whoever delivered it), 0 if
    /// none since it subscribed, `u64::MAX` if the sender cannot tell. Events that did not
    /// match the node's filters are never delivered, so a jump in `seq` is normal; a jump past
    /// `after` means a delivery was lost, and the receiver repairs it from the DAG.
    #[serde(default)]
    pub after: Vec<u64>,
}

/// The subscriber node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DeliverResponse {
    /// Taken (verified, deduplicated, handed to local subscribers).
    Ok,
    /// Refused, with the reason.
    Refused(String),
}
