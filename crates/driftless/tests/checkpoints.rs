//! Checkpoints through the real binary (DESIGN §7a): the two examples raise their
//! incidents (`negative_stock` then `overcommitted`; `cross_source_cover`), each rule refuses in
//! `reject` mode without claiming the id, and observations from any system open a
//! `handoff_drift` incident that closes when the system is back in line, an older observation
//! changing nothing and another system's token refused.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::{Child, Stdio};

mod common;

const EXAMPLE: &str = include_str!("../../../driftless.example.toml");

struct Hub {
    child: Child,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example configuration with `edits` applied (`(from, to)` replacements), served on a free
/// port with a fresh ledger.
fn hub(edits: &[(&str, &str)]) -> Hub {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = EXAMPLE.to_owned();
    for (from, to) in edits {
        assert!(cfg.contains(from), "the example has no {from:?}");
        cfg = cfg.replacen(from, to, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("driftless.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = common::driftless()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("DRIFTLESS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = common::listening(&mut child);
    Hub {
        child,
        base,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Hub {
    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, system: &str, event: Value) -> (StatusCode, Value) {
        self.post("/v1/events", &format!("{system}-demo-token"), event)
            .await
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth("read-demo-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn incidents(&self, kind: &str) -> Vec<Value> {
        self.get(&format!("/v1/incidents?kind={kind}")).await["incidents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn level(&self, sku: &str, state: &str) -> i64 {
        let v = self.get(&format!("/v1/inventory/{sku}")).await;
        v["locations"][0][state].as_i64().unwrap_or(i64::MIN)
    }
}

fn ev(id: &str, source: &str, at: &str, kind: &str, q: Value) -> Value {
    let mut e = json!({"id": id, "source": source, "sku": "TEE-1", "location": "DC1",
                       "occurred_at": at});
    e[kind] = q;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_stock_and_overcommitted_warn_with_values_and_the_event() {
    let h = hub(&[]);
    let count = ev(
        "count-1",
        "wms",
        "2026-11-27T09:00:00Z",
        "set",
        json!({"on_hand": 10}),
    );
    assert_eq!(h.send("wms", count).await.0, StatusCode::OK);
    let ship = ev(
        "ship-1",
        "wms",
        "2026-11-27T10:00:00Z",
        "adjust",
        json!({"on_hand": -25}),
    );
    let (s, b) = h.send("wms", ship).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["results"][0]["outcome"], "applied");
    assert_eq!(h.level("TEE-1", "on_hand").await, -15);
    let inc = h.incidents("negative_stock").await;
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert_eq!(inc[0]["event_id"], "ship-1");
    assert_eq!(inc[0]["system"], "wms");
    let detail = inc[0]["detail"].as_str().unwrap();
    assert!(detail.contains("on_hand 10 -> -15"), "{detail}");

    // The storefront then commits 40 against -15 on hand.
    let order = ev(
        "o-1",
        "shop",
        "2026-11-27T10:05:00Z",
        "adjust",
        json!({"committed": 40}),
    );
    let (_, b) = h.send("shop", order).await;
    assert_eq!(b["results"][0]["outcome"], "applied");
    let inc = h.incidents("overcommitted").await;
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert_eq!(inc[0]["event_id"], "o-1");
    assert_eq!(inc[0]["system"], "shop");
    let detail = inc[0]["detail"].as_str().unwrap();
    assert!(detail.contains("committed + reserved 0 -> 40"), "{detail}");
    assert!(detail.contains("on_hand -15 -> -15"), "{detail}");
    assert!(h.incidents("cross_source_cover").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_rejects_without_claiming_the_id() {
    let h = hub(&[
        ("negative_stock = \"warn\"", "negative_stock = \"reject\""),
        ("overcommitted = \"warn\"", "overcommitted = \"reject\""),
        ("# jump = \"warn\"", "jump = \"reject\""),
        ("# max_jump = 10000", "max_jump = 1000"),
        (
            "cross_source_cover = \"warn\"",
            "cross_source_cover = \"reject\"",
        ),
    ]);
    let count = ev(
        "count-1",
        "wms",
        "2026-11-27T09:00:00Z",
        "set",
        json!({"on_hand": 10}),
    );
    assert_eq!(h.send("wms", count).await.0, StatusCode::OK);

    // negative_stock: refused whole, nothing changes, the id stays free.
    let ship = ev(
        "ship-1",
        "wms",
        "2026-11-27T10:00:00Z",
        "adjust",
        json!({"on_hand": -25}),
    );
    let (s, b) = h.send("wms", ship).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["results"][0]["outcome"], "rejected");
    let reason = b["results"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("negative_stock: on_hand 10 -> -15"),
        "{reason}"
    );
    assert_eq!(h.level("TEE-1", "on_hand").await, 10);
    let inc = h.incidents("negative_stock").await;
    assert_eq!(inc.len(), 1);
    assert!(inc[0]["detail"].as_str().unwrap().starts_with("rejected: "));
    let fixed = ev(
        "ship-1",
        "wms",
        "2026-11-27T10:00:00Z",
        "adjust",
        json!({"on_hand": -5}),
    );
    let (s, b) = h.send("wms", fixed).await;
    assert_eq!(
        (s, &b["results"][0]["outcome"]),
        (StatusCode::OK, &json!("applied"))
    );
    assert_eq!(h.level("TEE-1", "on_hand").await, 5);

    // overcommitted: 6 committed against 5 on hand.
    let order = ev(
        "o-1",
        "shop",
        "2026-11-27T10:05:00Z",
        "adjust",
        json!({"committed": 6}),
    );
    let (s, b) = h.send("shop", order).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(
        b["results"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("overcommitted: ")
    );
    assert_eq!(h.level("TEE-1", "committed").await, 0);

    // jump: a receipt of 5000 with max_jump 1000.
    let rcv = ev(
        "rcv-1",
        "wms",
        "2026-11-27T10:10:00Z",
        "adjust",
        json!({"on_hand": 5000}),
    );
    let (s, b) = h.send("wms", rcv).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(
        b["results"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("jump: on_hand 5 -> 5005")
    );

    // cross_source_cover: shop commits 2 at 10:05; erp's set stamped 10:06 would swallow it.
    let order = ev(
        "o-2",
        "shop",
        "2026-11-27T10:05:00Z",
        "adjust",
        json!({"committed": 2}),
    );
    assert_eq!(h.send("shop", order).await.0, StatusCode::OK);
    let snap = ev(
        "erp-snap-1",
        "erp",
        "2026-11-27T10:06:00Z",
        "set",
        json!({"committed": 3}),
    );
    let (s, b) = h.send("erp", snap).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let reason = b["results"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("cross_source_cover: "), "{reason}");
    assert!(reason.contains("`shop` committed +2"), "{reason}");
    assert_eq!(
        h.level("TEE-1", "committed").await,
        2,
        "the order still counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_erp_set_covering_a_storefront_order_is_a_cross_source_cover() {
    let h = hub(&[]);
    let order = ev(
        "o-1",
        "shop",
        "2026-11-27T10:05:00Z",
        "adjust",
        json!({"committed": 2}),
    );
    assert_eq!(h.send("shop", order).await.0, StatusCode::OK);
    let snap = ev(
        "erp-snap-1",
        "erp",
        "2026-11-27T10:06:00Z",
        "set",
        json!({"committed": 3}),
    );
    let (s, b) = h.send("erp", snap).await;
    assert_eq!(
        (s, &b["results"][0]["outcome"]),
        (StatusCode::OK, &json!("applied"))
    );
    let inc = h.incidents("cross_source_cover").await;
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert_eq!(inc[0]["event_id"], "erp-snap-1");
    assert_eq!(inc[0]["system"], "erp");
    let detail = inc[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("`shop` committed +2 at 2026-11-27T10:05:00Z"),
        "{detail}"
    );
    assert!(detail.contains("committed 2 -> 3"), "{detail}");
}

fn rfc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_observation_drifting_past_the_sla_opens_and_closes_handoff_drift() {
    // wms -> erp with a one-second SLA; observation times are the systems' own, so the test
    // needs no waiting: they are a few seconds apart (within max_future_skew).
    let h = hub(&[("latency_sla = \"4h\"", "latency_sla = \"1s\"")]);
    let count = ev(
        "count-1",
        "wms",
        "2026-11-27T09:00:00Z",
        "set",
        json!({"on_hand": 100}),
    );
    assert_eq!(h.send("wms", count).await.0, StatusCode::OK);
    let t0 = chrono::Utc::now();
    let at = |s: i64| rfc(t0 + chrono::Duration::seconds(s));
    let obs = |q: i64, s: i64| {
        json!({"observations": [{"sku": "TEE-1", "location": "DC1", "state": "on_hand",
                                 "quantity": q, "observed_at": at(s)}]})
    };

    let (s, b) = h
        .post("/v1/observations", "erp-demo-token", obs(90, 0))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let r = &b["results"][0];
    assert_eq!(
        (r["outcome"].as_str(), r["expected"].as_i64()),
        (Some("drifting"), Some(100))
    );
    assert_eq!(r["handoff"], "wms->erp");
    assert!(r.get("incident").is_none(), "within the SLA: {r}");
    assert!(h.incidents("handoff_drift").await.is_empty());

    let (_, b) = h
        .post("/v1/observations", "erp-demo-token", obs(90, 2))
        .await;
    assert_eq!(b["results"][0]["incident"], "opened", "{b}");
    let inc = h.incidents("handoff_drift").await;
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert_eq!(inc[0]["system"], "erp");
    let detail = inc[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("wms->erp: shows 90, expected 100 (delta -10)"),
        "{detail}"
    );
    assert!(detail.contains("probable cause"), "{detail}");

    // An older observation (in line) changes nothing.
    let (_, b) = h
        .post("/v1/observations", "erp-demo-token", obs(100, 1))
        .await;
    assert_eq!(b["results"][0]["outcome"], "ignored", "{b}");
    assert_eq!(h.incidents("handoff_drift").await.len(), 1);

    // Back in line: closed.
    let (_, b) = h
        .post("/v1/observations", "erp-demo-token", obs(100, 3))
        .await;
    assert_eq!(b["results"][0]["incident"], "closed", "{b}");
    let inc = h.incidents("handoff_drift").await;
    assert_eq!(inc.len(), 2);
    assert!(
        inc[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("closed: wms->erp")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_are_refused_for_another_system_and_bad_input_names_the_field() {
    let h = hub(&[]);
    let now = rfc(chrono::Utc::now());
    let one = json!({"sku": "TEE-1", "location": "DC1", "state": "on_hand", "quantity": 1,
                     "observed_at": now});
    let (s, _) = h
        .post(
            "/v1/observations",
            "erp-demo-token",
            json!({"system": "wms", "observations": [one]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h
        .post(
            "/v1/observations",
            "read-demo-token",
            json!({"observations": [one]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h
        .post(
            "/v1/channels/shop/observations",
            "erp-demo-token",
            json!({"observations": [{"sku": "TEE-1", "quantity": 1}]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let mut bad = one.clone();
    bad["state"] = json!("on_hnad");
    let (s, b) = h
        .post(
            "/v1/observations",
            "erp-demo-token",
            json!({"observations": [one, bad]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let m = b["error"]["message"].as_str().unwrap();
    assert!(m.starts_with("observations[1].state: "), "{m}");
    let mut bad = one.clone();
    bad.as_object_mut().unwrap().remove("observed_at");
    let (s, b) = h
        .post(
            "/v1/observations",
            "erp-demo-token",
            json!({"observations": [bad]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("observations[0].observed_at")
    );
    // Nothing of a refused request was stored: the key's first observation is judged fresh.
    let (s, b) = h
        .post(
            "/v1/observations",
            "erp-demo-token",
            json!({"observations": [one]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["results"][0]["outcome"], "in_line");

    let many: Vec<Value> = (0..1001).map(|_| one.clone()).collect();
    let (s, b) = h
        .post(
            "/v1/observations",
            "erp-demo-token",
            json!({"observations": many}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_live_compares_the_hub_with_every_systems_latest_observations() {
    let h = hub(&[]);
    let count = ev(
        "count-1",
        "wms",
        "2026-11-27T09:00:00Z",
        "set",
        json!({"on_hand": 100}),
    );
    assert_eq!(h.send("wms", count).await.0, StatusCode::OK);
    let now = chrono::Utc::now();
    let obs = |q: i64, t: chrono::DateTime<chrono::Utc>| {
        json!({"observations": [{"sku": "TEE-1", "location": "DC1", "state": "on_hand",
                                 "quantity": q, "observed_at": rfc(t)}]})
    };
    let (s, b) = h
        .post("/v1/observations", "erp-demo-token", obs(90, now))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let data = h._dir.path().join("data");
    let cfg = h._dir.path().join("driftless.toml");
    let out = common::driftless()
        .args([
            "audit",
            "--live",
            "--no-history",
            "--format",
            "json",
            "--config",
        ])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let erp = rows
        .iter()
        .find(|r| r["handoff"] == "hub->erp")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(erp["sku"], "TEE-1");
    assert_eq!(erp["values"]["erp"], 90);
    assert_eq!(erp["expected"]["erp"], 100);

    // The matrix shows the hand-off's checkpoint.
    let m = h.get("/v1/matrix").await;
    let cp = m["checkpoints"].as_array().unwrap();
    assert_eq!(cp.len(), 1, "{m}");
    assert_eq!(cp[0]["handoff"], "wms->erp");
    assert_eq!(cp[0]["keys_drifting"], 1);
    assert_eq!(cp[0]["open_incidents"], 0);
}
