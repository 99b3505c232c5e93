//! tidings event blocks (docs/protocols.md): the event schema, canonical DAG-CBOR encoding, CIDs,
//! ed25519 signatures, stream-DAG verification, JSON conversion and CAR v1.
//!
//! No I/O, no async. The schema is `schema/tidings.ipldsch`.

// Maintainers read these docs with private items (`cargo doc --document-private-items`, as
// scripts/test.sh builds them), where a link to a private item resolves and is worth having.
#![allow(rustdoc::private_intra_doc_links)]

pub mod batch;
pub mod block;
mod canonical;
pub mod car;
pub mod error;
pub mod event;
pub mod json;
pub mod signer;
pub mod topic;
pub mod verify;

pub use block::{Block, cid_of, parse_cid};
pub use cid::Cid;
pub use error::Error;
pub use event::Event;
pub use ipld_core::ipld::Ipld;
pub use libp2p_identity::{Keypair, PeerId, PublicKey};
pub use signer::Signer;
pub use verify::{verify, verify_batch, verify_link};

/// Largest block accepted or produced: 1 MiB (IPFS's bitswap limit).
pub const MAX_BLOCK_SIZE: usize = 1 << 20;
/// Deepest nesting of maps/lists accepted in an event body (the DAG-CBOR decoder stops at 127
/// levels; this leaves room for the event map and link tags).
pub const MAX_BODY_DEPTH: usize = 100;
/// Multicodec code of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec code of raw bytes.
pub const RAW: u64 = 0x55;

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A fixed ed25519 keypair from a 32-byte secret.
    pub fn keypair(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).expect("32-byte ed25519 secret")
    }

    /// A small stock-order body.
    pub fn body() -> Ipld {
        json::json_to_ipld(&serde_json::json!({
            "exchange": "Euronext Lisboa", "order": "buy", "number": 100, "price": 5.55,
        }))
        .expect("json")
    }
}
