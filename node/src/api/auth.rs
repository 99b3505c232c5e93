//! Middleware: bearer-token check (required when the API is reachable beyond loopback) and
//! response-status counting.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::metrics::Metrics;

/// Refuses requests without `Authorization: Bearer <token>` when a token is configured.
pub(super) async fn check(token: Option<String>, req: Request, next: Next) -> Response {
    if let Some(expected) = token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compare without an early exit so timing says nothing about the token.
        let ok = given.is_some_and(|g| {
            g.len() == expected.len()
                && g.bytes()
                    .zip(expected.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (set TIDINGS_TOKEN or pass --token)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Counts 4xx and 5xx responses for `/metrics`.
pub(super) async fn count(metrics: Arc<Metrics>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status().is_client_error() {
        Metrics::inc(&metrics.http_client_errors);
    } else if resp.status().is_server_error() {
        Metrics::inc(&metrics.http_server_errors);
    }
    resp
}
