//! Middleware: bearer-token check (required when the API is reachable beyond loopback) and
//! response-status counting.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::metrics::Metrics;

/// Refuses requests without `Authorization: Bearer <token>` when a token is configured (a
/// refused publish counts as a publish failure).
pub(super) async fn check(
    token: Option<String>,
    metrics: Arc<Metrics>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(expected) = token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        // Compare without an early exit so timing says nothing about the token.
        let ok = given.is_some_and(|g| {
            g.len() == expected.len()
                && g.bytes()
                    .zip(expected.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            if req.uri().path() == "/v1/publish" && req.method() == axum::http::Method::POST {
                Metrics::inc(&metrics.publish_failed);
            }
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (set TIDINGS_TOKEN or pass --token)",
            )
            .into_response();
            // RFC 6750 §3: a 401 names the scheme the client should use.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tidings\""),
            );
            return resp;
        }
    }
    next.run(req).await
}

/// The token of an `Authorization: Bearer <token>` value. The scheme name is case-insensitive
/// (RFC 9110 §11.1), so `bearer` works as well; the token is taken as is.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
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

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_token_exact() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("Bearer abc def"), Some("abc def"));
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }
}
