//! `GET /v1/subscribe?filter=F[&durable=NAME][&since=MS][&encoding=json|dag-cbor]`: matching
//! events as WebSocket frames (JSON text, or with `encoding=dag-cbor` binary CID + block, see
//! [`super::encoding`]; the client sends `{"ack": "<cid>"}` per event) or as Server-Sent Events
//! (`id: <cid>`, `data: <event JSON>`). A bad filter is a 400 before any upgrade.
//!
//! With `since`, stored events go first, then live ones, with no gap or duplicate at the seam.
//! With `durable`, the rendezvous set keeps what this subscriber has not acknowledged while it
//! is away. Acks are cumulative per (author, topic) stream (events of a stream arrive in `seq`
//! order); over SSE, which has no way back, an event counts as acknowledged once sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_bytes::ByteBuf;
use tidings_matcher::Filter;
use tokio::sync::mpsc;

use super::encoding::Encoding;
use super::{ApiError, AppState};
use crate::net::history::Ack;
use crate::pubsub::Router;
use crate::pubsub::history::{Backlogged, DurableHandle, HistoryAsk, Opened};
use crate::pubsub::local::{Delivery, Subscription};

/// Why a stream ends when the node closes it.
const CLOSED_REASON: &str = "subscription closed by the node: the subscriber fell too far behind";
/// How often acknowledgements go to the rendezvous set.
const ACK_FLUSH: Duration = Duration::from_millis(250);

/// Query of `/v1/subscribe`.
#[derive(Deserialize)]
pub(super) struct SubscribeQuery {
    filter: Option<String>,
    durable: Option<String>,
    since: Option<String>,
    encoding: Option<String>,
}

/// Checks a durable name: 1-128 of `A-Z a-z 0-9 _ - .`.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "bad durable name {name:?}: use 1-128 letters, digits, '_', '-' or '.'"
        )))
    }
}

/// Parses the query, registers the subscription, then upgrades or streams.
pub(super) async fn subscribe(
    State(st): State<AppState>,
    q: Result<Query<SubscribeQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let q = q?.0;
    let src = q
        .filter
        .ok_or_else(|| ApiError::bad_request("missing query parameter filter"))?;
    // Parsed here first so a bad filter is a 400 before any upgrade or network traffic.
    Filter::parse(&src).map_err(|e| ApiError::bad_request(format!("bad filter: {e}")))?;
    if let Some(name) = &q.durable {
        check_name(name)?;
    }
    let encoding = Encoding::parse(q.encoding.as_deref())?;
    if encoding == Encoding::DagCbor && ws.is_err() {
        return Err(ApiError::bad_request(
            "encoding=dag-cbor needs a WebSocket: Server-Sent Events carry text only",
        ));
    }
    let since = match q.since.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "bad since {s:?}: milliseconds since the Unix epoch (0 = from the start)"
            ))
        })?),
    };
    // Registered (locally and on the rendezvous set) before the response goes out: once the
    // client sees 101 or 200, nothing published afterwards can miss it.
    let opened = st
        .router
        .open(
            &src,
            HistoryAsk {
                durable: q.durable.clone(),
                since,
            },
        )
        .await?;
    tracing::info!(id = opened.sub.id(), filter = %src, durable = ?q.durable, transport = if ws.is_ok() { "websocket" } else { "sse" }, "subscription opened");
    let router = st.router.clone();
    match ws {
        Ok(ws) => Ok(ws.on_upgrade(move |socket| websocket(socket, opened, router, encoding))),
        Err(_) => Ok(sse(opened, router).into_response()),
    }
}

/// `DELETE /v1/durable/{name}`.
pub(super) async fn delete_durable(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    check_name(&name)?;
    st.router.delete_durable(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// (author key, topic, seq) of a sent event.
type StreamPos = (Vec<u8>, String, u64);

/// One thing to send.
enum Item {
    Event(Backlogged),
    Closed(String),
}

/// History first, then live events not already sent from history.
struct Feed {
    backlog: VecDeque<Backlogged>,
    /// CIDs sent from history, so the live copy is skipped.
    sent: HashSet<Arc<str>>,
    sub: Subscription,
}

impl Feed {
    fn new(sub: Subscription, backlog: Vec<Backlogged>) -> Feed {
        Feed {
            sent: backlog.iter().map(|b| b.cid.clone()).collect(),
            backlog: backlog.into(),
            sub,
        }
    }

    async fn next(&mut self) -> Item {
        if let Some(b) = self.backlog.pop_front() {
            return Item::Event(b);
        }
        loop {
            match self.sub.rx.recv().await {
                Some(Delivery::Event { cid, json, stream }) => {
                    if !self.sent.is_empty() && self.sent.remove(&cid) {
                        continue;
                    }
                    return Item::Event(Backlogged {
                        cid,
                        json,
                        stream,
                        block: None,
                    });
                }
                Some(Delivery::Closed(reason)) => return Item::Closed(reason),
                None => return Item::Closed(CLOSED_REASON.into()),
            }
        }
    }
}

/// Acknowledgements waiting to go to the rendezvous set.
struct Acks {
    durable: Option<DurableHandle>,
    pending: HashMap<(Vec<u8>, String), u64>,
    router: Arc<Router>,
}

impl Acks {
    fn note(&mut self, stream: &(Vec<u8>, String, u64)) {
        if self.durable.is_some() {
            let e = self
                .pending
                .entry((stream.0.clone(), stream.1.clone()))
                .or_default();
            *e = (*e).max(stream.2);
        }
    }

    async fn flush(&mut self) {
        let Some(d) = &self.durable else { return };
        if self.pending.is_empty() {
            return;
        }
        let acks = self
            .pending
            .drain()
            .map(|((author, topic), seq)| Ack {
                author: ByteBuf::from(author),
                topic,
                seq,
            })
            .collect();
        self.router.durable_ack(&d.name, &d.root, acks).await;
    }
}

/// Splits an opened subscription into its id, what to send, and its acknowledgements.
fn start(opened: Opened, router: Arc<Router>) -> (u64, Feed, Acks) {
    let Opened {
        sub,
        backlog,
        durable,
    } = opened;
    let acks = Acks {
        durable,
        pending: HashMap::new(),
        router,
    };
    (sub.id(), Feed::new(sub, backlog), acks)
}

async fn websocket(mut socket: WebSocket, opened: Opened, router: Arc<Router>, encoding: Encoding) {
    let (id, mut feed, mut acks) = start(opened, router.clone());
    // Sent, not yet acknowledged: CID → stream position.
    let mut unacked: HashMap<Arc<str>, Arc<StreamPos>> = HashMap::new();
    let mut tick = tokio::time::interval(ACK_FLUSH);
    loop {
        tokio::select! {
            item = feed.next() => match item {
                Item::Event(b) => {
                    if acks.durable.is_some() {
                        unacked.insert(b.cid.clone(), b.stream.clone());
                    }
                    let msg = match encoding.message(&router, &b).await {
                        Ok(m) => m,
                        Err(reason) => {
                            close_with(&mut socket, close_code::ERROR, &reason).await;
                            break;
                        }
                    };
                    if socket.send(msg).await.is_err() {
                        break;
                    }
                }
                Item::Closed(reason) => {
                    close(&mut socket, &reason).await;
                    break;
                }
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Text(t))) => {
                    if let Some(cid) = serde_json::from_str::<serde_json::Value>(&t)
                        .ok()
                        .and_then(|v| v.get("ack").and_then(|a| a.as_str()).map(str::to_string))
                        && let Some(stream) = unacked.remove(cid.as_str())
                    {
                        acks.note(&stream);
                    }
                }
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            _ = tick.tick() => acks.flush().await,
        }
    }
    acks.flush().await;
    tracing::info!(id, "subscription closed");
}

async fn close(socket: &mut WebSocket, reason: &str) {
    close_with(socket, close_code::AGAIN, reason).await;
}

async fn close_with(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

fn sse(
    opened: Opened,
    router: Arc<Router>,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    // Room for one event: "sent" is as close to "written to the socket" as SSE allows.
    let (tx, rx) = mpsc::channel::<SseEvent>(1);
    tokio::spawn(async move {
        let (id, mut feed, mut acks) = start(opened, router);
        let mut tick = tokio::time::interval(ACK_FLUSH);
        loop {
            tokio::select! {
                item = feed.next() => match item {
                    Item::Event(b) => {
                        let ev = SseEvent::default().id(b.cid.as_ref()).data(b.json.as_ref());
                        if tx.send(ev).await.is_err() {
                            break;
                        }
                        // No way back over SSE: sent counts as acknowledged.
                        acks.note(&b.stream);
                    }
                    Item::Closed(reason) => {
                        let _ = tx.send(SseEvent::default().event("error").data(reason)).await;
                        break;
                    }
                },
                _ = tx.closed() => break,
                _ = tick.tick() => acks.flush().await,
            }
        }
        acks.flush().await;
        tracing::info!(id, "subscription closed");
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        Some((Ok(ev), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
