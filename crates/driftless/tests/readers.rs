//! Readers never break the hub: `audit --live` (storing its report for trends) and `trend`,
//! run again and again beside a `serve` on the same data directory while it ingests, all
//! succeed, every request is answered 200, and nothing is lost. (Before the read-only open, the
//! fourth run left every later group commit failing until the hub was restarted.)

mod common;

use serde_json::{Value, json};
use std::time::Duration;

/// More events than the hub keeps unindexed (200k), so that its later group commits write index
/// slices beside their events, as in the report.
const REQUESTS: usize = 450;
const PER_REQUEST: usize = 500;
const SKUS: usize = 50;

fn batch(r: usize) -> Value {
    Value::Array(
        (0..PER_REQUEST)
            .map(|i| {
                let n = r * PER_REQUEST + i;
                json!({
                    "id": format!("rcv:{n}"),
                    "source": "wms",
                    "sku": format!("RD-{:02}", n % SKUS),
                    "location": "DC1",
                    "occurred_at": "2026-11-27T10:00:00Z",
                    "seq": n,
                    "adjust": {"on_hand": 1},
                })
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_and_trends_beside_a_serving_hub_lose_nothing_and_break_nothing() {
    // reqwest is built without a default TLS provider (the connectors pick ring); install it once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // The example configuration (its demo tokens and `shop` channel), on a port of its own.
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../driftless.example.toml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("listen = \"127.0.0.1:7400\"", "listen = \"127.0.0.1:0\"");
    let config = dir.path().join("driftless.toml");
    std::fs::write(&config, text).unwrap();
    let data = dir.path().join("data");
    let (mut child, base) = common::serve(&config, &data);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest = {
        let (http, base, done) = (http.clone(), base.clone(), done.clone());
        tokio::spawn(async move {
            let mut failed = Vec::new();
            for r in 0..REQUESTS {
                let resp = http
                    .post(format!("{base}/v1/events"))
                    .bearer_auth("wms-demo-token")
                    .json(&batch(r))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if status != 200 {
                    failed.push((r, status, body.to_string()));
                } else {
                    let results = body["results"].as_array().unwrap();
                    assert!(
                        results.iter().all(|x| x["outcome"] == "applied"),
                        "request {r}: {body}"
                    );
                }
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            failed
        })
    };

    // Readers one after the other, for as long as the hub ingests (at least four rounds).
    let readers = {
        let (data, done) = (data.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            let mut runs = Vec::new();
            let mut round = 0;
            while round < 4 || !done.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                let audit = common::driftless()
                    .args(["audit", "--live", "--format", "json", "--data-dir"])
                    .arg(&data)
                    .output()
                    .unwrap();
                runs.push((round, "audit --live", audit));
                let trend = common::driftless()
                    .args(["trend", "--format", "json", "--data-dir"])
                    .arg(&data)
                    .output()
                    .unwrap();
                runs.push((round, "trend", trend));
            }
            (runs, round)
        })
    };
    let (runs, rounds) = readers.await.unwrap();
    let failed = ingest.await.unwrap();
    for (round, what, out) in &runs {
        // 0: no drift, 1: drift found (the example channel acknowledges nothing); 2 is a failure.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{what} round {round}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        failed.is_empty(),
        "requests refused beside the readers: {failed:?}"
    );

    // Nothing lost: every sku holds exactly its share of the events.
    for k in 0..SKUS {
        let v: Value = http
            .get(format!("{base}/v1/inventory/RD-{k:02}"))
            .bearer_auth("read-demo-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            v["locations"][0]["on_hand"],
            (REQUESTS * PER_REQUEST / SKUS) as i64,
            "RD-{k:02}: {v}"
        );
    }
    // And the hub still takes events after the readers are gone.
    let resp = http
        .post(format!("{base}/v1/events"))
        .bearer_auth("wms-demo-token")
        .json(&batch(REQUESTS))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // The stored audits reached the trend.
    let out = common::driftless()
        .args(["trend", "--format", "json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["audits"], rounds, "{t}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
