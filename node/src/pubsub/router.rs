//! The router: turns an API publish into a signed, stored event.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tidings_ipld_schema::{Cid, Event, Ipld, Keypair, json as ipld_json};

use crate::pubsub::local::LocalSubs;

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// The outcome of a publish, as the API reports it.
#[derive(Debug, Clone)]
pub struct Published {
    /// CID of the new event.
    pub cid: Cid,
    /// Its `seq` in the (author, topic) stream.
    pub seq: u64,
    /// How many nodes hold it durably (1 on a single node).
    pub copies: u32,
    /// The topic's heads after the publish.
    pub heads: Vec<Cid>,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event itself is unacceptable (bad topic, too large, ...): the client's fault.
    #[error(transparent)]
    Invalid(tidings_ipld_schema::Error),
    /// The store failed: nothing was acknowledged.
    #[error(transparent)]
    Store(StoreError),
    /// The blocking task running the write was lost (shutdown or panic).
    #[error("publish task failed: {0}")]
    Task(String),
}

impl From<StoreError> for PublishError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Event(e) => PublishError::Invalid(e),
            other => PublishError::Store(other),
        }
    }
}

/// Signs events with the node's key and stores them.
pub struct Router {
    store: Arc<Store>,
    keypair: Keypair,
    author: Vec<u8>,
    metrics: Arc<Metrics>,
    local: Arc<LocalSubs>,
    /// Held from the store commit through local delivery, so subscribers see events in
    /// commit order (and so in `seq` order per (author, topic)).
    order: Arc<std::sync::Mutex<()>>,
}

impl Router {
    /// A router publishing as `keypair` into `store`.
    pub fn new(store: Arc<Store>, keypair: Keypair, metrics: Arc<Metrics>) -> Router {
        let author = keypair.public().encode_protobuf();
        Router {
            store,
            keypair,
            author,
            metrics,
            local: Arc::default(),
            order: Arc::default(),
        }
    }

    /// This node's live subscriptions.
    pub fn local(&self) -> &Arc<LocalSubs> {
        &self.local
    }

    /// The store behind this router.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Signs `body` as the next event of this node on `topic` and stores it durably.
    pub async fn publish(&self, topic: String, body: Ipld) -> Result<Published, PublishError> {
        let store = self.store.clone();
        let keypair = self.keypair.clone();
        let author = self.author.clone();
        let local = self.local.clone();
        let order = self.order.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _in_order = order
                .lock()
                .map_err(|_| PublishError::Task("publish lock poisoned".into()))?;
            let appended = store.append_local(&author, &topic, |seq, prev| {
                Event::sign_block(&keypair, &topic, body, seq, now_ms(), prev)
            })?;
            if !local.is_empty() {
                let json = ipld_json::event_to_json(&appended.cid, &appended.event);
                let text = json.to_string();
                local.deliver(&topic, &json["body"], &appended.cid.to_string(), &text);
            }
            let heads = store.heads(&topic)?;
            Ok::<_, PublishError>(Published {
                cid: appended.cid,
                seq: appended.event.seq,
                copies: 1,
                heads,
            })
        })
        .await
        .map_err(|e| PublishError::Task(e.to_string()))
        .and_then(|r| r);
        match &result {
            Ok(p) => {
                Metrics::inc(&self.metrics.published);
                tracing::debug!(cid = %p.cid, seq = p.seq, "published");
            }
            Err(e) => {
                Metrics::inc(&self.metrics.publish_failed);
                tracing::debug!(error = %e, "publish refused");
            }
        }
        result
    }
}

/// Milliseconds since the Unix epoch by this machine's clock (advisory only).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
