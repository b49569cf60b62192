//! The HTTP boundary's one error type: a stable machine-readable code, the message for 4xx, and an
//! opaque message for 5xx (the cause goes to the log, not to the caller).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use driftless_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing or unknown bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u128),
    #[error("the ledger is busy; retry after a second")]
    Overloaded,
    /// A caller over its rate (observations per system): 429 with Retry-After.
    #[error("{0}")]
    RateLimited(String),
    /// The hub is stopping (its ledger is closed); another instance, or this one restarted, will
    /// take the request.
    #[error("the hub is shutting down; retry in a moment")]
    ShuttingDown,
    /// The ledger's database does not answer; nothing of the request was acknowledged. The
    /// cause is logged, not sent.
    #[error("the ledger's database is unavailable; retry in a moment")]
    Unavailable(String),
    /// The JetStream bus did not confirm the events in time (NATS down, stream full); some may
    /// be durable, and a retry with the same ids is safe.
    #[error("the event bus is unavailable; retry in a moment with the same ids")]
    BusUnavailable,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::BusUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "bus_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Overloaded => ApiError::Overloaded,
            StoreError::Closed => ApiError::ShuttingDown,
            StoreError::Unavailable(cause) => ApiError::Unavailable(cause),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<driftless_bus::BusError> for ApiError {
    fn from(e: driftless_bus::BusError) -> Self {
        use driftless_bus::BusError;
        match e {
            BusError::Overloaded => ApiError::Overloaded,
            BusError::Closed => ApiError::ShuttingDown,
            BusError::Store(e) => e.into(),
            BusError::Unavailable(cause) => {
                tracing::warn!(%cause, "event bus unavailable");
                ApiError::BusUnavailable
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        if let ApiError::Unavailable(cause) = &self {
            tracing::warn!(%cause, "the ledger's database is unavailable");
        }
        let mut resp = (
            status,
            Json(json!({"error": {"code": code, "message": self.to_string()}})),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still be on its way; the connection cannot be reused.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
