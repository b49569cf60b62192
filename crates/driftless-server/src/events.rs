//! `GET /v1/events/{source}/{id}`: one event's stored outcome, by its identity `(source, id)`
//! (`DESIGN.md` section 12): `{"source", "id", "outcome", "reason"?, "received_at", "event"}`,
//! `404` when no event of that identity is stored (a rejected one is not: it claimed nothing).
//! With the JetStream bus on, an event accepted and not applied yet answers `202`
//! `{"source", "id", "outcome": "accepted"}`.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use driftless_core::{EventId, SystemId};
use driftless_store::HistoryEntry;
use serde_json::{Map, Value, json};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/events/{source}/{id}", get(get_event))
}

async fn get_event(
    State(st): State<AppState>,
    Path((source, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let source =
        SystemId::parse(source).map_err(|e| ApiError::InvalidRequest(format!("source: {e}")))?;
    let id = EventId::parse(id).map_err(|e| ApiError::InvalidRequest(format!("id: {e}")))?;
    if let Some(h) = st.store.event(&source, &id).await? {
        return Ok(Json(stored_json(&h)).into_response());
    }
    // With the bus on, an event answered `accepted` and not applied yet is in JetStream, not in
    // the ledger: the bus remembers those ids (bounded, and told to every hub process).
    if let Some(bus) = &st.bus
        && bus.is_accepted(&source, &id)
    {
        let body =
            json!({"source": source.as_str(), "id": id.as_str(), "outcome": crate::bus::ACCEPTED});
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    Err(ApiError::NotFound(format!(
        "no event `{id}` from `{source}` is stored"
    )))
}

/// The stored outcome, with the event as it was sent (quantities in its `uom`).
fn stored_json(h: &HistoryEntry) -> Value {
    let mut event = Map::new();
    event.insert("id".into(), h.id.clone().into());
    event.insert("source".into(), h.source.as_str().into());
    event.insert("sku".into(), h.sku.as_str().into());
    event.insert("location".into(), h.location.as_str().into());
    event.insert("occurred_at".into(), h.occurred_at.clone().into());
    event.insert("seq".into(), h.seq.into());
    let q: Map<String, Value> = h
        .sent
        .iter()
        .map(|(s, v)| (s.clone(), Value::from(*v)))
        .collect();
    event.insert(h.kind.clone(), Value::Object(q));
    for (k, v) in [
        ("uom", &h.uom),
        ("reason", &h.reason),
        ("ref", &h.reference),
    ] {
        if let Some(v) = v {
            event.insert(k.into(), v.clone().into());
        }
    }
    let mut o = Map::new();
    o.insert("source".into(), h.source.as_str().into());
    o.insert("id".into(), h.id.clone().into());
    o.insert("outcome".into(), h.outcome.as_str().into());
    if let Some(d) = &h.detail {
        o.insert("reason".into(), d.clone().into());
    }
    o.insert(
        "received_at".into(),
        h.received_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .into(),
    );
    o.insert("event".into(), Value::Object(event));
    Value::Object(o)
}
