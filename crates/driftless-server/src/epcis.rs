//! `POST /v1/epcis/capture`: GS1 EPCIS 2.0 documents (or one event) in JSON / JSON-LD. The
//! transform (`driftless_connectors::epcis`) makes canonical events; this route authenticates like
//! `POST /v1/events` (the token's system is the source), hands them to the ledger in one batch and
//! answers every EPCIS event with what became of it and the canonical ids it became.

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use driftless_config::Settings;
use driftless_connectors::epcis::{self, Mapping, Verdict};
use driftless_core::{Location, Outcome, SystemId};
use driftless_store::Incoming;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The route, with the identifier mapping built once from the configuration.
pub fn routes(settings: &Settings) -> Router<AppState> {
    let mapping = Mapping::from_settings(settings);
    for p in &mapping.problems {
        tracing::warn!(problem = %p, "EPCIS identifier mapping");
    }
    let mapping = Arc::new(mapping);
    Router::new().route(
        "/v1/epcis/capture",
        post(move |st, who, headers, q, body| capture(st, who, headers, q, body, mapping.clone())),
    )
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CaptureQuery {
    /// The stock location of events that name neither `bizLocation` nor `readPoint`.
    location: Option<String>,
    /// The sending system when authentication is off (with a token, the token's system).
    source: Option<String>,
}

async fn capture(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    q: Result<Query<CaptureQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
    mapping: Arc<Mapping>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let r = handle(&st, who, &headers, q, body, &mapping).await;
    match &r {
        Ok(_) => st.metrics.request(started.elapsed()),
        Err(e) => st.metrics.refused(e.status_code().1),
    }
    r
}

/// The sender: the token's system, or `?source=` when authentication is off.
fn source_of(
    st: &AppState,
    principal: Principal,
    asked: Option<&str>,
) -> Result<SystemId, ApiError> {
    match principal {
        Principal::Reader => Err(ApiError::Forbidden(
            "a read-only token cannot send events".into(),
        )),
        Principal::Operator => Err(ApiError::Forbidden(
            "an operator token cannot send events: use the sending system's own token".into(),
        )),
        Principal::System(me) => match asked {
            Some(s) if s != me.as_str() => Err(ApiError::Forbidden(format!(
                "source is `{s}` but the token belongs to `{me}`; a token sends only as its own system"
            ))),
            _ => Ok(me),
        },
        Principal::Anyone => {
            let s = asked.ok_or_else(|| {
                ApiError::InvalidRequest(
                    "source: with authentication off, name the sending system (?source=wms)".into(),
                )
            })?;
            let id =
                SystemId::parse(s).map_err(|e| ApiError::InvalidRequest(format!("source: {e}")))?;
            if st.settings.system(&id).is_none() {
                return Err(ApiError::InvalidRequest(format!(
                    "source: `{s}` is not a configured system"
                )));
            }
            Ok(id)
        }
    }
}

async fn handle(
    st: &AppState,
    principal: Principal,
    headers: &HeaderMap,
    q: Result<Query<CaptureQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
    mapping: &Mapping,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let source = source_of(st, principal, q.source.as_deref())?;
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !["application/json", "application/ld+json", ""].contains(&mime) {
            return Err(ApiError::InvalidRequest(format!(
                "content type `{mime}`: EPCIS capture takes JSON or JSON-LD (application/json, application/ld+json)"
            )));
        }
    }
    let mut mapping = mapping.clone();
    if let Some(l) = &q.location {
        mapping.default_location = Some(
            Location::parse(l).map_err(|e| ApiError::InvalidRequest(format!("location: {e}")))?,
        );
    }
    let max = st.settings.server.max_body_bytes;
    let bytes = crate::routes::read_body(st, body, max).await?;
    let captured = epcis::capture(
        &bytes,
        &source,
        &mapping,
        &st.settings.rules.units,
        st.settings.server.max_batch,
    )
    .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;

    // Every canonical event of the request in one batch: durable together, answered in order.
    let mut batch = Vec::new();
    let now = (st.clock)();
    for c in &captured.events {
        if let Verdict::Events(list) = &c.verdict {
            for e in list {
                batch.push(match st.settings.rules.prepare_at(e.clone(), now) {
                    Ok(p) => Incoming::Event(Box::new(p)),
                    Err(refused) => {
                        let (event, r) = *refused;
                        Incoming::Rejected {
                            event: Box::new(event),
                            reason: r.0,
                        }
                    }
                });
            }
        }
    }
    if batch.len() > st.settings.server.max_batch {
        return Err(ApiError::InvalidRequest(format!(
            "the document makes {} canonical events; at most {}, split it",
            batch.len(),
            st.settings.server.max_batch
        )));
    }
    let receipts = if batch.is_empty() {
        Vec::new()
    } else {
        st.store.apply(chrono::Utc::now(), batch).await?
    };
    for r in &receipts {
        st.metrics.outcome(r.outcome);
    }
    let mut receipts = receipts.into_iter();
    let mut status = StatusCode::OK;
    let mut results = Vec::with_capacity(captured.events.len());
    for c in &captured.events {
        let mut o = Map::new();
        o.insert("index".into(), c.index.into());
        o.insert("type".into(), c.event_type.clone().into());
        if let Some(id) = &c.event_id {
            o.insert("eventID".into(), id.clone().into());
        }
        o.insert("event_hash".into(), c.event_hash.clone().into());
        if let Some(rule) = &c.rule {
            o.insert("rule".into(), rule.clone().into());
        }
        if c.retraction {
            o.insert("retraction".into(), true.into());
        }
        match &c.verdict {
            Verdict::Ignored(why) => {
                o.insert("outcome".into(), "ignored".into());
                o.insert("reason".into(), why.clone().into());
            }
            Verdict::Rejected(why) => {
                o.insert("outcome".into(), "rejected".into());
                o.insert("reason".into(), why.clone().into());
                status = StatusCode::UNPROCESSABLE_ENTITY;
            }
            Verdict::Events(list) => {
                let mut outcomes = Vec::with_capacity(list.len());
                let events: Vec<Value> = list
                    .iter()
                    .map(|e| {
                        let r = receipts.next();
                        let outcome = r.as_ref().map_or(Outcome::Rejected, |r| r.outcome);
                        outcomes.push(outcome);
                        let mut x = Map::new();
                        x.insert("id".into(), e.id.as_str().into());
                        x.insert("sku".into(), e.sku.as_str().into());
                        x.insert("location".into(), e.location.as_str().into());
                        let q: Map<String, Value> = e
                            .change
                            .quantities()
                            .iter()
                            .map(|(s, v)| (s.as_str().to_owned(), Value::from(v)))
                            .collect();
                        x.insert(e.change.kind().into(), Value::Object(q));
                        x.insert("outcome".into(), outcome.as_str().into());
                        if let Some(d) = r.and_then(|r| r.detail) {
                            x.insert("reason".into(), d.into());
                        }
                        Value::Object(x)
                    })
                    .collect();
                let first = outcomes.first().copied().unwrap_or(Outcome::Applied);
                let all_same = outcomes.iter().all(|x| *x == first);
                o.insert(
                    "outcome".into(),
                    if all_same { first.as_str() } else { "mixed" }.into(),
                );
                if outcomes.contains(&Outcome::Rejected) {
                    status = StatusCode::UNPROCESSABLE_ENTITY;
                } else if outcomes.contains(&Outcome::Conflict)
                    && status != StatusCode::UNPROCESSABLE_ENTITY
                {
                    status = StatusCode::CONFLICT;
                }
                o.insert("events".into(), Value::Array(events));
            }
        }
        results.push(Value::Object(o));
    }
    // As for canonical events: a single event answers 409/422; a document always 200, per event.
    if !captured.single {
        status = StatusCode::OK;
    }
    Ok((status, Json(json!({"results": results}))).into_response())
}
