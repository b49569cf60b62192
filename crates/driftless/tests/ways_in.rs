//! The two ways in that other systems speak, end to end through the real binary: an EPCIS document
//! and its re-serialisation (keys reordered, other whitespace, `eventID` removed on both) applied
//! once; a Shopify `inventory_levels/update` webhook signed with the channel's secret, differing
//! from what the hub pushed, leading to a `channel_override` incident and the channel's reaction
//! (`on_override = "hold"`: the sku is held).

use driftless_connectors::shopify::webhook::sign;
use driftless_connectors::standin::{Faults, Mode, StandIn};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

mod common;

const SECRET: &str = "shop-webhook-secret";

fn config(push_url: &str) -> String {
    format!(
        r#"
[server]
read_token_sha256 = ["bf4d572bbc8e6a798375037e718180370d2ee05441bb9109bdb679e9558f7a95"] # read-demo-token

[[systems]]
id = "wms"
role = "wms"
token_sha256 = "79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35" # wms-demo-token

[[systems]]
id = "shop"
role = "storefront"

[authority]
on_hand = ["wms"]

[[units]]
sku = "TEE-*"
unit = "CS"
factor = 12

[[channels]]
id = "shop"
locations = ["DC1"]
connector = "webhook"
url = "{push_url}"
secret_env = "SHOP_SECRET"
on_override = "hold"

[[items]]
sku = "TEE-1"
gtin = "04012345123456"
shopify_inventory_item_id = "1152921504606846976"

[[locations]]
id = "DC1"
sgln = "urn:epc:id:sgln:4012345.00001.0"
shopify_location_id = "655441491"

[[hops]]
from = "wms"
to = "shop"
trigger = "event"
latency_sla = "1s"
direction = "one-way"
"#
    )
}

const DOC: &str = r#"{
  "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
  "type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "2026-11-27T12:00:00.000Z",
  "epcisBody": {"eventList": [
    {"type": "ObjectEvent", "eventTime": "2026-11-27T10:00:00.000+01:00", "eventTimeZoneOffset": "+01:00",
     "action": "OBSERVE", "bizStep": "receiving", "disposition": "in_progress",
     "quantityList": [{"epcClass": "urn:epc:class:lgtin:4012345.012345.LOT1", "quantity": 2, "uom": "CS"}],
     "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.7"},
     "bizLocation": {"id": "urn:epc:id:sgln:4012345.00001.0"},
     "bizTransactionList": [{"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:4012345000009:PO-7"}]},
    {"type": "ObjectEvent", "eventTime": "2026-11-27T11:00:00.000+01:00", "eventTimeZoneOffset": "+01:00",
     "action": "OBSERVE", "bizStep": "shipping", "disposition": "in_transit",
     "quantityList": [{"epcClass": "https://id.gs1.org/01/04012345123456/10/LOT1", "quantity": 5}],
     "bizLocation": {"id": "https://id.gs1.org/414/4012345000016"}}
  ]}
}"#;

/// The same document written by another system: keys in another order, other whitespace, and
/// `bizStep`/`disposition` as CBV URNs.
const REWRITTEN: &str = r#"{"epcisBody":{"eventList":[{"bizTransactionList":[{"bizTransaction":"urn:epcglobal:cbv:bt:4012345000009:PO-7","type":"po"}],
"bizLocation":{"id":"urn:epc:id:sgln:4012345.00001.0"},"readPoint":{"id":"urn:epc:id:sgln:4012345.00001.7"},"quantityList":[{"uom":"CS","quantity":2,"epcClass":"urn:epc:class:lgtin:4012345.012345.LOT1"}],
	"disposition":"urn:epcglobal:cbv:disp:in_progress","bizStep":"urn:epcglobal:cbv:bizstep:receiving","action":"OBSERVE","eventTimeZoneOffset":"+01:00","eventTime":"2026-11-27T09:00:00Z","type":"ObjectEvent"},
 {  "bizLocation" : { "id" : "https://id.gs1.org/414/4012345000016" } , "quantityList" : [ { "quantity" : 5 , "epcClass" : "https://id.gs1.org/01/04012345123456/10/LOT1" } ],
    "disposition" : "in_transit" , "bizStep" : "shipping" , "action" : "OBSERVE" , "eventTimeZoneOffset" : "+01:00" , "eventTime" : "2026-11-27T11:00:00.000+01:00" , "type" : "ObjectEvent" } ] },
 "creationDate":"2026-11-28T08:00:00.000Z","schemaVersion":"2.0","type":"EPCISDocument","@context":["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]}"#;

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epcis_applies_once_and_a_shopify_webhook_raises_an_override() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let standin = StandIn::start(
        Mode::Webhook {
            secret: SECRET.as_bytes().to_vec(),
        },
        Faults::none(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("driftless.toml");
    std::fs::write(&cfg, config(&standin.url("/push"))).unwrap();
    let mut child = common::driftless()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("DRIFTLESS_LOG", "warn")
        .env("SHOP_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = common::listening(&mut child);
    let http = reqwest::Client::new();
    let get = async |path: &str| -> Value {
        http.get(format!("{base}{path}"))
            .bearer_auth("read-demo-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let capture = async |body: &str| -> Value {
        let r = http
            .post(format!("{base}/v1/epcis/capture"))
            .bearer_auth("wms-demo-token")
            .header("content-type", "application/ld+json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    };

    // EPCIS: 2 CS received (24 EA), 5 EA shipped; the rewritten document is the same two events.
    let first = capture(DOC).await;
    let outcomes = |v: &Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(outcomes(&first), ["applied", "applied"], "{first:#}");
    let again = capture(REWRITTEN).await;
    assert_eq!(outcomes(&again), ["duplicate", "duplicate"], "{again:#}");
    for i in 0..2 {
        assert_eq!(
            first["results"][i]["event_hash"],
            again["results"][i]["event_hash"]
        );
        assert_eq!(
            first["results"][i]["events"][0]["id"],
            again["results"][i]["events"][0]["id"]
        );
    }
    let inv = get("/v1/inventory/TEE-1").await;
    assert_eq!(inv["locations"][0]["on_hand"], 19, "{inv:#}");

    // The hub pushes 19 to the channel; wait until the channel acknowledged it.
    wait_for("the first push", async || {
        !get("/v1/channels/shop").await["last_push"].is_null()
    })
    .await;

    // Someone set Shopify to 4 by hand: Shopify tells every app with a signed webhook. Its
    // `updated_at` has whole seconds; a report from before the acknowledgement says nothing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let body = format!(
        r#"{{"inventory_item_id":1152921504606846976,"location_id":655441491,"available":4,"updated_at":"{at}","admin_graphql_api_id":"gid:\/\/shopify\/InventoryLevel\/655441491?inventory_item_id=1152921504606846976"}}"#
    );
    let hook = async |hmac: String, id: &str| -> (u16, Value) {
        let r = http
            .post(format!("{base}/v1/adapters/shopify/shop/inventory-levels"))
            .header("content-type", "application/json")
            .header("x-shopify-topic", "inventory_levels/update")
            .header("x-shopify-webhook-id", id)
            .header("x-shopify-hmac-sha256", hmac)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    };
    assert_eq!(hook(sign(b"wrong", body.as_bytes()), "w-1").await.0, 401);
    let (s, v) = hook(sign(SECRET.as_bytes(), body.as_bytes()), "w-1").await;
    assert_eq!((s, &v["outcome"]), (200, &json!("observed")), "{v}");
    assert_eq!(v["acknowledged_quantity"], 19);
    assert_eq!(
        hook(sign(SECRET.as_bytes(), body.as_bytes()), "w-1")
            .await
            .1["outcome"],
        "duplicate"
    );

    // Past the hop's 1 s SLA: a channel_override incident, and the channel holds the sku.
    wait_for("the override incident", async || {
        get("/v1/incidents?kind=channel_override").await["incidents"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let inc = get("/v1/incidents?kind=channel_override").await;
    assert_eq!(inc["incidents"][0]["sku"], "TEE-1", "{inc:#}");
    wait_for("the hold", async || {
        get("/v1/channels/shop").await["held"]
            .as_array()
            .is_some_and(|h| h.contains(&json!("TEE-1")))
    })
    .await;

    let _ = child.kill();
    let _ = child.wait();
}
