//! The HTTP API (docs/api.md): routes, error mapping, authentication, CORS and serving.

mod auth;
mod console;
mod cors;
mod encoding;
mod error;
mod history;
mod ipfs;
pub mod publish_stream;
pub mod resume;
mod routes;
mod subscribe;
mod topics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router as HttpRouter;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};

pub use cors::{CorsError, with_cors};
pub use error::ApiError;
pub use subscribe::SSE_AHEAD;

use crate::metrics::Metrics;
use crate::pubsub::Router;

/// Request bodies are limited to 2 MiB: an event is at most 1 MiB, so this leaves
/// room for JSON's overhead and no more.
pub const MAX_BODY: usize = 2 << 20;
/// CAR imports carry whole streams, so `POST /v1/car` takes up to 256 MiB.
pub const MAX_CAR_BODY: usize = 256 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Publishing and (later) subscriptions.
    pub router: Arc<Router>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Static facts for `/v1/status`.
    pub info: Arc<NodeInfo>,
    /// What each subscription connection sent, for clients that resume (`Last-Event-ID`).
    pub sent: Arc<resume::Sent>,
}

/// Static facts about the node reported by `/v1/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    /// libp2p peer id.
    pub peer_id: String,
    /// Address the API listens on.
    pub api: SocketAddr,
}

/// Builds the API's routes. `token`, when set, is required as `Authorization: Bearer`.
pub fn routes(state: AppState, token: Option<String>) -> HttpRouter {
    let api = HttpRouter::new()
        .route(
            "/v1/publish",
            post(routes::publish).get(publish_stream::publish_stream),
        )
        .route("/v1/events/{cid}", get(routes::event))
        .route("/v1/blocks/{cid}", get(routes::block))
        .route("/v1/heads", get(routes::heads))
        .route(
            "/v1/car",
            post(routes::import_car)
                .get(routes::export_car)
                .layer(DefaultBodyLimit::max(MAX_CAR_BODY)),
        )
        .route("/v1/subscribe", get(subscribe::subscribe))
        .route("/v1/fetch", post(history::fetch))
        .route("/v1/ipfs/pin", post(ipfs::pin))
        .route("/v1/durable/{name}", delete(subscribe::delete_durable))
        .route("/v1/status", get(routes::status))
        .route("/v1/topics", get(topics::topics))
        .route("/v1/stream", get(topics::stream))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY));
    let metrics = state.metrics.clone();
    let auth_metrics = state.metrics.clone();
    api.with_state(state)
        .layer(axum::middleware::from_fn(move |req, next| {
            auth::check(token.clone(), auth_metrics.clone(), req, next)
        }))
        .layer(axum::middleware::from_fn(move |req, next| {
            auth::count(metrics.clone(), req, next)
        }))
        // The console's files carry no data, so they load without the token and the page can
        // ask for it.
        .merge(console::routes())
}
