//! Why pub/sub work fails, and the helper that runs store work off the async runtime.

use crate::store::StoreError;

/// Why a publish or subscribe failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event or filter is unacceptable (bad topic, too large, bad filter): the client's fault.
    #[error(transparent)]
    Invalid(tidings_ipld_schema::Error),
    /// A filter that does not parse.
    #[error("bad filter: {0}")]
    BadFilter(String),
    /// The store failed: nothing was acknowledged.
    #[error(transparent)]
    Store(StoreError),
    /// The network cannot take it now (no majority of the rendezvous set reachable).
    #[error("{0}")]
    Unavailable(String),
    /// The blocking task running the write was lost (shutdown or panic).
    #[error("publish task failed: {0}")]
    Task(String),
    /// A durable subscription exists with another filter, or is in use.
    #[error("{0}")]
    Conflict(String),
    /// No such durable subscription.
    #[error("{0}")]
    NotFound(String),
}

/// Why a request from another node was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The peer sent a block that fails verification (CID mismatch, bad signature, not an
    /// event, too large): it misbehaved, since an honest node only sends what it verified.
    #[error("{0}")]
    BadBlock(String),
    /// This node could not take it (store failure): nobody's fault.
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for PublishError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Event(e) => PublishError::Invalid(e),
            other => PublishError::Store(other),
        }
    }
}

/// Runs store work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PublishError> + Send + 'static,
) -> Result<T, PublishError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PublishError::Task(e.to_string()))?
}
