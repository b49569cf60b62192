//! The operator's surfaces over real HTTP against the embedded SQLite store: inventory as of a
//! moment and its version, stored audits, `/metrics` read by a real Prometheus parser,
//! `/openapi.json` checked by a real OpenAPI validator and against the router's routes, request ids.

use driftless_store::{AuditRecord, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

use common::{READ, SHOP, TestApp, WMS, ev, spawn};

fn config() -> String {
    common::config(
        "",
        r#"
[authority]
on_hand = ["wms"]
committed = ["shop", "wms"]

[[channels]]
id = "shop"
locations = ["DC1", "DC2"]
safety_stock = 2
pack = 1

[[hops]]
from = "wms"
to = "shop"
trigger = "event"
latency_sla = "5s"
direction = "one-way"
"#,
    )
}

async fn spawn_app() -> TestApp {
    spawn(&config()).await
}

impl TestApp {
    async fn post(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.post_events(token, body.to_string(), "application/json")
            .await
    }

    async fn text(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.headers().clone(), r.text().await.unwrap())
    }
}

fn on_hand(inv: &Value) -> Vec<(String, i64)> {
    inv["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["location"].as_str().unwrap().to_owned(),
                l["on_hand"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// An event for A-1 at DC1, `change` merged in.
fn a1_event(id: &str, source: &str, at: &str, change: Value) -> Value {
    ev(id, source, "A-1", at, change)
}

/// An adjustment of A-1's on_hand at DC1 `by`.
fn adjust_a1(id: &str, source: &str, at: &str, by: i64) -> Value {
    a1_event(id, source, at, json!({"adjust": {"on_hand": by}}))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

async fn pause() {
    // Receipt times are the hub's clock; a few milliseconds keep two batches apart.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
}

#[tokio::test]
async fn inventory_as_of_a_moment_is_what_the_hub_knew_then() {
    let app = spawn_app().await;
    let before_anything = now();
    pause().await;
    let (s, _) = app
        .post(
            WMS,
            a1_event(
                "c1",
                "wms",
                "2026-11-20T10:00:00Z",
                json!({"set": {"on_hand": 50}}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    pause().await;
    let t1 = now();
    pause().await;
    let a1 = adjust_a1("a1", "wms", "2026-11-20T11:00:00Z", -3);
    // Positioned before the count: the count already holds it (covered).
    let a0 = adjust_a1("a0", "wms", "2026-11-20T09:00:00Z", -9);
    // The storefront is not a source of truth for on_hand: held back.
    let o1 = adjust_a1("o1", "shop", "2026-11-20T12:00:00Z", -40);
    let (s, _) = app
        .post(WMS, json!([a1.clone(), a0.clone(), o1.clone()]))
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a token sends only as its own system"
    );
    for (token, body) in [(WMS, json!([a1, a0])), (SHOP, json!([o1]))] {
        let (s, v) = app.post(token, body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    pause().await;
    let t2 = now();
    pause().await;
    app.post(
        WMS,
        a1_event(
            "b1",
            "wms",
            "2026-11-20T13:00:00Z",
            json!({"adjust": {"on_hand": 5}, "location": "DC2"}),
        ),
    )
    .await;

    let (s, live) = app.get(READ, "/v1/inventory/A-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(on_hand(&live), [("DC1".into(), 47), ("DC2".into(), 5)]);
    let version = live["version"].as_i64().expect("a version");

    // As of now: the same as the live answer.
    let (s, folded) = app
        .get(READ, &format!("/v1/inventory/A-1?at={}", urlencode(&now())))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(folded["locations"], live["locations"]);
    assert_eq!(folded["channels"], live["channels"]);
    assert_eq!(folded["version"], live["version"]);

    let (_, page) = app.get(READ, "/v1/inventory?limit=10").await;
    assert_eq!(
        page["items"][0]["version"], live["version"],
        "the listing carries versions too"
    );
    let (_, at1) = app
        .get(READ, &format!("/v1/inventory/A-1?at={}", urlencode(&t1)))
        .await;
    assert_eq!(on_hand(&at1), [("DC1".into(), 50)]);
    assert_eq!(at1["channels"][0]["quantity"], 48, "{at1}");
    let v1 = at1["version"].as_i64().unwrap();
    let (_, at2) = app
        .get(READ, &format!("/v1/inventory/A-1?at={}", urlencode(&t2)))
        .await;
    assert_eq!(
        on_hand(&at2),
        [("DC1".into(), 47)],
        "covered and held-back entries change nothing"
    );
    let v2 = at2["version"].as_i64().unwrap();
    assert!(v1 < v2 && v2 < version, "{v1} {v2} {version}");

    // Before the sku was seen: no locations, no version; never seen at all: 404; bad instant: 400.
    let (s, early) = app
        .get(
            READ,
            &format!("/v1/inventory/A-1?at={}", urlencode(&before_anything)),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(early["locations"], json!([]));
    assert_eq!(early["version"], Value::Null);
    let (s, _) = app
        .get(READ, &format!("/v1/inventory/NOPE?at={}", urlencode(&t1)))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = app.get(READ, "/v1/inventory/A-1?at=yesterday").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["code"], "invalid_request");

    // A later change moves the version; a duplicate does not.
    app.post(WMS, adjust_a1("a2", "wms", "2026-11-20T14:00:00Z", 1))
        .await;
    let (_, after) = app.get(READ, "/v1/inventory/A-1").await;
    assert!(after["version"].as_i64().unwrap() > version);
    app.post(WMS, adjust_a1("a2", "wms", "2026-11-20T14:00:00Z", 1))
        .await;
    let (_, again) = app.get(READ, "/v1/inventory/A-1").await;
    assert_eq!(again["version"], after["version"]);
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn stored_audits_are_listed_newest_first_and_read_by_id() {
    let app = spawn_app().await;
    let (s, empty) = app.get(READ, "/v1/audits").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(empty, json!({"audits": [], "next_before": null}));
    let mut ids = Vec::new();
    for i in 0..5 {
        let report = json!({"at": format!("2026-11-2{i}T12:00:00Z"), "skus_compared": 10, "drifting": i,
            "handoffs": [{"handoff": "wms->erp", "drifting_skus": i, "abs_units": 3 * i}], "rows": []});
        let rec = AuditRecord {
            at: format!("2026-11-2{i}T12:00:00Z").parse().unwrap(),
            skus_compared: 10,
            drifting: i,
            handoffs: vec![("wms->erp".into(), i, 3 * i)],
            report_json: report.to_string(),
        };
        ids.push(app.store.save_audit(&rec).await.unwrap());
    }
    let (_, page) = app.get(READ, "/v1/audits?limit=2").await;
    let got: Vec<i64> = page["audits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [ids[4], ids[3]]);
    assert_eq!(
        page["audits"][0]["handoffs"][0],
        json!({"handoff": "wms->erp", "drifting_skus": 4, "abs_units": 12})
    );
    let next = page["next_before"].as_i64().unwrap();
    let (_, rest) = app
        .get(READ, &format!("/v1/audits?before={next}&limit=10"))
        .await;
    assert_eq!(rest["audits"].as_array().unwrap().len(), 3);
    assert_eq!(rest["next_before"], Value::Null);

    let (s, one) = app.get(READ, &format!("/v1/audits/{}", ids[2])).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["drifting"], 2);
    assert_eq!(one["at"], "2026-11-22T12:00:00Z");
    assert_eq!(one["report"]["handoffs"][0]["abs_units"], 6);
    let (s, _) = app.get(READ, "/v1/audits/999").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.get(READ, "/v1/audits/x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app.get(READ, "/v1/audits?limit=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app.get("wrong", "/v1/audits").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// Runs `python3` with a module installed from PyPI when it is missing (the test's own setup).
fn python(module: &str, package: &str, script: &str, args: &[&str]) -> String {
    let have = |m: &str| {
        std::process::Command::new("python3")
            .args(["-c", &format!("import {m}")])
            .status()
            .expect("python3 is needed by this test")
            .success()
    };
    if !have(module) {
        let st = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "-q", package])
            .status()
            .unwrap();
        assert!(st.success(), "pip install {package} failed");
    }
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

const PARSE_METRICS: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(open(sys.argv[1]).read()):
    out[f.name] = {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;

fn sample(families: &Value, family: &str, name: &str, labels: Value) -> Option<f64> {
    families[family]["samples"]
        .as_array()?
        .iter()
        .find(|s| {
            s[0] == name
                && labels
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| s[1][k] == *v)
        })
        .and_then(|s| s[2].as_f64())
}

#[tokio::test]
async fn metrics_are_prometheus_text_a_real_parser_reads() {
    let app = spawn_app().await;
    app.post(
        WMS,
        json!([
            ev(
                "m1",
                "wms",
                "M-1",
                "2026-11-20T10:00:00Z",
                json!({"set": {"on_hand": 10}})
            ),
            ev(
                "m2",
                "wms",
                "M-1",
                "2026-11-20T11:00:00Z",
                json!({"adjust": {"on_hand": -1}})
            ),
            ev(
                "m3",
                "wms",
                "M-2",
                "2026-11-20T11:00:00Z",
                json!({"adjust": {"on_hand": 4}, "uom": "PALLET"})
            ),
        ]),
    )
    .await;
    app.post(
        SHOP,
        ev(
            "m4",
            "shop",
            "M-1",
            "2026-11-20T12:00:00Z",
            json!({"adjust": {"on_hand": -1}}),
        ),
    )
    .await;
    app.store
        .save_audit(&AuditRecord {
            at: "2026-11-20T12:00:00Z".parse().unwrap(),
            skus_compared: 40,
            drifting: 3,
            handoffs: vec![("wms->erp".into(), 2, 7), ("erp->shop".into(), 1, 1)],
            report_json: "{}".into(),
        })
        .await
        .unwrap();
    let (s, headers, text) = app.text("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let parsed: Value = serde_json::from_str(&python(
        "prometheus_client",
        "prometheus_client",
        PARSE_METRICS,
        &[file.to_str().unwrap()],
    ))
    .unwrap();
    let f = &parsed;
    assert_eq!(
        sample(
            f,
            "driftless_events",
            "driftless_events_total",
            json!({"outcome": "applied"})
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            f,
            "driftless_events",
            "driftless_events_total",
            json!({"outcome": "rejected"})
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            f,
            "driftless_source_events",
            "driftless_source_events_total",
            json!({"source": "shop", "outcome": "override"})
        ),
        Some(1.0)
    );
    assert_eq!(f["driftless_ingest_seconds"]["type"], "histogram");
    assert_eq!(
        sample(
            f,
            "driftless_ingest_seconds",
            "driftless_ingest_seconds_count",
            json!({})
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            f,
            "driftless_ingest_seconds",
            "driftless_ingest_seconds_bucket",
            json!({"le": "+Inf"})
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            f,
            "driftless_writer_queue_depth",
            "driftless_writer_queue_depth",
            json!({})
        ),
        Some(0.0)
    );
    assert!(
        sample(
            f,
            "driftless_channel_pending",
            "driftless_channel_pending",
            json!({"channel": "shop"})
        )
        .is_some()
    );
    assert_eq!(
        sample(
            f,
            "driftless_hop_sla_seconds",
            "driftless_hop_sla_seconds",
            json!({"from": "wms", "to": "shop"})
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            f,
            "driftless_drift_skus",
            "driftless_drift_skus",
            json!({"handoff": "wms->erp"})
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            f,
            "driftless_drift_abs_units",
            "driftless_drift_abs_units",
            json!({"handoff": "erp->shop"})
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            f,
            "driftless_audit_drifting_skus",
            "driftless_audit_drifting_skus",
            json!({})
        ),
        Some(3.0)
    );
    for fam in [
        "driftless_pushes",
        "driftless_push_seconds",
        "driftless_hop_latency_seconds",
    ] {
        assert!(
            f.get(fam).is_some(),
            "{fam} is described even before any push"
        );
    }
    // No unbounded labels: never a sku.
    for fam in f.as_object().unwrap().values() {
        for s in fam["samples"].as_array().unwrap() {
            assert!(s[1].get("sku").is_none(), "{s}");
            assert!(!s[1].to_string().contains("M-1"), "{s}");
        }
    }
    app.stop().await;
}

const VALIDATE_OPENAPI: &str = r#"
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
doc = json.load(open(sys.argv[1]))
validate(doc)
print(doc["openapi"])
"#;

/// Every `.route("path", method(...))` the server's source registers.
fn routes_in_source() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for f in std::fs::read_dir(dir).unwrap() {
            let path = f.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for part in text.split(".route(").skip(1) {
            let part = part.trim_start();
            let Some(rest) = part.strip_prefix('"') else {
                continue;
            };
            let path = rest.split('"').next().unwrap().to_owned();
            let after = rest[path.len() + 1..].trim_start_matches([',', ' ', '\n', '\r', '\t']);
            let method: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.push((path, method));
            } else {
                let methods: Vec<&str> = ["get", "post", "put", "patch", "delete"]
                    .into_iter()
                    .filter(|m| after.contains(&format!("{m}(")))
                    .collect();
                out.push((path, methods.first().copied().unwrap_or("get").to_owned()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn openapi_is_valid_and_describes_every_route() {
    let app = spawn_app().await;
    let (s, headers, text) = app.text("/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let version = python(
        "openapi_spec_validator",
        "openapi-spec-validator",
        VALIDATE_OPENAPI,
        &[file.to_str().unwrap()],
    );
    assert_eq!(version.trim(), "3.1.0");

    // Every route in the source is described...
    let routes = routes_in_source();
    assert!(routes.len() >= 15, "{routes:?}");
    for (path, method) in &routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is served but not in /openapi.json"
        );
    }
    // ...and every described operation is served: the router's own 404 has no body, 405 means
    // the method is not routed.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!(
                "{}{}",
                app.base,
                path.replace("{sku}", "NOPE")
                    .replace("{id}", "shop")
                    .replace("{file}", "app.js")
            );
            let r = app
                .http
                .request(method.to_uppercase().parse().unwrap(), &url)
                .bearer_auth(READ)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.bytes().await.unwrap();
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED
                    && !(status == StatusCode::NOT_FOUND && body.is_empty()),
                "{method} {path} is described but not routed ({status})"
            );
        }
    }
    // The explorer is one offline page.
    let (s, _, page) = app.text("/api").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("/openapi.json") && !page.contains("https://"));
    app.stop().await;
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 16);
    let r = app
        .http
        .get(format!("{}/v1/inventory/NOPE", app.base))
        .header("x-request-id", "trace-me.1")
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["x-request-id"], "trace-me.1");
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "not ok")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "not ok");
    app.stop().await;
}

/// Not a check: prints what a long history costs the inventory read (it folds the ledger for the
/// version) and the as-of read. `cargo test -p driftless-server --test console -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn measure_reads_over_a_long_history() {
    let app = spawn_app().await;
    for n in [10usize, 1_000, 10_000] {
        let sku = format!("LONG-{n}");
        let mut batch = Vec::new();
        for i in 0..n {
            batch.push(ev(
                &format!("{sku}-{i}"),
                "wms",
                &sku,
                &format!(
                    "2026-11-20T10:00:{:02}.{:06}Z",
                    i / 1_000_000 % 60,
                    i % 1_000_000
                ),
                if i % 100 == 0 {
                    json!({"set": {"on_hand": 1000}})
                } else {
                    json!({"adjust": {"on_hand": -1}})
                },
            ));
            if batch.len() == 1000 {
                app.post(WMS, Value::Array(std::mem::take(&mut batch)))
                    .await;
            }
        }
        if !batch.is_empty() {
            app.post(WMS, Value::Array(batch)).await;
        }
        for (label, path) in [
            (
                "history",
                format!("/v1/inventory/{sku}/history?limit=10000"),
            ),
            ("now", format!("/v1/inventory/{sku}")),
            (
                "as of",
                format!("/v1/inventory/{sku}?at={}", urlencode(&now())),
            ),
        ] {
            let started = std::time::Instant::now();
            let rounds = 20;
            for _ in 0..rounds {
                let (s, _) = app.get(READ, &path).await;
                assert_eq!(s, StatusCode::OK);
            }
            println!(
                "{n:>6} entries, {label:>5}: {:.2} ms per read",
                started.elapsed().as_secs_f64() * 1e3 / rounds as f64
            );
        }
    }
    app.stop().await;
}
