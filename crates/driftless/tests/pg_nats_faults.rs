//! The fault run of production mode with JetStream between the hubs: three `driftless serve`
//! processes on one PostgreSQL database, each with `nats_url` set to a nats-server of the test's
//! own (a free port, its own store directory; never the machine's), so every event goes API →
//! JetStream → an applier in whichever process pulls it → the ledger. While clients send batches
//! with unique ids and retry the same ids against whichever hub answers, one hub is killed with
//! SIGKILL at a random moment and restarted, the nats-server is killed with SIGKILL and restarted,
//! every connection to the database is cut once (`pg_terminate_backend`), and a webhook stand-in
//! channel fails part of its pushes. `200` and `202` (`"outcome": "accepted"`: durable in
//! JetStream) both count as acknowledged; each acknowledged event's final outcome is then read
//! at `GET /v1/events/{source}/{id}`. Afterwards the ledger must equal an independent oracle (the
//! core's `MemoryLedger` over every acknowledged event), with none lost and none applied twice;
//! the stand-in must show the hub's channel quantity for every sku, and no push may have been
//! applied twice. A subscriber to the channel subjects must end, for every sku, with the hub's
//! channel quantity at the highest version it received, and never see one version with two
//! quantities.
//!
//! The database is a fresh `dl_pg_fault_*` on the server of `DRIFTLESS_TEST_DATABASE_URL`, as in
//! `pg_faults.rs`. Without a reachable PostgreSQL or a nats-server program the test skips with one
//! printed line; under `CI=true` it fails.

mod common;
#[path = "common/faults.rs"]
mod faults;
#[path = "../../driftless-bus/tests/nats/server.rs"]
mod nats_server;

use driftless_bus::codec::ChannelUpdate;
use driftless_connectors::standin::Faults;
use faults::{Database, event, serve, webhook_standin, write_config};
use futures::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HUBS: usize = 3;
const CLIENTS: usize = 4;
const BATCHES: usize = 25;
const PER_BATCH: usize = 40;

type Bases = Arc<Mutex<Vec<String>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_with_jetstream_survive_sigkill_a_nats_restart_cut_connections_and_a_failing_channel()
 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let run = "PostgreSQL + JetStream fault run";
    let Some(program) = nats_server::program() else {
        assert!(
            !faults::in_ci(),
            "CI=true and no nats-server program for the {run}"
        );
        eprintln!(
            "driftless: {run} skipped: no nats-server program (set DRIFTLESS_TEST_NATS_SERVER)"
        );
        return;
    };
    let Some(db) = Database::create(run) else {
        return;
    };
    let started = Instant::now();
    // A seed from the clock: the faults land at different moments each run; printed for replay.
    let seed = (chrono::Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64) | 1;
    eprintln!("fault run seed {seed}");
    let nats_dir = tempfile::tempdir().unwrap();
    let mut nats =
        nats_server::NatsServer::start(&program, nats_server::free_port(), nats_dir.path());
    let standin = webhook_standin(Faults {
        rate: 0.2,
        seed,
        stall: Duration::from_millis(50),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &standin);
    let env = [
        ("DRIFTLESS_NATS_URL", nats.url()),
        ("DRIFTLESS_NATS_PREFIX", "dl_fault".to_owned()),
        // Short enough that some answers are `accepted` under load.
        ("DRIFTLESS_NATS_WAIT_MS", "500".to_owned()),
        // The killed hub's unacknowledged messages come back to the others within seconds.
        ("DRIFTLESS_NATS_ACK_WAIT_MS", "5000".to_owned()),
    ];
    let updates = subscribe_channels(&nats.url()).await;
    let hub = |n: usize| serve(&cfg, &db.url, &dir.path().join(format!("unused-{n}")), &env);
    let mut children: Vec<Child> = Vec::new();
    let mut bases = Vec::new();
    for n in 0..HUBS {
        let (c, b) = hub(n);
        children.push(c);
        bases.push(b);
    }
    let bases: Bases = Arc::new(Mutex::new(bases));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    // Clients: every batch retried, same ids, against the next hub, until acknowledged.
    let acked: Arc<Mutex<Vec<Value>>> = Arc::default();
    let retries = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, bases, acked, retries, accepted) = (
            http.clone(),
            bases.clone(),
            acked.clone(),
            retries.clone(),
            accepted.clone(),
        );
        clients.push(tokio::spawn(async move {
            for r in 0..BATCHES {
                let batch: Vec<Value> = (0..PER_BATCH)
                    .map(|k| event(c, r * PER_BATCH + k))
                    .collect();
                let mut turn = c + r;
                loop {
                    assert!(turn < c + r + 2000, "batch {c}/{r} never acknowledged");
                    let base = {
                        let b = bases.lock().unwrap();
                        b[turn % b.len()].clone()
                    };
                    let resp = http
                        .post(format!("{base}/v1/events"))
                        .json(&batch)
                        .send()
                        .await;
                    if let Ok(resp) = resp
                        && matches!(resp.status().as_u16(), 200 | 202)
                        && let Ok(v) = resp.json::<Value>().await
                    {
                        for x in v["results"].as_array().unwrap() {
                            let o = x["outcome"].as_str().unwrap();
                            assert!(
                                matches!(
                                    o,
                                    "applied" | "duplicate" | "stale" | "covered" | "accepted"
                                ),
                                "{x}"
                            );
                            if o == "accepted" {
                                accepted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        acked.lock().unwrap().extend(batch);
                        break;
                    }
                    // 503 while NATS or the database is away, a refused connection from a
                    // killed hub, a timeout.
                    retries.fetch_add(1, Ordering::Relaxed);
                    turn += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // Chaos, while the clients send, each at a moment drawn from the seed: one hub SIGKILLed
    // (between 15% and 40% of the stream acknowledged) and restarted; the nats-server SIGKILLed,
    // down for two seconds and restarted on the same store (45-65%); every connection to the
    // database cut once (70-85%).
    let total = CLIENTS * BATCHES * PER_BATCH;
    let at = |from: usize, span: usize, salt: u64| {
        total * from / 100 + ((seed / salt) as usize % (total * span / 100))
    };
    let (kill_at, nats_at, cut_at) = (at(15, 25, 1), at(45, 20, 11), at(70, 15, 101));
    let reached = |n: usize| {
        let acked = acked.clone();
        async move {
            while acked.lock().unwrap().len() < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    reached(kill_at).await;
    let victim = (seed / 7 % HUBS as u64) as usize;
    children[victim].kill().unwrap(); // SIGKILL
    children[victim].wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (child, base) = hub(HUBS);
    children[victim] = child;
    bases.lock().unwrap()[victim] = base;
    eprintln!(
        "killed hub {victim} at {kill_at} acknowledged events ({:?})",
        started.elapsed()
    );
    reached(nats_at).await;
    nats.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.spawn();
    eprintln!(
        "restarted nats-server at {nats_at} acknowledged events ({:?})",
        started.elapsed()
    );
    reached(cut_at).await;
    let cut = db.cut_connections();
    eprintln!(
        "cut {cut} connections at {cut_at} acknowledged events ({:?})",
        started.elapsed()
    );
    for c in clients {
        c.await.unwrap();
    }
    let acked: Vec<Value> = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), total);

    // Every acknowledged event reaches the ledger (the accepted ones from JetStream), with a
    // final outcome; asked of the hubs in turn (bounded: 120 s, for a loaded machine).
    let bases: Vec<String> = bases.lock().unwrap().clone();
    let mut waiting: HashSet<String> = acked
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut round = 0;
    while !waiting.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events never reached the ledger, e.g. {:?}",
            waiting.len(),
            waiting.iter().next()
        );
        let base = &bases[round % HUBS];
        round += 1;
        let mut still = HashSet::new();
        for id in waiting {
            let r = http
                .get(format!("{base}/v1/events/wms/{id}"))
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => {
                    let v: Value = r.json().await.unwrap();
                    let o = v["outcome"].as_str().unwrap();
                    assert!(matches!(o, "applied" | "stale" | "covered"), "{id}: {v}");
                }
                // 202: accepted, not applied yet; 404: this process never saw it accepted
                // and the ledger does not hold it yet.
                202 | 404 => {
                    still.insert(id);
                }
                s => panic!("GET /v1/events/wms/{id}: {s}"),
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    // The ledger against the oracle over every acknowledged event; the channel caught up.
    let channel_qty = faults::check_ledger(&http, &bases[0], &acked).await;
    faults::check_channel(&http, &bases[0], &standin, &channel_qty).await;
    check_published(&updates, &channel_qty).await;
    eprintln!(
        "fault run: {} events ({} answered accepted), {} client retries, {:?}",
        acked.len(),
        accepted.load(Ordering::Relaxed),
        retries.load(Ordering::Relaxed),
        started.elapsed()
    );
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// What the hubs published on the channel subjects: sku -> version -> quantity, and every
/// version seen with two quantities.
#[derive(Default)]
struct Seen {
    versions: BTreeMap<String, BTreeMap<i64, i64>>,
    conflicts: Vec<String>,
}

type Published = Arc<Mutex<Seen>>;

/// Collects what the hubs publish on `dl_fault.channels.shop.>`. Core NATS: updates published
/// while the server is down are lost, so only what arrives is checked (the client resubscribes
/// after the restart).
async fn subscribe_channels(url: &str) -> Published {
    let client = async_nats::connect(url).await.unwrap();
    let mut sub = client.subscribe("dl_fault.channels.shop.>").await.unwrap();
    client.flush().await.unwrap();
    let seen: Published = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Some(m) = sub.next().await {
            let u: ChannelUpdate = serde_json::from_slice(&m.payload).unwrap();
            let mut seen = seen.lock().unwrap();
            let Some(version) = u.version else {
                seen.conflicts.push(format!("{}: no version", u.sku));
                continue;
            };
            let prior = seen
                .versions
                .entry(u.sku.clone())
                .or_default()
                .insert(version, u.quantity);
            if let Some(q) = prior.filter(|q| *q != u.quantity) {
                let c = format!("{} version {version}: {q} and {}", u.sku, u.quantity);
                seen.conflicts.push(c);
            }
        }
    });
    out
}

/// No version was published with two quantities, and the quantity at each sku's highest
/// published version reaches the hub's channel quantity (bounded: the last group's publication
/// follows its commit).
async fn check_published(updates: &Published, channel_qty: &BTreeMap<String, i64>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let newest: BTreeMap<String, i64> = {
            let seen = updates.lock().unwrap();
            assert!(seen.conflicts.is_empty(), "{:?}", seen.conflicts);
            seen.versions
                .iter()
                .filter_map(|(s, v)| v.last_key_value().map(|(_, q)| (s.clone(), *q)))
                .collect()
        };
        if &newest == channel_qty {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the channel subjects did not end at the hub's quantities: newest {newest:?}, hub {channel_qty:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
