//! PostgreSQL ingest benchmark: batched events through two hubs on one PostgreSQL database (each
//! its own store and HTTP server, as two processes would be, in one process for the measurement),
//! next to (a) a bare `COPY` of the same rows into a table like the hub's `events` (the same
//! primary key and indexes) and (b) the naive design: one transaction per event with
//! `INSERT ... ON CONFLICT DO NOTHING` and an `UPDATE` of the level. All on the same server, in
//! the same run; then the time from opening a hub on the filled ledger to its first ready answer.
//!
//! ```text
//! cargo run --release -p driftless-bench --bin pg -- [--events N] [--batch N] [--naive N]
//!     [--skus N] [--clients N]
//! ```
//! The server is `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! each run makes its own databases (`dl_pg_bench_*`) and drops them.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use driftless_config::Settings;
use driftless_server::{AppState, Server};
use driftless_store::{PgStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
auth = "none"
max_pending = 4096

[[systems]]
id = "wms"
role = "wms"

[[channels]]
id = "shop"
locations = ["DC1"]
"#;

struct Opts {
    events: usize,
    batch: usize,
    naive: usize,
    skus: usize,
    clients: usize,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        events: 1_000_000,
        batch: 1000,
        naive: 50_000,
        skus: 10_000,
        clients: 8,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v: usize = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} takes a whole number"))?;
        match flag.as_str() {
            "--events" => o.events = v.max(1),
            "--batch" => o.batch = v.clamp(1, 10_000),
            "--naive" => o.naive = v.max(1),
            "--skus" => o.skus = v.max(1),
            "--clients" => o.clients = v.max(1),
            _ => anyhow::bail!("unknown flag {flag}"),
        }
    }
    Ok(o)
}

/// Event `i`: a unique id, a sku among `skus`, a delta.
struct Ev {
    id: String,
    sku: String,
    at: String,
    at_nanos: i64,
    delta: i64,
}

fn ev(i: usize, skus: usize) -> Ev {
    let secs = (i % 86_400) as i64;
    Ev {
        id: format!("e{i}"),
        sku: format!("SKU-{:06}", (i * 7919) % skus),
        at: format!(
            "2026-11-27T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        ),
        at_nanos: 1_795_737_600_000_000_000 + secs * 1_000_000_000,
        delta: (i % 7) as i64 - 2,
    }
}

async fn admin(url: &str) -> anyhow::Result<PgConnection> {
    Ok(PgConnectOptions::from_str(url)?
        .database("postgres")
        .connect()
        .await?)
}

/// A fresh database; its URL.
async fn create(url: &str, name: &str) -> anyhow::Result<String> {
    let mut c = admin(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await?;
    c.close().await?;
    Ok(PgConnectOptions::from_str(url)?
        .database(name)
        .to_url_lossy()
        .to_string())
}

async fn drop_db(url: &str, name: &str) {
    if let Ok(mut c) = admin(url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
}

/// A hub on `db`: its base URL and the task serving it.
async fn hub(db: &str) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let settings = Settings::parse("bench", CONFIG).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = PgStore::open(db, settings.rules.clone(), settings.channel_specs()).await?;
    let server = Server::bind("127.0.0.1:0", AppState::new(settings, Arc::new(store))).await?;
    let addr = server.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until_stopped(async {
        let _ = rx.await;
    }));
    Ok((format!("http://{addr}"), tx))
}

/// Events through the hubs, requests of `batch` spread over them, `clients` in flight.
async fn through_hubs(o: &Opts, bases: &[String]) -> anyhow::Result<f64> {
    let bodies: Vec<String> = (0..o.events)
        .collect::<Vec<_>>()
        .chunks(o.batch)
        .map(|c| {
            let items: Vec<String> = c
                .iter()
                .map(|i| {
                    let e = ev(*i, o.skus);
                    format!(
                        r#"{{"id":"{}","source":"wms","sku":"{}","location":"DC1","occurred_at":"{}","adjust":{{"on_hand":{}}}}}"#,
                        e.id, e.sku, e.at, e.delta
                    )
                })
                .collect();
            format!("[{}]", items.join(","))
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(
        bodies.into_iter().enumerate().rev().collect::<Vec<_>>(),
    ));
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (http, queue, bases) = (http.clone(), queue.clone(), bases.to_vec());
        tasks.push(tokio::spawn(async move {
            while let Some((n, body)) = queue.lock().ok().and_then(|mut q| q.pop()) {
                let url = format!("{}/v1/events", bases[n % bases.len()]);
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "status {}", r.status());
                let _ = r.bytes().await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(o.events as f64 / start.elapsed().as_secs_f64())
}

/// The same rows by `COPY` into a table like the hub's `events` (same primary key, same indexes).
async fn bare_copy(o: &Opts, db: &str) -> anyhow::Result<f64> {
    let mut c = PgConnectOptions::from_str(db)?.connect().await?;
    sqlx::query("CREATE TABLE events_copy (LIKE events INCLUDING ALL)")
        .execute(&mut c)
        .await?;
    let print = format!("\\\\x{}", "ab".repeat(32));
    let start = Instant::now();
    let mut copy = c
        .copy_in_raw(
            "COPY events_copy (id, fingerprint, source, sku, location, at_nanos, seq, kind, \
             on_hand, received_nanos, outcome, effective, claims) FROM STDIN",
        )
        .await?;
    let mut buf = String::with_capacity(1 << 20);
    for i in 0..o.events {
        let e = ev(i, o.skus);
        buf.push_str(&format!(
            "{}\t{print}\twms\t{}\tDC1\t{}\t0\tadjust\t{}\t{}\tapplied\tt\tt\n",
            e.id, e.sku, e.at_nanos, e.delta, e.at_nanos
        ));
        if buf.len() > (1 << 20) - 512 {
            copy.send(buf.as_bytes()).await?;
            buf.clear();
        }
    }
    copy.send(buf.as_bytes()).await?;
    copy.finish().await?;
    Ok(o.events as f64 / start.elapsed().as_secs_f64())
}

/// The naive design: per event, one transaction with an idempotent insert and a level update.
async fn naive(o: &Opts, db: &str) -> anyhow::Result<f64> {
    let mut c = PgConnectOptions::from_str(db)?.connect().await?;
    sqlx::raw_sql(
        "CREATE TABLE naive_events (source TEXT, id TEXT, sku TEXT, location TEXT, \
         at_nanos BIGINT, on_hand BIGINT, PRIMARY KEY (source, id)); \
         CREATE TABLE naive_levels (sku TEXT, location TEXT, on_hand BIGINT NOT NULL, \
         PRIMARY KEY (sku, location));",
    )
    .execute(&mut c)
    .await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.clients.max(16) {
        let (db, next) = (db.to_owned(), next.clone());
        let (n, skus) = (o.naive, o.skus);
        tasks.push(tokio::spawn(async move {
            let mut c = PgConnectOptions::from_str(&db)?.connect().await?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let e = ev(i, skus);
                let mut tx = c.begin().await?;
                let done = sqlx::query(
                    "INSERT INTO naive_events VALUES ('wms', $1, $2, 'DC1', $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&e.id)
                .bind(&e.sku)
                .bind(e.at_nanos)
                .bind(e.delta)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    sqlx::query(
                        "INSERT INTO naive_levels VALUES ($1, 'DC1', $2) ON CONFLICT (sku, location) \
                         DO UPDATE SET on_hand = naive_levels.on_hand + EXCLUDED.on_hand",
                    )
                    .bind(&e.sku)
                    .bind(e.delta)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(o.naive as f64 / start.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let name = format!("dl_pg_bench_{}", std::process::id());
        let db = create(&url, &name).await?;
        let result = async {
            let (a, stop_a) = hub(&db).await?;
            let (b, stop_b) = hub(&db).await?;
            println!(
                "{} events in requests of {}, {} skus, {} clients; the machine is shared with other builds",
                o.events, o.batch, o.skus, o.clients
            );
            let hubs = through_hubs(&o, &[a, b]).await?;
            println!("two hubs (HTTP, decide, commit)  {hubs:>10.0} events/s");
            let _ = (stop_a.send(()), stop_b.send(()));
            let copy = bare_copy(&o, &db).await?;
            println!("bare COPY, same table and keys   {copy:>10.0} events/s");
            let slow = naive(&o, &db).await?;
            println!(
                "naive (a transaction per event)  {slow:>10.0} events/s  (over {} events)",
                o.naive
            );
            println!(
                "ratios: two hubs / COPY = {:.2}x (goal >= 0.5x); two hubs / naive = {:.1}x (goal >= 20x)",
                hubs / copy,
                hubs / slow
            );
            let settings = Settings::parse("bench", CONFIG).map_err(|e| anyhow::anyhow!("{e}"))?;
            let t = Instant::now();
            let store = PgStore::open(&db, settings.rules.clone(), settings.channel_specs()).await?;
            store.ping().await?;
            println!(
                "time to ready on a ledger of {} events: {:.1} ms (nothing is replayed on start)",
                o.events,
                t.elapsed().as_secs_f64() * 1e3
            );
            store.close().await;
            anyhow::Ok(())
        }
        .await;
        drop_db(&url, &name).await;
        result
    })
}
