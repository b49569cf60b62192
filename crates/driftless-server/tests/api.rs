//! The HTTP API over real HTTP on 127.0.0.1, against the embedded SQLite store: each outcome, each
//! bad input answered with the right status and nothing stored, and authentication.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

mod common;

use common::{
    OPERATOR, OPERATOR_DIGEST, READ, SHOP, TEE_CASES, TestApp, WMS, ev, outcomes, spawn_with,
};

fn config() -> String {
    common::config(
        &format!("max_body_bytes = 2000000\n{OPERATOR_DIGEST}"),
        &format!(
            r#"
[authority]
on_hand = ["wms"]
committed = ["shop", "wms"]
{TEE_CASES}
[[channels]]
id = "shop"
locations = ["DC1", "DC2"]
safety_stock = 2
pack = 1
"#
        ),
    )
}

async fn spawn_app() -> TestApp {
    spawn_with(&config(), |_| {}).await
}

impl TestApp {
    async fn post(
        &self,
        token: &str,
        body: impl Into<reqwest::Body>,
        ndjson: bool,
    ) -> (StatusCode, Value) {
        let content_type = if ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        self.post_events(token, body, content_type).await
    }
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
    // In the unit sent (1 CS), with the base units beside it.
    assert_eq!(
        h["entries"][0]["adjust"]["on_hand"], 1,
        "history shows the unit sent"
    );
    assert_eq!(h["entries"][0]["uom"], "CS");
    assert_eq!(
        h["entries"][0]["base"]["on_hand"], 12,
        "history holds base units beside"
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
    let app = spawn_with(&config(), |st| {
        st.clock = fixed_clock("2026-11-27T12:00:00Z")
    })
    .await;
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
    let config = format!("{}\n[ledger]\nmax_future_skew = \"30s\"\n", config());
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

/// Sends `head` (and `body`) on a fresh connection and reads until the hub answers or closes,
/// at most `wait`. Returns what was read.
async fn raw(base: &str, head: &str, body: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "no answer".to_owned(),
    }
}

use std::time::Duration;

#[tokio::test]
async fn a_request_without_a_valid_token_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    // Headers announcing 3 MB, and no body at all: the answer must not wait for it.
    for path in [
        "/v1/events",
        "/v1/channels/shop/observations",
        "/v1/channels/shop/replay",
    ] {
        for auth in ["", "Authorization: Bearer guess\r\n"] {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: hub\r\n{auth}Content-Type: application/json\r\n\
                 Content-Length: 3000000\r\n\r\n"
            );
            let answer = raw(&app.base, &head, b"", Duration::from_secs(5)).await;
            assert!(
                answer.starts_with("HTTP/1.1 401"),
                "{path} {auth:?}: {answer}"
            );
        }
    }
    // And the whole 3 MB sent anyway is a 401, not a 413.
    let big = vec![b' '; 3_000_000];
    let r = app
        .http
        .post(format!("{}/v1/channels/shop/observations", app.base))
        .body(big)
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    app.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = app
            .http
            .get(format!("{}/v1/incidents", app.base))
            .header("authorization", format!("{scheme} {READ}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{scheme}");
    }
    app.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let config = config().replace(
        "[server]\n",
        "[server]\nheader_read_timeout = \"500ms\"\nbody_read_timeout = \"500ms\"\n",
    );
    let app = spawn_with(&config, |_| {}).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Headers dribbled a byte every 100 ms: the connection is closed once the header timeout
    // passes, long before the client would finish.
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /v1/incidents HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for _ in 0..50 {
        if s.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "a header dribbled for 5 s was still being read");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A body dribbled after complete headers: 408 after the body timeout.
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {WMS}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    for _ in 0..50 {
        let _ = s.write_all(b" ").await;
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
        {
            answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            break;
        }
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // An idle kept-alive connection is closed after the same header timeout.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("an idle keep-alive connection stayed open for 3 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        idle.elapsed() >= Duration::from_millis(400),
        "{:?}",
        idle.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn replay_needs_an_operator_token_and_observations_the_channels_own() {
    let app = spawn_app().await;
    let post = |token: &'static str, path: &'static str, body: Value| {
        let req = app
            .http
            .post(format!("{}{path}", app.base))
            .bearer_auth(token)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Releasing a hold or a dead letter changes what the hub does: operators only.
    for token in [WMS, SHOP, READ] {
        let (s, b) = post(token, "/v1/channels/shop/replay", json!({})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{token}: {b}");
    }
    let (s, b) = post(SHOP, "/v1/channels/shop/replay", json!({})).await;
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("operator_token_sha256"),
        "{b}"
    );
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = post(
        OPERATOR,
        "/v1/channels/shop/replay",
        json!({"sku": "TEE-1"}),
    )
    .await;
    assert_eq!((s, &b["replayed"]), (StatusCode::OK, &json!(0)), "{b}");
    // Holding a sku is an operator's act too; the hold shows on the channel until released.
    for token in [WMS, SHOP, READ] {
        let (s, b) = post(token, "/v1/channels/shop/hold", json!({"sku": "TEE-1"})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{token}: {b}");
    }
    let held = || async {
        let r = app
            .http
            .get(format!("{}/v1/channels/shop", app.base))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["held"].clone()
    };
    assert_eq!(held().await, json!([]));
    let (s, b) = post(OPERATOR, "/v1/channels/shop/hold", json!({"sku": "TEE-1"})).await;
    assert_eq!((s, &b["held"]), (StatusCode::OK, &json!(true)), "{b}");
    assert_eq!(held().await, json!(["TEE-1"]));
    let (s, _) = post(OPERATOR, "/v1/channels/shop/hold", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = post(OPERATOR, "/v1/channels/nope/hold", json!({"sku": "TEE-1"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = post(
        OPERATOR,
        "/v1/channels/shop/replay",
        json!({"sku": "TEE-1"}),
    )
    .await;
    assert_eq!((s, &b["replayed"]), (StatusCode::OK, &json!(1)), "{b}");
    assert_eq!(held().await, json!([]));

    // A system reports observations only for its own channel.
    let obs = json!({"observations": [{"sku": "TEE-1", "quantity": 3}]});
    assert_eq!(
        post(WMS, "/v1/channels/shop/observations", obs.clone())
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(READ, "/v1/channels/shop/observations", obs.clone())
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(SHOP, "/v1/channels/shop/observations", obs.clone())
            .await
            .0,
        StatusCode::OK
    );

    // An operator is no system: it sends no events. It reads like a reader.
    let e = ev(
        "x",
        "wms",
        "TEE-1",
        "2026-11-27T10:00:00Z",
        json!({"adjust": {"on_hand": 1}}),
    );
    assert_eq!(
        app.post(OPERATOR, e.to_string(), false).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.get(OPERATOR, "/v1/incidents").await.0, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_closed_ledger_answers_503_with_retry_after() {
    use driftless_store::Store;
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let (state, store) = common::open(&config(), dir.path()).await;
    let app = driftless_server::app(state);
    // What a request finds while the hub shuts down: the ledger already closed.
    store.close().await;
    let e = ev(
        "x",
        "wms",
        "TEE-1",
        "2026-11-27T10:00:00Z",
        json!({"adjust": {"on_hand": 1}}),
    );
    let req = axum::http::Request::post("/v1/events")
        .header("authorization", format!("Bearer {WMS}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(e.to_string()))
        .unwrap();
    let r = app.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    // A read finds the read pool closed: the same answer, not a 500.
    let req = axum::http::Request::get("/v1/inventory/TEE-1")
        .header("authorization", format!("Bearer {READ}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let r = app.oneshot(req).await.unwrap();
    assert_eq!(r.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
}
