//! The `/v1` handlers plus health. Shapes follow the contract's section 12.

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::wire::{self, Shape};
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use driftless_core::{Levels, Outcome, Sku};
use driftless_store::{HistoryEntry, INCIDENT_KINDS, IncidentFilter, Incoming, LocationLevels};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub fn router(state: AppState) -> Router {
    // Bounds the bodies held in memory at once: beyond this many concurrent writes the API answers
    // 503 with Retry-After instead of queueing without limit.
    let inflight = Arc::new(Semaphore::new(256));
    let all = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    // Every route here needs a token, checked from the headers before the body is read.
    let v1 = Router::new()
        .route(
            "/v1/events",
            post(move |st, who, headers, body| {
                post_events(st, who, headers, body, inflight.clone())
            }),
        )
        .route("/v1/inventory", get(list_inventory))
        .route("/v1/inventory/{sku}", get(get_inventory))
        .route("/v1/inventory/{sku}/history", get(get_history))
        .route("/v1/incidents", get(get_incidents))
        .merge(crate::channels::routes())
        .merge(crate::observations::routes())
        .merge(crate::events::routes())
        .merge(crate::audits::routes())
        .merge(crate::epcis::routes(&state.settings))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require,
        ));
    Router::new()
        .merge(v1)
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::handler))
        .merge(crate::shopify_webhook::routes(&state.settings))
        .merge(crate::console::routes())
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let all = all.clone();
                async move {
                    // Every request holds a permit while it runs; past the bound the hub answers
                    // 503 with Retry-After at once rather than letting work pile up.
                    match all.try_acquire_owned() {
                        Ok(_permit) => next.run(req).await,
                        Err(_) => ApiError::Overloaded.into_response(),
                    }
                }
            },
        ))
        .with_state(state)
}

/// Requests handled at once, all routes together.
pub const MAX_CONCURRENT_REQUESTS: usize = 2048;

async fn readyz(State(st): State<AppState>) -> Response {
    match st.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// Reads a whole request body, at most `max` bytes and within `[server] body_read_timeout`: a
/// client that dribbles its body gets 408 instead of holding a request slot.
pub async fn read_body(st: &AppState, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let limit = st.settings.server.body_read_timeout;
    match tokio::time::timeout(limit, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(ApiError::TooLarge(max)),
        Err(_) => Err(ApiError::BodyTimeout(limit.as_millis())),
    }
}

async fn post_events(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
    inflight: Arc<Semaphore>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let r = ingest(&st, who, headers, body, inflight).await;
    match &r {
        Ok(_) => st.metrics.request(started.elapsed()),
        Err(e) => st.metrics.refused(e.status_code().1),
    }
    r
}

async fn ingest(
    st: &AppState,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
    inflight: Arc<Semaphore>,
) -> Result<Response, ApiError> {
    match principal {
        Principal::Reader => {
            return Err(ApiError::Forbidden(
                "a read-only token cannot send events".into(),
            ));
        }
        Principal::Operator => {
            return Err(ApiError::Forbidden(
                "an operator token sends no events; use the token of the system that sends them"
                    .into(),
            ));
        }
        Principal::System(_) | Principal::Anyone => {}
    }
    let _permit = inflight.try_acquire().map_err(|_| ApiError::Overloaded)?;
    let bytes = read_body(st, body, st.settings.server.max_body_bytes).await?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"));
    let (shape, events) = wire::parse_body(&bytes, ndjson, st.settings.server.max_batch)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    if let Principal::System(me) = &principal
        && let Some((i, e)) = events.iter().enumerate().find(|(_, e)| &e.source != me)
    {
        return Err(ApiError::Forbidden(format!(
            "events[{i}].source is `{}` but the token belongs to `{me}`; a token sends only as its own system",
            e.source
        )));
    }
    if let Some(bus) = &st.bus {
        return crate::bus::ingest(st, bus, shape, events, (st.clock)()).await;
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let now = (st.clock)();
    let sources: Vec<String> = events.iter().map(|e| e.source.to_string()).collect();
    let batch: Vec<Incoming> = events
        .into_iter()
        .map(|e| match st.settings.rules.prepare_at(e, now) {
            Ok(p) => Incoming::Event(Box::new(p)),
            Err(refused) => {
                let (event, r) = *refused;
                Incoming::Rejected {
                    event: Box::new(event),
                    reason: r.0,
                }
            }
        })
        .collect();
    let receipts = st.store.apply(now, batch).await?;
    for (r, source) in receipts.iter().zip(&sources) {
        st.metrics.outcome_from(r.outcome, source);
    }
    let results: Vec<Value> = ids
        .iter()
        .zip(&receipts)
        .map(|(id, r)| {
            let mut o = Map::new();
            o.insert("id".into(), id.as_str().into());
            o.insert("outcome".into(), r.outcome.as_str().into());
            if let Some(d) = &r.detail {
                o.insert("reason".into(), d.as_str().into());
            }
            Value::Object(o)
        })
        .collect();
    let status = match (shape, receipts.first().map(|r| r.outcome)) {
        (Shape::Single, Some(Outcome::Conflict)) => StatusCode::CONFLICT,
        (Shape::Single, Some(Outcome::Rejected)) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    Ok((status, Json(json!({"results": results}))).into_response())
}

fn parse_sku(s: &str) -> Result<Sku, ApiError> {
    Sku::parse(s).map_err(|e| ApiError::InvalidRequest(format!("sku: {e}")))
}

fn levels_json(location: &str, l: &Levels) -> Value {
    json!({
        "location": location,
        "on_hand": l.on_hand,
        "committed": l.committed,
        "reserved": l.reserved,
        "incoming": l.incoming,
        "unavailable": l.unavailable,
        "available": l.available(),
    })
}

/// The inventory object of one sku, with every channel's quantity.
pub fn inventory_json(st: &AppState, sku: &Sku, locations: &[LocationLevels]) -> Value {
    let channels: Vec<Value> = st
        .channels
        .iter()
        .map(|c| {
            let atp: i64 = locations
                .iter()
                .filter(|l| c.feeds_from(&l.location))
                .map(|l| l.levels.available())
                .fold(0i64, i64::saturating_add);
            json!({"channel": c.id.as_str(), "quantity": c.quantity(sku, atp)})
        })
        .collect();
    json!({
        "sku": sku.as_str(),
        "locations": locations.iter().map(|l| levels_json(l.location.as_str(), &l.levels)).collect::<Vec<_>>(),
        "channels": channels,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AtQuery {
    at: Option<String>,
}

async fn get_inventory(
    State(st): State<AppState>,
    Path(sku): Path<String>,
    q: Result<Query<AtQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let at = q.at.as_deref().map(crate::asof::parse_at).transpose()?;
    let sku = parse_sku(&sku)?;
    Ok(Json(crate::asof::inventory(&st, &sku, at).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_inventory(
    State(st): State<AppState>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidRequest(
            "limit: must be between 1 and 1000".into(),
        ));
    }
    let after = q.after.as_deref().map(parse_sku).transpose()?;
    let page = st.store.inventory_page(after.as_ref(), limit).await?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|(s, _)| s.to_string()))
        .flatten();
    let mut items: Vec<Value> = Vec::with_capacity(page.len());
    for (sku, locs) in &page {
        let mut v = inventory_json(&st, sku, locs);
        v["version"] = st.store.sku_version(sku).await?.into();
        items.push(v);
    }
    Ok(Json(json!({"items": items, "next_after": next})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<usize>,
}

fn history_json(h: &HistoryEntry) -> Value {
    let map = |v: &[(String, i64)]| -> Value {
        Value::Object(
            v.iter()
                .map(|(s, q)| (s.clone(), Value::from(*q)))
                .collect::<Map<String, Value>>(),
        )
    };
    let mut o = Map::new();
    o.insert("id".into(), h.id.clone().into());
    o.insert("source".into(), h.source.as_str().into());
    o.insert("location".into(), h.location.as_str().into());
    o.insert("occurred_at".into(), h.occurred_at.clone().into());
    o.insert("seq".into(), h.seq.into());
    o.insert(
        "received_at".into(),
        h.received_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .into(),
    );
    o.insert("outcome".into(), h.outcome.as_str().into());
    // In the unit sent (`uom`), with the base-unit quantities beside them.
    o.insert(h.kind.clone(), map(&h.sent));
    o.insert("base".into(), map(&h.quantities));
    o.insert("uom".into(), h.uom.clone().into());
    o.insert("reason".into(), h.reason.clone().into());
    o.insert("ref".into(), h.reference.clone().into());
    o.insert("detail".into(), h.detail.clone().into());
    Value::Object(o)
}

async fn get_history(
    State(st): State<AppState>,
    Path(sku): Path<String>,
    q: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::InvalidRequest(
            "limit: must be between 1 and 10000".into(),
        ));
    }
    let sku = parse_sku(&sku)?;
    let entries = st.store.history(&sku, limit).await?;
    if entries.is_empty() {
        return Err(ApiError::NotFound(format!(
            "sku `{sku}` has never been seen"
        )));
    }
    Ok(Json(json!({
        "sku": sku.as_str(),
        "entries": entries.iter().map(history_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentQuery {
    kind: Option<String>,
    sku: Option<String>,
    system: Option<String>,
    limit: Option<usize>,
}

async fn get_incidents(
    State(st): State<AppState>,
    q: Result<Query<IncidentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let kind = empty(q.kind);
    if let Some(k) = &kind
        && !INCIDENT_KINDS.contains(&k.as_str())
    {
        return Err(ApiError::InvalidRequest(format!(
            "kind: unknown incident kind `{k}` (one of {})",
            INCIDENT_KINDS.join(", ")
        )));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidRequest(
            "limit: must be between 1 and 1000".into(),
        ));
    }
    let filter = IncidentFilter {
        kind,
        sku: empty(q.sku),
        system: empty(q.system),
        limit,
    };
    let incidents = st.store.incidents(&filter).await?;
    let list: Vec<Value> = incidents
        .iter()
        .map(|i| {
            json!({
                "kind": i.kind, "sku": i.sku.as_ref().map(|s| s.as_str()),
                "location": i.location.as_ref().map(|l| l.as_str()), "system": i.system,
                "event_id": i.event_id, "detail": i.detail,
                "at": i.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            })
        })
        .collect();
    Ok(Json(json!({"incidents": list})))
}
