//! The operator's window: the dashboard, the API description and its explorer, gathered into one
//! router that [`crate::routes::router`] merges (the stored-audit routes sit with the other `/v1`
//! routes, behind the token check).

use crate::AppState;
use axum::Router;
use axum::routing::get;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(crate::dashboard::routes())
        .route("/openapi.json", get(crate::openapi::handler))
        .route("/api", get(crate::openapi::explorer))
}
