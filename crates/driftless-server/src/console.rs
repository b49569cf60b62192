//! The operator's window: every route of the dash surfaces (stored audits, the dashboard, the API
//! description and its explorer, metrics), gathered into one router that
//! [`crate::routes::router`] merges.

use crate::AppState;
use axum::Router;
use axum::routing::get;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(crate::audits::routes())
        .merge(crate::dashboard::routes())
        .route("/openapi.json", get(crate::openapi::handler))
        .route("/api", get(crate::openapi::explorer))
}
