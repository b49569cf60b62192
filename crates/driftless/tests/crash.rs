//! Kill -9 at any moment loses no acknowledged event and applies none twice: the real binary is
//! killed while concurrent clients are being acknowledged, restarted on the same data directory,
//! and audited through its own HTTP API.

mod common;

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
auth = "none"

[[systems]]
id = "wms"
role = "wms"
"#;

/// Sends a request and reads its JSON answer.
async fn json(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

fn event(i: usize) -> Value {
    json!({
        "id": format!("e{i}"),
        "source": "wms",
        "sku": format!("K{:02}", i % 40),
        "location": "DC1",
        "occurred_at": "2026-11-27T10:00:00Z",
        "seq": i,
        "adjust": {"on_hand": 1},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_event_and_applies_none_twice() {
    // reqwest is built without a default TLS provider (the connectors pick ring); install it once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("driftless.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = dir.path().join("data");
    let (mut child, base) = common::serve(&config, &data);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let acked: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..16usize {
        let http = http.clone();
        let base = base.clone();
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            for r in 0.. {
                let ids: Vec<usize> = (0..20).map(|k| (c * 1_000_000) + r * 20 + k).collect();
                let body = Value::Array(ids.iter().map(|i| event(*i)).collect());
                let resp = http
                    .post(format!("{base}/v1/events"))
                    .json(&body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => return,
                        };
                        assert!(
                            v["results"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .all(|x| x["outcome"] == "applied")
                        );
                        acked.lock().unwrap().extend(ids);
                    }
                    // The server is gone: stop.
                    _ => return,
                }
            }
        }));
    }
    // Kill once a good number of requests have been acknowledged, in the middle of the stream.
    while acked.lock().unwrap().len() < 4000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked: HashSet<usize> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 4000);

    let (mut child, base) = common::serve(&config, &data);
    // Every acknowledged event is in the ledger; every sku's on_hand equals the number of its
    // events in the ledger (each adds 1), so none was applied twice.
    let mut stored: HashSet<usize> = HashSet::new();
    let mut per_sku: BTreeMap<String, usize> = BTreeMap::new();
    for k in 0..40 {
        let sku = format!("K{k:02}");
        let h: Value =
            json(http.get(format!("{base}/v1/inventory/{sku}/history?limit=10000"))).await;
        for e in h["entries"].as_array().unwrap() {
            let id: usize = e["id"].as_str().unwrap()[1..].parse().unwrap();
            assert!(stored.insert(id), "event {id} stored twice");
            *per_sku.entry(sku.clone()).or_default() += 1;
        }
        let inv: Value = json(http.get(format!("{base}/v1/inventory/{sku}"))).await;
        assert_eq!(
            inv["locations"][0]["on_hand"].as_u64().unwrap() as usize,
            per_sku[&sku],
            "{sku}"
        );
    }
    let lost: Vec<&usize> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );

    // Redelivering everything acknowledged applies nothing again.
    let mut all: Vec<usize> = acked.iter().copied().collect();
    all.sort_unstable();
    for chunk in all.chunks(1000) {
        let body = Value::Array(chunk.iter().map(|i| event(*i)).collect());
        let v: Value = json(http.post(format!("{base}/v1/events")).json(&body)).await;
        assert!(
            v["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["outcome"] == "duplicate")
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `[ledger] max_replay_events` reaches the store: after a SIGKILL that followed three times the
/// bound in events, the next start replays at most the bound and a group (the default bound would
/// replay all 30,000), and every event is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_replay_bound_bounds_the_replay_after_sigkill() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    const BOUND: usize = 10_000;
    const SENT: usize = 3 * BOUND;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("driftless.toml");
    std::fs::write(
        &config,
        format!("{CONFIG}\n[ledger]\nmax_replay_events = {BOUND}\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let (mut child, base) = common::serve(&config, &data);
    let http = reqwest::Client::new();
    let ids: Vec<usize> = (0..SENT).collect();
    for chunk in ids.chunks(1_000) {
        let body = Value::Array(chunk.iter().map(|i| event(*i)).collect());
        let v: Value = json(http.post(format!("{base}/v1/events")).json(&body)).await;
        let results = v["results"].as_array().unwrap();
        assert!(results.iter().all(|x| x["outcome"] == "applied"), "{v}");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let log = dir.path().join("restart.log");
    let mut child = common::driftless()
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env("DRIFTLESS_LOG", "driftless_store=info")
        .env("DRIFTLESS_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = common::listening(&mut child);
    let replayed: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "replayed the ledger tail")
        .map(|v| v["fields"]["events"].as_u64().unwrap())
        .collect();
    assert_eq!(replayed.len(), 1, "one replay on open: {replayed:?}");
    assert!(
        replayed[0] as usize <= BOUND + 1_000,
        "replayed {} events past a bound of {BOUND}",
        replayed[0]
    );
    let mut total = 0;
    for k in 0..40 {
        let inv: Value = json(http.get(format!("{base}/v1/inventory/K{k:02}"))).await;
        total += inv["locations"][0]["on_hand"].as_u64().unwrap() as usize;
    }
    assert_eq!(total, SENT);
    child.kill().unwrap();
    child.wait().unwrap();
}
