//! The fan-out surface: channel status, replay, observations that channels report back, and the
//! integration matrix. Mounted by [`crate::routes::router`] behind [`crate::auth::require`], so
//! each handler receives the caller's [`Principal`].

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::routes::read_body;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use driftless_config::OnOverride;
use driftless_core::Sku;
use serde::Deserialize;
use serde_json::{Value, json};

/// Most observations in one request.
pub const MAX_OBSERVATIONS: usize = 1000;
/// Push samples per channel the matrix reads.
pub const MATRIX_SAMPLES: usize = 20_000;
/// Checkpoint rows the matrix sums at most.
pub const MATRIX_CHECKPOINT_ROWS: usize = 200_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/channels", get(list_channels))
        .route("/v1/channels/{id}", get(get_channel))
        .route("/v1/channels/{id}/replay", post(replay))
        .route("/v1/channels/{id}/hold", post(hold))
        .route("/v1/channels/{id}/observations", post(observe))
        .route("/v1/matrix", get(get_matrix))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn channel<'a>(
    st: &'a AppState,
    id: &str,
) -> Result<&'a driftless_config::ChannelConfig, ApiError> {
    st.settings
        .channel(id)
        .ok_or_else(|| ApiError::NotFound(format!("no channel `{id}` is configured")))
}

async fn list_channels(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for c in &st.settings.channels {
        let s = st.store.channel_status(c.spec.id.as_str()).await?;
        out.push(json!({
            "channel": c.spec.id.as_str(), "connector": c.connector,
            "pending": s.pending, "held": s.held.len(), "dead_letters": s.dead_letters.len(),
            "errors": s.errors.len(),
        }));
    }
    Ok(Json(json!({"channels": out})))
}

async fn get_channel(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = channel(&st, &id)?;
    let s = st.store.channel_status(&id).await?;
    Ok(Json(json!({
        "channel": id,
        "connector": c.connector,
        "on_override": match c.on_override { OnOverride::Overwrite => "overwrite", OnOverride::Hold => "hold" },
        "max_attempts": c.max_attempts,
        "pending": s.pending,
        "last_push": s.last_push.map(|p| json!({
            "sku": p.sku.as_str(), "quantity": p.quantity, "version": p.version, "at": rfc3339(p.at),
        })),
        "errors": s.errors.iter().map(|e| json!({
            "sku": e.sku.as_str(), "attempts": e.attempts, "error": e.error, "at": rfc3339(e.at),
            "next_attempt_at": rfc3339(e.next_attempt),
        })).collect::<Vec<_>>(),
        "held": s.held.iter().map(Sku::as_str).collect::<Vec<_>>(),
        "dead_letters": s.dead_letters.iter().map(|d| json!({
            "sku": d.sku.as_str(), "version": d.version, "attempts": d.attempts, "error": d.error,
            "at": d.at.map(rfc3339),
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    sku: Option<String>,
}

/// Largest body of a replay or observations request: a thousand observations with long skus and
/// actors stay well under it.
const MAX_SMALL_BODY: usize = 1024 * 1024;

/// Puts dead-lettered and held skus back in the queue: releasing a hold an operator set on
/// purpose (a manual override on the channel) changes what the hub does, so it takes an operator
/// token; a system token, even the channel's own, gets 403.
async fn replay(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    who.operator()?;
    channel(&st, &id)?;
    let body = read_body(&st, body, MAX_SMALL_BODY).await?;
    let b: ReplayBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest(e.to_string()))?
    };
    if let Some(s) = &b.sku {
        Sku::parse(s.clone()).map_err(|e| ApiError::InvalidRequest(format!("sku: {e}")))?;
    }
    let n = st.store.outbox_replay(&id, b.sku.as_deref()).await?;
    Ok(Json(json!({"channel": id, "replayed": n})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    sku: String,
}

/// Stops pushing one sku to the channel (an operator looking into a disputed quantity) until it
/// is released with `replay`; like a release it changes what the hub does, so operators only.
async fn hold(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    who.operator()?;
    channel(&st, &id)?;
    let body = read_body(&st, body, MAX_SMALL_BODY).await?;
    let b: HoldBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let sku = Sku::parse(b.sku).map_err(|e| ApiError::InvalidRequest(format!("sku: {e}")))?;
    st.store.outbox_hold(&id, sku.as_str()).await?;
    tracing::info!(channel = %id, sku = %sku, "held by an operator");
    Ok(Json(
        json!({"channel": id, "sku": sku.as_str(), "held": true}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Observation {
    sku: String,
    quantity: i64,
    observed_at: Option<String>,
    /// Who changed it, when the channel knows (a staff account, an app).
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Observations {
    observations: Vec<Observation>,
}

/// A channel reports what it shows. Only the channel's own system token may speak for it (or an
/// operator, or anyone with auth off); a read-only token may not.
async fn observe(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    match &who {
        Principal::Reader => {
            return Err(ApiError::Forbidden(
                "a read-only token cannot change anything".into(),
            ));
        }
        Principal::System(me) if me.as_str() != id => {
            return Err(ApiError::Forbidden(format!(
                "the token belongs to `{me}`; only channel `{id}` reports its own quantities"
            )));
        }
        _ => {}
    }
    channel(&st, &id)?;
    let body = read_body(&st, body, MAX_SMALL_BODY).await?;
    let body: Observations =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    if body.observations.len() > MAX_OBSERVATIONS {
        return Err(ApiError::InvalidRequest(format!(
            "observations: at most {MAX_OBSERVATIONS} per request"
        )));
    }
    let mut parsed = Vec::with_capacity(body.observations.len());
    for (i, o) in body.observations.iter().enumerate() {
        Sku::parse(o.sku.clone())
            .map_err(|e| ApiError::InvalidRequest(format!("observations[{i}].sku: {e}")))?;
        let at = match &o.observed_at {
            None => (st.clock)(),
            Some(t) => DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    ApiError::InvalidRequest(format!("observations[{i}].observed_at: {e}"))
                })?
                .with_timezone(&Utc),
        };
        if o.actor.as_ref().is_some_and(|a| a.len() > 200) {
            return Err(ApiError::InvalidRequest(format!(
                "observations[{i}].actor: at most 200 bytes"
            )));
        }
        parsed.push((o, at));
    }
    // The same observations feed the live checkpoint (`handoff_drift`), counted against the
    // channel's observation rate.
    let system = driftless_core::SystemId::parse(id.clone())
        .map_err(|e| ApiError::InvalidRequest(format!("channel: {e}")))?;
    crate::observations::take(&st, &system, parsed.len())?;
    let mut results = Vec::with_capacity(parsed.len());
    let mut items = Vec::with_capacity(parsed.len());
    for (o, at) in parsed {
        let r = st
            .store
            .observe(&id, &o.sku, o.quantity, o.actor.as_deref(), at)
            .await?;
        results.push(json!({
            "sku": o.sku, "quantity": o.quantity, "acknowledged_quantity": r.acked_quantity,
            "diverged_since": r.diverged_since.map(rfc3339),
        }));
        items.push(crate::observations::channel_item(
            &id,
            &o.sku,
            o.quantity,
            at,
            o.actor.clone(),
        )?);
    }
    crate::observations::check(&st, &system, &items).await?;
    Ok(Json(json!({"results": results})))
}

/// Builds the matrix from the store; shared with the `driftless matrix` command.
pub async fn matrix(
    settings: &driftless_config::Settings,
    store: &dyn driftless_store::Store,
) -> Result<crate::matrix::Matrix, driftless_store::StoreError> {
    let samples = store.push_samples(MATRIX_SAMPLES).await?;
    let systems: Vec<String> = settings.systems.iter().map(|s| s.id.to_string()).collect();
    let lags = store.source_lags(&systems, MATRIX_SAMPLES).await?;
    let mut m = crate::matrix::compute(settings, &samples, &lags);
    // Every checkpoint row, paged, up to a bound that keeps the matrix an answer and not a scan.
    let mut rows = Vec::new();
    let mut filter = driftless_store::CheckpointFilter {
        limit: 1000,
        ..Default::default()
    };
    while rows.len() < MATRIX_CHECKPOINT_ROWS {
        let page = store.checkpoints(&filter).await?;
        let full = page.len() == filter.limit;
        if let Some(r) = page.last() {
            filter.after = Some((
                r.system.to_string(),
                r.sku.to_string(),
                r.location.clone(),
                r.state.clone(),
            ));
        }
        rows.extend(page);
        if !full {
            break;
        }
    }
    m.checkpoints = crate::matrix::checkpoints_of(&rows);
    Ok(m)
}

async fn get_matrix(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let m = matrix(&st.settings, st.store.as_ref()).await?;
    Ok(Json(crate::matrix::to_json(&m)))
}
