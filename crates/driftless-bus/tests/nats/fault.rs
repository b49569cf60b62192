//! The fault run: a nats-server of the test's own (free port, its own store directory) is killed
//! with SIGKILL and restarted while clients send batches with unique ids and retry each batch
//! with the same ids until the bus answers. Afterwards the ledger equals an independent oracle
//! (`MemoryLedger`) over every event that was acknowledged (applied or accepted): none lost, none
//! applied twice. Bounded: the whole run stays well under a minute.

use super::*;
use driftless_core::{EventId, MemoryLedger};
use std::collections::{BTreeMap, BTreeSet};

#[path = "server.rs"]
mod server;
use server::{NatsServer, free_port};

/// A deterministic event per (client, batch, index): adjusts and some sets over few skus, so
/// late sets re-base and cover earlier adjusts.
fn fault_event(rng: &mut fastrand::Rng, id: &str) -> Event {
    let sku = format!("F-{}", rng.u32(0..20));
    let at = format!("2026-11-27T{:02}:{:02}:00Z", rng.u32(0..24), rng.u32(0..60));
    let q = vec![("on_hand", rng.i64(-5..=10))];
    let set = rng.u32(0..10) == 0;
    Event::from_raw(&RawEvent {
        id,
        source: "wms",
        sku: &sku,
        location: "DC1",
        occurred_at: &at,
        seq: rng.u64(0..3),
        adjust: (!set).then(|| q.clone()),
        set: set.then(|| vec![("on_hand", rng.i64(0..=50))]),
        ..RawEvent::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_nats_server_loses_no_acknowledged_event_and_applies_none_twice() {
    if nats_url().is_none() {
        return;
    }
    let Some(program) = server::program() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("nats-server is needed for the fault run and CI=true");
        }
        println!("skipped: no nats-server program for the fault run");
        return;
    };
    let nats_dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start(&program, free_port(), nats_dir.path());
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut o = BusOptions::new(&url);
    o.prefix = "dl_nats_fault".into();
    o.partitions = 4;
    o.outcome_wait = Duration::from_millis(500);
    o.publish_timeout = Duration::from_secs(2);
    o.ack_wait = Duration::from_secs(5);
    let bus = Bus::connect(o.clone(), store.clone(), rules(), Arc::new(channels()))
        .await
        .unwrap();
    bus.start_appliers();

    const CLIENTS: usize = 4;
    const BATCHES: usize = 12;
    const PER_BATCH: usize = 20;
    // The clients send until both restarts are over (and at least BATCHES batches each), so
    // every restart happens under load.
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let bus = bus.clone();
        let restarted = restarted.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(c as u64 + 1);
            let mut acknowledged = Vec::new();
            let mut retries = 0usize;
            let mut accepted = 0usize;
            let mut b = 0;
            while b < BATCHES || !restarted.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(b < 1000, "the restarts never finished");
                let events: Vec<Event> = (0..PER_BATCH)
                    .map(|i| fault_event(&mut rng, &format!("c{c}-b{b}-{i}")))
                    .collect();
                // The same ids until the bus answers: what a sender does after a 503.
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts <= 200, "batch c{c}-b{b} never acknowledged");
                    match bus.submit(Utc::now(), events.clone()).await {
                        Ok(d) => {
                            accepted += d.iter().filter(|d| **d == Delivery::Accepted).count();
                            assert!(d.iter().all(|d| match d {
                                Delivery::Accepted => true,
                                Delivery::Final(r) => matches!(
                                    r.outcome,
                                    Outcome::Applied
                                        | Outcome::Duplicate
                                        | Outcome::Stale
                                        | Outcome::Covered
                                ),
                            }));
                            acknowledged.extend(events);
                            break;
                        }
                        Err(_) => {
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                b += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (acknowledged, retries, accepted)
        }));
    }
    // Two SIGKILLs of the server, each down for a second, while the clients send.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        server.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        server.spawn();
    }
    // A little load after the last restart too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    restarted.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    let (mut retries, mut accepted) = (0, 0);
    for c in clients {
        let (a, r, n) = c.await.unwrap();
        acknowledged.extend(a);
        retries += r;
        accepted += n;
    }
    println!(
        "fault run: {} events acknowledged ({accepted} of them `accepted`), {retries} batch retries",
        acknowledged.len()
    );

    // Every acknowledged event reaches the ledger (accepted ones are applied from JetStream).
    let mut missing: Vec<(SystemId, EventId)> = acknowledged
        .iter()
        .map(|e| (e.source.clone(), e.id.clone()))
        .collect();
    for _ in 0..300 {
        let mut still = Vec::new();
        for (s, i) in missing {
            if store.event(&s, &i).await.unwrap().is_none() {
                still.push((s, i));
            }
        }
        missing = still;
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged events never reached the ledger, e.g. {:?}",
        missing.len(),
        missing.first()
    );

    // The ledger equals the oracle over the acknowledged events, and each is stored once.
    let mut oracle = MemoryLedger::new(rules());
    let mut per_sku: BTreeMap<Sku, usize> = BTreeMap::new();
    for e in &acknowledged {
        *per_sku.entry(e.sku.clone()).or_default() += 1;
        oracle.apply(e.clone());
    }
    let skus: BTreeSet<&Sku> = per_sku.keys().collect();
    for sku in skus {
        let got = store.inventory(sku).await.unwrap().unwrap_or_default();
        let dc1 = Location::parse("DC1").unwrap();
        let want = oracle.levels(sku, &dc1);
        let have = got
            .iter()
            .find(|l| l.location == dc1)
            .map(|l| l.levels)
            .unwrap_or_default();
        assert_eq!(have, want, "levels of {sku}");
        let stored = store.history(sku, 10_000).await.unwrap().len();
        assert_eq!(stored, per_sku[sku], "ledger entries of {sku}");
    }
    bus.stop().await;
    store.close().await;
    drop(server);
}
