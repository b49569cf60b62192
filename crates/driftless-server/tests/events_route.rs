//! `GET /v1/events/{source}/{id}`: one event's stored outcome by its identity, in process
//! (`app(state)` with tower's `oneshot`), against the embedded SQLite store.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use driftless_config::Settings;
use driftless_server::AppState;
use driftless_store::SqliteStore;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const CONFIG: &str = r#"
[server]
read_token_sha256 = ["bf4d572bbc8e6a798375037e718180370d2ee05441bb9109bdb679e9558f7a95"] # read-demo-token

[[systems]]
id = "wms"
role = "wms"
token_sha256 = "79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35" # wms-demo-token

[[systems]]
id = "shop"
role = "storefront"
token_sha256 = "e3f27ff6c476961f3421e5872fdfad166cd4488c33d9431290043654624ecb15" # shop-demo-token

[authority]
on_hand = ["wms"]

[[units]]
sku = "TEE-*"
unit = "CS"
factor = 12
"#;

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(if method == "GET" {
            Body::empty()
        } else {
            Body::from(body.to_string())
        })
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn one_event_by_source_and_id() {
    let settings = Settings::parse("test.toml", CONFIG).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), settings.rules.clone(), settings.channel_specs())
        .await
        .unwrap();
    let app = driftless_server::app(AppState::new(settings, Arc::new(store)));
    let ev = |source: &str, state: &str| {
        json!({"id": "cnt:7", "source": source, "sku": "TEE-1", "location": "DC1",
               "occurred_at": "2026-11-27T10:00:00Z", "set": {state: 5}, "reason": "count"})
    };
    // shop may not write on_hand: an override, stored without claiming the id.
    let (s, _) = call(
        &app,
        "POST",
        "/v1/events",
        "shop-demo-token",
        ev("shop", "on_hand"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/events",
        "wms-demo-token",
        ev("wms", "on_hand"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let (s, v) = call(
        &app,
        "GET",
        "/v1/events/wms/cnt:7",
        "read-demo-token",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["source"], "wms");
    assert_eq!(v["id"], "cnt:7");
    assert_eq!(v["outcome"], "applied");
    assert!(v.get("reason").is_none(), "{v}");
    assert!(v["received_at"].as_str().is_some());
    assert_eq!(v["event"]["sku"], "TEE-1");
    assert_eq!(v["event"]["set"]["on_hand"], 5);
    assert_eq!(v["event"]["reason"], "count");

    let (s, v) = call(
        &app,
        "GET",
        "/v1/events/shop/cnt:7",
        "read-demo-token",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "override");
    assert!(v["reason"].as_str().unwrap().contains("not applied"), "{v}");

    let (s, v) = call(
        &app,
        "GET",
        "/v1/events/wms/nope",
        "read-demo-token",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "not_found");
    let (s, _) = call(
        &app,
        "GET",
        "/v1/events/wms/cnt:7",
        "wrong-token",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Quantities in the unit they were sent in, with the base-unit quantity beside them.
    let cases = json!({"id": "rcv:1", "source": "wms", "sku": "TEE-1", "location": "DC1",
        "occurred_at": "2026-11-27T11:00:00Z", "adjust": {"on_hand": 2}, "uom": "CS"});
    let (s, _) = call(&app, "POST", "/v1/events", "wms-demo-token", cases).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = call(
        &app,
        "GET",
        "/v1/events/wms/rcv:1",
        "read-demo-token",
        Value::Null,
    )
    .await;
    assert_eq!(v["event"]["adjust"]["on_hand"], 2, "{v}");
    assert_eq!(v["event"]["uom"], "CS");
    let (_, v) = call(
        &app,
        "GET",
        "/v1/inventory/TEE-1/history",
        "read-demo-token",
        Value::Null,
    )
    .await;
    let e = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "rcv:1")
        .unwrap();
    assert_eq!(e["adjust"]["on_hand"], 2, "{e}");
    assert_eq!(e["base"]["on_hand"], 24, "{e}");
    assert_eq!(e["uom"], "CS");
    let (_, v) = call(
        &app,
        "GET",
        "/v1/inventory/TEE-1",
        "read-demo-token",
        Value::Null,
    )
    .await;
    assert_eq!(v["locations"][0]["on_hand"], 5 + 24, "{v}");
}
