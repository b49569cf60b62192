//! Fan-out end to end: a hub on 127.0.0.1 over the embedded store, pushing through real HTTP to
//! stand-in channels (webhook receiver, Shopify GraphQL) that verify signatures and request shapes,
//! enforce compare-and-set and idempotency keys, and inject faults.
//!
//! Waiting is bounded (a test fails instead of hanging) but nothing asserts on time.

use driftless_connectors::standin::{Faults, Mode, StandIn};
use driftless_server::fanout::FanoutOptions;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod common;

use common::{TestApp, spawn_in};

const SECRET: &str = "test-webhook-key";
static SEQ: AtomicU64 = AtomicU64::new(1);

fn config(channel: &str, extra: &str) -> String {
    format!(
        r#"
[server]
auth = "none"

[[systems]]
id = "wms"
role = "wms"

[[systems]]
id = "shop"
role = "storefront"

[authority]
on_hand = ["wms"]

{channel}

[[hops]]
from = "wms"
to = "shop"
trigger = "event"
latency_sla = "1s"
{extra}
"#
    )
}

fn webhook_channel(url: &str, on_override: &str) -> String {
    format!(
        r#"[[channels]]
id = "shop"
locations = ["DC1"]
connector = "webhook"
url = "{url}"
secret_env = "SHOP_SECRET"
on_override = "{on_override}"
max_attempts = 40
"#
    )
}

/// Options whose safety poll never fires during a test: whatever happens must come from the
/// store's wake-up, a finished push or a retry coming due.
fn opts_without_polling() -> FanoutOptions {
    FanoutOptions {
        poll: Duration::from_secs(3600),
        rescan_every: Duration::from_secs(3600),
        ..opts()
    }
}

fn opts() -> FanoutOptions {
    FanoutOptions {
        poll: Duration::from_millis(5),
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(80),
        sweep_every: Duration::from_millis(20),
        client: driftless_connectors::ClientOptions {
            timeout: Duration::from_millis(300),
            ..Default::default()
        },
        env: Arc::new(|k| match k {
            "SHOP_SECRET" => Some(SECRET.into()),
            "SHOP_TOKEN" => Some("shpat_test".into()),
            _ => None,
        }),
        ..FanoutOptions::default()
    }
}

type Hub = TestApp;

async fn hub(text: &str, dir: &Path, fanout: FanoutOptions) -> Hub {
    spawn_in(text, dir, |state| state.fanout = Arc::new(fanout)).await
}

impl TestApp {
    /// Sets on_hand of `sku` at DC1; returns the outcome.
    async fn set(&self, sku: &str, on_hand: i64) -> String {
        self.set_many(&[(sku, on_hand)]).await.remove(0)
    }

    async fn set_many(&self, items: &[(&str, i64)]) -> Vec<String> {
        let events: Vec<Value> = items
            .iter()
            .map(|(sku, q)| {
                let n = SEQ.fetch_add(1, Ordering::Relaxed);
                json!({"id": format!("e-{n}"), "source": "wms", "sku": sku, "location": "DC1",
                    "occurred_at": "2026-11-27T10:00:00Z", "seq": n, "set": {"on_hand": q}})
            })
            .collect();
        let r: Value = self
            .http
            .post(format!("{}/v1/events", self.base))
            .json(&events)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["outcome"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn read(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn incidents(&self, kind: &str) -> Vec<Value> {
        self.read(&format!("/v1/incidents?kind={kind}&limit=1000"))
            .await["incidents"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// Polls `check` until it holds; fails the test after a generous bound instead of hanging.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

fn webhook_standin(faults: Faults) -> impl std::future::Future<Output = std::io::Result<StandIn>> {
    StandIn::start(
        Mode::Webhook {
            secret: SECRET.as_bytes().to_vec(),
        },
        faults,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_when_the_channel_fails_30_percent_of_calls() {
    let l = converge_under_faults("", 40, opts()).await;
    assert_eq!(
        l.batches, 0,
        "one sku per request unless batch_size says otherwise"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_converge_when_the_channel_fails_30_percent_of_requests() {
    // No safety poll: retries, rechecks and new changes must all wake the dispatcher by themselves.
    let l = converge_under_faults("batch_size = 25\n", 200, opts_without_polling()).await;
    assert!(l.batches > 10, "batches sent: {}", l.batches);
    assert!(
        l.largest_batch > 1 && l.largest_batch <= 25,
        "{}",
        l.largest_batch
    );
    assert!(l.item_faults > 0, "some items were refused inside a batch");
    assert_eq!(l.batch_duplicate_skus, 0, "one push per sku in flight");
}

/// What the stand-in saw, for the callers' own checks.
struct Seen {
    batches: u64,
    largest_batch: usize,
    item_faults: u64,
    batch_duplicate_skus: u64,
}

/// Ten bursts of changes over `skus` skus against a channel that fails 30% of requests (500s,
/// 429s, answers after the timeout, connections dropped before or after applying): every sku ends
/// at its last quantity, every change applied once, from the value the previous one left.
async fn converge_under_faults(extra: &str, skus: i64, fanout: FanoutOptions) -> Seen {
    let ch = webhook_standin(Faults {
        rate: 0.3,
        seed: 42,
        stall: Duration::from_millis(600),
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let channel = webhook_channel(&ch.url("/push"), "overwrite") + extra;
    let hub = hub(&config(&channel, ""), dir.path(), fanout).await;
    // In bursts, so pushes overlap with new versions.
    let mut expected: HashMap<String, i64> = HashMap::new();
    for round in 0..10i64 {
        let batch: Vec<(String, i64)> = (0..skus)
            .map(|i| (format!("SKU-{i}"), (round * 7 + i * 3) % 50))
            .collect();
        let refs: Vec<(&str, i64)> = batch.iter().map(|(s, q)| (s.as_str(), *q)).collect();
        assert!(hub.set_many(&refs).await.iter().all(|o| o == "applied"));
        for (s, q) in batch {
            expected.insert(s, q);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("every sku at its final quantity on the channel", || async {
        expected.iter().all(|(s, q)| ch.get(s) == Some(*q))
            && hub.read("/v1/channels/shop").await["pending"] == 0
    })
    .await;
    let seen = {
        let l = ch.lock();
        assert!(l.faults > 20, "faults were injected: {}", l.faults);
        assert_eq!(l.bad_signatures, 0);
        // A retry that carried a new key, or a wrong compare value, would have met a 409 here.
        assert_eq!(l.conflicts, 0, "no compare failure without an override");
        // Each applied change starts where the previous one ended: no adjustment applied twice.
        let mut last: HashMap<&str, i64> = HashMap::new();
        let mut keys = std::collections::HashSet::new();
        for a in &l.applied {
            assert!(keys.insert(a.key.clone()), "key {} applied twice", a.key);
            assert_eq!(a.from, last.get(a.sku.as_str()).copied(), "{a:?}");
            last.insert(&a.sku, a.to);
        }
        Seen {
            batches: l.batches,
            largest_batch: l.largest_batch,
            item_faults: l.item_faults,
            batch_duplicate_skus: l.batch_duplicate_skus,
        }
    };
    assert!(hub.incidents("channel_override").await.is_empty());
    let status = hub.read("/v1/channels/shop").await;
    assert_eq!(status["dead_letters"], json!([]));
    assert!(status["last_push"]["sku"].is_string());
    // Every push acknowledged is a sample of the documented hop.
    let m = hub.read("/v1/matrix").await;
    let hop = &m["hops"][0];
    assert_eq!(
        (hop["from"].as_str(), hop["to"].as_str()),
        (Some("wms"), Some("shop"))
    );
    assert!(hop["end_to_end"]["n"].as_u64().unwrap() >= 40);
    hub.stop().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_pending_pushes_and_coalesces_them() {
    let dir = tempfile::tempdir().unwrap();
    // First run: the channel is down (nothing listens there).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/push", dead.local_addr().unwrap());
    drop(dead);
    let h1 = hub(
        &config(&webhook_channel(&dead_url, "overwrite"), ""),
        dir.path(),
        opts(),
    )
    .await;
    for q in 1..=50 {
        assert_eq!(h1.set("HOT", q).await, "applied");
    }
    assert_eq!(h1.set("COLD", 9).await, "applied");
    eventually("the pushes failed at least once", || async {
        !h1.read("/v1/channels/shop").await["errors"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    assert_eq!(h1.read("/v1/channels/shop").await["pending"], 2);
    h1.stop().await;

    // Second run: the channel is up; the pending pushes go out, the 50 changes as one.
    let ch = webhook_standin(Faults::none()).await.unwrap();
    let h2 = hub(
        &config(&webhook_channel(&ch.url("/push"), "overwrite"), ""),
        dir.path(),
        opts(),
    )
    .await;
    eventually("both skus arrived", || async {
        ch.get("HOT") == Some(50) && ch.get("COLD") == Some(9)
    })
    .await;
    eventually("nothing pending", || async {
        h2.read("/v1/channels/shop").await["pending"] == 0
    })
    .await;
    let hot: Vec<_> = ch
        .lock()
        .applied
        .iter()
        .filter(|a| a.sku == "HOT")
        .cloned()
        .collect();
    assert_eq!(hot.len(), 1, "50 changes coalesced into one push: {hot:?}");
    h2.stop().await;
}

async fn override_scenario(policy: &str) -> (StandIn, Hub, tempfile::TempDir) {
    let ch = webhook_standin(Faults::none()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(
        &config(&webhook_channel(&ch.url("/push"), policy), ""),
        dir.path(),
        opts(),
    )
    .await;
    hub.set("TEE", 10).await;
    eventually("first push", || async { ch.get("TEE") == Some(10) }).await;
    eventually("acknowledged", || async {
        hub.read("/v1/channels/shop").await["pending"] == 0
    })
    .await;
    // A person edits the storefront; then the hub has news.
    ch.set("TEE", 7);
    hub.set("TEE", 12).await;
    eventually("a channel_override incident", || async {
        !hub.incidents("channel_override").await.is_empty()
    })
    .await;
    (ch, hub, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_failure_is_an_incident_and_overwrite_wins() {
    let (ch, hub, _dir) = override_scenario("overwrite").await;
    eventually("overwritten", || async { ch.get("TEE") == Some(12) }).await;
    let inc = hub.incidents("channel_override").await;
    let d = inc[0]["detail"].as_str().unwrap();
    assert!(
        d.contains("shows 7") && d.contains("last had 10") && d.contains("(-3)"),
        "{d}"
    );
    assert_eq!(inc[0]["sku"], "TEE");
    // The overwrite was compared against what the channel showed, not blindly set.
    let last = ch.lock().applied.last().cloned().unwrap();
    assert_eq!((last.from, last.to), (Some(7), 12));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_failure_with_hold_stops_pushing_until_replay() {
    let (ch, hub, _dir) = override_scenario("hold").await;
    eventually("held", || async {
        hub.read("/v1/channels/shop").await["held"] == json!(["TEE"])
    })
    .await;
    hub.set("TEE", 15).await;
    // A change while held is recorded but not pushed.
    eventually("the change is pending", || async {
        hub.read("/v1/channels/shop").await["pending"] == 1
    })
    .await;
    assert_eq!(ch.get("TEE"), Some(7));
    let (code, r) = hub
        .post("/v1/channels/shop/replay", json!({"sku": "TEE"}))
        .await;
    assert_eq!((code, r["replayed"].as_u64()), (200, Some(1)));
    eventually("replayed against the value the channel showed", || async {
        ch.get("TEE") == Some(15)
    })
    .await;
    assert!(
        hub.incidents("channel_override").await[0]["detail"]
            .as_str()
            .unwrap()
            .contains("policy hold")
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observation_outliving_the_sla_is_an_override() {
    let ch = webhook_standin(Faults::none()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(&webhook_channel(&ch.url("/push"), "overwrite"), "")
        .replace("latency_sla = \"1s\"", "latency_sla = \"100ms\"");
    let hub = hub(&text, dir.path(), opts()).await;
    hub.set("CAP", 20).await;
    eventually("pushed", || async { ch.get("CAP") == Some(20) }).await;
    eventually("acknowledged", || async {
        hub.read("/v1/channels/shop").await["pending"] == 0
    })
    .await;
    // The channel reports what it shows now: someone sold 3 offline and edited it.
    ch.set("CAP", 17);
    let (code, r) = hub
        .post(
            "/v1/channels/shop/observations",
            json!({"observations": [{"sku": "CAP", "quantity": 17, "actor": "staff:ann"}]}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["results"][0]["acknowledged_quantity"], 20);
    eventually("incident and overwrite", || async {
        ch.get("CAP") == Some(20) && !hub.incidents("channel_override").await.is_empty()
    })
    .await;
    let inc = hub.incidents("channel_override").await;
    assert!(inc[0]["detail"].as_str().unwrap().contains("staff:ann"));
    // An observation that agrees with the last push is no incident.
    let (code, _) = hub
        .post(
            "/v1/channels/shop/observations",
            json!({"observations": [{"sku": "CAP", "quantity": 20}]}),
        )
        .await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hub.incidents("channel_override").await.len(), 1);
    let (code, _) = hub
        .post(
            "/v1/channels/nope/observations",
            json!({"observations": []}),
        )
        .await;
    assert_eq!(code, 404);
    let (code, r) = hub
        .post(
            "/v1/channels/shop/observations",
            json!({"observations": [{"sku": "CAP"}]}),
        )
        .await;
    assert_eq!(
        (code, r["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_signature_is_refused_by_the_channel_and_dead_lettered() {
    let ch = StandIn::start(
        Mode::Webhook {
            secret: b"the-channel-has-another-key".to_vec(),
        },
        Faults::none(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(
        &config(&webhook_channel(&ch.url("/push"), "overwrite"), ""),
        dir.path(),
        opts(),
    )
    .await;
    hub.set("SIG", 3).await;
    eventually("dead letter", || async {
        hub.read("/v1/channels/shop").await["dead_letters"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
    })
    .await;
    assert!(ch.lock().bad_signatures >= 1);
    assert_eq!(ch.get("SIG"), None);
    let dl = hub.incidents("dead_letter").await;
    assert!(dl[0]["detail"].as_str().unwrap().contains("HTTP 401"));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_set_quantities_with_gids_cas_and_throttle() {
    let ch = StandIn::start(
        Mode::Shopify {
            token: "shpat_test".into(),
            api_version: "2026-04".into(),
        },
        Faults {
            rate: 0.2,
            seed: 7,
            stall: Duration::from_millis(600),
        },
    )
    .await
    .unwrap();
    // 2^53 + 1 and up: ids a float would corrupt.
    let mut items = String::new();
    for i in 0..15u64 {
        items.push_str(&format!(
            "[[items]]\nsku = \"S-{i}\"\nshopify_inventory_item_id = \"{}\"\n",
            9_007_199_254_740_993u64 + i
        ));
    }
    let channel = format!(
        r#"[[channels]]
id = "shop"
locations = ["DC1"]
connector = "shopify"
shop_domain = "{}"
api_version = "2026-04"
token_env = "SHOP_TOKEN"
max_attempts = 40

{items}
[[locations]]
id = "DC1"
shopify_location_id = "9007199254740999"
"#,
        ch.url("")
    );
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(&config(&channel, ""), dir.path(), opts()).await;
    let batch: Vec<(String, i64)> = (0..15).map(|i| (format!("S-{i}"), i * 2 + 1)).collect();
    let refs: Vec<(&str, i64)> = batch.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    hub.set_many(&refs).await;
    let gid = |i: u64| {
        format!(
            "gid://shopify/InventoryItem/{}",
            9_007_199_254_740_993u64 + i
        )
    };
    eventually("all items set in Shopify", || async {
        (0..15).all(|i| ch.get(&gid(i)) == Some(i as i64 * 2 + 1))
    })
    .await;
    {
        let l = ch.lock();
        assert!(l.shape_errors.is_empty(), "{:?}", l.shape_errors);
        assert_eq!(l.conflicts, 0);
        assert_eq!(l.key_reuse_mismatch, 0);
    }
    // Someone changes S-0 in the Shopify admin: CHANGE_FROM_QUANTITY_STALE, read-back, overwrite.
    ch.set(&gid(0), 100);
    hub.set("S-0", 4).await;
    eventually("overwritten after a stale compare", || async {
        ch.get(&gid(0)) == Some(4)
    })
    .await;
    let inc = hub.incidents("channel_override").await;
    assert!(
        inc[0]["detail"].as_str().unwrap().contains("shows 100"),
        "{inc:?}"
    );
    assert!(ch.lock().shape_errors.is_empty());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_connector_writes_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/shop.csv");
    let channel = format!(
        r#"[[channels]]
id = "shop"
locations = ["DC1"]
safety_stock = 1
connector = "file"
path = "{}"
schedule = "every 50ms"
"#,
        out.display()
    );
    let hub = hub(&config(&channel, ""), &dir.path().join("data"), opts()).await;
    hub.set("B", 5).await;
    hub.set("A,1", 3).await;
    eventually("snapshot with both skus", || async {
        std::fs::read_to_string(&out).is_ok_and(|s| s == "sku,quantity\n\"A,1\",2\nB,4\n")
    })
    .await;
    eventually("delivered", || async {
        hub.read("/v1/channels/shop").await["pending"] == 0
    })
    .await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_channel_concurrency_and_rate_limit_hold() {
    let ch = webhook_standin(Faults {
        rate: 0.0,
        seed: 1,
        stall: Duration::ZERO,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let channel =
        webhook_channel(&ch.url("/push"), "overwrite") + "concurrency = 2\nrate_limit = 200\n";
    let hub = hub(&config(&channel, ""), dir.path(), opts()).await;
    let batch: Vec<(String, i64)> = (0..60).map(|i| (format!("R-{i}"), i + 1)).collect();
    let refs: Vec<(&str, i64)> = batch.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    hub.set_many(&refs).await;
    eventually("all pushed", || async {
        batch.iter().all(|(s, q)| ch.get(s) == Some(*q))
    })
    .await;
    let (max_active, applied) = {
        let l = ch.lock();
        (l.max_active, l.applied.len())
    };
    assert!(
        max_active <= 2,
        "at most 2 pushes at once, saw {max_active}"
    );
    assert_eq!(applied, 60);
    hub.stop().await;
}

/// Five skus pushed in batches and acknowledged; then someone edits two of them on the channel and
/// the hub changes all five in one commit, so they travel in one batch.
async fn batch_override_scenario(policy: &str) -> (StandIn, Hub, tempfile::TempDir) {
    let ch = webhook_standin(Faults::none()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let channel = webhook_channel(&ch.url("/push"), policy) + "batch_size = 10\n";
    let hub = hub(&config(&channel, ""), dir.path(), opts_without_polling()).await;
    let skus = ["A", "B", "C", "D", "E"];
    let first: Vec<(&str, i64)> = skus.iter().map(|s| (*s, 10)).collect();
    hub.set_many(&first).await;
    eventually("first pushes acknowledged", || async {
        skus.iter().all(|s| ch.get(s) == Some(10))
            && hub.read("/v1/channels/shop").await["pending"] == 0
    })
    .await;
    ch.set("B", 7);
    ch.set("D", 3);
    let second: Vec<(&str, i64)> = skus.iter().map(|s| (*s, 12)).collect();
    hub.set_many(&second).await;
    eventually("two channel_override incidents", || async {
        hub.incidents("channel_override").await.len() == 2
    })
    .await;
    (ch, hub, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_compare_inside_a_batch_is_that_skus_incident_alone() {
    let (ch, hub, _dir) = batch_override_scenario("overwrite").await;
    eventually("everything at the hub's quantity", || async {
        ["A", "B", "C", "D", "E"]
            .iter()
            .all(|s| ch.get(s) == Some(12))
            && hub.read("/v1/channels/shop").await["pending"] == 0
    })
    .await;
    let mut inc: Vec<(String, String)> = hub
        .incidents("channel_override")
        .await
        .iter()
        .map(|i| {
            (
                i["sku"].as_str().unwrap().to_owned(),
                i["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    inc.sort();
    assert_eq!(inc.len(), 2, "{inc:?}");
    assert_eq!(inc[0].0, "B");
    assert!(
        inc[0].1.contains("shows 7") && inc[0].1.contains("(-3)"),
        "{}",
        inc[0].1
    );
    assert_eq!(inc[1].0, "D");
    assert!(
        inc[1].1.contains("shows 3") && inc[1].1.contains("(-7)"),
        "{}",
        inc[1].1
    );
    {
        let l = ch.lock();
        assert_eq!(l.conflicts, 2);
        assert_eq!(l.largest_batch, 5, "the five changes went in one request");
        // The others were applied from the acknowledged value in that same request; the two
        // overridden ones were overwritten against what the channel showed, not blindly set.
        let last = |sku: &str| {
            let a = l.applied.iter().rev().find(|a| a.sku == sku).unwrap();
            (a.from, a.to)
        };
        for s in ["A", "C", "E"] {
            assert_eq!(last(s), (Some(10), 12), "{s}");
        }
        assert_eq!(last("B"), (Some(7), 12));
        assert_eq!(last("D"), (Some(3), 12));
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_inside_a_batch_holds_only_the_overridden_skus() {
    let (ch, hub, _dir) = batch_override_scenario("hold").await;
    eventually("B and D held, the rest delivered", || async {
        hub.read("/v1/channels/shop").await["held"] == json!(["B", "D"])
            && ["A", "C", "E"].iter().all(|s| ch.get(s) == Some(12))
    })
    .await;
    assert_eq!((ch.get("B"), ch.get("D")), (Some(7), Some(3)));
    let (code, r) = hub.post("/v1/channels/shop/replay", json!({})).await;
    assert_eq!((code, r["replayed"].as_u64()), (200, Some(2)));
    eventually("replayed against the values the channel showed", || async {
        ch.get("B") == Some(12) && ch.get("D") == Some(12)
    })
    .await;
    assert_eq!(
        ch.lock().conflicts,
        2,
        "the replay compared against 7 and 3"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_wrong_signature_is_refused_and_every_item_dead_lettered() {
    let ch = StandIn::start(
        Mode::Webhook {
            secret: b"the-channel-has-another-key".to_vec(),
        },
        Faults::none(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let channel = with_max_attempts(&ch.url("/push"), 3) + "batch_size = 10\n";
    let hub = hub(&config(&channel, ""), dir.path(), opts()).await;
    hub.set_many(&[("S1", 3), ("S2", 4), ("S3", 5)]).await;
    eventually("three dead letters", || async {
        hub.read("/v1/channels/shop").await["dead_letters"]
            .as_array()
            .is_some_and(|d| d.len() == 3)
    })
    .await;
    {
        let l = ch.lock();
        // Every request was refused before it was parsed, and retried (each sku on its own
        // backoff) up to max_attempts; the first carried all three.
        assert_eq!(l.requests, l.bad_signatures);
        assert!((3..=9).contains(&l.requests), "{}", l.requests);
        assert!(l.applied.is_empty());
    }
    let dl = hub.incidents("dead_letter").await;
    assert!(
        dl.iter()
            .all(|d| d["detail"].as_str().unwrap().contains("HTTP 401"))
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_respect_concurrency_and_the_rate_limit_counts_requests() {
    let ch = webhook_standin(Faults::none()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 5 requests a second with a burst of 5: 300 changes in requests of at most 20 take at
    // least 15 requests, so they arrive only if each request carries many pushes.
    let channel = webhook_channel(&ch.url("/push"), "overwrite")
        + "concurrency = 2\nrate_limit = 5\nbatch_size = 20\n";
    let hub = hub(&config(&channel, ""), dir.path(), opts_without_polling()).await;
    let batch: Vec<(String, i64)> = (0..300).map(|i| (format!("R-{i}"), i + 1)).collect();
    let refs: Vec<(&str, i64)> = batch.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    hub.set_many(&refs).await;
    eventually("all pushed", || async {
        batch.iter().all(|(s, q)| ch.get(s) == Some(*q))
    })
    .await;
    {
        let l = ch.lock();
        assert!(
            l.max_active <= 2,
            "at most 2 requests at once, saw {}",
            l.max_active
        );
        assert_eq!(l.applied.len(), 300);
        assert!(l.largest_batch <= 20, "{}", l.largest_batch);
        // 300 pushes in 15 to a few dozen requests: not one request per push.
        assert!(
            l.requests >= 15 && l.requests < 60,
            "{} requests",
            l.requests
        );
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_pushed_on_the_stores_wake_up_not_the_poll() {
    let ch = webhook_standin(Faults::none()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(
        &config(&webhook_channel(&ch.url("/push"), "overwrite"), ""),
        dir.path(),
        opts_without_polling(),
    )
    .await;
    // The dispatcher has started and gone to sleep for an hour before this change exists.
    tokio::time::sleep(Duration::from_millis(200)).await;
    hub.set("WAKE", 4).await;
    eventually("pushed without waiting for the poll", || async {
        ch.get("WAKE") == Some(4)
    })
    .await;
    hub.set("WAKE", 5).await;
    eventually("and again", || async { ch.get("WAKE") == Some(5) }).await;
    hub.stop().await;
}

/// A receiver that answers every request alike.
async fn fixed_standin(status: u16, headers: &str, body: &str) -> StandIn {
    StandIn::start(
        Mode::Fixed {
            status,
            headers: headers.into(),
            body: body.into(),
        },
        Faults::none(),
    )
    .await
    .unwrap()
}

/// Pushes until the first dead letter, or until `bound` requests prove there will be none.
async fn requests_until_dead_letter(hub: &Hub, ch: &StandIn, bound: u64) -> u64 {
    eventually("a dead letter, or requests past the bound", || async {
        ch.lock().requests > bound
            || !hub.read("/v1/channels/shop").await["dead_letters"]
                .as_array()
                .unwrap()
                .is_empty()
    })
    .await;
    ch.lock().requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_failure_that_repeats_dead_letters_after_max_attempts() {
    // Refuses every compare, even against the value it reported itself.
    let ch = fixed_standin(409, "", r#"{"current_quantity":5}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let channel = webhook_channel(&ch.url("/push"), "overwrite")
        .replace("max_attempts = 40", "max_attempts = 3");
    let hub = hub(&config(&channel, ""), dir.path(), opts()).await;
    hub.set("LOOP", 9).await;
    let n = requests_until_dead_letter(&hub, &ch, 30).await;
    assert_eq!(n, 3, "three refused pushes, then the dead-letter list");
    // The first refusal is the override (incident, policy); the rest count toward max_attempts.
    let overrides = hub.incidents("channel_override").await;
    assert_eq!(overrides.len(), 1, "{overrides:?}");
    assert!(overrides[0]["detail"].as_str().unwrap().contains("shows 5"));
    let dl = hub.incidents("dead_letter").await;
    assert_eq!(dl.len(), 1);
    let d = dl[0]["detail"].as_str().unwrap();
    assert!(
        d.contains("3 attempt(s)") && d.contains("compare-and-set"),
        "{d}"
    );
    // And it stays there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ch.lock().requests, 3);
    assert_eq!(hub.incidents("channel_override").await.len(), 1);
    hub.stop().await;
}

fn with_max_attempts(url: &str, n: u32) -> String {
    webhook_channel(url, "overwrite").replace("max_attempts = 40", &format!("max_attempts = {n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_waits_spends_no_attempts_and_is_bounded_by_the_budget() {
    // `503 Retry-After: 0` for ever: three of them used to dead-letter the push at once.
    let ch = fixed_standin(503, "retry-after: 0\r\n", "{}").await;
    let dir = tempfile::tempdir().unwrap();
    let fanout = FanoutOptions {
        throttle_budget: Duration::from_secs(1),
        ..opts()
    };
    let hub = hub(
        &config(&with_max_attempts(&ch.url("/push"), 3), ""),
        dir.path(),
        fanout,
    )
    .await;
    hub.set("BUSY", 4).await;
    let n = requests_until_dead_letter(&hub, &ch, 500).await;
    assert!(
        n > 3,
        "throttled pushes spend no attempts: {n} requests before the dead letter"
    );
    assert!(n < 500, "the time budget bounds throttling");
    let dl = hub.incidents("dead_letter").await;
    let d = dl[0]["detail"].as_str().unwrap();
    assert!(d.contains("budget") && d.contains("1 attempt(s)"), "{d}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stated_retry_after_is_waited_for() {
    let ch = fixed_standin(429, "retry-after: 1\r\n", "{}").await;
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(
        &config(&with_max_attempts(&ch.url("/push"), 3), ""),
        dir.path(),
        opts(),
    )
    .await;
    hub.set("SLOW", 4).await;
    eventually("the first push", || async { ch.lock().requests >= 1 }).await;
    // A wait can only come out longer than stated, never shorter.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ch.lock().requests, 1, "the channel asked for a second");
    eventually("pushed again after the wait", || async {
        ch.lock().requests >= 3
    })
    .await;
    let status = hub.read("/v1/channels/shop").await;
    assert_eq!(
        status["dead_letters"],
        json!([]),
        "throttling spends no attempts"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_4xx_and_a_503_without_retry_after_are_retried_with_backoff_then_dead_lettered() {
    for (status, headers) in [(422, ""), (400, ""), (503, "")] {
        let ch = fixed_standin(status, headers, r#"{"error":"no"}"#).await;
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(
            &config(&with_max_attempts(&ch.url("/push"), 3), ""),
            dir.path(),
            opts(),
        )
        .await;
        hub.set("REFUSED", 4).await;
        let n = requests_until_dead_letter(&hub, &ch, 30).await;
        assert_eq!(
            n, 3,
            "HTTP {status}: max_attempts pushes, then the dead letter"
        );
        let dl = hub.incidents("dead_letter").await;
        let d = dl[0]["detail"].as_str().unwrap();
        assert!(
            d.contains(&format!("HTTP {status}")) && d.contains("3 attempt(s)"),
            "{d}"
        );
        hub.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_request_errors_dead_letter_at_once_with_shopifys_message() {
    let ch = StandIn::start(
        Mode::Shopify {
            token: "shpat_test".into(),
            api_version: "2026-07".into(),
        },
        Faults::none(),
    )
    .await
    .unwrap();
    // The app was installed without write_inventory: Shopify answers HTTP 200, ACCESS_DENIED.
    ch.lock().missing_write_scope = true;
    let channel = format!(
        r#"[[channels]]
id = "shop"
locations = ["DC1"]
connector = "shopify"
shop_domain = "{}"
api_version = "2026-07"
token_env = "SHOP_TOKEN"
max_attempts = 40

[[items]]
sku = "S-1"
shopify_inventory_item_id = "1"

[[items]]
sku = "S-2"
shopify_inventory_item_id = "2"

[[locations]]
id = "DC1"
shopify_location_id = "9"
"#,
        ch.url("")
    );
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(&config(&channel, ""), dir.path(), opts()).await;
    hub.set("S-1", 4).await;
    // Past Shopify's cap: never sent.
    hub.set("S-2", 2_000_000_000).await;
    eventually("two dead letters", || async {
        hub.read("/v1/channels/shop").await["dead_letters"]
            .as_array()
            .is_some_and(|d| d.len() == 2)
    })
    .await;
    let dl = hub.incidents("dead_letter").await;
    let detail = |sku: &str| {
        dl.iter()
            .find(|d| d["sku"] == sku)
            .and_then(|d| d["detail"].as_str())
            .unwrap()
            .to_owned()
    };
    let d = detail("S-1");
    assert!(
        d.contains("1 attempt(s)") && d.contains("ACCESS_DENIED") && d.contains("write_inventory"),
        "{d}"
    );
    let d = detail("S-2");
    assert!(d.contains("1,000,000,000") && d.contains("not sent"), "{d}");
    // One request: the refused one. Nothing repeated, nothing past the cap sent.
    assert_eq!(ch.lock().requests, 1);
    hub.stop().await;
}

/// A channel slower than its changes works through the backlog in the outbox's order (oldest
/// change first) even under a tight rate limit: the dispatcher reads only the rows it can start,
/// so rows are not read, refused a token and sent round the retry queue in a rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tight_rate_limit_keeps_the_outboxs_order() {
    let ch = webhook_standin(Faults::none()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 10 pushes a second, one at a time: the 30 changes take about 3 s to push.
    let channel = webhook_channel(&ch.url("/push"), "overwrite")
        + "concurrency = 1\nrate_limit = 10\nbatch_size = 1\n";
    let hub = hub(&config(&channel, ""), dir.path(), opts_without_polling()).await;
    let backlog: Vec<(String, i64)> = (0..30).map(|i| (format!("B-{i:02}"), 1)).collect();
    let refs: Vec<(&str, i64)> = backlog.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    // One request: one commit, one change time, so the outbox's order is the skus' order.
    hub.set_many(&refs).await;
    // Later changes of other skus wake the dispatcher while it is out of budget.
    for i in 0..10 {
        hub.set(&format!("L-{i:02}"), 1).await;
    }
    eventually("everything pushed", || async {
        backlog.iter().all(|(s, q)| ch.get(s) == Some(*q))
            && (0..10).all(|i| ch.get(&format!("L-{i:02}")) == Some(1))
    })
    .await;
    let order: Vec<String> = ch.lock().applied.iter().map(|a| a.sku.clone()).collect();
    let mut expected: Vec<String> = backlog.iter().map(|(s, _)| s.clone()).collect();
    expected.extend((0..10).map(|i| format!("L-{i:02}")));
    assert_eq!(order, expected);
    hub.stop().await;
}
