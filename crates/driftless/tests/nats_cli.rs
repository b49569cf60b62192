//! `driftless serve --nats-url` as a real process over real HTTP, against the machine's NATS
//! JetStream (127.0.0.1:4222, or `DRIFTLESS_TEST_NATS_URL`). Each test uses a stream of its own
//! (`DRIFTLESS_NATS_PREFIX`) and deletes it. Outside CI a missing NATS skips the test with one
//! printed line; with `CI=true` it fails.

mod common;

use async_nats::jetstream;
use driftless_bus::BusOptions;
use serde_json::{Value, json};
use std::process::{Child, Stdio};
use std::time::Duration;

fn nats_url() -> Option<String> {
    let url = std::env::var("DRIFTLESS_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let addr = url.trim_start_matches("nats://").to_owned();
    if std::net::TcpStream::connect_timeout(
        &addr.parse().expect("DRIFTLESS_TEST_NATS_URL: host:port"),
        Duration::from_secs(2),
    )
    .is_ok()
    {
        return Some(url);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("NATS is not reachable at {url} and CI=true: the JetStream tests must run");
    }
    println!("skipped: NATS is not reachable at {url} (start nats-server -js to run these tests)");
    None
}

struct Hub {
    child: Child,
    base: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &std::path::Path, url: &str, prefix: &str, wait_ms: u64) -> Hub {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut child = common::driftless()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--nats-url",
            url,
            "--data-dir",
        ])
        .arg(data)
        .env("DRIFTLESS_NATS_PREFIX", prefix)
        .env("DRIFTLESS_NATS_WAIT_MS", wait_ms.to_string())
        .env("DRIFTLESS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start driftless");
    let base = common::listening(&mut child);
    Hub { child, base }
}

fn prefix(test: &str) -> String {
    format!(
        "dl_nats_cli_{test}_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )
}

fn ev(id: &str, sku: &str, on_hand: i64) -> Value {
    json!({"id": id, "source": "wms", "sku": sku, "location": "DC1",
           "occurred_at": "2026-11-27T10:00:00Z", "adjust": {"on_hand": on_hand}})
}

async fn post(c: &reqwest::Client, hub: &Hub, body: &Value) -> (u16, Value) {
    let r = c
        .post(format!("{}/v1/events", hub.base))
        .bearer_auth("wms-demo-token")
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get(c: &reqwest::Client, hub: &Hub, path: &str) -> (u16, Value) {
    let r = c
        .get(format!("{}{path}", hub.base))
        .bearer_auth("read-demo-token")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn delete_stream(url: &str, prefix: &str) {
    let mut o = BusOptions::new(url);
    o.prefix = prefix.to_owned();
    if let Ok(c) = async_nats::connect(url).await {
        let _ = jetstream::new(c).delete_stream(o.stream_name()).await;
    }
}

#[tokio::test]
async fn serve_with_jetstream_answers_outcomes_over_http() {
    let Some(url) = nats_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = prefix("outcomes");
    let hub = serve(dir.path(), &url, &p, 20_000);
    let c = reqwest::Client::new();

    let (s, b) = post(&c, &hub, &ev("h1", "TEE-1", 5)).await;
    assert_eq!(
        (s, b["results"][0]["outcome"].as_str()),
        (200, Some("applied"))
    );
    let (s, b) = post(
        &c,
        &hub,
        &json!([ev("h1", "TEE-1", 5), ev("h2", "TEE-1", 2)]),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["outcome"], "duplicate");
    assert_eq!(b["results"][1]["outcome"], "applied");
    let (s, b) = post(&c, &hub, &ev("h1", "TEE-1", 9)).await;
    assert_eq!(
        (s, b["results"][0]["outcome"].as_str()),
        (409, Some("conflict"))
    );

    let (s, b) = get(&c, &hub, "/v1/events/wms/h2").await;
    assert_eq!((s, b["outcome"].as_str()), (200, Some("applied")));
    let (s, b) = get(&c, &hub, "/v1/inventory/TEE-1").await;
    assert_eq!(s, 200);
    assert_eq!(b["locations"][0]["on_hand"], 7);
    drop(hub);
    delete_stream(&url, &p).await;
}

#[tokio::test]
async fn an_event_not_applied_in_time_is_accepted_with_202_then_final() {
    let Some(url) = nats_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = prefix("accepted");
    let mut o = BusOptions::new(&url);
    o.prefix = p.clone();
    // Hold the sku's partition: its durable consumer exists with a filter nothing matches, so
    // the hub's applier pulls nothing until the consumer is deleted and it sets it up again.
    let part = o.partition("HELD-1");
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: o.stream_name(),
            subjects: vec![format!("{p}.events.*")],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            max_message_size: o.max_message_bytes,
            max_bytes: o.stream_max_bytes,
            discard: jetstream::stream::DiscardPolicy::New,
            duplicate_window: o.duplicate_window,
            description: Some("driftless: events between the API and the appliers".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let name = format!("applier-{part}");
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("{p}.events.held"),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();

    let hub = serve(dir.path(), &url, &p, 300);
    let c = reqwest::Client::new();
    let (s, b) = post(&c, &hub, &ev("x1", "HELD-1", 4)).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["results"][0]["outcome"], "accepted");
    let (s, b) = get(&c, &hub, "/v1/events/wms/x1").await;
    assert_eq!((s, b["outcome"].as_str()), (202, Some("accepted")));
    // A redelivery while it waits: the bus drops it, the ledger decides it at once.
    let (s, b) = post(&c, &hub, &ev("x1", "HELD-1", 4)).await;
    assert_eq!(
        (s, b["results"][0]["outcome"].as_str()),
        (200, Some("applied"))
    );

    // Released: the applier takes the held message, which is a duplicate now; applied once.
    stream.delete_consumer(&name).await.unwrap();
    let mut last = (0, Value::Null);
    for _ in 0..200 {
        last = get(&c, &hub, "/v1/events/wms/x1").await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((last.0, last.1["outcome"].as_str()), (200, Some("applied")));
    for _ in 0..200 {
        let info = stream.get_info().await;
        if info.is_ok_and(|i| i.state.messages == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, b) = get(&c, &hub, "/v1/inventory/HELD-1").await;
    assert_eq!(b["locations"][0]["on_hand"], 4);
    drop(hub);
    delete_stream(&url, &p).await;
}
