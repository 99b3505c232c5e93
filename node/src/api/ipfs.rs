//! `POST /v1/ipfs/pin`: a topic's stream imported into the node's IPFS backend, heads pinned.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tidings_ipld_schema::topic;

use super::{ApiError, AppState};
use crate::ipfs::pin::{PinError, pin_topic};

/// Body of `POST /v1/ipfs/pin`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    topic: String,
}

/// `POST /v1/ipfs/pin {"topic"}` → `{"topic", "heads", "blocks", "bytes", "missing_here"}`.
/// 409 when the node has no IPFS backend, 404 when it holds no event of the topic, 502 when
/// IPFS fails.
pub(super) async fn pin(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let bytes = body?;
    let req: PinBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(r#"request body must be {{"topic": "..."}}: {e}"#))
    })?;
    topic::validate(&req.topic).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Some(ipfs) = st.router.net().ipfs() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this node has no IPFS backend: start it with --ipfs-api URL (or TIDINGS_IPFS_API)",
        ));
    };
    match pin_topic(&ipfs, st.router.store(), &req.topic).await {
        Ok(pinned) => Ok(Json(json!(pinned))),
        Err(e @ PinError::NoEvents(_)) => Err(ApiError::not_found(e.to_string())),
        Err(PinError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())),
    }
}
