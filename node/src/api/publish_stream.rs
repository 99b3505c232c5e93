//! `GET /v1/publish` upgraded to a WebSocket: a publish stream. The client sends one JSON text
//! frame per event, `{"topic", "body", "id"?}`, without waiting for the answers; the node
//! answers each with a frame `{"id"?, "cid", "seq", "copies", "heads"}` once it is acknowledged
//! (durable on a majority of the root's rendezvous set, exactly as `POST /v1/publish` answers),
//! or `{"id"?, "status", "error"}` if it is refused. One HTTP request per event is what bounds
//! a publisher on one connection; here many are in flight, as with NATS' asynchronous publish.
//!
//! Events of one topic are appended in the order their frames came, and their answers come in
//! that order; events of different topics are published in parallel and may be answered in any
//! order (`id`, any JSON value, is echoed to match them). At most [`IN_FLIGHT`] publishes are
//! under way per connection: beyond that the node stops reading, and TCP slows the client.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tidings_ipld_schema::Ipld;
use tokio::sync::oneshot;

use super::routes::{publish_fields, publish_object, published_json};
use super::{ApiError, AppState, MAX_BODY};
use crate::metrics::Metrics;
use crate::pubsub::{PublishError, Published};

/// Publishes under way or waiting behind one of their topic, per connection.
pub const IN_FLIGHT: usize = 4096;

/// Bytes read from the socket at once. tungstenite zeroes this much before each read (128 KiB
/// by default: a memset per read, 1% of a node's CPU at full rate); 32 KiB holds a hundred
/// publish frames, more than a client has on the wire between two reads.
const READ_BUFFER: usize = 32 * 1024;

/// Upgrades to the publish stream; a plain `GET` is told how to publish.
pub(super) async fn publish_stream(
    State(st): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => ws
            .max_message_size(MAX_BODY)
            .read_buffer_size(READ_BUFFER)
            .on_upgrade(move |socket| run(st, socket))
            .into_response(),
        Err(_) => ApiError::bad_request(
            "GET /v1/publish is the WebSocket publish stream: open it as a WebSocket, or \
             publish one event with POST /v1/publish {\"topic\": ..., \"body\": ...}",
        )
        .into_response(),
    }
}

/// One publish of the stream.
struct Request {
    id: Option<Value>,
    topic: String,
    body: Ipld,
    received: Instant,
}

/// A finished publish: its request's id and topic, when it arrived, the outcome, and the
/// token that, dropped once its answer is written, lets the next answer of its topic go.
type Finished = (
    Option<Value>,
    String,
    Instant,
    Result<Published, ApiError>,
    oneshot::Sender<()>,
);

/// A topic's publishes on this connection.
#[derive(Default)]
struct Lane {
    /// Requests not begun yet.
    waiting: VecDeque<Request>,
    /// Whether one is being signed and queued ([`Router::begin_publish`](crate::pubsub::Router::begin_publish)): the next begins
    /// after it, so the topic's events are in the order their frames came.
    beginning: bool,
    /// Publishes begun and not answered yet.
    unanswered: usize,
    /// Released once the last begun publish's answer is written.
    answered: Option<oneshot::Receiver<()>>,
}

/// Reads requests, begins each topic's in order and different topics' in parallel, and writes
/// every answer (a topic's in order); returns once the client closed and every publish it
/// sent was answered. A topic's publishes overlap once begun: the next is signed while the
/// one before it is still being stored and acknowledged.
async fn run(st: AppState, socket: WebSocket) {
    let (mut out, mut input) = socket.split();
    let mut lanes: HashMap<String, Lane> = HashMap::new();
    // Topics whose publish under way has been signed and queued.
    let mut begun = FuturesUnordered::new();
    let mut running = FuturesUnordered::new();
    let mut waiting = 0usize;
    let mut reading = true;
    let mut writable = true;
    loop {
        tokio::select! {
            frame = input.next(), if reading && running.len() + waiting < IN_FLIGHT => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        Metrics::inc(&st.metrics.publish_failed);
                        let e = ApiError::bad_request("send each publish as a JSON text frame");
                        writable &= out.send(answer(None, Err(e))).await.is_ok();
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        reading = false;
                        continue;
                    }
                };
                let req = match request(text.as_bytes()) {
                    Ok(r) => r,
                    Err((id, e)) => {
                        Metrics::inc(&st.metrics.publish_failed);
                        writable &= out.send(answer(id, Err(e))).await.is_ok();
                        continue;
                    }
                };
                let lane = lanes.entry(req.topic.clone()).or_default();
                if lane.beginning {
                    lane.waiting.push_back(req);
                    waiting += 1;
                } else {
                    let (b, r) = start(&st, lane, req);
                    begun.push(b);
                    running.push(r);
                }
            }
            Some(topic) = begun.next() => {
                let Some(lane) = lanes.get_mut(&topic) else { continue };
                lane.beginning = false;
                if let Some(req) = lane.waiting.pop_front() {
                    waiting -= 1;
                    let (b, r) = start(&st, lane, req);
                    begun.push(b);
                    running.push(r);
                }
            }
            Some(done) = running.next() => {
                // Answers that are ready together go out in one write.
                let mut next = Some(done);
                while let Some((id, topic, received, result, token)) = next.take() {
                    if result.is_ok() {
                        st.metrics.publish_ack.observe(received.elapsed());
                    }
                    if writable {
                        writable = out.feed(answer(id, result)).await.is_ok();
                    }
                    drop(token);
                    if let Some(lane) = lanes.get_mut(&topic) {
                        lane.unanswered -= 1;
                        if lane.unanswered == 0 && !lane.beginning && lane.waiting.is_empty() {
                            lanes.remove(&topic);
                        }
                    }
                    next = running.next().now_or_never().flatten();
                }
                if writable {
                    writable = out.flush().await.is_ok();
                }
            }
            else => break,
        }
    }
    if writable {
        let _ = out.close().await;
    }
}

/// Parses one frame; a refusal carries the frame's `id` when it had one.
fn request(bytes: &[u8]) -> Result<Request, (Option<Value>, ApiError)> {
    let received = Instant::now();
    let mut obj = publish_object(bytes).map_err(|e| (None, e))?;
    let id = obj.remove("id");
    let (topic, body) = publish_fields(obj).map_err(|e| (id.clone(), e))?;
    Ok(Request {
        id,
        topic,
        body,
        received,
    })
}

/// Publishes on its own task (signing runs on whichever worker is free). Returns a future
/// that gives the topic once the publish is begun (the next of the topic may begin), and one
/// that gives the outcome once the publishes of the topic before it have been answered.
fn start(
    st: &AppState,
    lane: &mut Lane,
    req: Request,
) -> (
    impl std::future::Future<Output = String> + Send + 'static,
    impl std::future::Future<Output = Finished> + Send + 'static,
) {
    let router = st.router.clone();
    let Request {
        id,
        topic,
        body,
        received,
    } = req;
    let (began, on_begun) = oneshot::channel();
    let t = topic.clone();
    let task = tokio::spawn(async move {
        let b = router.begin_publish(t, body).await;
        let _ = began.send(());
        router.finish_publish(b).await
    });
    let (token, next_after) = oneshot::channel();
    let after = lane.answered.replace(next_after);
    lane.beginning = true;
    lane.unanswered += 1;
    let topic_begun = topic.clone();
    let begun = async move {
        // An error means the task ended without beginning (a panic): go on anyway.
        let _ = on_begun.await;
        topic_begun
    };
    let finished = async move {
        let result = match task.await {
            Ok(r) => r.map_err(ApiError::from),
            Err(e) => Err(ApiError::from(PublishError::Task(e.to_string()))),
        };
        if let Some(before) = after {
            let _ = before.await;
        }
        (id, topic, received, result, token)
    };
    (begun, finished)
}

/// The frame that answers one publish.
fn answer(id: Option<Value>, result: Result<Published, ApiError>) -> Message {
    let mut v = match result {
        Ok(p) => published_json(&p),
        Err(e) => json!({ "status": e.status.as_u16(), "error": e.message }),
    };
    if let (Some(id), Value::Object(m)) = (id, &mut v) {
        m.insert("id".into(), id);
    }
    Message::Text(v.to_string().into())
}
