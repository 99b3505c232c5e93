//! `/tidings/subscribe/1`: a subscriber's node registers (and renews, and drops) subscription
//! leases on every member of a root's rendezvous set.

use serde::{Deserialize, Serialize};

/// Protocol name.
pub const PROTOCOL: &str = "/tidings/subscribe/1";

/// Register, renew or drop a subscription lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SubscribeRequest {
    /// Register or renew `id` (the subscriber node's own id) for `lease_secs`.
    Lease {
        /// Subscription id, unique on the subscriber's node.
        id: u64,
        /// The filter's source text (any of the three syntaxes).
        filter: String,
        /// Lease length in seconds.
        lease_secs: u64,
    },
    /// Drop `id` now.
    Cancel {
        /// Subscription id.
        id: u64,
    },
}

/// A member's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SubscribeResponse {
    /// Registered (or cancelled).
    Ok,
    /// Refused (bad filter, this node is not a broker).
    Refused(String),
}
