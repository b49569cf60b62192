//! `POST /v1/events` with the JetStream bus on (`[server] nats_url`): the validated request is
//! handed to [`driftless_bus::Bus::submit`], which publishes it and waits a bounded time for the
//! outcomes. An event whose outcome did not arrive in time is answered `"outcome": "accepted"`
//! (durable in JetStream, applied later; `GET /v1/events/{source}/{id}` gives the final outcome),
//! and the request then answers `202`. The path without the bus is untouched (`routes::ingest`).

use crate::AppState;
use crate::error::ApiError;
use crate::wire::Shape;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use driftless_bus::{Bus, Delivery};
use driftless_core::{Event, Outcome};
use serde_json::{Map, Value, json};

/// The wire word for an event that is durable on the bus but not applied yet.
pub const ACCEPTED: &str = "accepted";

pub async fn ingest(
    st: &AppState,
    bus: &Bus,
    shape: Shape,
    events: Vec<Event>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Response, ApiError> {
    let ids: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.id.to_string(), e.source.to_string()))
        .collect();
    let deliveries = bus.submit(now, events).await?;
    let mut any_accepted = false;
    let results: Vec<Value> = ids
        .iter()
        .zip(&deliveries)
        .map(|((id, source), d)| {
            let mut o = Map::new();
            o.insert("id".into(), id.as_str().into());
            match d {
                Delivery::Final(r) => {
                    st.metrics.outcome_from(r.outcome, source);
                    o.insert("outcome".into(), r.outcome.as_str().into());
                    if let Some(d) = &r.detail {
                        o.insert("reason".into(), d.as_str().into());
                    }
                }
                Delivery::Accepted => {
                    any_accepted = true;
                    o.insert("outcome".into(), ACCEPTED.into());
                }
            }
            Value::Object(o)
        })
        .collect();
    let status = match (shape, deliveries.first()) {
        (Shape::Single, Some(Delivery::Final(r))) if r.outcome == Outcome::Conflict => {
            StatusCode::CONFLICT
        }
        (Shape::Single, Some(Delivery::Final(r))) if r.outcome == Outcome::Rejected => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ if any_accepted => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    Ok((status, Json(json!({"results": results}))).into_response())
}
