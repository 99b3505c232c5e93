//! Publish, subscribe and deliver decisions. On a single node the router signs, stores and
//! answers; the network layer will plug in below it.

pub mod local;
pub mod router;

pub use router::{PublishError, Published, Router};
