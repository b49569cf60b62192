//! Stored drift audits over HTTP: `GET /v1/audits` (newest first, paged by id) and
//! `GET /v1/audits/{id}` (the summary plus the whole report, as the audit command wrote it), and
//! `GET /v1/audits/trend` (drift per hand-off over the last days with the repair-or-rebuild
//! reading, computed as `driftless trend` does).

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::SecondsFormat;
use driftless_store::StoredAudit;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/audits", get(list))
        .route("/v1/audits/trend", get(trend))
        .route("/v1/audits/{id}", get(one))
}

/// The summary every listing row carries.
pub fn summary_json(a: &StoredAudit) -> Value {
    let r = &a.record;
    json!({
        "id": a.id,
        "at": r.at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "skus_compared": r.skus_compared,
        "drifting": r.drifting,
        "handoffs": r.handoffs.iter().map(|(h, n, u)| json!({
            "handoff": h, "drifting_skus": n, "abs_units": u,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    before: Option<i64>,
    limit: Option<usize>,
}

async fn list(
    State(st): State<AppState>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidRequest(
            "limit: must be between 1 and 1000".into(),
        ));
    }
    let page = st.store.audits_page(q.before, limit).await?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|a| a.id))
        .flatten();
    Ok(Json(json!({
        "audits": page.iter().map(summary_json).collect::<Vec<_>>(),
        "next_before": next,
    })))
}

async fn one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::InvalidRequest(format!("id: `{id}` is not an audit id")))?;
    let a = st
        .store
        .audit(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no audit {id}")))?;
    let report: Value = serde_json::from_str(&a.record.report_json)
        .map_err(|e| ApiError::Internal(format!("stored audit {id}: report: {e}")))?;
    let mut v = summary_json(&a);
    v["report"] = report;
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrendQuery {
    days: Option<i64>,
}

/// Drift per hand-off over the last `days`, with the repair-or-rebuild reading.
async fn trend(
    State(st): State<AppState>,
    q: Result<Query<TrendQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    use driftless_audit::trend::{self, TrendPoint};
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let days = q.days.unwrap_or(30);
    if !(1..=3660).contains(&days) {
        return Err(ApiError::InvalidRequest(
            "days: must be between 1 and 3660".into(),
        ));
    }
    let since = chrono::Utc::now() - chrono::Duration::days(days);
    let records = st.store.audits_since(since).await?;
    let points: Vec<TrendPoint> = records
        .iter()
        .map(|r| TrendPoint::of_stored(r.at, r.skus_compared, &r.handoffs, &r.report_json))
        .collect();
    let t = trend::analyze(points);
    Ok(Json(json!({
        "days": days,
        "handoffs": t.handoffs,
        "points": t.points.iter().map(|p| json!({
            "at": p.at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            "skus_compared": p.skus_compared,
            "handoffs": p.handoffs.iter().map(|(h, n, u)| json!({"handoff": h, "drifting_skus": n, "abs_units": u})).collect::<Vec<_>>(),
            "manual_overrides": p.manual_overrides,
        })).collect::<Vec<_>>(),
        "degrading": t.degrading.as_ref().map(|(h, s)| json!({"handoff": h, "per_day": s})),
        "reading": t.reading.sentence(),
        "svg": trend::svg(&t),
    })))
}
