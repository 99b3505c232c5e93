//! tidings node: the block store, publish path, HTTP API and the client the CLI uses.
//!
//! Layers call downward only: `api` → `pubsub` → `store` → `tidings-ipld-schema`.

// Maintainers read these docs with private items (`cargo doc --document-private-items`, as
// scripts/test.sh builds them), where a link to a private item resolves and is worth having.
#![allow(rustdoc::private_intra_doc_links)]

pub mod addr;
pub mod age;
pub mod api;
pub mod client;
pub mod crypto;
pub mod embed;
pub mod histogram;
pub mod history;
pub mod identity;
pub mod ipfs;
pub mod metrics;
pub mod net;
pub mod node;
pub mod process;
pub mod pubsub;
pub mod store;

pub use node::{Node, NodeConfig, NodeError};
