//! `POST /v1/epcis/capture` over real HTTP against the embedded store: every published document
//! (`../shared/fixtures`, read where it lies) answered without a server error and mapped once its
//! identifiers are configured; this project's fixtures for the table's rows and invalid input with
//! their documented answers and nothing stored; idempotency by eventID and by the event hash.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

mod common;

use common::{READ, SHOP, TEE_CASES, TestApp, WMS, outcomes, spawn};

fn config() -> String {
    common::config(
        "",
        &format!(
            r#"
[authority]
on_hand = ["wms"]
unavailable = ["wms"]
{TEE_CASES}
[[items]]
sku = "TEE-1"
gtin = "04012345123456"

[[locations]]
id = "DC1"
sgln = "urn:epc:id:sgln:4012345.00001.0"
"#
        ),
    )
}

impl TestApp {
    async fn capture(&self, token: &str, query: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/v1/epcis/capture{query}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/ld+json")
            .body(body)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn on_hand(&self, sku: &str) -> (i64, i64) {
        let v = self.get(READ, &format!("/v1/inventory/{sku}")).await.1;
        let l = &v["locations"][0];
        (
            l["on_hand"].as_i64().unwrap_or(0),
            l["unavailable"].as_i64().unwrap_or(0),
        )
    }
}

fn own(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../driftless-connectors/tests/fixtures/epcis")
            .join(name),
    )
    .unwrap()
}

fn shared(rel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.ancestors()
        .map(|a| a.join("../shared/fixtures"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no ../shared/fixtures above {}", root.display()))
        .join(rel)
}

#[tokio::test]
async fn rows_apply_once_and_redelivery_is_a_duplicate() {
    let app = spawn(&config()).await;
    let (s, v) = app.capture(WMS, "", own("rows.jsonld")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got = outcomes(&v);
    assert_eq!(
        got,
        [
            "applied", "applied", "applied", "applied", "applied", "applied", "applied", "applied",
            "applied", "applied", "ignored", "applied", "applied", "ignored", "ignored"
        ],
        "{v:#}"
    );
    assert_eq!(v["results"][5]["rule"], "R4");
    assert_eq!(
        v["results"][0]["events"][0]["id"],
        "urn:uuid:00000000-0000-4000-8000-000000000001#04012345123456"
    );
    let before = app.on_hand("TEE-1").await;
    let (s, v) = app.capture(WMS, "", own("rows.jsonld")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        outcomes(&v)
            .iter()
            .all(|o| o == "duplicate" || o == "ignored"),
        "{v:#}"
    );
    assert_eq!(app.on_hand("TEE-1").await, before);
    app.stop().await;
}

#[tokio::test]
async fn invalid_input_has_its_documented_answer_and_stores_nothing() {
    let app = spawn(&config()).await;
    let empty = app.footprint().await;
    // Quantity as text: the schema is broken, the document is refused whole.
    let (s, v) = app
        .capture(WMS, "", own("invalid-quantity-as-text.jsonld"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        v["error"]["message"],
        "epcisBody.eventList[0].quantityList[0].quantity: must be a number, not a string"
    );
    // Unknown class and unknown location: answered per event, nothing stored.
    for f in ["unknown-class.jsonld", "unknown-location.jsonld"] {
        let (s, v) = app.capture(WMS, "", own(f)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(outcomes(&v), ["rejected"], "{f}: {v}");
        assert!(
            v["results"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("is not under any")
        );
    }
    assert_eq!(app.footprint().await, empty);
    // The same as a single event answers 422.
    let doc: Value = serde_json::from_slice(&own("unknown-class.jsonld")).unwrap();
    let single = doc["epcisBody"]["eventList"][0].to_string().into_bytes();
    let (s, v) = app.capture(WMS, "", single).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(app.footprint().await, empty);
    // Missing uom: a whole count applies in EA, a fraction is rejected.
    let (s, v) = app.capture(WMS, "", own("missing-uom.jsonld")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(outcomes(&v), ["applied", "rejected"], "{v:#}");
    assert_eq!(app.on_hand("TEE-1").await, (5, 0));
    // Not JSON, not EPCIS, XML, read-only token, another system's source, no token.
    assert_eq!(
        app.capture(WMS, "", b"{".to_vec()).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.capture(WMS, "", br#"{"type":"Thing"}"#.to_vec())
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let xml = app
        .http
        .post(format!("{}/v1/epcis/capture", app.base))
        .bearer_auth(WMS)
        .header("content-type", "application/xml")
        .body("<epcis/>")
        .send()
        .await
        .unwrap();
    assert_eq!(xml.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.capture(READ, "", own("rows.jsonld")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.capture(WMS, "?source=shop", own("rows.jsonld")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.capture("nope", "", own("rows.jsonld")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The storefront may send, but on_hand is not its to write: the ledger's `override`.
    let before = app.on_hand("TEE-1").await;
    let (s, v) = app.capture(SHOP, "", own("fractional-cases.jsonld")).await;
    assert_eq!(
        (s, outcomes(&v)),
        (
            StatusCode::OK,
            vec!["override".to_owned(), "rejected".to_owned()]
        ),
        "{v:#}"
    );
    assert_eq!(app.on_hand("TEE-1").await, before);
    app.stop().await;
}

#[tokio::test]
async fn a_retraction_compensates_once() {
    let app = spawn(&config()).await;
    let doc: Value = serde_json::from_slice(&own("rows.jsonld")).unwrap();
    let original = doc["epcisBody"]["eventList"][5].clone(); // receiving 1 CS
    let mut declared = original.clone();
    declared["errorDeclaration"] =
        json!({"declarationTime": "2026-11-28T10:00:00.000+01:00", "reason": "incorrect_data"});
    let body = |e: &Value| {
        json!({"type": "EPCISDocument", "epcisBody": {"eventList": [e]}})
            .to_string()
            .into_bytes()
    };
    assert_eq!(
        outcomes(&app.capture(WMS, "", body(&original)).await.1),
        ["applied"]
    );
    assert_eq!(app.on_hand("TEE-1").await, (12, 0));
    let (_, v) = app.capture(WMS, "", body(&declared)).await;
    assert_eq!(outcomes(&v), ["applied"], "{v:#}");
    assert_eq!(v["results"][0]["retraction"], true);
    assert_eq!(app.on_hand("TEE-1").await, (0, 0));
    let (_, v) = app.capture(WMS, "", body(&declared)).await;
    assert_eq!(
        outcomes(&v),
        ["duplicate"],
        "a second declaration changes nothing"
    );
    assert_eq!(app.on_hand("TEE-1").await, (0, 0));
    app.stop().await;
}

/// Every quantity element's GTIN, every location and unit of a document.
fn identifiers(v: &Value, out: &mut (Vec<String>, Vec<String>, Vec<String>)) {
    match v {
        Value::Object(o) => {
            if let (Some(Value::String(c)), true) = (o.get("epcClass"), o.contains_key("quantity"))
            {
                if let Ok(g) = driftless_connectors::epcis::gs1::gtin_of(c) {
                    out.0.push(g);
                }
                if let Some(Value::String(u)) = o.get("uom") {
                    out.2.push(u.clone());
                }
            }
            for k in ["bizLocation", "readPoint"] {
                if let Some(id) = o.get(k).and_then(|l| l.get("id")).and_then(Value::as_str) {
                    out.1.push(id.to_owned());
                }
            }
            o.values().for_each(|x| identifiers(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| identifiers(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_published_document_is_answered_and_maps_when_configured() {
    let mut docs: Vec<PathBuf> = Vec::new();
    for (dir, ext) in [
        ("epcis/openepcis-test-resources", "json"),
        ("epcis-gs1/examples", "jsonld"),
    ] {
        for e in std::fs::read_dir(shared(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == ext) {
                docs.push(p);
            }
        }
    }
    docs.sort();
    // One configuration naming every GTIN, location and unit the documents use.
    let mut ids = (Vec::new(), Vec::new(), Vec::new());
    for f in &docs {
        identifiers(
            &serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap(),
            &mut ids,
        );
    }
    for v in [&mut ids.0, &mut ids.1, &mut ids.2] {
        v.sort();
        v.dedup();
    }
    let mut config = config();
    for (i, g) in ids.0.iter().enumerate() {
        config.push_str(&format!("\n[[items]]\nsku = \"GS1-{i}\"\ngtin = \"{g}\"\n"));
    }
    for (i, l) in ids.1.iter().enumerate() {
        config.push_str(&format!("\n[[locations]]\nid = \"L{i}\"\nsgln = \"{l}\"\n"));
    }
    for u in &ids.2 {
        config.push_str(&format!(
            "\n[[units]]\nsku = \"*\"\nunit = \"{u}\"\nfactor = 1000\n"
        ));
    }
    let app = spawn(&config).await;
    let mut applied = 0;
    for f in &docs {
        let (s, v) = app
            .capture(WMS, "?location=SITE", std::fs::read(f).unwrap())
            .await;
        assert_eq!(s, StatusCode::OK, "{}: {v}", f.display());
        for r in v["results"].as_array().unwrap() {
            assert_ne!(r["outcome"], "rejected", "{}: {r}", f.display());
            for e in r["events"].as_array().into_iter().flatten() {
                assert!(
                    ["applied", "duplicate", "stale", "covered"]
                        .contains(&e["outcome"].as_str().unwrap()),
                    "{}: {e}",
                    f.display()
                );
                applied += usize::from(e["outcome"] == "applied");
            }
        }
    }
    assert!(applied >= 20, "{applied}");
    app.stop().await;
}
