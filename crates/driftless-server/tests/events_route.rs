//! `GET /v1/events/{source}/{id}`: one event's stored outcome by its identity, in process
//! (`app(state)` with tower's `oneshot`), against the embedded SQLite store.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

use common::{READ, SHOP, TEE_CASES, WMS};

fn config() -> String {
    common::config(
        "",
        &format!("\n[authority]\non_hand = [\"wms\"]\n{TEE_CASES}"),
    )
}

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
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = common::open(&config(), dir.path()).await;
    let app = driftless_server::app(state);
    let ev = |source: &str, state: &str| {
        json!({"id": "cnt:7", "source": source, "sku": "TEE-1", "location": "DC1",
               "occurred_at": "2026-11-27T10:00:00Z", "set": {state: 5}, "reason": "count"})
    };
    // shop may not write on_hand: an override, stored without claiming the id.
    let (s, _) = call(&app, "POST", "/v1/events", SHOP, ev("shop", "on_hand")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, "POST", "/v1/events", WMS, ev("wms", "on_hand")).await;
    assert_eq!(s, StatusCode::OK);

    let (s, v) = call(&app, "GET", "/v1/events/wms/cnt:7", READ, Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["source"], "wms");
    assert_eq!(v["id"], "cnt:7");
    assert_eq!(v["outcome"], "applied");
    assert!(v.get("reason").is_none(), "{v}");
    assert!(v["received_at"].as_str().is_some());
    assert_eq!(v["event"]["sku"], "TEE-1");
    assert_eq!(v["event"]["set"]["on_hand"], 5);
    assert_eq!(v["event"]["reason"], "count");

    let (s, v) = call(&app, "GET", "/v1/events/shop/cnt:7", READ, Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "override");
    assert!(v["reason"].as_str().unwrap().contains("not applied"), "{v}");

    let (s, v) = call(&app, "GET", "/v1/events/wms/nope", READ, Value::Null).await;
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
    let (s, _) = call(&app, "POST", "/v1/events", WMS, cases).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = call(&app, "GET", "/v1/events/wms/rcv:1", READ, Value::Null).await;
    assert_eq!(v["event"]["adjust"]["on_hand"], 2, "{v}");
    assert_eq!(v["event"]["uom"], "CS");
    let (_, v) = call(
        &app,
        "GET",
        "/v1/inventory/TEE-1/history",
        READ,
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
    let (_, v) = call(&app, "GET", "/v1/inventory/TEE-1", READ, Value::Null).await;
    assert_eq!(v["locations"][0]["on_hand"], 5 + 24, "{v}");
}
