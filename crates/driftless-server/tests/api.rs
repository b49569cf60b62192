//! The HTTP API over real HTTP on 127.0.0.1, against the embedded SQLite store: each outcome, each
//! bad input answered with the right status and nothing stored, and authentication.

use driftless_config::Settings;
use driftless_server::{AppState, Server};
use driftless_store::SqliteStore;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

const CONFIG: &str = r#"
[server]
max_body_bytes = 2000000
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
committed = ["shop", "wms"]

[[units]]
sku = "TEE-*"
unit = "CS"
factor = 12

[[channels]]
id = "shop"
locations = ["DC1", "DC2"]
safety_stock = 2
pack = 1
"#;

struct TestApp {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

const WMS: &str = "wms-demo-token";
const SHOP: &str = "shop-demo-token";
const READ: &str = "read-demo-token";

async fn spawn_app() -> TestApp {
    spawn_with(CONFIG, |_| {}).await
}

/// A hub on `config` (appended to nothing: the whole file), with `tweak` applied to its state
/// before it serves (a fixed clock, ...).
async fn spawn_with(config: &str, tweak: impl FnOnce(&mut AppState)) -> TestApp {
    // reqwest is built without a default TLS provider (the connectors pick ring); install it once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = Settings::parse("test.toml", config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), settings.rules.clone(), settings.channel_specs())
        .await
        .unwrap();
    let mut state = AppState::new(settings, Arc::new(store));
    tweak(&mut state);
    let server = Server::bind("127.0.0.1:0", state).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        _dir: dir,
        stop: Some(tx),
        task,
    }
}

impl TestApp {
    async fn post(
        &self,
        token: &str,
        body: impl Into<reqwest::Body>,
        ndjson: bool,
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(token)
            .header(
                "content-type",
                if ndjson {
                    "application/x-ndjson"
                } else {
                    "application/json"
                },
            )
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Every ledger entry and incident, to prove a refused request stored nothing.
    async fn footprint(&self) -> (Value, Value) {
        let inv = self.get(READ, "/v1/inventory?limit=1000").await.1;
        let inc = self.get(READ, "/v1/incidents?limit=1000").await.1;
        (inv, inc)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn ev(id: &str, source: &str, sku: &str, at: &str, change: Value) -> Value {
    let mut e =
        json!({"id": id, "source": source, "sku": sku, "location": "DC1", "occurred_at": at});
    for (k, v) in change.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

fn outcomes(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_outcome_through_http() {
    let app = spawn_app().await;
    let t = |m: u32| format!("2026-11-27T10:{m:02}:00Z");
    let first = ev(
        "r1",
        "wms",
        "TEE-1",
        &t(1),
        json!({"adjust": {"on_hand": 1}, "uom": "CS"}),
    );
    let (s, b) = app.post(WMS, first.to_string(), false).await;
    assert_eq!(
        (s, outcomes(&b)),
        (StatusCode::OK, vec!["applied".to_owned()])
    );
    let (s, b) = app.post(WMS, first.to_string(), false).await;
    assert_eq!(
        (s, outcomes(&b)),
        (StatusCode::OK, vec!["duplicate".to_owned()])
    );
    let changed = ev(
        "r1",
        "wms",
        "TEE-1",
        &t(1),
        json!({"adjust": {"on_hand": 2}, "uom": "CS"}),
    );
    let (s, b) = app.post(WMS, changed.to_string(), false).await;
    assert_eq!(
        (s, outcomes(&b)),
        (StatusCode::CONFLICT, vec!["conflict".to_owned()])
    );
    let unknown_unit = ev(
        "r2",
        "wms",
        "TEE-1",
        &t(1),
        json!({"adjust": {"on_hand": 1}, "uom": "PAL"}),
    );
    let (s, b) = app.post(WMS, unknown_unit.to_string(), false).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(outcomes(&b), ["rejected"]);
    assert!(
        b["results"][0]["reason"].as_str().unwrap().contains("PAL"),
        "{b}"
    );

    let batch = json!([
        ev("c5", "wms", "TEE-1", &t(5), json!({"set": {"on_hand": 40}})),
        ev(
            "s3",
            "wms",
            "TEE-1",
            &t(3),
            json!({"adjust": {"on_hand": -2}})
        ),
        ev("c4", "wms", "TEE-1", &t(4), json!({"set": {"on_hand": 99}})),
        ev(
            "o7",
            "shop",
            "TEE-1",
            &t(7),
            json!({"adjust": {"on_hand": 5}})
        ),
        ev(
            "k8",
            "shop",
            "TEE-1",
            &t(8),
            json!({"adjust": {"committed": 3}})
        ),
    ]);
    // A token sends only as its own system: the mixed batch is refused whole.
    let (s, _) = app.post(WMS, batch.to_string(), false).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let nd: String = batch.as_array().unwrap()[..3]
        .iter()
        .map(|e| format!("{e}\n"))
        .collect();
    let (s, b) = app.post(WMS, nd, true).await;
    assert_eq!(
        (s, outcomes(&b)),
        (
            StatusCode::OK,
            vec!["applied".into(), "covered".into(), "stale".into()]
        )
    );
    let shop: Vec<Value> = batch.as_array().unwrap()[3..].to_vec();
    let (s, b) = app.post(SHOP, Value::Array(shop).to_string(), false).await;
    assert_eq!(
        (s, outcomes(&b)),
        (StatusCode::OK, vec!["override".into(), "applied".into()])
    );

    let (s, inv) = app.get(READ, "/v1/inventory/TEE-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(inv["locations"][0]["on_hand"], 40);
    assert_eq!(inv["locations"][0]["committed"], 3);
    assert_eq!(inv["locations"][0]["available"], 37);
    assert_eq!(
        inv["channels"][0],
        json!({"channel": "shop", "quantity": 35})
    );

    let (_, h) = app.get(READ, "/v1/inventory/TEE-1/history").await;
    let ids: Vec<&str> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "s3", "c4", "c5", "o7", "k8"]);
    assert_eq!(
        h["entries"][0]["adjust"]["on_hand"], 12,
        "history holds base units"
    );

    let (_, inc) = app.get(READ, "/v1/incidents?kind=override").await;
    assert_eq!(inc["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(inc["incidents"][0]["system"], "shop");
    let (s, _) = app.get(READ, "/v1/incidents?kind=nonsense").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get(READ, "/v1/inventory/NEVER").await.0,
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_stores_nothing() {
    let app = spawn_app().await;
    let ok = ev(
        "a",
        "wms",
        "TEE-1",
        "2026-11-27T10:00:00Z",
        json!({"adjust": {"on_hand": 1}}),
    );
    let before = app.footprint().await;
    let many: Vec<Value> = (0..10_001)
        .map(|i| {
            ev(
                &format!("m{i}"),
                "wms",
                "S",
                "2026-11-27T10:00:00Z",
                json!({"adjust": {"on_hand": 1}}),
            )
        })
        .collect();
    let huge = format!("[{}]", vec![ok.to_string(); 20_000].join(","));
    let cases: Vec<(&str, String, &str, StatusCode)> = vec![
        (
            "malformed JSON",
            "{\"id\": ".into(),
            WMS,
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong type",
            ok.to_string().replace("\"on_hand\":1", "\"on_hand\":\"1\""),
            WMS,
            StatusCode::BAD_REQUEST,
        ),
        (
            "fraction",
            ok.to_string().replace("\"on_hand\":1", "\"on_hand\":1.5"),
            WMS,
            StatusCode::BAD_REQUEST,
        ),
        (
            "both adjust and set",
            ev(
                "b",
                "wms",
                "S",
                "2026-11-27T10:00:00Z",
                json!({"adjust": {"on_hand": 1}, "set": {"on_hand": 1}}),
            )
            .to_string(),
            WMS,
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            ok.to_string()
                .replace("\"sku\"", "\"sku_id\":\"x\",\"sku\""),
            WMS,
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad timestamp",
            ok.to_string().replace("2026-11-27T10:00:00Z", "27/11/2026"),
            WMS,
            StatusCode::BAD_REQUEST,
        ),
        (
            "second event bad",
            format!("[{ok},{}]", ok.to_string().replace("\"a\"", "\"\"")),
            WMS,
            StatusCode::BAD_REQUEST,
        ),
        (
            "10,001 events",
            Value::Array(many).to_string(),
            WMS,
            StatusCode::BAD_REQUEST,
        ),
        ("oversize body", huge, WMS, StatusCode::PAYLOAD_TOO_LARGE),
        ("no token", ok.to_string(), "", StatusCode::UNAUTHORIZED),
        (
            "unknown token",
            ok.to_string(),
            "guess",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "read-only token",
            ok.to_string(),
            READ,
            StatusCode::FORBIDDEN,
        ),
        ("impersonation", ok.to_string(), SHOP, StatusCode::FORBIDDEN),
    ];
    for (what, body, token, want) in cases {
        let (status, b) = app.post(token, body, false).await;
        assert_eq!(status, want, "{what}: {b}");
        if want == StatusCode::BAD_REQUEST {
            assert_eq!(b["error"]["code"], "invalid_request", "{what}");
            assert!(
                !b["error"]["message"].as_str().unwrap().is_empty(),
                "{what}"
            );
        }
        assert_eq!(app.footprint().await, before, "{what} stored something");
    }
    let (_, b) = app
        .post(
            WMS,
            format!(
                "[{ok},{}]",
                ok.to_string().replace("\"on_hand\":1", "\"onhand\":1")
            ),
            false,
        )
        .await;
    assert_eq!(
        b["error"]["message"],
        "events[1].adjust.onhand: unknown state `onhand` (expected one of on_hand, committed, reserved, incoming, unavailable)"
    );
    // An unknown source system under a valid token is impersonation; the event is not stored.
    let ghost = ok.to_string().replace("\"wms\"", "\"ghost\"");
    assert_eq!(app.post(WMS, ghost, false).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.footprint().await, before);
    app.stop().await;
}

#[tokio::test]
async fn paging_and_health() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..25)
        .map(|i| {
            ev(
                &format!("p{i}"),
                "wms",
                &format!("SKU-{i:03}"),
                "2026-11-27T10:00:00Z",
                json!({"adjust": {"on_hand": i}}),
            )
        })
        .collect();
    assert_eq!(
        app.post(WMS, Value::Array(batch).to_string(), false)
            .await
            .0,
        StatusCode::OK
    );
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = if after.is_empty() {
            "/v1/inventory?limit=10".to_owned()
        } else {
            format!("/v1/inventory?limit=10&after={after}")
        };
        let (_, page) = app.get(READ, &path).await;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["sku"].as_str().unwrap().to_owned());
        }
        match page["next_after"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(app.get("", "/healthz").await.0, StatusCode::OK);
    assert_eq!(app.get("", "/readyz").await.0, StatusCode::OK);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("driftless_events_total{outcome=\"applied\"} 25\n"),
        "{metrics}"
    );
    assert_eq!(
        app.get(READ, "/v1/inventory?limit=0").await.0,
        StatusCode::BAD_REQUEST
    );
    app.stop().await;
}

/// The hub's clock, fixed for a test.
fn fixed_clock(at: &str) -> driftless_server::Clock {
    let t = chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .with_timezone(&chrono::Utc);
    Arc::new(move || t)
}

#[tokio::test]
async fn a_clock_too_far_ahead_is_rejected_and_does_not_claim_the_id() {
    let app = spawn_with(CONFIG, |st| st.clock = fixed_clock("2026-11-27T12:00:00Z")).await;
    // A count dated 2199 (a sender with a wrong clock) would make every real count `stale`.
    let wrong = ev(
        "c1",
        "wms",
        "TEE-1",
        "2199-01-01T00:00:00Z",
        json!({"set": {"on_hand": 7}}),
    );
    let (s, b) = app.post(WMS, wrong.to_string(), false).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(outcomes(&b), ["rejected"]);
    let reason = b["results"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("occurred_at "), "{reason}");
    assert!(reason.contains("max_future_skew"), "{reason}");
    assert_eq!(
        app.get(READ, "/v1/inventory/TEE-1").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, inc) = app.get(READ, "/v1/incidents?kind=rejected").await;
    assert_eq!(inc["incidents"].as_array().unwrap().len(), 1, "{inc}");

    // Four minutes ahead is ordinary drift (the default bound is five).
    let near = ev(
        "c0",
        "wms",
        "TEE-1",
        "2026-11-27T12:04:00Z",
        json!({"set": {"on_hand": 40}}),
    );
    assert_eq!(
        outcomes(&app.post(WMS, near.to_string(), false).await.1),
        ["applied"]
    );

    // The id was not claimed: the corrected event goes through under it, and the real count
    // after it is not stale.
    let fixed = ev(
        "c1",
        "wms",
        "TEE-1",
        "2026-11-27T12:05:00Z",
        json!({"set": {"on_hand": 50}}),
    );
    let (s, b) = app.post(WMS, fixed.to_string(), false).await;
    assert_eq!(
        (s, outcomes(&b)),
        (StatusCode::OK, vec!["applied".to_owned()]),
        "{b}"
    );
    let (_, inv) = app.get(READ, "/v1/inventory/TEE-1").await;
    assert_eq!(inv["locations"][0]["on_hand"], 50);
    app.stop().await;
}

#[tokio::test]
async fn max_future_skew_is_configurable() {
    let config = format!("{CONFIG}\n[ledger]\nmax_future_skew = \"30s\"\n");
    let app = spawn_with(&config, |st| st.clock = fixed_clock("2026-11-27T12:00:00Z")).await;
    let e = ev(
        "a",
        "wms",
        "TEE-1",
        "2026-11-27T12:01:00Z",
        json!({"adjust": {"on_hand": 1}}),
    );
    assert_eq!(
        outcomes(&app.post(WMS, e.to_string(), false).await.1),
        ["rejected"]
    );
    let e = ev(
        "b",
        "wms",
        "TEE-1",
        "2026-11-27T12:00:30Z",
        json!({"adjust": {"on_hand": 1}}),
    );
    assert_eq!(
        outcomes(&app.post(WMS, e.to_string(), false).await.1),
        ["applied"]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_key_given_twice_is_a_400_naming_the_field() {
    let app = spawn_app().await;
    let before = app.footprint().await;
    let body = r#"{"id":"d1","source":"wms","sku":"TEE-1","location":"DC1",
        "occurred_at":"2026-11-27T10:00:00Z","set":{"on_hand":1,"on_hand":5}}"#;
    let (s, b) = app.post(WMS, body, false).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "invalid_request");
    assert_eq!(
        b["error"]["message"],
        "events[0].set.on_hand: given twice; each key may appear only once in an object"
    );
    let top = body.replace(r#""sku":"TEE-1","#, r#""sku":"TEE-1","sku":"TEE-2","#);
    let (s, b) = app.post(WMS, top, false).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[0].sku: given twice"),
        "{b}"
    );
    assert_eq!(app.footprint().await, before, "nothing stored");
    app.stop().await;
}
