//! `POST /v1/adapters/shopify/{channel}/inventory-levels`: Shopify's `inventory_levels/update`
//! webhook. It is an observation of what the channel shows, not a change of truth: it goes to the
//! same place as `POST /v1/channels/{id}/observations`, where the fan-out compares it with the last
//! acknowledged push and, once a difference outlives the hop's SLA, raises `channel_override` and
//! applies the channel's `on_override`.
//!
//! Shopify authenticates with the signature, not a bearer token: the raw body is verified against
//! the channel's secret (`secret_env`; during a rotation also `<secret_env>_PREVIOUS`) before it
//! is parsed. Deliveries are de-duplicated by `X-Shopify-Webhook-Id` (in memory, the last
//! [`REMEMBERED`]; a redelivery after a restart is harmless anyway, since an observation at the same
//! `updated_at` changes nothing). Ids without a mapping become an incident and a 200, so Shopify
//! does not retry (and finally drop the subscription) over a missing line of configuration.

use crate::AppState;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use driftless_config::Settings;
use driftless_connectors::shopify::webhook::{self, Reading, ShopifyIds};
use driftless_store::Incident;
use serde_json::json;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// Webhook ids remembered for de-duplication.
pub const REMEMBERED: usize = 100_000;
/// Largest body accepted: an InventoryLevel is a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Recently seen `(channel, webhook id)` pairs, oldest forgotten first.
#[derive(Debug, Default)]
struct Seen {
    set: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl Seen {
    fn contains(&self, key: &(String, String)) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: (String, String)) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

pub fn routes(settings: &Settings) -> Router<AppState> {
    let ids = Arc::new(ShopifyIds::from_settings(settings));
    let seen = Arc::new(Mutex::new(Seen::default()));
    Router::new().route(
        "/v1/adapters/shopify/{channel}/inventory-levels",
        post(move |st, path, headers, body| {
            inventory_levels(st, path, headers, body, ids.clone(), seen.clone())
        }),
    )
}

fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn inventory_levels(
    State(st): State<AppState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Body,
    ids: Arc<ShopifyIds>,
    seen: Arc<Mutex<Seen>>,
) -> Result<Response, ApiError> {
    let cfg = st
        .settings
        .channel(&channel)
        .ok_or_else(|| ApiError::NotFound(format!("no channel `{channel}` is configured")))?;
    let Some(var) = cfg.secret_env.as_deref() else {
        return Err(ApiError::Forbidden(format!(
            "channel `{channel}` has no secret_env: the hub cannot verify Shopify's signature"
        )));
    };
    let secrets: Vec<String> = [var.to_owned(), format!("{var}_PREVIOUS")]
        .iter()
        .filter_map(|k| (st.fanout.env)(k))
        .filter(|s| !s.is_empty())
        .collect();
    if secrets.is_empty() {
        return Err(ApiError::Forbidden(format!(
            "environment variable `{var}` (channel `{channel}`'s secret_env) is not set"
        )));
    }
    let bytes = crate::routes::read_body(&st, body, MAX_BODY).await?;
    let keys: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
    if !webhook::verify(&keys, &bytes, header(&headers, "x-shopify-hmac-sha256")) {
        st.metrics.refused("invalid_signature");
        return Ok(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "X-Shopify-Hmac-Sha256 is missing or is not the signature of this body under the channel's secret".into(),
        ));
    }
    if let Some(topic) = header(&headers, "x-shopify-topic")
        && topic != "inventory_levels/update"
    {
        return Ok(Json(json!({
            "outcome": "ignored",
            "reason": format!("topic `{topic}`: this route takes inventory_levels/update"),
        }))
        .into_response());
    }
    let delivery = header(&headers, "x-shopify-webhook-id")
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .map(|id| (channel.clone(), id.to_owned()));
    if let Some(key) = &delivery
        && seen.lock().unwrap_or_else(|p| p.into_inner()).contains(key)
    {
        return Ok(Json(json!({"outcome": "duplicate", "webhook_id": key.1})).into_response());
    }
    let level = webhook::parse(&bytes).map_err(ApiError::InvalidRequest)?;
    let reading = webhook::read(&level, &ids, webhook::push_location(cfg, &st.settings));
    let answer = match reading {
        Reading::Observed { sku, quantity, at } => {
            let o = st
                .store
                .observe(
                    &channel,
                    sku.as_str(),
                    quantity,
                    Some("shopify:inventory_levels/update"),
                    at,
                )
                .await?;
            // The live checkpoint too: the same machinery as every system's observations.
            if let Ok(system) = driftless_core::SystemId::parse(channel.clone()) {
                let item = crate::observations::channel_item(
                    &channel,
                    sku.as_str(),
                    quantity,
                    at,
                    Some("shopify:inventory_levels/update".into()),
                )?;
                crate::observations::check(&st, &system, &[item]).await?;
            }
            json!({
                "outcome": "observed", "sku": sku.as_str(), "quantity": quantity,
                "observed_at": at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                "acknowledged_quantity": o.acked_quantity,
                "diverged_since": o.diverged_since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            })
        }
        Reading::Untracked { sku } => json!({
            "outcome": "untracked", "sku": sku.as_str(),
            "reason": "available is null: Shopify does not track this item's quantity there; nothing to compare",
        }),
        Reading::OtherLocation { sku, location } => json!({
            "outcome": "ignored", "sku": sku.as_str(), "location": location.as_str(),
            "reason": format!("the hub pushes channel `{channel}` to another Shopify location; `{location}` is not compared"),
        }),
        Reading::Unknown(reason) => {
            st.store
                .record_incident(&Incident {
                    kind: "rejected".into(),
                    sku: None,
                    location: None,
                    system: Some(channel.clone()),
                    actor: None,
                    event_id: delivery.as_ref().map(|d| d.1.clone()),
                    detail: format!("Shopify inventory_levels/update: {reason}"),
                    at: Utc::now(),
                })
                .await?;
            json!({"outcome": "unmapped", "reason": reason})
        }
    };
    if let Some(key) = delivery {
        seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
    }
    Ok(Json(answer).into_response())
}
