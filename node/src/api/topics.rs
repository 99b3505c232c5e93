//! `GET /v1/topics` (the topics this node holds, paged) and `GET /v1/stream` (one topic's
//! DAG as JSON events, newest first), what the console's Streams view draws.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tidings_ipld_schema::{json as ipld_json, topic, verify};

use super::{ApiError, AppState};
use crate::store::CidSet;

/// Topics per page when `limit` is not given.
const TOPICS_DEFAULT: usize = 100;
/// Most topics per page.
const TOPICS_MAX: usize = 1000;
/// Events per stream read when `limit` is not given.
const STREAM_DEFAULT: u64 = 500;
/// Most events per stream read.
const STREAM_MAX: u64 = 5000;
/// Most bytes of blocks one stream read walks.
const STREAM_BYTES: u64 = 64 << 20;

/// Query of `/v1/topics`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TopicsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/topics[?after=T][&limit=N]` → `{"topics": [...], "next": T | null}`.
pub(super) async fn topics(
    State(st): State<AppState>,
    q: Result<Query<TopicsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = q?.0;
    let limit = q.limit.unwrap_or(TOPICS_DEFAULT);
    if limit == 0 || limit > TOPICS_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {TOPICS_MAX}, got {limit}"
        )));
    }
    let store = st.router.store().clone();
    super::routes::blocking(move || {
        let (page, more) = store.topics(q.after.as_deref(), limit)?;
        let next = if more {
            page.last().map(|t| t.topic.clone())
        } else {
            None
        };
        Ok(Json(json!({ "topics": page, "next": next })))
    })
    .await
}

/// Query of `/v1/stream`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    topic: Option<String>,
    limit: Option<u64>,
}

/// `GET /v1/stream?topic=T[&limit=N]` → `{"topic", "heads", "events", "more"}`: the newest
/// `limit` events reachable from the heads through `prev` (breadth-first), each as
/// `/v1/events` shows it plus `"verified"` (CID and signature checked again as it is read).
/// `more` says older events were left out; `missing` lists `prev` links this node lacks.
pub(super) async fn stream(
    State(st): State<AppState>,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = q?.0;
    let t = q
        .topic
        .ok_or_else(|| ApiError::bad_request("missing query parameter topic"))?;
    topic::validate(&t).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limit = q.limit.unwrap_or(STREAM_DEFAULT);
    if limit == 0 || limit > STREAM_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {STREAM_MAX}, got {limit}"
        )));
    }
    let store = st.router.store().clone();
    super::routes::blocking(move || {
        let heads = store.heads(&t)?;
        let mut events = Vec::new();
        let mut more = false;
        let walked = store.walk(
            &heads,
            &CidSet::default(),
            u64::MAX,
            STREAM_BYTES,
            |cid, data| {
                if events.len() as u64 >= limit {
                    more = true;
                    return false;
                }
                let (event, verified) = match verify(cid, data) {
                    Ok(e) => (e, true),
                    // Body links lead to blocks that are not events: not part of the drawing.
                    Err(_) => match tidings_ipld_schema::Event::decode_stored(data) {
                        Some(e) => (e, false),
                        None => return true,
                    },
                };
                if event.topic != t {
                    return true;
                }
                let mut v = ipld_json::event_to_json(cid, &event);
                if let Value::Object(m) = &mut v {
                    m.insert("verified".into(), Value::Bool(verified));
                }
                events.push(v);
                true
            },
        )?;
        more |= !walked.more.is_empty();
        Ok(Json(json!({
            "topic": t,
            "heads": heads.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "events": events,
            "more": more,
            "missing": walked.missing.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        })))
    })
    .await
}
