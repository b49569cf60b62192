//! A fault run of production mode: two `driftless serve` processes on one PostgreSQL database,
//! clients sending batches with unique ids and retrying the same ids against whichever hub
//! answers, one hub killed with SIGKILL at a random moment and restarted, every hub's database
//! connection cut once (`pg_terminate_backend`), and a webhook stand-in channel failing part of
//! its pushes. Afterwards the ledger must equal an independent oracle (the core's `MemoryLedger`
//! over every acknowledged event), with none lost and none applied twice; the stand-in must show
//! the hub's channel quantity for every sku, and no push may have been applied twice.
//!
//! The database is a fresh `dl_pg_fault_*` on the server of `DRIFTLESS_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), made and dropped with `psql`. Without
//! a reachable server the test skips, saying so; under `CI=true` it fails.

mod common;

use driftless_connectors::standin::{Faults, Mode, StandIn};
use driftless_core::event::RawEvent;
use driftless_core::{Event, Location, MemoryLedger, Rules, Sku, SystemId};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "fault-run-secret";
const SKUS: usize = 30;
const CLIENTS: usize = 4;
const BATCHES: usize = 40;
const PER_BATCH: usize = 40;

fn config(push_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
auth = "none"

[[systems]]
id = "wms"
role = "wms"

[[systems]]
id = "shop"
role = "storefront"

[[channels]]
id = "shop"
locations = ["DC1"]
connector = "webhook"
url = "{push_url}"
secret_env = "SHOP_SECRET"
max_attempts = 100
"#
    )
}

/// `psql` against `url`, or the error it printed.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The server's URL with another database.
fn with_database(url: &str, db: &str) -> String {
    let (head, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{head}/{db}")
}

/// A fresh database, dropped with everything connected to it at the end.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Option<Database> {
        let url = std::env::var("DRIFTLESS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin = with_database(&url, "postgres");
        if let Err(e) = psql(&admin, "SELECT 1") {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and PostgreSQL is unreachable at {admin}: {e}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "driftless: PostgreSQL fault run skipped: no server at {admin} ({e}); set \
                 DRIFTLESS_TEST_DATABASE_URL or run .ci/run"
            );
            return None;
        }
        let name = format!(
            "dl_pg_fault_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        psql(&admin, &format!("CREATE DATABASE {name}")).unwrap();
        let url = with_database(&url, &name);
        Some(Database { admin, name, url })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// One `driftless serve` on the database; its base URL once it listens.
fn serve(config: &std::path::Path, db: &str, data: &std::path::Path) -> (Child, String) {
    let mut child = common::driftless()
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--database-url", db])
        .env("DRIFTLESS_LOG", "error")
        .env("SHOP_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start driftless");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read address");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, base)
}

/// Event `i` of client `c`: mostly receipts and shipments, now and then a count.
fn event(c: usize, i: usize) -> Value {
    let sku = format!("F{:02}", (i * 7 + c) % SKUS);
    let id = format!("c{c}-e{i}");
    let at = format!(
        "2026-11-27T{:02}:{:02}:{:02}Z",
        8 + i % 4,
        (i * 13) % 60,
        c * 10
    );
    if i % 17 == 5 {
        json!({"id": id, "source": "wms", "sku": sku, "location": "DC1", "occurred_at": at,
               "seq": i, "set": {"on_hand": 200 + (i % 50) as i64}})
    } else {
        let q = (i % 9) as i64 - 3;
        json!({"id": id, "source": "wms", "sku": sku, "location": "DC1", "occurred_at": at,
               "seq": i, "adjust": {"on_hand": q, "committed": (i % 3) as i64}})
    }
}

fn core_event(v: &Value) -> Event {
    let q = |k: &str| -> Option<Vec<(&'static str, i64)>> {
        v.get(k).map(|m| {
            ["on_hand", "committed"]
                .into_iter()
                .filter_map(|s| m.get(s).and_then(Value::as_i64).map(|n| (s, n)))
                .collect()
        })
    };
    Event::from_raw(&RawEvent {
        id: v["id"].as_str().unwrap(),
        source: "wms",
        sku: v["sku"].as_str().unwrap(),
        location: "DC1",
        occurred_at: v["occurred_at"].as_str().unwrap(),
        seq: v["seq"].as_u64().unwrap(),
        adjust: q("adjust"),
        set: q("set"),
        ..RawEvent::default()
    })
    .unwrap()
}

type Bases = Arc<Mutex<Vec<String>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_postgres_survive_sigkill_cut_connections_and_a_failing_channel() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(db) = Database::create() else {
        return;
    };
    let started = Instant::now();
    // A seed from the clock: the kill lands at a different moment each run; printed for replay.
    let seed = (chrono::Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64) | 1;
    eprintln!("fault run seed {seed}");
    let standin = StandIn::start(
        Mode::Webhook {
            secret: SECRET.as_bytes().to_vec(),
        },
        Faults {
            rate: 0.2,
            seed,
            stall: Duration::from_millis(50),
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("driftless.toml");
    std::fs::write(&cfg, config(&standin.url("/push"))).unwrap();
    let hub = |n: usize| serve(&cfg, &db.url, &dir.path().join(format!("unused-{n}")));
    let (a, base_a) = hub(0);
    let (b, base_b) = hub(1);
    let children = Arc::new(Mutex::new(vec![a, b]));
    let bases: Bases = Arc::new(Mutex::new(vec![base_a, base_b]));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Clients: every batch retried, same ids, against the other hub, until acknowledged.
    let acked: Arc<Mutex<Vec<Value>>> = Arc::default();
    let retries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, bases, acked, retries) =
            (http.clone(), bases.clone(), acked.clone(), retries.clone());
        clients.push(tokio::spawn(async move {
            for r in 0..BATCHES {
                let batch: Vec<Value> = (0..PER_BATCH)
                    .map(|k| event(c, r * PER_BATCH + k))
                    .collect();
                let mut turn = c + r;
                loop {
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
                        && resp.status().is_success()
                        && let Ok(v) = resp.json::<Value>().await
                    {
                        for x in v["results"].as_array().unwrap() {
                            let o = x["outcome"].as_str().unwrap();
                            assert!(
                                matches!(o, "applied" | "duplicate" | "stale" | "covered"),
                                "{x}"
                            );
                        }
                        acked.lock().unwrap().extend(batch);
                        break;
                    }
                    // 503 while the database is away, a refused connection from a killed hub.
                    retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    turn += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // Chaos, while the clients send: one hub SIGKILLed at a random point of the stream (between
    // a fifth and a half of it acknowledged) and restarted; later, with about three quarters
    // acknowledged, every connection of both hubs to the database cut once.
    let total = CLIENTS * BATCHES * PER_BATCH;
    let kill_at = total / 5 + (seed as usize % (total * 3 / 10));
    let reached = |n: usize| {
        let acked = acked.clone();
        async move {
            while acked.lock().unwrap().len() < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    reached(kill_at).await;
    let kill_after = started.elapsed();
    let victim = (seed / 7 % 2) as usize;
    {
        let mut ch = children.lock().unwrap();
        ch[victim].kill().unwrap(); // SIGKILL
        ch[victim].wait().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (child, base) = hub(2);
    children.lock().unwrap()[victim] = child;
    bases.lock().unwrap()[victim] = base;
    reached(total * 3 / 4).await;
    let cut = psql(
        &db.url,
        &format!(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name
        ),
    )
    .unwrap();
    eprintln!(
        "killed hub {victim} at {kill_at} acknowledged events ({kill_after:?}); cut {cut} connections"
    );
    for c in clients {
        c.await.unwrap();
    }
    let acked: Vec<Value> = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), CLIENTS * BATCHES * PER_BATCH);

    // The oracle: the core's reference ledger over every acknowledged event.
    let rules = Rules {
        systems: [SystemId::parse("wms").unwrap()].into_iter().collect(),
        ..Rules::default()
    };
    let mut oracle = MemoryLedger::new(rules);
    for v in &acked {
        oracle.apply(core_event(v));
    }
    let base = bases.lock().unwrap()[0].clone();
    let dc1 = Location::parse("DC1").unwrap();
    let mut want_ids: HashMap<String, HashSet<String>> = HashMap::new();
    for v in &acked {
        want_ids
            .entry(v["sku"].as_str().unwrap().to_owned())
            .or_default()
            .insert(v["id"].as_str().unwrap().to_owned());
    }
    let mut channel_qty: BTreeMap<String, i64> = BTreeMap::new();
    for (sku, ids) in &want_ids {
        let inv: Value = http
            .get(format!("{base}/v1/inventory/{sku}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let want = oracle.levels(&Sku::parse(sku).unwrap(), &dc1);
        let loc = &inv["locations"][0];
        assert_eq!(
            (loc["on_hand"].as_i64(), loc["committed"].as_i64()),
            (Some(want.on_hand), Some(want.committed)),
            "{sku}: the ledger against the oracle"
        );
        channel_qty.insert(
            sku.clone(),
            inv["channels"][0]["quantity"].as_i64().unwrap(),
        );
        let h: Value = http
            .get(format!("{base}/v1/inventory/{sku}/history?limit=10000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut stored = HashSet::new();
        for e in h["entries"].as_array().unwrap() {
            let id = e["id"].as_str().unwrap().to_owned();
            assert!(stored.insert(id.clone()), "{sku}: {id} stored twice");
        }
        assert_eq!(
            &stored, ids,
            "{sku}: every acknowledged event stored, nothing else"
        );
    }

    // The channel: every sku ends at the hub's quantity, once the dispatcher has caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = http
            .get(format!("{base}/v1/channels/shop"))
            .send()
            .await
            .ok();
        let pending = match pending {
            Some(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["pending"].as_i64()),
            None => None,
        };
        let shows: BTreeMap<String, i64> = channel_qty
            .keys()
            .map(|s| (s.clone(), standin.get(s).unwrap_or(i64::MIN)))
            .collect();
        if pending == Some(0) && shows == channel_qty {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the channel did not catch up: pending {pending:?}, shows {shows:?}, hub {channel_qty:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No push applied twice: per sku, each applied push starts from what the one before left
    // (compare-and-set), and no idempotency key was applied twice.
    {
        let l = standin.lock();
        let mut last: HashMap<&str, i64> = HashMap::new();
        let mut keys = HashSet::new();
        for a in &l.applied {
            assert!(keys.insert(a.key.as_str()), "push {} applied twice", a.key);
            assert_eq!(
                a.from,
                last.get(a.sku.as_str()).copied(),
                "{}: {a:?}",
                a.sku
            );
            last.insert(&a.sku, a.to);
        }
        assert!(l.faults > 0, "the stand-in injected faults");
    }
    eprintln!(
        "fault run: {} events, {} client retries, {:?}",
        acked.len(),
        retries.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed()
    );
    for mut c in children.lock().unwrap().drain(..) {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A TCP proxy between a hub and PostgreSQL that can play the database going away: `down`
/// cuts every connection and refuses new ones until `up`.
struct Proxy {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let mut gone = cut2.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = gone.changed() => {}
                    }
                });
            }
        });
        Proxy { port, up, cut }
    }

    fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// While the database does not answer, `/readyz` says so and event requests get 503 with
/// `Retry-After`, acknowledging nothing; once it answers again the hub reconnects by itself and
/// the same request is applied, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_events_get_503_and_the_hub_reconnects() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(db) = Database::create() else {
        return;
    };
    let (host_port, rest) = {
        let after = db.url.split_once('@').map_or(db.url.as_str(), |(_, r)| r);
        after.split_once('/').unwrap()
    };
    let proxy = Proxy::start(host_port.to_owned()).await;
    let user = db
        .url
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    let via_proxy = format!("postgres://{user}127.0.0.1:{}/{rest}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("driftless.toml");
    std::fs::write(&cfg, config("http://127.0.0.1:9/push")).unwrap();
    let (mut child, base) = serve(&cfg, &via_proxy, &dir.path().join("data"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let batch: Vec<Value> = (0..10).map(|i| event(5, i)).collect();
    let post = async |batch: &[Value]| {
        http.post(format!("{base}/v1/events"))
            .json(&batch)
            .send()
            .await
            .unwrap()
    };
    let ready = async || {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);
    assert_eq!(post(&batch[..5]).await.status().as_u16(), 200);

    proxy.down();
    let start = Instant::now();
    while ready().await != 503 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "/readyz never said 503"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = post(&batch[5..]).await;
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));

    proxy.up();
    let start = Instant::now();
    while ready().await != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the hub did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r: Value = post(&batch[5..]).await.json().await.unwrap();
    for x in r["results"].as_array().unwrap() {
        assert_eq!(x["outcome"], "applied", "{x}");
    }
    // The whole batch once: a redelivery is duplicates only.
    let r: Value = post(&batch).await.json().await.unwrap();
    for x in r["results"].as_array().unwrap() {
        assert_eq!(x["outcome"], "duplicate", "{x}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
