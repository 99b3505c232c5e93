//! `GET /v1/subscribe?filter=F`: a live stream of matching events, as WebSocket (one text frame
//! per event; the client may send `{"ack": "<cid>"}`) or as Server-Sent Events (`id: <cid>`,
//! `data: <event JSON>`). A bad filter is a 400 before any upgrade.

use std::convert::Infallible;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tidings_matcher::Filter;

use super::{ApiError, AppState};
use crate::pubsub::local::{Delivery, Subscription};

/// Why a stream ends when the node closes it.
const CLOSED_REASON: &str = "subscription closed by the node: the subscriber fell too far behind, or the node is shutting down";

/// Query of `/v1/subscribe`.
#[derive(Deserialize)]
pub(super) struct SubscribeQuery {
    filter: Option<String>,
    durable: Option<String>,
    since: Option<String>,
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
    if q.durable.is_some() || q.since.is_some() {
        return Err(ApiError::bad_request(
            "durable subscriptions and replay (durable=, since=) are not available yet on this node",
        ));
    }
    // Registered (locally and on the rendezvous set) before the response goes out: once the
    // client sees 101 or 200, nothing published afterwards can miss it.
    let sub = st.router.subscribe(&src).await?;
    tracing::info!(id = sub.id(), filter = %src, transport = if ws.is_ok() { "websocket" } else { "sse" }, "subscription opened");
    match ws {
        Ok(ws) => Ok(ws.on_upgrade(move |socket| websocket(socket, sub))),
        Err(_) => Ok(sse(sub).into_response()),
    }
}

async fn websocket(mut socket: WebSocket, mut sub: Subscription) {
    loop {
        tokio::select! {
            d = sub.rx.recv() => match d {
                Some(Delivery::Event { json, .. }) => {
                    if socket.send(Message::Text(json.as_ref().into())).await.is_err() {
                        break;
                    }
                }
                Some(Delivery::Closed(reason)) => {
                    close(&mut socket, &reason).await;
                    break;
                }
                None => {
                    close(&mut socket, CLOSED_REASON).await;
                    break;
                }
            },
            m = socket.recv() => match m {
                // Acks matter for durable subscriptions; a live one has nothing to release.
                Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
        }
    }
    tracing::info!(id = sub.id(), "subscription closed");
}

async fn close(socket: &mut WebSocket, reason: &str) {
    let frame = CloseFrame {
        code: close_code::AGAIN,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

fn sse(sub: Subscription) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = futures::stream::unfold(Some(sub), |state| async move {
        let mut sub = state?;
        match sub.rx.recv().await {
            Some(Delivery::Event { cid, json }) => Some((
                Ok(SseEvent::default().id(cid.as_ref()).data(json.as_ref())),
                Some(sub),
            )),
            Some(Delivery::Closed(reason)) => {
                Some((Ok(SseEvent::default().event("error").data(reason)), None))
            }
            None => Some((
                Ok(SseEvent::default().event("error").data(CLOSED_REASON)),
                None,
            )),
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
