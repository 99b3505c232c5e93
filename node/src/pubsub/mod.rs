//! Publish, subscribe and deliver decisions: the router, this node's subscriptions, the
//! subscriptions it holds as a rendezvous member, and delivery in both directions.

mod backlog;
pub mod error;
pub mod held;
pub mod history;
pub mod inbound;
mod lane;
pub mod local;
pub mod outbox;
mod peer_queue;
pub mod publishes;
pub mod receive;
pub mod remote;
pub mod replica_sync;
pub mod replicas;
pub mod router;
mod tips;

pub use error::{PublishError, Refusal};
pub use router::{Published, Router};
