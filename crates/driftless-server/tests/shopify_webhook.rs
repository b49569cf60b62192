//! `POST /v1/adapters/shopify/{channel}/inventory-levels` over real HTTP: the signature over the raw
//! body, de-duplication by webhook id, ids mapped by configuration (beyond 2^53), `available: null`,
//! unknown ids as an incident, late deliveries, and every refusal storing nothing.

use driftless_connectors::shopify::webhook::sign;
use driftless_server::fanout::FanoutOptions;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;

mod common;

use common::{READ, TestApp, spawn_with};

fn config() -> String {
    common::config_wms(
        "",
        r#"
[[channels]]
id = "shop"
locations = ["DC1"]
connector = "none"
secret_env = "SHOP_WEBHOOK_SECRET"

[[channels]]
id = "plain"
locations = ["DC1"]
connector = "none"

[[items]]
sku = "TEE-1"
shopify_inventory_item_id = "1152921504606846976"

[[items]]
sku = "TEE-2"
shopify_inventory_item_id = "gid://shopify/InventoryItem/808950810"

[[locations]]
id = "DC1"
shopify_location_id = "655441491"

[[locations]]
id = "DC2"
shopify_location_id = "905684977"
"#,
    )
}

const SECRET: &str = "hush-hush";

async fn spawn() -> TestApp {
    spawn_with(&config(), |state| {
        state.fanout = Arc::new(FanoutOptions {
            env: Arc::new(|k| (k == "SHOP_WEBHOOK_SECRET").then(|| SECRET.to_owned())),
            enabled: false,
            ..FanoutOptions::default()
        });
    })
    .await
}

/// A body as Shopify writes it: `/` escaped, ids as bare integers.
fn body(item: &str, location: &str, available: &str, at: &str) -> String {
    format!(
        r#"{{"inventory_item_id":{item},"location_id":{location},"available":{available},"updated_at":"{at}","admin_graphql_api_id":"gid:\/\/shopify\/InventoryLevel\/{location}?inventory_item_id={item}"}}"#
    )
}

impl TestApp {
    async fn hook(
        &self,
        channel: &str,
        body: &str,
        hmac: Option<String>,
        id: &str,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .post(format!(
                "{}/v1/adapters/shopify/{channel}/inventory-levels",
                self.base
            ))
            .header("content-type", "application/json")
            .header("x-shopify-topic", "inventory_levels/update")
            .header("x-shopify-webhook-id", id)
            .body(body.to_owned());
        if let Some(h) = hmac {
            r = r.header("x-shopify-hmac-sha256", h);
        }
        let r = r.send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn signed(&self, body: &str, id: &str) -> (StatusCode, Value) {
        self.hook(
            "shop",
            body,
            Some(sign(SECRET.as_bytes(), body.as_bytes())),
            id,
        )
        .await
    }

    /// A read with [`READ`]; the answer must be JSON.
    async fn read(&self, path: &str) -> Value {
        let (_, v) = self.get(READ, path).await;
        assert!(!v.is_null(), "{path}: not JSON");
        v
    }
}

#[tokio::test]
async fn a_signed_webhook_is_an_observation_and_every_refusal_stores_nothing() {
    let app = spawn().await;
    let big = "1152921504606846976"; // 2^60
    let b = body(big, "655441491", "7", "2026-11-27T10:00:00-05:00");
    // Bad signatures: missing, of another body, under another secret, and the body re-serialised
    // (`/` unescaped) under the right one.
    let incidents = app.read("/v1/incidents").await;
    for h in [
        None,
        Some(sign(SECRET.as_bytes(), b"{}")),
        Some(sign(b"other", b.as_bytes())),
        Some(sign(SECRET.as_bytes(), b.replace("\\/", "/").as_bytes())),
        Some("not base64".to_owned()),
    ] {
        let (s, v) = app.hook("shop", &b, h, "w-0").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
        assert_eq!(v["error"]["code"], "invalid_signature");
    }
    assert_eq!(app.read("/v1/incidents").await, incidents);
    // A channel without a secret, and an unknown channel.
    assert_eq!(
        app.hook("plain", &b, Some(sign(b"x", b.as_bytes())), "w-0")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.hook("nope", &b, Some(sign(b"x", b.as_bytes())), "w-0")
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let (s, v) = app.signed(&b, "w-1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["outcome"].as_str(),
            v["sku"].as_str(),
            v["quantity"].as_i64()
        ),
        (Some("observed"), Some("TEE-1"), Some(7))
    );
    assert!(
        v["diverged_since"].is_string(),
        "nothing was pushed yet: it differs"
    );
    // The same delivery again: a duplicate, nothing recorded.
    let (s, v) = app.signed(&b, "w-1").await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    // A late delivery of an older state does not replace the newer observation.
    let older = body(big, "655441491", "99", "2026-11-27T09:00:00-05:00");
    app.signed(&older, "w-2").await;
    let newer = body(big, "655441491", "7", "2026-11-27T10:00:01-05:00");
    let (_, v) = app.signed(&newer, "w-3").await;
    assert_eq!(
        v["diverged_since"].as_str(),
        Some("2026-11-27T15:00:00.000Z"),
        "{v}"
    );

    // available: null, another location, GID-configured item.
    let (s, v) = app
        .signed(
            &body("808950810", "655441491", "null", "2026-11-27T10:00:00Z"),
            "w-4",
        )
        .await;
    assert_eq!(
        (s, v["outcome"].as_str(), v["sku"].as_str()),
        (StatusCode::OK, Some("untracked"), Some("TEE-2"))
    );
    let (_, v) = app
        .signed(
            &body("808950810", "905684977", "3", "2026-11-27T10:00:00Z"),
            "w-5",
        )
        .await;
    assert_eq!(v["outcome"], "ignored");
    // Unknown ids: a 200 so Shopify stops retrying, and an incident naming the missing mapping.
    let (s, v) = app
        .signed(&body("42", "655441491", "3", "2026-11-27T10:00:00Z"), "w-6")
        .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("unmapped"))
    );
    let (_, v) = app
        .signed(&body(big, "1", "3", "2026-11-27T10:00:00Z"), "w-7")
        .await;
    assert_eq!(v["outcome"], "unmapped");
    let inc = app.read("/v1/incidents?system=shop").await;
    let details: Vec<&str> = inc["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["detail"].as_str().unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("inventory_item_id 42 is not under any [[items]]")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("location_id 1 (sku `TEE-1`)")),
        "{details:?}"
    );
    // A signed body that is not an InventoryLevel: 400.
    let (s, _) = app.signed(r#"{"inventory_item_id":"x"}"#, "w-8").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn a_late_observation_never_replaces_a_newer_one() {
    use driftless_store::Outbox;
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = common::open(&config(), dir.path()).await;
    let t = chrono::Utc::now() - chrono::Duration::hours(1);
    store.observe("shop", "TEE-1", 7, None, t).await.unwrap();
    store
        .observe("shop", "TEE-1", 99, None, t - chrono::Duration::minutes(5))
        .await
        .unwrap();
    let d = store
        .divergences("shop", chrono::Utc::now(), 10)
        .await
        .unwrap();
    assert_eq!((d.len(), d[0].observed), (1, 7));
    store.observe("shop", "TEE-1", 8, None, t).await.unwrap();
    let d = store
        .divergences("shop", chrono::Utc::now(), 10)
        .await
        .unwrap();
    assert_eq!(d[0].observed, 8, "a report at the same time replaces");
}
