//! The client side of the publish stream (`GET /v1/publish` as a WebSocket, docs/api.md): many
//! publishes in flight on one connection, each answered once the node acknowledged it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::{ClientError, WsStream};

/// Requests handed to the connection's task before a caller waits to hand one more.
const QUEUED: usize = 1024;

/// A publish stream to one node. Clones share the connection; [`PublishStream::publish`] may
/// be called from many tasks at once (events of one topic are stored in the order their calls
/// reached the connection). The connection closes once every clone is dropped and every
/// publish sent was answered.
#[derive(Clone)]
pub struct PublishStream {
    tx: mpsc::Sender<Outgoing>,
    next_id: Arc<AtomicU64>,
    api: Arc<str>,
}

/// A frame to send and who waits for its answer.
struct Outgoing {
    id: u64,
    frame: String,
    reply: oneshot::Sender<Result<Value, ClientError>>,
}

impl PublishStream {
    /// Drives `ws` on its own task.
    pub(super) fn start(ws: WsStream, api: String) -> PublishStream {
        let (tx, rx) = mpsc::channel(QUEUED);
        let api: Arc<str> = api.into();
        tokio::spawn(drive(ws, rx, api.clone()));
        PublishStream {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            api,
        }
    }

    /// Publishes `body` on `topic`; returns the node's answer (`{"cid", "seq", "copies",
    /// "heads"}`) once the event is acknowledged.
    pub async fn publish(&self, topic: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(topic, &body.to_string()).await?.await
    }

    /// [`PublishStream::publish`] with the body as JSON text, sent as it is (the node refuses
    /// text that is not JSON, with a 400 in the answer).
    pub async fn publish_json(&self, topic: &str, body_json: &str) -> Result<Value, ClientError> {
        self.send(topic, body_json).await?.await
    }

    /// Queues the event to be sent and returns once it is queued, with a future of its
    /// answer: events queued one after another on one topic are stored in that order, whether
    /// or not the answers are awaited in between. `body_json` is JSON text, sent as it is.
    pub async fn send(
        &self,
        topic: &str,
        body_json: &str,
    ) -> Result<impl Future<Output = Result<Value, ClientError>> + Send + 'static, ClientError>
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = format!(
            r#"{{"id":{id},"topic":{},"body":{body_json}}}"#,
            Value::from(topic)
        );
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Outgoing { id, frame, reply })
            .await
            .map_err(|_| self.closed())?;
        let api = self.api.clone();
        Ok(async move { answer.await.map_err(|_| closed(&api))? })
    }

    fn closed(&self) -> ClientError {
        closed(&self.api)
    }
}

fn closed(api: &str) -> ClientError {
    ClientError::Unreachable {
        api: api.to_string(),
        reason: "the publish stream closed before the node answered (the event may or may \
                 not have been stored)"
            .into(),
    }
}

/// Sends what callers queue (many frames per write when they queue faster than it sends) and
/// hands each answer to its caller.
async fn drive(mut ws: WsStream, mut rx: mpsc::Receiver<Outgoing>, api: Arc<str>) {
    let mut pending: HashMap<u64, oneshot::Sender<Result<Value, ClientError>>> = HashMap::new();
    let mut callers = true;
    loop {
        tokio::select! {
            o = rx.recv(), if callers => {
                let Some(mut o) = o else {
                    callers = false;
                    if pending.is_empty() {
                        break;
                    }
                    continue;
                };
                let mut sent = true;
                loop {
                    pending.insert(o.id, o.reply);
                    if ws.feed(Message::Text(o.frame.into())).await.is_err() {
                        sent = false;
                        break;
                    }
                    match rx.try_recv() {
                        Ok(more) => o = more,
                        Err(_) => break,
                    }
                }
                if !sent || ws.flush().await.is_err() {
                    break;
                }
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let Some(reply) = v.get("id").and_then(Value::as_u64).and_then(|id| pending.remove(&id)) else {
                    continue;
                };
                let _ = reply.send(answer(v));
                if !callers && pending.is_empty() {
                    break;
                }
            }
        }
    }
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err(closed(&api)));
    }
    let _ = ws.close(None).await;
}

/// An answer frame as the caller's result.
fn answer(v: Value) -> Result<Value, ClientError> {
    match v.get("error") {
        None => Ok(v),
        Some(e) => Err(ClientError::Api {
            status: v
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500),
            message: e.as_str().unwrap_or_default().to_string(),
        }),
    }
}
