//! The API's error type: every error is `{"error": "..."}` with a status that says whose fault
//! it was (4xx: the request; 503: the network cannot take it now; 500: this node broke).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::pubsub::PublishError;
use crate::store::{ImportError, StoreError};

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable reason, sent as `{"error": message}`.
    pub message: String,
}

impl ApiError {
    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// Any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        } else {
            tracing::debug!(status = %self.status, error = %self.message, "request refused");
        }
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// 413 for oversized events, 400 for any other invalid event.
fn invalid_event(e: &tidings_ipld_schema::Error) -> ApiError {
    match e {
        tidings_ipld_schema::Error::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        _ => ApiError::bad_request(e.to_string()),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Event(inner) => invalid_event(inner),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(inner) => invalid_event(&inner),
            PublishError::BadFilter(_) => ApiError::bad_request(e.to_string()),
            PublishError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
            PublishError::Store(s) => s.into(),
            PublishError::Task(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            PublishError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            PublishError::NotFound(m) => ApiError::not_found(m),
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Invalid(m) => {
                ApiError::bad_request(format!("CAR refused, nothing stored: {m}"))
            }
            ImportError::Store(s) => s.into(),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body too large".to_string()
        } else {
            r.body_text()
        };
        ApiError::new(status, message)
    }
}

/// A path segment axum cannot extract (not UTF-8 once percent-decoded): a JSON 400, where
/// axum's own rejection would be plain text.
impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        ApiError::bad_request(format!("bad path: {}", r.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}
