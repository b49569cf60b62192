//! The bus against a real NATS JetStream (127.0.0.1:4222, or `DRIFTLESS_TEST_NATS_URL`): each
//! test has a stream of its own (a unique prefix) and deletes it at the end. Outside CI a missing
//! server skips the test with one printed line; with `CI=true` it fails.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use driftless_bus::{Bus, BusOptions, Delivery, codec::ChannelUpdate};
use driftless_core::{ChannelSpec, Event, Location, Outcome, Ppm, RawEvent, Rules, Sku, SystemId};
use driftless_store::{SqliteStore, Store};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

#[path = "nats/fault.rs"]
mod fault;

pub fn nats_url() -> Option<String> {
    let url = std::env::var("DRIFTLESS_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let addr = url.trim_start_matches("nats://").to_owned();
    let up = std::net::TcpStream::connect_timeout(
        &addr.parse().expect("DRIFTLESS_TEST_NATS_URL: host:port"),
        Duration::from_secs(2),
    )
    .is_ok();
    if up {
        return Some(url);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("NATS is not reachable at {url} and CI=true: the JetStream tests must run");
    }
    println!(
        "skipped: NATS is not reachable at {url} (start nats-server -js to run the bus tests)"
    );
    None
}

pub fn prefix(test: &str) -> String {
    format!(
        "dl_nats_{test}_{}_{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    )
}

pub fn rules() -> Rules {
    Rules {
        systems: ["wms", "erp"]
            .iter()
            .map(|s| SystemId::parse(*s).unwrap())
            .collect(),
        ..Rules::default()
    }
}

pub fn channels() -> Vec<ChannelSpec> {
    vec![ChannelSpec {
        id: SystemId::parse("shop").unwrap(),
        locations: vec![Location::parse("DC1").unwrap()],
        safety_stock: 0,
        allocation: Ppm::ONE,
        pack: 1,
        rules: vec![],
    }]
}

pub fn event(source: &str, id: &str, sku: &str, adjust: i64) -> Event {
    let q = vec![("on_hand", adjust)];
    Event::from_raw(&RawEvent {
        id,
        source,
        sku,
        location: "DC1",
        occurred_at: "2026-11-27T10:00:00Z",
        seq: 0,
        adjust: Some(q),
        ..RawEvent::default()
    })
    .unwrap()
}

pub async fn open_store(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir, rules(), channels()).await.unwrap())
}

/// Deletes the test's stream (and so its consumers).
pub async fn delete_stream(url: &str, o: &BusOptions) {
    if let Ok(c) = async_nats::connect(url).await {
        let _ = jetstream::new(c).delete_stream(o.stream_name()).await;
    }
}

pub async fn on_hand(store: &Arc<dyn Store>, sku: &str) -> i64 {
    let sku = Sku::parse(sku).unwrap();
    store
        .inventory(&sku)
        .await
        .unwrap()
        .map_or(0, |l| l.iter().map(|l| l.levels.on_hand).sum())
}

fn outcome(d: &Delivery) -> Outcome {
    match d {
        Delivery::Final(r) => r.outcome,
        Delivery::Accepted => panic!("accepted, expected a final outcome"),
    }
}

/// Polls until `f` holds, at most 20 s (a bound, not a timing assertion: failing means the
/// applier never got there).
pub async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached within 20 s");
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

#[tokio::test]
async fn published_events_are_applied_and_answered_with_their_outcomes() {
    let Some(url) = nats_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut o = BusOptions::new(&url);
    o.prefix = prefix("outcomes");
    o.outcome_wait = Duration::from_secs(15);
    let bus = Bus::connect(o.clone(), store.clone(), rules(), Arc::new(channels()))
        .await
        .unwrap();
    let client = async_nats::connect(&url).await.unwrap();
    let mut updates = client
        .subscribe(format!("{}.channels.shop.>", o.prefix))
        .await
        .unwrap();
    client.flush().await.unwrap();
    bus.start_appliers();

    let batch = vec![
        event("wms", "a1", "TEE-1", 5),
        event("wms", "a2", "TEE.2 *", 7),
        event("nobody", "a3", "TEE-1", 1),
        event("wms", "a1", "TEE-1", 5),
    ];
    let d = bus.submit(now(), batch).await.unwrap();
    let got: Vec<Outcome> = d.iter().map(outcome).collect();
    assert_eq!(
        got,
        [
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Rejected,
            Outcome::Duplicate
        ]
    );
    assert_eq!(on_hand(&store, "TEE-1").await, 5);
    assert_eq!(on_hand(&store, "TEE.2 *").await, 7);

    // The same event sent again: JetStream's duplicate window drops the message and the ledger
    // answers; a different payload under the same id is a conflict.
    let again = bus
        .submit(now(), vec![event("wms", "a2", "TEE.2 *", 7)])
        .await
        .unwrap();
    assert_eq!(outcome(&again[0]), Outcome::Duplicate);
    let changed = bus
        .submit(now(), vec![event("wms", "a2", "TEE.2 *", 8)])
        .await
        .unwrap();
    assert_eq!(outcome(&changed[0]), Outcome::Conflict);
    assert_eq!(on_hand(&store, "TEE.2 *").await, 7);

    // A request larger than one publish chunk: every event published, applied and answered.
    let many: Vec<Event> = (0..450)
        .map(|i| event("wms", &format!("m{i}"), &format!("MANY-{}", i % 7), 1))
        .collect();
    let d = bus.submit(now(), many).await.unwrap();
    assert!(d.iter().all(|d| outcome(d) == Outcome::Applied));
    let mut total = 0;
    for k in 0..7 {
        total += on_hand(&store, &format!("MANY-{k}")).await;
    }
    assert_eq!(total, 450);

    // Each changed sku's channel quantity was published on its own subject.
    let mut seen = std::collections::BTreeMap::new();
    while !(seen.contains_key("TEE-1") && seen.contains_key("TEE.2 *")) {
        let m = tokio::time::timeout(Duration::from_secs(20), updates.next())
            .await
            .expect("a channel update")
            .unwrap();
        let u: ChannelUpdate = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(m.subject.as_str(), o.channel_subject("shop", &u.sku));
        seen.insert(u.sku.clone(), (u.quantity, u.version));
    }
    assert_eq!(seen["TEE-1"].0, 5);
    assert_eq!(seen["TEE.2 *"].0, 7);

    // A later change of one sku is published with a higher version, and the version is the one
    // the channel's pushes carry (the outbox row's), so a consumer keeping the highest version
    // keeps the newest quantity.
    let before = seen["TEE-1"].1.expect("a version");
    let d = bus
        .submit(now(), vec![event("wms", "a9", "TEE-1", 4)])
        .await
        .unwrap();
    assert_eq!(outcome(&d[0]), Outcome::Applied);
    let u = loop {
        let m = tokio::time::timeout(Duration::from_secs(20), updates.next())
            .await
            .expect("a channel update")
            .unwrap();
        let u: ChannelUpdate = serde_json::from_slice(&m.payload).unwrap();
        if u.sku == "TEE-1" && u.quantity == 9 {
            break u;
        }
    };
    let after = u.version.expect("a version");
    assert!(after > before, "version {after} after {before}");
    let scan = driftless_store::outbox::Scan {
        channel: "shop".into(),
        locations: vec![Location::parse("DC1").unwrap()],
        from: driftless_store::outbox::ScanFrom::Skus(vec![Sku::parse("TEE-1").unwrap()]),
        limit: 1,
    };
    let row = store.outbox_scan(&scan).await.unwrap();
    assert_eq!(row[0].version, after);
    bus.stop().await;
    store.close().await;
    delete_stream(&url, &o).await;
}

#[tokio::test]
async fn without_a_running_applier_events_are_accepted_then_decided() {
    let Some(url) = nats_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut o = BusOptions::new(&url);
    o.prefix = prefix("accepted");
    o.outcome_wait = Duration::from_millis(200);
    let bus = Bus::connect(o.clone(), store.clone(), rules(), Arc::new(channels()))
        .await
        .unwrap();
    // No applier yet: the events are durable in JetStream and nobody applies them.
    let d = bus
        .submit(
            now(),
            vec![
                event("wms", "p1", "SKU-P", 3),
                event("wms", "p2", "SKU-P", 4),
            ],
        )
        .await
        .unwrap();
    assert_eq!(d, [Delivery::Accepted, Delivery::Accepted]);
    let (wms, p1) = (
        SystemId::parse("wms").unwrap(),
        driftless_core::EventId::parse("p1").unwrap(),
    );
    assert!(bus.is_accepted(&wms, &p1));
    assert!(store.event(&wms, &p1).await.unwrap().is_none());

    // A request's events of one partition travel in as few messages as the bounds allow: 300
    // events of one sku are two messages (250 and 50), beside the first request's one.
    let many = || -> Vec<Event> {
        (0..300)
            .map(|i| event("wms", &format!("q{i}"), "SKU-P", 1))
            .collect()
    };
    let d = bus.submit(now(), many()).await.unwrap();
    assert!(d.iter().all(|d| *d == Delivery::Accepted));
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let mut stream = js.get_stream(o.stream_name()).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 3);
    // The same request sent again packs into messages with the same ids: JetStream drops them
    // and the ledger decides the events directly (no applier has taken the first copies).
    let d = bus.submit(now(), many()).await.unwrap();
    assert!(d.iter().all(|d| outcome(d) == Outcome::Applied), "{d:?}");
    assert_eq!(stream.info().await.unwrap().state.messages, 3);

    bus.start_appliers();
    eventually(|| {
        let (store, wms, p1) = (store.clone(), wms.clone(), p1.clone());
        async move { store.event(&wms, &p1).await.unwrap().is_some() }
    })
    .await;
    // The first copies, applied now, are duplicates: each event counted once.
    eventually(|| {
        let store = store.clone();
        async move { on_hand(&store, "SKU-P").await == 307 }
    })
    .await;
    eventually(|| {
        let mut stream = stream.clone();
        async move { stream.info().await.unwrap().state.messages == 0 }
    })
    .await;
    assert_eq!(on_hand(&store, "SKU-P").await, 307);
    // The outcome, seen on the bus, ends the `accepted` record.
    eventually(|| {
        let (bus, wms, p1) = (bus.clone(), wms.clone(), p1.clone());
        async move { !bus.is_accepted(&wms, &p1) }
    })
    .await;
    bus.stop().await;
    store.close().await;
    delete_stream(&url, &o).await;
}

#[tokio::test]
async fn a_message_delivered_again_after_its_commit_is_a_duplicate_and_reports_the_first_outcome() {
    let Some(url) = nats_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut o = BusOptions::new(&url);
    o.prefix = prefix("redelivery");
    o.outcome_wait = Duration::from_millis(100);
    o.partitions = 1;
    o.ack_wait = Duration::from_secs(1);
    let bus = Bus::connect(o.clone(), store.clone(), rules(), Arc::new(channels()))
        .await
        .unwrap();
    let d = bus
        .submit(now(), vec![event("wms", "r1", "SKU-R", 9)])
        .await
        .unwrap();
    assert_eq!(d, [Delivery::Accepted]);

    // A process takes the message, commits it to the ledger and dies before acknowledging.
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = js.get_stream(o.stream_name()).await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            "applier-0",
            jetstream::consumer::pull::Config {
                durable_name: Some("applier-0".into()),
                filter_subject: o.event_subject(0),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(1),
                max_deliver: -1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let m = batch.next().await.unwrap().unwrap();
    let (at, mut events) = driftless_bus::codec::decode_events(&m.payload).unwrap();
    assert_eq!(events.len(), 1);
    let p = rules().prepare_at(events.remove(0), at).unwrap();
    let r = store
        .apply(now(), vec![driftless_store::Incoming::Event(Box::new(p))])
        .await
        .unwrap();
    assert_eq!(r[0].outcome, Outcome::Applied);
    drop(m);

    // JetStream redelivers it after ack_wait; the ledger says duplicate, nothing is applied
    // twice, and the outcome published is the one the first delivery stored.
    let client = async_nats::connect(&url).await.unwrap();
    let mut outcomes = client.subscribe(o.outcome_subject("wms")).await.unwrap();
    client.flush().await.unwrap();
    bus.start_appliers();
    let m = tokio::time::timeout(Duration::from_secs(20), outcomes.next())
        .await
        .expect("the redelivered message's outcome")
        .unwrap();
    let w: driftless_bus::codec::OutcomesWire = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(w.results[0].id, "r1");
    assert_eq!(w.results[0].outcome, "applied");
    assert_eq!(on_hand(&store, "SKU-R").await, 9);
    let sku = Sku::parse("SKU-R").unwrap();
    assert_eq!(store.history(&sku, 100).await.unwrap().len(), 1);
    bus.stop().await;
    store.close().await;
    delete_stream(&url, &o).await;
}
