//! Route handlers. Each parses its input itself so that every refusal is a JSON `{"error"}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tidings_ipld_schema::{Cid, DAG_CBOR, Event, json as ipld_json, topic};

use super::{ApiError, AppState};
use crate::metrics::{Metrics, Snapshot};
use crate::pubsub::router::Published;

/// Parses a CID from a path segment, with a 400 that says what was wrong (a segment that is
/// not even UTF-8 once percent-decoded included).
fn parse_cid(segment: Result<Path<String>, PathRejection>) -> Result<Cid, ApiError> {
    let Path(s) = segment?;
    s.parse::<Cid>()
        .map_err(|e| ApiError::bad_request(format!("invalid CID {s:?}: {e}")))
}

/// Runs a store read off the async runtime.
pub(super) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("task failed: {e}")))?
}

/// `POST /v1/publish {"topic", "body"}` → `{"cid", "seq", "copies", "heads"}`. Every refusal
/// counts in `tidings_publish_failures_total` (those of the router are counted there), and
/// each acknowledgement's latency in `tidings_publish_ack_seconds`.
pub(super) async fn publish(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
    let parsed = body
        .map_err(ApiError::from)
        .and_then(|b| publish_object(&b))
        .and_then(publish_fields);
    let (topic_name, body) = match parsed {
        Ok(req) => req,
        Err(e) => {
            Metrics::inc(&st.metrics.publish_failed);
            return Err(e);
        }
    };
    let published = st.router.publish(topic_name, body).await?;
    st.metrics.publish_ack.observe(started.elapsed());
    Ok(Json(published_json(&published)))
}

/// The answer to an acknowledged publish: `{"cid", "seq", "copies", "heads"}`.
pub(super) fn published_json(p: &Published) -> Value {
    json!({
        "cid": p.cid.to_string(),
        "seq": p.seq,
        "copies": p.copies,
        "heads": p.heads.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
    })
}

/// A publish request's JSON object, or why it is refused.
pub(super) fn publish_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let req: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = req else {
        return Err(ApiError::bad_request(
            r#"request body must be a JSON object {"topic": "...", "body": ...}"#,
        ));
    };
    Ok(obj)
}

/// The topic and body of a publish request's object, or why it is refused.
pub(super) fn publish_fields(
    mut obj: Map<String, Value>,
) -> Result<(String, tidings_ipld_schema::Ipld), ApiError> {
    if let Some(k) = obj.keys().find(|k| *k != "topic" && *k != "body") {
        return Err(ApiError::bad_request(format!(
            "unknown field {k:?}: a publish takes only \"topic\" and \"body\""
        )));
    }
    let topic_name = match obj.remove("topic") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(ApiError::bad_request("\"topic\" must be a string")),
        None => return Err(ApiError::bad_request("missing \"topic\"")),
    };
    topic::validate(&topic_name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let body = obj
        .remove("body")
        .ok_or_else(|| ApiError::bad_request("missing \"body\""))?;
    let body = ipld_json::json_into_ipld(body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    Ok((topic_name, body))
}

/// `GET /v1/events/{cid}`: the event as JSON.
pub(super) async fn event(
    State(st): State<AppState>,
    cid: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let cid = parse_cid(cid)?;
    let store = st.router.store().clone();
    blocking(move || {
        let data = store
            .get_block(&cid)?
            .ok_or_else(|| ApiError::not_found(format!("no block {cid} on this node")))?;
        if cid.codec() != DAG_CBOR {
            return Err(ApiError::bad_request(format!(
                "block {cid} is not a tidings event (not dag-cbor); use /v1/blocks/{cid}"
            )));
        }
        let event = Event::decode(&data).map_err(|e| {
            ApiError::bad_request(format!("block {cid} is not a tidings event: {e}"))
        })?;
        Ok(Json(ipld_json::event_to_json(&cid, &event)))
    })
    .await
}

/// `GET /v1/blocks/{cid}`: the raw block.
pub(super) async fn block(
    State(st): State<AppState>,
    cid: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let cid = parse_cid(cid)?;
    let store = st.router.store().clone();
    let data = blocking(move || {
        store
            .get_block(&cid)?
            .ok_or_else(|| ApiError::not_found(format!("no block {cid} on this node")))
    })
    .await?;
    let content_type = if cid.codec() == DAG_CBOR {
        "application/vnd.ipld.dag-cbor"
    } else {
        "application/octet-stream"
    };
    Ok(([(header::CONTENT_TYPE, content_type)], data).into_response())
}

/// Query of `/v1/heads` and `GET /v1/car`.
#[derive(Deserialize)]
pub(super) struct TopicQuery {
    topic: Option<String>,
}

impl TopicQuery {
    fn topic(self) -> Result<String, ApiError> {
        let t = self
            .topic
            .ok_or_else(|| ApiError::bad_request("missing query parameter topic"))?;
        topic::validate(&t).map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(t)
    }
}

/// `GET /v1/heads?topic=T` → `{"topic", "heads"}`.
pub(super) async fn heads(
    State(st): State<AppState>,
    q: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let t = q?.0.topic()?;
    let store = st.router.store().clone();
    blocking(move || {
        let heads = store.heads(&t)?;
        Ok(Json(json!({
            "topic": t,
            "heads": heads.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        })))
    })
    .await
}

/// `POST /v1/car`: all-or-nothing import.
pub(super) async fn import_car(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let bytes = body?;
    let store = st.router.store().clone();
    let metrics = st.metrics.clone();
    blocking(move || match store.import_car(&bytes) {
        Ok(summary) => {
            metrics
                .imported_blocks
                .fetch_add(summary.new_blocks, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                blocks = summary.blocks,
                events = summary.events,
                new = summary.new_blocks,
                "CAR imported"
            );
            Ok(Json(json!(summary)))
        }
        Err(e) => {
            Metrics::inc(&metrics.import_failed);
            Err(e.into())
        }
    })
    .await
}

/// `GET /v1/car?topic=T`: the topic's stream as a CAR v1 file.
pub(super) async fn export_car(
    State(st): State<AppState>,
    q: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let t = q?.0.topic()?;
    let store = st.router.store().clone();
    let car = blocking(move || Ok(store.export_car(&t)?)).await?;
    Ok(([(header::CONTENT_TYPE, "application/vnd.ipld.car")], car).into_response())
}

/// Roots this node serves: those it holds leases or events of whose rendezvous set, as this
/// node sees it, includes this node. Reads the store.
fn serving_roots(router: &crate::pubsub::Router) -> Result<Vec<String>, ApiError> {
    let mut roots: std::collections::BTreeSet<String> = router.remote().roots();
    roots.extend(router.store().roots()?);
    let net = router.net();
    let me = net.local_peer();
    Ok(roots
        .into_iter()
        .filter(|r| net.rendezvous_set(r).contains(&me))
        .collect())
}

/// `GET /v1/status`.
pub(super) async fn status(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let info = st.info.clone();
    let router = st.router.clone();
    let net = st.router.net().clone();
    let dir = net.directory();
    let subscriptions = st.router.local().len();
    let leases = st.router.remote().len();
    let ipfs = net.ipfs().map(|i| i.status());
    blocking(move || {
        let stats = router.store().stats()?;
        let serving = serving_roots(&router)?;
        Ok(Json(json!({
            "peer_id": info.peer_id,
            "role": net.role(),
            "version": env!("CARGO_PKG_VERSION"),
            "api": format!("http://{}", info.api),
            "listen": dir.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "peers": dir.connected.len(),
            "brokers": dir.brokers.len(),
            "replication": net.replication(),
            "rendezvous": serving,
            "subscriptions": subscriptions,
            "leases": leases,
            "store": stats,
            "ipfs": ipfs,
        })))
    })
    .await
}

/// `GET /metrics` in the Prometheus text format.
pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    let router = st.router.clone();
    let dir = router.net().directory();
    let (delivered_local, too_slow) = router.local().delivery_counts();
    let leases = router.remote().len();
    let (store, roots) = tokio::task::spawn_blocking(move || {
        (
            router.store().stats().ok(),
            serving_roots(&router).map_or(0, |r| r.len()),
        )
    })
    .await
    .unwrap_or_default();
    let snap = Snapshot {
        store,
        peers: dir.connected.len(),
        brokers: dir.brokers.len(),
        roots,
        leases,
        delivered_local,
        too_slow,
        commits: st.router.store().commit_stats(),
        commit_times: st.router.store().commit_times(),
    };
    let mut text = st.metrics.render(&snap);
    if let Some(ipfs) = st.router.net().ipfs() {
        ipfs.render_metrics(&mut text);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Unknown routes.
pub(super) async fn not_found() -> ApiError {
    ApiError::not_found(
        "no such endpoint: the endpoints are listed in docs/api.md and by `tidings --help`",
    )
}

/// Known routes with the wrong method.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}
