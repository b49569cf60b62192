//! Request ids: every request runs inside a `request` span carrying its id, so every log line it
//! causes names it (in the JSON format as `span.request_id`), and the id goes back in the
//! `x-request-id` response header. A caller's own `x-request-id` is kept when it is a short token
//! of safe characters; otherwise the hub makes one.
//!
//! What is logged of a request: method, path (never the query or a header, so a bearer token
//! never reaches the log), status and time taken.

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

/// Wraps a router so that every request has an id.
pub fn layer(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(with_request_id))
}

/// A caller's id is kept when it is 1 to 64 characters of letters, digits, `-`, `_`, `.`.
fn acceptable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| s.to_owned())
}

/// 16 random hex digits: unique enough to find one request's lines among a day's.
fn fresh() -> String {
    format!("{:016x}", fastrand::u64(..))
}

async fn with_request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(acceptable)
        .unwrap_or_else(fresh);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let started = std::time::Instant::now();
    let mut resp = async move {
        let resp = next.run(req).await;
        let status = resp.status().as_u16();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if resp.status().is_server_error() {
            tracing::warn!(status, ms, "answered");
        } else {
            tracing::debug!(status, ms, "answered");
        }
        resp
    }
    .instrument(span)
    .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_short_safe_ids() {
        let ok = |s: &str| acceptable(&HeaderValue::from_str(s).unwrap());
        assert_eq!(ok("abc-123_x.y").as_deref(), Some("abc-123_x.y"));
        assert_eq!(ok(""), None);
        assert_eq!(ok("has space"), None);
        assert_eq!(ok(&"a".repeat(65)), None);
        assert_eq!(fresh().len(), 16);
    }
}
