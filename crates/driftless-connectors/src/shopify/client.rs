//! The Shopify connector's I/O: the GraphQL endpoint, the access token, the id mapping from
//! configuration and the cost bucket as Shopify last reported it.

use super::transform::{self, SetAnswer, Throttle};
use crate::{BoxFuture, ClientOptions, Connector, Failure, Push, PushOutcome};
use driftless_config::{ChannelConfig, Settings};
use reqwest::header::RETRY_AFTER;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest the connector waits in place for the cost bucket; beyond it the push is handed back as
/// `RetryAfter` so the dispatcher can park it without holding a slot.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(2);
/// Most bytes of an answer read.
const MAX_ANSWER: usize = 256 * 1024;
/// Fresh idempotency keys tried in one push after `IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED`.
const MAX_FRESH_KEYS: u32 = 4;

pub struct ShopifyConnector {
    endpoint: String,
    token: String,
    /// sku -> InventoryItem GID.
    items: HashMap<String, String>,
    location: String,
    http: reqwest::Client,
    bucket: Mutex<Option<(Throttle, Instant)>>,
}

impl std::fmt::Debug for ShopifyConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopifyConnector")
            .field("endpoint", &self.endpoint)
            .field("location", &self.location)
            .field("items", &self.items.len())
            .finish_non_exhaustive()
    }
}

impl ShopifyConnector {
    pub fn new(
        base: &str,
        api_version: &str,
        token: String,
        items: HashMap<String, String>,
        location: String,
        opts: &ClientOptions,
    ) -> Result<Self, String> {
        transform::check_version(api_version)?;
        // A bare shop domain is reached over TLS; a full URL (a stand-in) is used as given.
        let base = if base.starts_with("http://") || base.starts_with("https://") {
            base.trim_end_matches('/').to_owned()
        } else {
            format!("https://{}", base.trim_end_matches('/'))
        };
        Ok(ShopifyConnector {
            endpoint: format!("{base}/admin/api/{api_version}/graphql.json"),
            token,
            items,
            location,
            http: crate::http::client(opts)?,
            bucket: Mutex::new(None),
        })
    }

    pub fn from_config(
        c: &ChannelConfig,
        s: &Settings,
        opts: &ClientOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let domain = c
            .shop_domain
            .as_deref()
            .ok_or("the shopify connector needs `shop_domain`")?;
        let version = c.api_version.as_deref().unwrap_or("2026-04");
        let var = c.token_env.as_deref().ok_or(
            "the shopify connector needs `token_env` (the variable holding the access token)",
        )?;
        let token = env(var)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("environment variable `{var}` (token_env) is not set"))?;
        let location = c
            .spec
            .locations
            .iter()
            .find_map(|l| {
                s.locations
                    .iter()
                    .find(|x| &x.id == l)
                    .and_then(|x| x.shopify_location_id.as_deref())
            })
            .ok_or("none of the channel's locations has a `shopify_location_id`")?;
        let location = transform::gid("Location", location)?;
        let mut items = HashMap::new();
        for i in &s.items {
            if let Some(id) = &i.shopify_inventory_item_id {
                items.insert(i.sku.to_string(), transform::gid("InventoryItem", id)?);
            }
        }
        Self::new(domain, version, token, items, location, opts)
    }

    /// Waits for the cost bucket if Shopify's last report says the next call would be throttled.
    fn pace(&self) -> Duration {
        let guard = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((t, at)) => t.wait_for(at.elapsed(), t.requested),
            None => Duration::ZERO,
        }
    }

    async fn call(&self, body: &Value) -> Result<Value, PushOutcome> {
        let sent = self
            .http
            .post(&self.endpoint)
            .header("X-Shopify-Access-Token", &self.token)
            .json(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Err(PushOutcome::Failed(Failure::retry(crate::http::describe(
                    &e,
                ))));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(|v| crate::http::retry_after(Some(v), Duration::ZERO));
        match (status, retry_after) {
            (429, wait) | (503, wait @ Some(_)) => {
                return Err(PushOutcome::RetryAfter(wait.unwrap_or_default()));
            }
            (500.., _) => {
                return Err(PushOutcome::Failed(Failure::retry(format!(
                    "HTTP {status}"
                ))));
            }
            (200..=299, _) => {}
            // Refused, not applied; may pass (a token replaced, a shop unfrozen): backoff.
            _ => {
                return Err(PushOutcome::Failed(Failure::refused(format!(
                    "HTTP {status} from Shopify (check the access token and its write_inventory scope)"
                ))));
            }
        }
        let bytes = match resp.bytes().await {
            Ok(b) if b.len() <= MAX_ANSWER => b,
            Ok(_) => return Err(PushOutcome::Failed(Failure::retry("answer too large"))),
            Err(e) => {
                return Err(PushOutcome::Failed(Failure::retry(crate::http::describe(
                    &e,
                ))));
            }
        };
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| PushOutcome::Failed(Failure::retry(format!("answer is not JSON: {e}"))))?;
        if let Some(t) = transform::throttle(&v) {
            *self.bucket.lock().unwrap_or_else(|p| p.into_inner()) = Some((t, Instant::now()));
        }
        Ok(v)
    }

    /// The channel's current `available`, after a compare failure. Paced like a push, and tried a
    /// few times: right after a refusal the bucket is often low.
    async fn read_current(&self, item: &str) -> Option<i64> {
        for _ in 0..3 {
            let wait = self.pace().min(MAX_INLINE_WAIT);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            match self
                .call(&transform::read_request(item, &self.location))
                .await
            {
                Ok(v) if transform::parse_set(&v) == SetAnswer::Throttled => continue,
                Ok(v) => return transform::parse_read(&v).ok().flatten(),
                Err(_) => continue,
            }
        }
        None
    }
}

impl Connector for ShopifyConnector {
    fn kind(&self) -> &'static str {
        "shopify"
    }

    fn push<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, PushOutcome> {
        Box::pin(async move {
            let Some(item) = self.items.get(&push.sku) else {
                return PushOutcome::Failed(Failure::permanent(format!(
                    "sku `{}` has no shopify_inventory_item_id under [[items]]",
                    push.sku
                )));
            };
            if let Err(why) = transform::check_quantities(push.quantity, push.compare) {
                return PushOutcome::Failed(Failure::permanent(why));
            }
            // A key whose earlier request failed is burnt: the same push goes again under a key
            // derived from it (`-r1`, `-r2`, ...), so that a repeat after a lost answer finds the
            // same fresh key again and Shopify answers it from its record.
            let mut key = push.idempotency_key.clone();
            for fresh in 1..=MAX_FRESH_KEYS + 1 {
                let wait = self.pace();
                if wait > MAX_INLINE_WAIT {
                    return PushOutcome::RetryAfter(wait);
                }
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let req =
                    transform::set_request(item, &self.location, push.quantity, push.compare, &key);
                let v = match self.call(&req).await {
                    Ok(v) => v,
                    Err(outcome) => return outcome,
                };
                return match transform::parse_set(&v) {
                    SetAnswer::Applied => PushOutcome::Acked,
                    SetAnswer::Stale => PushOutcome::CompareFailed {
                        current: self.read_current(item).await,
                        actor: None,
                    },
                    SetAnswer::Throttled => {
                        let wait = self.pace().max(Duration::from_millis(200));
                        PushOutcome::RetryAfter(wait)
                    }
                    SetAnswer::Busy => PushOutcome::RetryAfter(Duration::from_millis(500)),
                    SetAnswer::PreviousAttemptFailed => {
                        key = format!("{}-r{fresh}", push.idempotency_key);
                        continue;
                    }
                    SetAnswer::Invalid(m) => PushOutcome::Failed(Failure::permanent(format!(
                        "Shopify refused the request as invalid: {m}"
                    ))),
                    SetAnswer::Refused(m) => PushOutcome::Failed(Failure::permanent(m)),
                    // In doubt: repeated with the same key, which Shopify then answers.
                    SetAnswer::Errors(m) => PushOutcome::Failed(Failure::retry(m)),
                };
            }
            PushOutcome::Failed(Failure::not_sent(format!(
                "Shopify answered IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED for the push's key and \
                 {MAX_FRESH_KEYS} fresh ones"
            )))
        })
    }
}
